"""Fetches a query image from an http(s) URL without letting the URL reach inside the network
(SSRF): the host is resolved once, every address must be public, the connection goes to that
vetted address (TLS still verified against the host name), redirects are re-checked hop by hop,
and size, time and content type are capped."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from lookalike.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unavailable

MAX_REDIRECTS = 3


def _address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.sixtofour):
        # ::ffff:a.b.c.d and 6to4 2002:AABB:CCDD:: reach the embedded IPv4 address
        ip = ip.ipv4_mapped or ip.sixtofour
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback or ip.is_private)


async def resolve(host: str, port: int, allow_private: bool) -> str:
    """One vetted IP address for host (refusing private, loopback, link-local, multicast ones)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidArgument(f"cannot resolve {host!r}") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise InvalidArgument(f"cannot resolve {host!r}")
    if not allow_private:
        for ip in addresses:
            if not _address_allowed(ip):
                raise PermissionDenied(f"image URL host {host!r} resolves to a non-public address ({ip}); refused")
    return str(addresses[0])


class UrlFetcher:
    def __init__(self, max_bytes: int, timeout_s: float, allow_private: bool = False) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.allow_private = allow_private

    async def fetch(self, url: str) -> bytes:
        try:
            return await asyncio.wait_for(self._fetch(url), timeout=self.timeout_s)
        except TimeoutError as exc:
            raise Unavailable(f"fetching {url!r} took longer than {self.timeout_s:.0f}s") from exc

    async def _fetch(self, url: str) -> bytes:
        async with httpx.AsyncClient(follow_redirects=False, timeout=self.timeout_s, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    parts = urlsplit(url)
                    explicit_port = parts.port  # ValueError when not a number in 0-65535
                except ValueError as exc:
                    raise InvalidArgument(f"invalid image URL: {exc}") from exc
                if parts.scheme not in ("http", "https"):
                    raise InvalidArgument(f"image URL must be http(s), got {parts.scheme or 'no'} scheme")
                if not parts.hostname:
                    raise InvalidArgument("image URL has no host")
                if parts.username or parts.password:
                    raise InvalidArgument("image URL must not carry credentials")
                try:  # an international name as its ASCII (punycode) form, for the Host header
                    host = parts.hostname.encode("idna").decode("ascii")
                except UnicodeError as exc:
                    raise InvalidArgument(f"image URL host {parts.hostname!r} is not a valid host name") from exc
                port = explicit_port or (443 if parts.scheme == "https" else 80)
                ip = await resolve(host, port, self.allow_private)
                netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
                pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
                host_header = (f"[{host}]" if ":" in host else host) + (f":{explicit_port}" if explicit_port else "")
                headers = {"Host": host_header, "Accept": "image/*"}
                request = client.build_request("GET", pinned, headers=headers, extensions={"sni_hostname": host})
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise Unavailable(f"cannot fetch image URL: {exc}") from exc
                try:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise InvalidArgument("redirect without a location")
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise InvalidArgument(f"image URL answered HTTP {response.status_code}")
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if content_type and not (content_type.startswith("image/") or content_type == "application/octet-stream"):
                        raise InvalidArgument(f"image URL returned {content_type!r}, not an image")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > self.max_bytes:
                        raise ResourceExhausted(f"image at URL is {declared} bytes; the limit is {self.max_bytes}")
                    body = bytearray()
                    try:
                        async for chunk in response.aiter_bytes():
                            body.extend(chunk)
                            if len(body) > self.max_bytes:
                                raise ResourceExhausted(f"image at URL is larger than {self.max_bytes} bytes")
                    except httpx.HTTPError as exc:
                        raise Unavailable(f"cannot fetch image URL: {exc}") from exc
                    return bytes(body)
                finally:
                    await response.aclose()
            raise InvalidArgument(f"image URL redirected more than {MAX_REDIRECTS} times")
