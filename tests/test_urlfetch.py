"""The SSRF-safe image URL fetcher (services/gateway/urlfetch.py), against a local http.server.

The server listens on 127.0.0.1, which `allow_private=False` refuses. Tests that need an allowed
first hop make the made-up host `public.test` resolve to it (patching `urlfetch.resolve` for that
name only), so every other host, redirect targets included, still goes through the real checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

import services.gateway.urlfetch as urlfetch
from lookalike.errors import InvalidArgument, LookalikeError, PermissionDenied, ResourceExhausted, Unavailable
from services.gateway.urlfetch import UrlFetcher, _address_allowed

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PUBLIC = "public.test"  # resolves to the local server in tests that patch it in
MAX = 64 * 1024


@dataclass
class Seen:
    path: str
    host: str | None
    accept: str | None


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str | None = "image/png", length: int | None = None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.seen.append(Seen(parts.path, self.headers.get("Host"), self.headers.get("Accept")))
        path = parts.path
        try:
            if path == "/img.png":
                self._send(200, PNG)
            elif path == "/bytes":
                self._send(200, b"x" * int(query["n"]), "application/octet-stream")
            elif path == "/type":
                self._send(200, PNG, query.get("ct") or None)
            elif path == "/host":
                self._send(200, (self.headers.get("Host") or "").encode())
            elif path == "/status":
                self._send(int(query["code"]), b"nope", "text/plain")
            elif path == "/declared-big":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(10 * MAX))
                self.end_headers()
                self.wfile.write(PNG)  # then hangs up: the fetcher must not wait for the rest
            elif path == "/stream":  # no Content-Length: the body ends when the connection closes
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                remaining = int(query["n"])
                while remaining > 0:
                    chunk = min(remaining, 8192)
                    self.wfile.write(b"y" * chunk)
                    remaining -= chunk
            elif path == "/slow":
                time.sleep(float(query["s"]))
                self._send(200, PNG)
            elif path == "/drip":  # headers at once, then one byte every 0.2 s
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif path == "/redirect":
                self.send_response(int(query.get("code", "302")))
                self.send_header("Location", query["to"])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/redirect-empty":
                self.send_response(302)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/chain":  # /chain?n=3 -> /chain?n=2 -> ... -> /img.png
                n = int(query["n"])
                self.send_response(302)
                self.send_header("Location", f"/chain?n={n - 1}" if n > 1 else "/img.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[Seen] = []
        self.sni: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda sslobj, name, ctx: self.sni.append(name)
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:  # e.g. a refused TLS handshake
        pass

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`public.test` resolves to 127.0.0.1 as if it were a vetted public address; every other host
    goes through the real resolve() and its checks. Returns the hosts resolved, in order."""
    real = urlfetch.resolve
    calls: list[str] = []

    async def resolve(host: str, port: int, allow_private: bool) -> str:
        calls.append(host)
        if host == PUBLIC:
            return "127.0.0.1"
        return await real(host, port, allow_private)

    monkeypatch.setattr(urlfetch, "resolve", resolve)
    return calls


def fetch(url: str, *, max_bytes: int = MAX, timeout_s: float = 5.0, allow_private: bool = False) -> bytes:
    return asyncio.run(UrlFetcher(max_bytes, timeout_s, allow_private).fetch(url))


def refused(url: str, error: type[LookalikeError], **kwargs: Any) -> LookalikeError:
    with pytest.raises(error) as info:
        fetch(url, **kwargs)
    assert type(info.value) is error, info.value
    return info.value


# ---- addresses ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
        "192.168.0.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "224.0.0.1", "239.255.255.250",
        "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1", "192.0.0.1",
        "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "ff0e::1", "::ffff:127.0.0.1",
        "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::7f00:1", "2001:db8::1",
        "2002:7f00:1::", "2002:a00:1::", "2002:a9fe:a9fe::",  # 6to4 wrapping loopback, 10/8, metadata
    ],
)
def test_non_public_addresses_refused(address: str) -> None:
    assert not _address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"])
def test_public_addresses_allowed(address: str) -> None:
    assert _address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0", "0.0.0.0", "[::1]",
        "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "10.1.2.3", "172.16.5.4", "192.168.1.1", "[fc00::1]", "[fd12:3456::1]",
        "169.254.169.254", "[fe80::1]", "224.0.0.251", "[ff02::1]", "100.64.0.1", "[2002:7f00:1::]", "[::]",
    ],
)
def test_private_hosts_refused(host: str, server: Server) -> None:
    err = refused(f"http://{host}:{server.port}/img.png", PermissionDenied)
    assert "non-public" in err.message
    assert server.seen == []  # refused before connecting


def test_every_resolved_address_must_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one private record (DNS rebinding) is refused outright."""

    async def getaddrinfo(self: Any, host: str, port: int, **kwargs: Any) -> list[Any]:
        records = {
            "mixed.test": ["93.184.216.34", "10.0.0.7"],
            "mixed6.test": ["2606:4700::1111", "::1"],
            "scoped.test": ["fe80::1%eth0"],
            "public2.test": ["93.184.216.34", "2606:4700::1111"],
        }[host]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in records
        ]

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    for host in ("mixed.test", "mixed6.test", "scoped.test"):
        with pytest.raises(PermissionDenied):
            asyncio.run(urlfetch.resolve(host, 80, allow_private=False))
    assert asyncio.run(urlfetch.resolve("public2.test", 80, allow_private=False)) == "93.184.216.34"
    assert asyncio.run(urlfetch.resolve("mixed.test", 80, allow_private=True)) == "93.184.216.34"


# ---- URL shapes -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "ftp://example.com/a.png",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:11211/stat",
        "ldap://127.0.0.1/",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "//example.com/a.png",
        "example.com/a.png",
        "",
        "http:///a.png",
        "http://",
        "http:\\\\127.0.0.1\\a.png",
        "http://user:secret@example.com/a.png",
        "http://user@example.com/a.png",
        "http://:secret@example.com/a.png",
        "https://user:pw@127.0.0.1/a.png",  # credentials refused before resolving
        "http://[::1",
        "http://example.com:99999/a.png",
        "http://example.com:port/a.png",
        "http://a..b/a.png",
        "http://" + "a" * 64 + ".com/a.png",
        "http://\u0080/a.png",
    ],
)
def test_bad_urls_invalid_argument(url: str) -> None:
    refused(url, InvalidArgument)


def test_unresolvable_host() -> None:
    err = refused("http://no-such-host.invalid/a.png", InvalidArgument)
    assert "resolve" in err.message


def test_uppercase_scheme_is_still_checked(server: Server) -> None:
    refused(f"HTTP://127.0.0.1:{server.port}/img.png", PermissionDenied)


# ---- fetching from the local server -----------------------------------------------------------------

def test_allow_private_fetches_from_local_server(server: Server) -> None:
    assert fetch(f"http://127.0.0.1:{server.port}/img.png", allow_private=True) == PNG
    assert server.seen[-1].accept == "image/*"
    assert fetch(f"http://localhost:{server.port}/img.png?x=1#frag", allow_private=True) == PNG


def test_pinned_address_keeps_the_host_header(server: Server, public: list[str]) -> None:
    """The connection goes to the vetted IP (public.test does not resolve anywhere else), while the
    request still names the original host, with its port."""
    body = fetch(f"http://{PUBLIC}:{server.port}/host")
    assert body == f"{PUBLIC}:{server.port}".encode()
    assert public == [PUBLIC]  # resolved once, by the vetted path only
    assert server.seen[-1].path == "/host"


def test_host_header_of_an_international_name(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    real = urlfetch.resolve

    async def resolve(host: str, port: int, allow_private: bool) -> str:
        return "127.0.0.1" if host == "xn--bcher-kva.test" else await real(host, port, allow_private)

    monkeypatch.setattr(urlfetch, "resolve", resolve)
    assert fetch(f"http://bücher.test:{server.port}/host") == f"xn--bcher-kva.test:{server.port}".encode()


def test_default_port_not_in_host_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit port the Host header is the bare name (what the server saw is checked
    through a transport stub: port 80 cannot be listened on here)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})

    real_client = httpx.AsyncClient
    monkeypatch.setattr(urlfetch.httpx, "AsyncClient", lambda **kw: real_client(transport=httpx.MockTransport(handler), **kw))

    async def resolve(host: str, port: int, allow_private: bool) -> str:
        return {"images.test": "93.184.216.34", "v6.test": "2606:4700::1111"}[host]

    monkeypatch.setattr(urlfetch, "resolve", resolve)
    assert fetch("http://images.test/a.png?size=2") == PNG
    assert fetch("https://v6.test:8443/b.png") == PNG
    assert [str(r.url) for r in seen] == ["http://93.184.216.34/a.png?size=2", "https://[2606:4700::1111]:8443/b.png"]
    assert [r.headers["host"] for r in seen] == ["images.test", "v6.test:8443"]
    assert [r.extensions.get("sni_hostname") for r in seen] == ["images.test", "v6.test"]


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg; charset=binary", "IMAGE/WEBP", "application/octet-stream", None])
def test_accepted_content_types(server: Server, content_type: str | None) -> None:
    url = f"http://127.0.0.1:{server.port}/type" + (f"?ct={quote(content_type)}" if content_type else "")
    assert fetch(url, allow_private=True) == PNG


@pytest.mark.parametrize("content_type", ["text/html", "text/html; charset=utf-8", "application/json", "text/plain", "application/xml"])
def test_wrong_content_type_refused(server: Server, content_type: str) -> None:
    err = refused(f"http://127.0.0.1:{server.port}/type?ct={quote(content_type)}", InvalidArgument, allow_private=True)
    assert "not an image" in err.message


@pytest.mark.parametrize("code", [404, 403, 500, 204, 304])
def test_non_200_refused(server: Server, code: int) -> None:
    refused(f"http://127.0.0.1:{server.port}/status?code={code}", InvalidArgument, allow_private=True)


def test_size_cap_exact_limit_passes(server: Server) -> None:
    assert fetch(f"http://127.0.0.1:{server.port}/bytes?n={MAX}", allow_private=True) == b"x" * MAX


def test_size_cap_declared(server: Server) -> None:
    started = time.monotonic()
    err = refused(f"http://127.0.0.1:{server.port}/declared-big", ResourceExhausted, allow_private=True)
    assert str(10 * MAX) in err.message
    assert time.monotonic() - started < 3
    refused(f"http://127.0.0.1:{server.port}/bytes?n={MAX + 1}", ResourceExhausted, allow_private=True)


def test_size_cap_streamed(server: Server) -> None:
    """No Content-Length: the cap is enforced while reading."""
    assert fetch(f"http://127.0.0.1:{server.port}/stream?n={MAX}", allow_private=True) == b"y" * MAX
    refused(f"http://127.0.0.1:{server.port}/stream?n={MAX + 1}", ResourceExhausted, allow_private=True)
    refused(f"http://127.0.0.1:{server.port}/stream?n={50 * MAX}", ResourceExhausted, allow_private=True)


def test_timeout_before_headers(server: Server) -> None:
    started = time.monotonic()
    refused(f"http://127.0.0.1:{server.port}/slow?s=5", Unavailable, allow_private=True, timeout_s=0.5)
    assert time.monotonic() - started < 2.5


def test_timeout_is_total_not_per_read(server: Server) -> None:
    """A body dripping one byte every 0.2 s never trips a 1 s read timeout; the total one stops it."""
    started = time.monotonic()
    refused(f"http://127.0.0.1:{server.port}/drip", Unavailable, allow_private=True, timeout_s=1.0)
    assert time.monotonic() - started < 3


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    refused(f"http://127.0.0.1:{port}/img.png", Unavailable, allow_private=True)


# ---- redirects ---------------------------------------------------------------------------------------

def redirect(server: Server, to: str, code: int = 302) -> str:
    return f"http://{PUBLIC}:{server.port}/redirect?code={code}&to={quote(to, safe='')}"


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/img.png",
        "http://localhost:{port}/img.png",
        "http://[::1]:{port}/img.png",
        "http://2130706433:{port}/img.png",
        "http://[::ffff:127.0.0.1]:{port}/img.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.1:{port}/",
        "http://[fd00::1]/",
        "http://0.0.0.0:{port}/img.png",
    ],
)
def test_redirect_to_private_address_refused(server: Server, public: list[str], target: str) -> None:
    target = target.format(port=server.port)
    refused(redirect(server, target), PermissionDenied)
    # the first (allowed) hop was fetched; the second was re-checked and never requested
    assert [s.path for s in server.seen] == ["/redirect"]
    assert public == [PUBLIC, urlsplit(target).hostname]


@pytest.mark.parametrize("code", [301, 303, 307, 308])
def test_every_redirect_status_is_rechecked(server: Server, public: list[str], code: int) -> None:
    target = f"http://127.0.0.1:{server.port}/img.png"
    refused(redirect(server, target, code), PermissionDenied)
    # the first (allowed) hop was fetched; the second was re-checked and never requested
    assert [s.path for s in server.seen] == ["/redirect"]
    assert public == [PUBLIC, urlsplit(target).hostname]


@pytest.mark.parametrize(
    "target",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "ftp://example.com/a.png",
        "http://user:pw@public.test:{port}/img.png",
    ],
)
def test_redirect_to_bad_url_refused(server: Server, public: list[str], target: str) -> None:
    refused(redirect(server, target.format(port=server.port)), InvalidArgument)
    assert [s.path for s in server.seen] == ["/redirect"]


def test_redirect_to_malformed_location(server: Server, public: list[str]) -> None:
    # httpx itself rejects the Location while reading the response: a fetch failure, nothing followed
    refused(redirect(server, "http://[::1"), Unavailable)
    assert [s.path for s in server.seen] == ["/redirect"]


def test_redirect_without_location_refused(server: Server, public: list[str]) -> None:
    refused(f"http://{PUBLIC}:{server.port}/redirect-empty", InvalidArgument)


@pytest.mark.parametrize("target", ["/img.png", "img.png", "//public.test:{port}/img.png", "http://public.test:{port}/img.png"])
def test_redirect_within_allowed_host_followed(server: Server, public: list[str], target: str) -> None:
    assert fetch(redirect(server, target.format(port=server.port))) == PNG
    assert [s.path for s in server.seen] == ["/redirect", "/img.png"]
    assert all(s.host == f"{PUBLIC}:{server.port}" for s in server.seen)
    assert public == [PUBLIC, PUBLIC]  # each hop resolved (and vetted) again


def test_redirect_limit(server: Server, public: list[str]) -> None:
    assert fetch(f"http://{PUBLIC}:{server.port}/chain?n=3") == PNG  # 3 redirects: allowed
    err = refused(f"http://{PUBLIC}:{server.port}/chain?n=4", InvalidArgument)
    assert "redirected more than" in err.message


def test_redirect_followed_with_allow_private(server: Server) -> None:
    url = f"http://127.0.0.1:{server.port}/redirect?to={quote(f'http://localhost:{server.port}/img.png', safe='')}"
    assert fetch(url, allow_private=True) == PNG


# ---- TLS: the pinned connection still verifies the certificate against the host name ---------------

@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found (needed to make a test certificate)")
    base = tmp_path_factory.mktemp("tls")
    paths = {}
    for name in (PUBLIC, "other.test"):
        cert, key = base / f"{name}.crt", base / f"{name}.key"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key), "-out", str(cert),
             "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
            check=True, capture_output=True,
        )
        paths[name] = cert
        paths[name + ".key"] = key
    return paths


def tls_server(certificates: dict[str, Path], name: str) -> Server:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certificates[name], certificates[name + ".key"])
    return Server(ctx)


@pytest.fixture
def trust(certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetcher's client trusts both test certificates (and nothing else)."""
    ctx = ssl.create_default_context(cafile=str(certificates[PUBLIC]))
    ctx.load_verify_locations(cafile=str(certificates["other.test"]))
    real_client = httpx.AsyncClient
    monkeypatch.setattr(urlfetch.httpx, "AsyncClient", lambda **kw: real_client(verify=ctx, **kw))


def test_https_pinned_ip_verifies_host_name(certificates: dict[str, Path], trust: None, public: list[str]) -> None:
    """The TCP connection goes to 127.0.0.1, but SNI and certificate checks use public.test."""
    srv = tls_server(certificates, PUBLIC)
    try:
        assert fetch(f"https://{PUBLIC}:{srv.port}/host") == f"{PUBLIC}:{srv.port}".encode()
        assert srv.sni == [PUBLIC]
    finally:
        srv.close()


def test_https_wrong_certificate_refused(certificates: dict[str, Path], trust: None, public: list[str]) -> None:
    """A server presenting a (trusted) certificate for another name is not accepted for public.test."""
    srv = tls_server(certificates, "other.test")
    try:
        err = refused(f"https://{PUBLIC}:{srv.port}/img.png", Unavailable)
        assert "certificate" in err.message.lower() or "hostname" in err.message.lower()
        assert srv.seen == []
    finally:
        srv.close()
