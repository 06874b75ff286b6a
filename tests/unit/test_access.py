"""api/access.py: Host header check (DNS rebinding), CORS origins, API keys."""

from __future__ import annotations

import pytest
from hearth.api.access import CorsPolicy, HostCheck, KeyRing, bearer_token, split_host
from sdk_headers import SDK_PREFLIGHT_HEADERS, request_headers_value

# ---- Host -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [
    "localhost", "localhost:1337", "localhost:1", "LOCALHOST:8080", "LocalHost",
    "127.0.0.1", "127.0.0.1:1337", "[::1]", "[::1]:9", "::1", " localhost:80 ", "localhost:",
    "[::1]:",
])
def test_loopback_hosts_are_allowed(host: str) -> None:
    assert HostCheck([]).allowed(host)


@pytest.mark.parametrize("host", [
    "evil.com", "evil.com:1337", "localhost.evil.com", "localhost.evil.com:1337",
    "127.0.0.1.nip.io", "127.0.0.1.nip.io:1337", "evil.com@localhost", "[::1].evil.com",
    "10.0.0.5", "[::2]:9", "[::1", "[::1]x", "[::1]:x", "localhost:abc", "localhost:1337:evil",
    "localhost:١٢", "0.0.0.0", "",
])
def test_foreign_hosts_are_refused(host: str) -> None:
    assert not HostCheck([]).allowed(host)


def test_missing_host_is_refused() -> None:
    assert not HostCheck([]).allowed(None)
    assert not HostCheck(["myhost.lan"]).allowed(None)


def test_trusted_extra_hosts() -> None:
    check = HostCheck(["myhost.lan", "192.168.1.20", "Box.Local:8080"])
    assert check.allowed("myhost.lan")
    assert check.allowed("myhost.lan:1337")
    assert check.allowed("MYHOST.LAN")
    assert check.allowed("192.168.1.20:1337")
    assert check.allowed("box.local:1")  # a port in the trusted entry does not matter
    assert check.allowed("localhost")  # loopback stays trusted
    assert not check.allowed("evil.com")
    assert not check.allowed("myhost.lan.evil.com")
    assert not check.allowed("other.lan")


def test_star_trusts_every_host() -> None:
    check = HostCheck(["*"])
    assert check.allowed("evil.com:1337")
    assert check.allowed("anything")
    assert check.allowed(None)


@pytest.mark.parametrize(("header", "host"), [
    ("LocalHost:80", "localhost"), ("[::1]:9", "::1"), ("[::1]", "::1"), ("::1", "::1"),
    ("example.com", "example.com"), ("1.2.3.4:5", "1.2.3.4"), ("[::1].evil.com", "[::1].evil.com"),
])
def test_split_host(header: str, host: str) -> None:
    assert split_host(header) == host


# ---- CORS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [
    "http://localhost:5173", "http://localhost", "http://127.0.0.1:8080", "https://localhost",
    "https://127.0.0.1", "http://[::1]:3000", "HTTP://LOCALHOST:5173", "http://localhost:5173/",
])
def test_loopback_origins_allowed(origin: str) -> None:
    assert CorsPolicy(True, []).allowed(origin)


@pytest.mark.parametrize("origin", [
    "http://evil.com", "https://evil.com:443", "null", "http://localhost.evil.com",
    "http://localhost.evil.com:5173", "http://127.0.0.1.nip.io", "http://localhost@evil.com",
    "file://localhost", "ftp://localhost", "chrome-extension://abcdef", "localhost", "",
    "http://[::1", "http://evil.com/#@localhost",
])
def test_other_origins_refused(origin: str) -> None:
    assert not CorsPolicy(True, []).allowed(origin)


def test_missing_origin() -> None:
    assert not CorsPolicy(True, []).allowed(None)


def test_disabled_allows_nothing() -> None:
    policy = CorsPolicy(False, ["http://app.lan", "*"])
    for origin in ("http://localhost:5173", "http://127.0.0.1", "http://app.lan", "http://x"):
        assert not policy.allowed(origin)


def test_extra_origins() -> None:
    policy = CorsPolicy(True, ["http://app.lan:8080/", "https://Chat.Example.com"])
    assert policy.allowed("http://app.lan:8080")
    assert policy.allowed("https://chat.example.com")
    assert policy.allowed("http://localhost:5173")
    assert not policy.allowed("http://app.lan:8081")  # the port is part of an origin
    assert not policy.allowed("https://app.lan:8080")  # so is the scheme
    assert not policy.allowed("http://evil.com")


def test_star_origin_allows_any() -> None:
    policy = CorsPolicy(True, ["*"])
    assert policy.allowed("http://evil.com")
    assert not policy.allowed(None)


def test_preflight_answers_name_what_clients_send() -> None:
    methods = {m.strip() for m in CorsPolicy.ALLOW_METHODS.lower().split(",")}
    headers = {h.strip() for h in CorsPolicy.ALLOW_HEADERS.lower().split(",")}
    assert {"get", "post", "options"} <= methods
    assert {"authorization", "content-type"} <= headers


# ---- keys -------------------------------------------------------------------------------------


def test_keyring_returns_the_key_name() -> None:
    ring = KeyRing([("key1", "alpha-secret"), ("key2", "beta-secret")])
    assert ring.match("alpha-secret") == "key1"
    assert ring.match("beta-secret") == "key2"


@pytest.mark.parametrize("candidate", [
    None, "", "alpha", "alpha-secret ", "ALPHA-SECRET", "alpha-secretx", "\udcff", "é",
])
def test_keyring_refuses(candidate: str | None) -> None:
    assert KeyRing([("key1", "alpha-secret"), ("key2", "beta-secret")]).match(candidate) is None


def test_empty_keyring_matches_nothing() -> None:
    assert KeyRing([]).match("anything") is None
    assert KeyRing([]).match("") is None


def test_keyring_never_exposes_keys() -> None:
    ring = KeyRing([("key1", "alpha-secret")])
    assert "alpha-secret" not in (ring.match("alpha-secret") or "")


def test_keyring_replace_swaps_every_key_and_keeps_redacting_old_ones() -> None:
    ring = KeyRing([("alice", "alpha-secret"), ("bob", "beta-secret")])
    ring.replace([("alice", "alpha-secret"), ("carol", "gamma-secret")])
    assert ring.names == ["alice", "carol"]
    assert ring.match("beta-secret") is None and ring.match("gamma-secret") == "carol"
    assert ring.redact("beta-secret gamma-secret") == "[redacted] [redacted]"


@pytest.mark.parametrize(("authorization", "x_api_key", "token"), [
    ("Bearer abc", None, "abc"),
    ("bearer abc", None, "abc"),
    ("BEARER abc", None, "abc"),
    ("  Bearer   abc  ", None, "abc"),
    ("Bearer abc", "xyz", "abc"),  # Authorization wins
    (None, "xyz", "xyz"),
    ("", " xyz ", "xyz"),
    ("Basic dXNlcjpwYXNz", None, None),
    ("Basic dXNlcjpwYXNz", "xyz", "xyz"),
    ("Bearer", None, None),
    ("Bearer ", "xyz", "xyz"),
    ("abc", None, None),
    (None, None, None),
    (None, "", None),
])
def test_bearer_token(authorization: str | None, x_api_key: str | None,
                      token: str | None) -> None:
    assert bearer_token(authorization, x_api_key) == token


def _allowed(value: str) -> list[str]:
    return [h.strip() for h in value.split(",")]


@pytest.mark.parametrize("sdk", sorted(SDK_PREFLIGHT_HEADERS))
def test_preflight_allows_every_header_an_sdk_asks_for(sdk: str) -> None:
    names = SDK_PREFLIGHT_HEADERS[sdk]
    got = _allowed(CorsPolicy(True, []).allow_headers(request_headers_value(names)))
    assert set(names) <= set(got)
    assert len(got) == len(set(got))  # each name once


def test_preflight_echoes_any_header_name_lower_cased() -> None:
    cors = CorsPolicy(True, [])
    got = _allowed(cors.allow_headers(
        " User-Agent ,X-Stainless-Brand-New, x-my-app,ANTHROPIC-VERSION,authorization,"))
    assert got == ["authorization", "content-type", "x-api-key", "user-agent",
                   "x-stainless-brand-new", "x-my-app", "anthropic-version"]


def test_preflight_asking_for_nothing_gets_the_basics() -> None:
    for requested in (None, "", " , ,"):
        assert _allowed(CorsPolicy(True, []).allow_headers(requested)) == [
            "authorization", "content-type", "x-api-key"]


@pytest.mark.parametrize("bad", ["x-bad header", "x-caf\u00e9", "x:colon", "x;semi", "x\"quote",
                                 "x(paren)", "x/slash", "x\tab"])
def test_preflight_never_echoes_what_is_not_a_header_name(bad: str) -> None:
    got = _allowed(CorsPolicy(True, []).allow_headers(f"x-good,{bad},x-after"))
    assert bad.lower() not in got
    assert "x-good" in got and "x-after" in got


def test_preflight_echo_is_bounded() -> None:
    cors = CorsPolicy(True, [])
    many = ",".join(f"x-h{i}" for i in range(1000))
    got = _allowed(cors.allow_headers(many))
    assert len(got) == CorsPolicy.MAX_ECHOED_HEADERS
    assert got[3:6] == ["x-h0", "x-h1", "x-h2"]  # the first ones asked for are the ones kept
    long = ",".join(f"x-{i:04d}-" + "a" * 200 for i in range(50))
    value = cors.allow_headers(long)
    assert sum(len(n) for n in _allowed(value)) <= CorsPolicy.MAX_ECHOED_CHARS
    assert len(_allowed(value)) > 3


def test_lan_bind_trusts_the_machine_s_own_names() -> None:
    import socket

    from hearth.api.local_names import local_names

    assert local_names("127.0.0.1") == set() and local_names("::1") == set()
    assert local_names("localhost") == set()
    wildcard = local_names("0.0.0.0")
    assert socket.gethostname().lower() in wildcard
    check = HostCheck([], wildcard)
    assert check.allowed(f"{socket.gethostname()}:1337")
    assert not check.allowed("evil.example")
    one = local_names("192.0.2.77")
    assert "192.0.2.77" in one and HostCheck([], one).allowed("192.0.2.77:8080")
