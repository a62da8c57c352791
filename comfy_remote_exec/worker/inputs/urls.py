"""Outbound HTTP to URLs a client chose (media to fetch, webhooks), without SSRF.

A URL may only reach a public address unless the operator allowed private
ones. The host is resolved once, every address is checked, and the request
then goes to the checked address itself (the `Host` header and TLS server
name keep the original host). So a name that resolves to a public address
for the check and to 127.0.0.1 for the connection (DNS rebinding) reaches
nothing it should not. Redirects are followed by hand so that every hop is
checked, not just the first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from ...errors import BadRequest, PayloadTooLarge
from ...protocol import MAX_MEDIA_BYTES

MAX_REDIRECTS = 5
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


@dataclass(frozen=True)
class Pinned:
    """A request target that goes to one checked address."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


async def pin_url(url: str, *, allow_private: bool = False,
                  resolve: Resolver = system_resolve) -> Pinned:
    """Resolve and check `url`'s host; raise `BadRequest` for a refused URL."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise BadRequest(f"URL {url!r} must be http(s) with a host", code="unsafe_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadRequest(f"URL {url!r} has an invalid port", code="bad_url") from None
    if allow_private:  # nothing to refuse: the HTTP client resolves as it likes
        return Pinned(url)
    literal = _ip_literal(host)
    if literal is not None:
        addrs = [literal]
    else:
        try:
            addrs = await resolve(host, port)
        except OSError as exc:
            raise BadRequest(f"cannot resolve {host!r}: {exc}", code="bad_url") from None
        if not addrs:
            raise BadRequest(f"cannot resolve {host!r}", code="bad_url")
    if not all(_is_public(a) for a in addrs):
        raise BadRequest(
            f"URL {url!r} points at a loopback, private or link-local address; "
            "the worker refuses those unless started with --allow-private-urls",
            code="unsafe_url")
    if literal is not None:
        return Pinned(url)
    addr = addrs[0].split("%", 1)[0]
    netloc = f"[{addr}]" if ":" in addr else addr
    if parts.port is not None:
        netloc += f":{parts.port}"
    if "@" in parts.netloc:
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{netloc}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Pinned(urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header},
                  extensions)


async def check_url(url: str, *, allow_private: bool = False,
                    resolve: Resolver = system_resolve) -> None:
    """Refuse non-HTTP URLs, and hosts that resolve to a non-public address."""
    await pin_url(url, allow_private=allow_private, resolve=resolve)


async def post_json(client: httpx.AsyncClient, url: str, payload: Any, *,
                    allow_private: bool = False, timeout: float = 10.0,
                    resolve: Resolver = system_resolve) -> httpx.Response:
    """POST JSON to the checked address of `url` (no redirects)."""
    pinned = await pin_url(url, allow_private=allow_private, resolve=resolve)
    return await client.post(pinned.url, json=payload, headers=pinned.headers,
                             extensions=pinned.extensions, timeout=timeout,
                             follow_redirects=False)


async def fetch_url(client: httpx.AsyncClient, url: str, *, allow_private: bool = False,
                    limit: int = MAX_MEDIA_BYTES,
                    resolve: Resolver = system_resolve) -> bytes:
    """Download `url` (every redirect hop checked), refusing more than `limit` bytes."""
    for _ in range(MAX_REDIRECTS + 1):
        pinned = await pin_url(url, allow_private=allow_private, resolve=resolve)
        try:
            async with client.stream("GET", pinned.url, headers=pinned.headers,
                                     extensions=pinned.extensions,
                                     follow_redirects=False) as resp:
                if resp.is_redirect:
                    url = urljoin(url, resp.headers.get("location", ""))
                    continue
                if resp.status_code != 200:
                    raise BadRequest(f"fetching {url!r} answered HTTP {resp.status_code}",
                                     code="bad_url")
                declared = int(resp.headers.get("content-length") or 0)
                if declared > limit:
                    raise PayloadTooLarge(f"{url!r} is larger than {limit} bytes",
                                          code="too_large")
                buf = bytearray()
                async for chunk in resp.aiter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        raise PayloadTooLarge(f"{url!r} is larger than {limit} bytes",
                                              code="too_large")
                return bytes(buf)
        except httpx.HTTPError as exc:
            raise BadRequest(f"fetching {url!r} failed: {exc}", code="bad_url") from None
    raise BadRequest(f"{url!r} redirected more than {MAX_REDIRECTS} times", code="bad_url")
