"""The SSRF guard for outbound webhooks: check a URL, resolve it, pin the address.

`check_url` accepts a URL only when all of these hold:

- the scheme is `https` (`http` only to a loopback address, and only with
  `allow_insecure_loopback`: a receiver on 127.0.0.1 in tests and local runs);
- there is no userinfo (`https://allowed.example@evil/`), no control
  character, space or backslash, no percent-encoding in the host;
- the host, lower-cased and without a trailing dot, is exactly in the
  allow-list (no suffix matching);
- the host is not an IPv4 literal in a legacy form (`2130706433`,
  `0x7f000001`, `0177.0.0.1`, `127.1`: what `inet_aton` accepts but a dotted
  quad is not) and, for an IP literal, not in a forbidden range;
- every address the name resolves to is public: not loopback, private,
  link-local, CGNAT (100.64.0.0/10), multicast, reserved, unspecified,
  documentation, benchmarking, IPv4-compatible, IPv4-mapped (`::ffff:0:0/96`,
  whatever IPv4 address it carries) or site-local, and for the other IPv6
  forms that embed an IPv4 address (6to4, Teredo, NAT64) the embedded address
  passes the same test.

The first address is pinned: the sender connects to that IP (with the host
name for SNI, certificate checks and the Host header), so a DNS answer that
changes between the check and the request (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH: Final = 2048
DEFAULT_PORTS: Final[Mapping[str, int]] = {"https": 443, "http": 80}

# Ranges refused beyond what the `ipaddress` properties cover (or in case a
# Python version classifies them differently).
_BLOCKED_V4: Final = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT, shared address space
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_BLOCKED_V6: Final = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated), with :: and ::1
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "2001:10::/28",  # ORCHID
        "2001:20::/28",  # ORCHIDv2
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME: Final = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*", re.ASCII)
_FORBIDDEN_URL_CHARS: Final = re.compile(r"[\x00-\x20\x7f\\]")


class UnsafeUrlError(ValueError):
    """The URL may not be called. `reason` is a stable code for metrics and audit."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """Where to send: the checked host name and the one address to connect to."""

    scheme: str
    host: str  # for SNI, certificate verification and the Host header
    port: int
    ip: str  # the pinned address
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        default = DEFAULT_PORTS[self.scheme]
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


class Resolver(Protocol):
    """`socket.getaddrinfo`-shaped: (host, port, family, type) -> address infos."""

    def __call__(
        self, host: str, port: int, family: int = ..., type: int = ..., /
    ) -> Sequence[tuple[Any, Any, Any, Any, tuple[Any, ...]]]: ...


class StaticResolver:
    """A resolver with fixed answers (tests, local runs); unknown names fail."""

    def __init__(self, answers: Mapping[str, Iterable[str]]) -> None:
        self._answers = {name.lower(): tuple(ips) for name, ips in answers.items()}

    def __call__(
        self, host: str, port: int, family: int = 0, type: int = 0, /
    ) -> list[tuple[Any, Any, Any, Any, tuple[Any, ...]]]:
        ips = self._answers.get(host.lower())
        if not ips:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        result: list[tuple[Any, Any, Any, Any, tuple[Any, ...]]] = []
        for ip in ips:
            family_ = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sockaddr: tuple[Any, ...] = (ip, port, 0, 0) if ":" in ip else (ip, port)
            result.append((family_, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return result


def _parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """What BSD `inet_aton` makes of `host` (1 to 4 parts, decimal, 0x hex or 0 octal).

    Implemented here rather than calling `socket.inet_aton`, whose C library
    may also accept trailing text after a space: the result must not depend
    on the platform.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        try:
            if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
                value = int(part[2:] or "0", 16)
            elif re.fullmatch(r"0[0-7]*", part):
                value = int(part, 8)
            elif re.fullmatch(r"[1-9][0-9]*", part):
                value = int(part, 10)
            else:
                return None
        except ValueError:
            return None
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = number * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(number)


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be called, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped_ipv6"
        for embedded in _embedded_v4(ip):
            reason = forbidden_reason(embedded)
            if reason is not None:
                return f"embedded_{reason}"
        if ip.ipv4_mapped is not None:
            # Refused even when the IPv4 address is public: a DNS answer or a
            # literal in this form is never what a real endpoint publishes
            # (getaddrinfo returns plain IPv4), and refusing the whole range
            # leaves no dual-stack parsing difference to exploit.
            return "ipv4_mapped"
        if ip.is_site_local:
            return "site_local"
        if any(ip in net for net in _BLOCKED_V6):
            return _v6_label(ip)
    elif any(ip in net for net in _BLOCKED_V4):
        return _v4_label(ip)
    for label, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link_local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return label
    if not ip.is_global:
        return "not_global"
    return None


def _v4_label(ip: ipaddress.IPv4Address) -> str:
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified or ip in ipaddress.IPv4Network("0.0.0.0/8"):
        return "unspecified"
    if ip.is_link_local:
        return "link_local"
    if ip in ipaddress.IPv4Network("100.64.0.0/10"):
        return "cgnat"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    return "reserved"


def _v6_label(ip: ipaddress.IPv6Address) -> str:
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip in ipaddress.IPv6Network("::/96"):
        return "ipv4_compatible"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if ip in ipaddress.IPv6Network("fc00::/7"):
        return "private"
    return "reserved"


def _is_loopback(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _connectable(ip: IPAddress) -> str:
    """The address to connect to: an IPv4-mapped address as plain IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _literal(host: str) -> IPAddress | None:
    """An IP literal host (canonical or legacy IPv4 form, IPv6), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    legacy = _parse_inet_aton(host)
    if legacy is not None:
        raise UnsafeUrlError(
            "noncanonical_ip", "IPv4 address in a non-canonical form (decimal, hex, octal, short)"
        )
    return None


def check_url(
    url: str,
    allowed_hosts: Iterable[str],
    resolver: Resolver | None = None,
    allow_insecure_loopback: bool = False,
) -> PinnedTarget:
    """Check `url` against the rules above and pin its first address.

    Raises `UnsafeUrlError` with a `reason` code. Messages name the rule
    broken, never the full URL (a query string may carry a token).
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError("malformed", f"URL longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_URL_CHARS.search(url):
        raise UnsafeUrlError("malformed", "URL contains a space, control character or backslash")
    try:
        parts = urlsplit(url)
        port_in_url = parts.port
    except ValueError:
        raise UnsafeUrlError("malformed", "URL cannot be parsed (port or brackets)") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or (scheme == "http" and not allow_insecure_loopback):
        raise UnsafeUrlError("scheme", "only https URLs may be called")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("userinfo", "URLs with user information are refused")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeUrlError("malformed", "URL has no host")
    if "%" in host:
        raise UnsafeUrlError("malformed", "percent-encoded hosts and IPv6 zone ids are refused")
    if not host.isascii():
        raise UnsafeUrlError("malformed", "host names must be ASCII (use the punycode form)")
    port = port_in_url if port_in_url is not None else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise UnsafeUrlError("malformed", "port out of range")

    literal = _literal(host)
    if literal is None and not _HOST_NAME.fullmatch(host):
        raise UnsafeUrlError("malformed", "host is not a valid DNS name")
    if literal is not None and not (allow_insecure_loopback and _is_loopback(literal)):
        reason = forbidden_reason(literal)
        if reason is not None:
            raise UnsafeUrlError("address", f"address not allowed ({reason})")

    allowed = {h.strip().lower().rstrip(".") for h in allowed_hosts}
    if host not in allowed:
        raise UnsafeUrlError("host_not_allowed", "host is not in the webhook allow-list")

    addresses = (
        [literal] if literal is not None else _resolve(host, port, resolver or socket.getaddrinfo)
    )
    for ip in addresses:
        if allow_insecure_loopback and _is_loopback(ip):
            continue
        reason = forbidden_reason(ip)
        if reason is not None:
            raise UnsafeUrlError("address", f"host resolves to an address not allowed ({reason})")
    if scheme == "http" and not all(_is_loopback(ip) for ip in addresses):
        raise UnsafeUrlError("scheme", "plain http is only allowed to a loopback address")

    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return PinnedTarget(
        scheme=scheme, host=host, port=port, ip=_connectable(addresses[0]), path=path
    )


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        infos = resolver(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnsafeUrlError("resolution_failed", "host name could not be resolved") from None
    addresses: list[IPAddress] = []
    for info in infos:
        try:
            ip = ipaddress.ip_address(str(info[4][0]))
        except (ValueError, IndexError):
            raise UnsafeUrlError(
                "resolution_failed", "resolver returned a malformed address"
            ) from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnsafeUrlError("resolution_failed", "host name resolved to no address")
    return addresses


__all__ = [
    "PinnedTarget",
    "Resolver",
    "StaticResolver",
    "UnsafeUrlError",
    "check_url",
    "forbidden_reason",
]
