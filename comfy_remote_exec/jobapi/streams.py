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
from typing import BinaryIO

import httpx
from httpx_aiohttp import AiohttpTransport

from ..fsutil import CHUNK

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def http_client(timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """An httpx client on aiohttp's transport (see above)."""
    return httpx.AsyncClient(transport=AiohttpTransport(), timeout=timeout)


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A streamed request body read from `path`."""
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk


async def copy_body(resp: httpx.Response, dest: BinaryIO) -> None:
    """Write a streamed response's body into `dest`."""
    async for chunk in resp.aiter_bytes(CHUNK):
        await asyncio.to_thread(dest.write, chunk)
