"""A faster SigV4 signer for the local emulation: botocore's algorithm, the same headers.

Every request the product makes to the emulated AWS is signed by botocore, as
it is in AWS. botocore's `SigV4Auth.add_auth` redoes per request what depends
only on the URL or on the day: it splits the URL twice, builds the header map
twice through `email.message`, and derives the day's signing key with four
HMACs. At a few hundred thousand requests per demo that is several percent of
the run. This signer computes the same canonical request, string to sign and
signature with those parts cached; the Authorization header it writes is the
one botocore writes (`tests/integration/test_signing.py` signs every kind of
request the product sends both ways and compares all the headers).

Only the plain `SigV4Auth` is replaced (DynamoDB, SQS, SES, SNS, Secrets
Manager); its subclasses (S3, presigning) keep botocore's own method. Installed
by `local.moto_speedups.install`, i.e. only where moto is the AWS.
"""

from __future__ import annotations

import hmac
from functools import lru_cache
from hashlib import sha256
from typing import Any
from urllib.parse import quote, urlsplit

from botocore import auth as _auth
from botocore.exceptions import NoCredentialsError
from botocore.utils import normalize_url_path

auth: Any = _auth  # botocore's private helpers are not in its type stubs
_original: dict[str, Any] = {}


@lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), sha256).digest()
    return key


_UNSIGNED = frozenset(auth.SIGNED_HEADERS_BLACKLIST)


@lru_cache(maxsize=256)
def _url_parts(url: str) -> tuple[str, str, str]:
    """The host header, the canonical path and the URL's canonical query string."""
    split = urlsplit(url)
    path = quote(normalize_url_path(split.path), safe="/~")
    query = auth.SigV4Auth._canonical_query_string_url(None, split)
    return auth._host_from_url(url), path, query


def _add_auth(self: Any, request: Any) -> None:
    if type(self) is not auth.SigV4Auth:
        _original["add_auth"](self, request)
        return
    if self.credentials is None:
        raise NoCredentialsError()
    timestamp = auth.get_current_datetime().strftime(auth.SIGV4_TIMESTAMP)
    request.context["timestamp"] = timestamp
    self._modify_request_before_signing(request)
    host, path, query = _url_parts(request.url)
    # headers_to_sign: lower-case names, blacklisted ones out, every value kept
    # in order (botocore's header map allows repeats), the host from the URL.
    values: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        lname = name.lower()
        if lname not in _UNSIGNED:
            values.setdefault(lname, []).append(value)
    if "host" not in values:
        values["host"] = [host]
    names = sorted(values)
    canonical_headers = "\n".join(
        f"{n}:{','.join(' '.join(v.split()) for v in values[n])}" for n in names
    )
    signed_headers = ";".join(sorted(n.strip() for n in names))
    if "X-Amz-Content-SHA256" in request.headers:
        checksum = request.headers["X-Amz-Content-SHA256"]
    else:
        checksum = self.payload(request)
    canonical_request = "\n".join(
        (
            request.method.upper(),
            path,
            # botocore: the request's params if any, else the URL's query
            self.canonical_query_string(request) if request.params else query,
            canonical_headers + "\n",
            signed_headers,
            checksum,
        )
    )
    string_to_sign = self.string_to_sign(request, canonical_request)
    key = _signing_key(
        self.credentials.secret_key, timestamp[0:8], self._region_name, self._service_name
    )
    signature = hmac.new(key, string_to_sign.encode("utf-8"), sha256).hexdigest()
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={self.scope(request)}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


def install() -> None:
    """Replace `SigV4Auth.add_auth` (idempotent)."""
    if _original:
        return
    _original["add_auth"] = auth.SigV4Auth.add_auth
    auth.SigV4Auth.add_auth = _add_auth
