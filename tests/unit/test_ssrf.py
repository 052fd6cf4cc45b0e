"""The SSRF guard: only https to allow-listed hosts with public addresses, pinned."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunning.channels.ssrf import (
    PinnedTarget,
    StaticResolver,
    UnsafeUrlError,
    check_url,
    forbidden_reason,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

RESOLVER = StaticResolver(
    {
        "hooks.example.com": [PUBLIC_V4],
        "allowed.example": [PUBLIC_V4],
        "two.example": [PUBLIC_V4, "93.184.216.35"],
        "v6.example": [PUBLIC_V6],
        "mapped-public.example": [f"::ffff:{PUBLIC_V4}"],
        "internal.example": ["10.0.0.5"],
        "metadata.example": ["169.254.169.254"],
        "mixed.example": [PUBLIC_V4, "10.0.0.1"],
        "mixed-v6.example": [PUBLIC_V6, "fd00::1"],
        "mapped.example": ["::ffff:10.0.0.1"],
        "ula.example": ["fd00::1"],
        "cgnat.example": ["100.64.12.34"],
        "localhost": ["127.0.0.1", "::1"],
        "rebind.example": ["0.0.0.0"],
        "scoped.example": ["fe80::1%1"],
    }
)

# Every host below is allow-listed, so a refusal comes from the rule under test
# (scheme, userinfo, address), not from the allow-list.
ALLOWED = [
    "hooks.example.com",
    "allowed.example",
    "two.example",
    "v6.example",
    "mapped-public.example",
    "internal.example",
    "metadata.example",
    "mixed.example",
    "mixed-v6.example",
    "mapped.example",
    "ula.example",
    "cgnat.example",
    "localhost",
    "rebind.example",
    "scoped.example",
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "0x7f.0.0.1",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "fe80::1",
    "10.0.0.1",
    "10.255.255.255",
    "167772161",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "0xc0a80101",
    "100.64.0.1",
    "100.127.255.254",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "0.0.0.0",
    "0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "2002:7f00:1::",
    "2002:c0a8:101::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "64:ff9b::a9fe:a9fe",
    "::127.0.0.1",
    "198.18.0.1",
    "192.0.2.10",
]

HOSTILE = [
    # loopback in every spelling
    ("http://127.0.0.1/", "scheme"),
    ("https://127.0.0.1/", "address"),
    ("https://127.0.0.1./", "address"),
    ("https://2130706433/", "noncanonical_ip"),
    ("https://0x7f000001/", "noncanonical_ip"),
    ("https://0177.0.0.1/", "noncanonical_ip"),
    ("https://127.1/", "noncanonical_ip"),
    ("https://0x7f.0.0.1/", "noncanonical_ip"),
    ("https://[::1]/", "address"),
    ("https://[::ffff:127.0.0.1]/", "address"),
    ("https://[::ffff:7f00:1]/", "address"),
    ("https://localhost/", "address"),
    # link-local / cloud metadata in every spelling
    ("https://169.254.169.254/latest/meta-data/", "address"),
    ("https://2852039166/", "noncanonical_ip"),
    ("https://0xa9fea9fe/", "noncanonical_ip"),
    ("https://0251.0376.0251.0376/", "noncanonical_ip"),
    ("https://169.254.43518/", "noncanonical_ip"),
    ("https://[::ffff:169.254.169.254]/", "address"),
    ("https://[::ffff:a9fe:a9fe]/", "address"),
    ("https://[fe80::1]/", "address"),
    ("https://[64:ff9b::a9fe:a9fe]/", "address"),
    ("https://metadata.example/", "address"),
    # private ranges
    ("https://10.0.0.1/", "address"),
    ("https://10.255.255.255/", "address"),
    ("https://167772161/", "noncanonical_ip"),
    ("https://172.16.0.1/", "address"),
    ("https://172.31.255.254/", "address"),
    ("https://192.168.1.1/", "address"),
    ("https://0xc0a80101/", "noncanonical_ip"),
    ("https://100.64.0.1/", "address"),
    ("https://100.127.255.254/", "address"),
    ("https://[fc00::1]/", "address"),
    ("https://[fd12:3456::1]/", "address"),
    ("https://[fec0::1]/", "address"),
    # unspecified, multicast, reserved, documentation, benchmarking
    ("https://0.0.0.0/", "address"),
    ("https://0/", "noncanonical_ip"),
    ("https://[::]/", "address"),
    ("https://224.0.0.1/", "address"),
    ("https://[ff02::1]/", "address"),
    ("https://240.0.0.1/", "address"),
    ("https://255.255.255.255/", "address"),
    ("https://198.18.0.1/", "address"),
    ("https://192.0.2.10/", "address"),
    # IPv6 forms embedding a private IPv4 address
    ("https://[2002:7f00:1::]/", "address"),
    ("https://[2002:c0a8:101::1]/", "address"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "address"),
    ("https://[::127.0.0.1]/", "address"),
    # schemes
    ("file:///etc/passwd", "scheme"),
    ("gopher://allowed.example:70/_GET", "scheme"),
    ("ftp://allowed.example/", "scheme"),
    ("http://allowed.example/hook", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("data:text/plain,hello", "scheme"),
    ("//allowed.example/hook", "scheme"),
    # userinfo and parser confusion
    ("https://allowed.example@evil.example/", "userinfo"),
    ("https://user:pass@allowed.example/", "userinfo"),
    ("https://allowed.example%2F@evil.example/", "userinfo"),
    ("https://allowed.example\\@evil.example/", "malformed"),
    ("https://allowed.example /hook", "malformed"),
    ("https://allowed.example/\r\nX-Injected: 1", "malformed"),
    ("https://%31%32%37.0.0.1/", "malformed"),
    ("https://[fe80::1%25eth0]/", "malformed"),
    ("https://allowed.example:0/", "malformed"),
    ("https://allowed.example:99999/", "malformed"),
    ("https://[::1/", "malformed"),
    ("https:///hook", "malformed"),
    # allow-list
    ("https://evil.example/", "host_not_allowed"),
    ("https://allowed.example.evil.example/", "host_not_allowed"),
    ("https://evil-allowed.example/", "host_not_allowed"),
    ("https://sub.allowed.example/", "host_not_allowed"),
    # names that resolve to forbidden addresses
    ("https://internal.example/", "address"),
    ("https://mixed.example/", "address"),
    ("https://mixed-v6.example/", "address"),
    ("https://mapped.example/", "address"),
    ("https://mapped-public.example/", "address"),
    ("https://ula.example/", "address"),
    ("https://cgnat.example/", "address"),
    ("https://rebind.example/", "address"),
    ("https://scoped.example/", "address"),
]


def test_at_least_thirty_hostile_urls_are_covered() -> None:
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize(("url", "reason"), HOSTILE, ids=[u for u, _ in HOSTILE])
def test_hostile_urls_are_refused(url: str, reason: str) -> None:
    # Given a hostile URL whose host is allow-listed
    # When it is checked
    # Then it is refused for the expected reason
    with pytest.raises(UnsafeUrlError) as refused:
        check_url(url, ALLOWED, RESOLVER)
    assert refused.value.reason == reason


def test_the_cgnat_range_is_named() -> None:
    with pytest.raises(UnsafeUrlError, match="cgnat"):
        check_url("https://100.64.0.1/", ALLOWED, RESOLVER)


def test_refusal_messages_do_not_echo_the_url() -> None:
    # A query string may carry a token: the message names the rule, not the URL.
    with pytest.raises(UnsafeUrlError) as refused:
        check_url("https://internal.example/hook?token=s3cr3t", ALLOWED, RESOLVER)
    assert "s3cr3t" not in str(refused.value)
    assert "internal.example" not in str(refused.value)


def test_an_unresolvable_name_is_refused() -> None:
    with pytest.raises(UnsafeUrlError) as refused:
        check_url("https://nowhere.example/", ["nowhere.example"], RESOLVER)
    assert refused.value.reason == "resolution_failed"


def test_a_public_host_in_the_allow_list_is_pinned() -> None:
    # Given an allow-listed host resolving to a public address
    # When the URL is checked
    # Then the address is pinned with host, port, path and query
    target = check_url("https://hooks.example.com/dunning/hook?x=1#frag", ALLOWED, RESOLVER)
    assert target == PinnedTarget(
        scheme="https", host="hooks.example.com", port=443, ip=PUBLIC_V4, path="/dunning/hook?x=1"
    )
    assert target.host_header == "hooks.example.com"


def test_host_matching_is_exact_case_insensitive_and_ignores_a_trailing_dot() -> None:
    target = check_url("https://HOOKS.Example.COM.:8443", ["Hooks.Example.Com."], RESOLVER)
    assert (target.host, target.port, target.path) == ("hooks.example.com", 8443, "/")
    assert target.host_header == "hooks.example.com:8443"


def test_the_first_address_is_pinned() -> None:
    assert check_url("https://two.example/", ALLOWED, RESOLVER).ip == PUBLIC_V4


def test_a_public_ipv6_address_is_allowed() -> None:
    target = check_url("https://v6.example/", ALLOWED, RESOLVER)
    assert target.ip == PUBLIC_V6


# IPv4-mapped addresses (::ffff:0:0/96) are refused whatever IPv4 address they
# carry, public ones included (decision 2026-12-04): real endpoints resolve to
# plain IPv4, and refusing the whole range leaves nothing to get wrong.
MAPPED = [
    ("::ffff:127.0.0.1", "embedded_loopback"),
    ("::ffff:7f00:1", "embedded_loopback"),
    ("::ffff:10.0.0.1", "embedded_private"),
    ("::ffff:192.168.1.1", "embedded_private"),
    ("::ffff:169.254.169.254", "embedded_link_local"),
    ("::ffff:100.64.0.1", "embedded_cgnat"),
    ("::ffff:0.0.0.0", "embedded_unspecified"),
    ("::ffff:8.8.8.8", "ipv4_mapped"),
    (f"::ffff:{PUBLIC_V4}", "ipv4_mapped"),
    ("::ffff:808:808", "ipv4_mapped"),
]


@pytest.mark.parametrize(("address", "reason"), MAPPED)
def test_an_ipv4_mapped_literal_is_refused(address: str, reason: str) -> None:
    # Given an allow-listed IPv4-mapped literal, private or public
    # When it is checked
    # Then it is refused, with the embedded address's reason when that is forbidden
    with pytest.raises(UnsafeUrlError) as refused:
        check_url(f"https://[{address}]/hook", [address], RESOLVER)
    assert refused.value.reason == "address"
    assert reason in str(refused.value)
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


def test_a_name_resolving_to_an_ipv4_mapped_public_address_is_refused() -> None:
    with pytest.raises(UnsafeUrlError) as refused:
        check_url("https://mapped-public.example/", ALLOWED, RESOLVER)
    assert refused.value.reason == "address"
    assert "ipv4_mapped" in str(refused.value)


@given(number=st.integers(0, 2**32 - 1))
def test_every_ipv4_mapped_address_is_refused(number: int) -> None:
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | number)
    assert mapped.ipv4_mapped == ipaddress.IPv4Address(number)
    assert forbidden_reason(mapped) is not None
    with pytest.raises(UnsafeUrlError):
        check_url(f"https://[{mapped}]/", [str(mapped)], RESOLVER)


def test_the_plain_ipv4_form_of_a_public_mapped_address_is_allowed() -> None:
    # The refusal is about the form, not the host behind it.
    assert check_url("https://8.8.8.8/", ["8.8.8.8"], RESOLVER).ip == "8.8.8.8"


def test_a_public_ip_literal_in_the_allow_list_is_allowed() -> None:
    target = check_url(f"https://{PUBLIC_V4}/hook", [PUBLIC_V4], RESOLVER)
    assert target.ip == PUBLIC_V4


def test_insecure_loopback_allows_http_to_127_0_0_1_only_when_set() -> None:
    # Given a local receiver on 127.0.0.1
    # When the flag is set, http to it is allowed; without it, refused
    target = check_url(
        "http://127.0.0.1:8080/hook", ["127.0.0.1"], RESOLVER, allow_insecure_loopback=True
    )
    assert target == PinnedTarget("http", "127.0.0.1", 8080, "127.0.0.1", "/hook")
    assert target.host_header == "127.0.0.1:8080"
    with pytest.raises(UnsafeUrlError):
        check_url("http://127.0.0.1:8080/hook", ["127.0.0.1"], RESOLVER)


def test_insecure_loopback_accepts_localhost_resolving_to_both_loopbacks() -> None:
    target = check_url(
        "http://localhost:9000/", ["localhost"], RESOLVER, allow_insecure_loopback=True
    )
    assert target.ip == "127.0.0.1"


@pytest.mark.parametrize(
    "url",
    [
        "http://allowed.example/",  # plain http to a public host
        "http://10.0.0.1/",  # private stays private
        "https://internal.example/",
        "http://0x7f000001/",  # non-canonical forms stay refused
        "https://169.254.169.254/",
    ],
)
def test_insecure_loopback_loosens_nothing_but_loopback(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        check_url(url, ALLOWED, RESOLVER, allow_insecure_loopback=True)


def test_the_default_resolver_is_the_system_one() -> None:
    # localhost resolves to loopback on any machine: refused without the flag.
    with pytest.raises(UnsafeUrlError) as refused:
        check_url("https://localhost/", ["localhost"])
    assert refused.value.reason == "address"


def test_a_resolver_is_called_with_host_and_port() -> None:
    calls: list[tuple[object, ...]] = []

    def resolver(*args: object) -> list[tuple[object, ...]]:
        calls.append(args)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, 8443))]

    check_url("https://hooks.example.com:8443/", ["hooks.example.com"], resolver)  # type: ignore[arg-type]
    assert calls[0][:2] == ("hooks.example.com", 8443)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("100.64.0.1", "cgnat"),
        ("169.254.169.254", "link_local"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.1", "embedded_private"),
        ("::ffff:127.0.0.1", "embedded_loopback"),
        ("::ffff:8.8.8.8", "ipv4_mapped"),
        ("2002:a9fe:a9fe::1", "embedded_link_local"),
        ("fec0::1", "site_local"),
        ("fe80::1", "link_local"),
        # IPv4-compatible addresses are deprecated: refused whatever they embed
        ("::127.0.0.1", "ipv4_compatible"),
        ("::8.8.8.8", "ipv4_compatible"),
        ("64:ff9b::a9fe:a9fe", "embedded_link_local"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "embedded_private"),
    ],
)
def test_forbidden_reason(address: str, reason: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason
