"""File bodies going up and response bodies coming down, for the HTTP backends.

Both directions move in 1 MiB chunks with the disk I/O in a thread, so a
large input or output never sits whole in memory or blocks ComfyUI's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import httpx

from ..fsutil import CHUNK


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A streamed request body read from `path`."""
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk


async def copy_body(resp: httpx.Response, dest: BinaryIO) -> None:
    """Write a streamed response's body into `dest`."""
    async for chunk in resp.aiter_bytes(CHUNK):
        await asyncio.to_thread(dest.write, chunk)
