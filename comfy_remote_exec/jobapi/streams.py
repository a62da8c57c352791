"""The HTTP client the backends use, and the file bodies it moves.

`http_client()` is httpx over aiohttp's transport (httpx-aiohttp): the httpx
API (and its MockTransport in tests, httpx-sse for events), with aiohttp's C
HTTP parser underneath, which ComfyUI already loads. Measured on loopback on
the 2-core bench machine: a POST takes 0.37 ms against 0.84 ms with httpx's
own transport, and each job makes three or four of them
(bench/results/profile.md).

File bodies move in 1 MiB chunks with the disk I/O in a thread, both ways,
so a large input or output never sits whole in memory or blocks ComfyUI's
loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import httpx
from httpx_aiohttp import AiohttpTransport

from ..fsutil import CHUNK

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def http_client(timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """An httpx client on aiohttp's transport (see above)."""
    return httpx.AsyncClient(transport=AiohttpTransport(), timeout=timeout)


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


async def file_chunks(path: Path, start: int = 0,
                      stop: int | None = None) -> AsyncIterator[bytes]:
    """A streamed request body read from `path` (its bytes `[start, stop)`)."""
    with path.open("rb") as fh:
        fh.seek(start)
        left = stop - start if stop is not None else None
        while left is None or left > 0:
            chunk = await asyncio.to_thread(fh.read, CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


async def copy_body(resp: httpx.Response, dest: Writable, skip: int = 0) -> int:
    """Write a streamed response's body into `dest`, less its first `skip` bytes;
    returns how many it wrote. A body cut off midway raises `httpx.HTTPError` once
    every byte that came before the cut is written (the caller goes on from there)."""
    written, pending = 0, bytearray()

    async def flush() -> None:
        nonlocal written
        if pending:
            await asyncio.to_thread(dest.write, bytes(pending))
            written += len(pending)
            pending.clear()

    try:
        async for chunk in resp.aiter_bytes():
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            pending += chunk
            if len(pending) >= CHUNK:
                await flush()
    finally:
        await flush()
    return written
