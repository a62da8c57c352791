"""File bodies going up and response bodies coming down, for the HTTP backends.

Both directions move in 1 MiB chunks with the disk I/O in a thread, so a
large input or output never sits whole in memory or blocks ComfyUI's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import httpx

from ..fsutil import CHUNK


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
