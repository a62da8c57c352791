"""Test helpers that are not fixtures: model files, images, SSE reading."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"


def workflow(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "workflows" / f"{name}.json").read_text())


def write_tiny_upscaler(path: Path, nf: int = 8, blocks: int = 2, scale: int = 2,
                        seed: int = 0) -> None:
    """A random-weight Real-ESRGAN Compact (SRVGGNetCompact) state dict, as safetensors.

    spandrel recognises it by its `body.N` keys and shapes; written by hand
    (header + little-endian float32) so the tests need no torch.
    """
    rng = random.Random(seed)
    tensors: list[tuple[str, tuple[int, ...]]] = [("body.0.weight", (nf, 3, 3, 3)),
                                                  ("body.0.bias", (nf,)), ("body.1.weight", (nf,))]
    idx = 2
    for _ in range(blocks):
        tensors += [(f"body.{idx}.weight", (nf, nf, 3, 3)), (f"body.{idx}.bias", (nf,)),
                    (f"body.{idx + 1}.weight", (nf,))]
        idx += 2
    tensors += [(f"body.{idx}.weight", (3 * scale * scale, nf, 3, 3)),
                (f"body.{idx}.bias", (3 * scale * scale,))]
    header: dict[str, Any] = {}
    blobs = []
    offset = 0
    for name, shape in tensors:
        count = 1
        for dim in shape:
            count *= dim
        data = struct.pack(f"<{count}f", *(rng.uniform(-0.1, 0.1) for _ in range(count)))
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def png_bytes(size: tuple[int, int] = (96, 64),
              color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def sse_events(client: httpx.Client, url: str, *, timeout: float = 60.0,
               stop_after: int | None = None) -> Iterator[dict[str, Any]]:
    """Parse a server-sent event stream into the wire events' JSON."""
    deadline = time.monotonic() + timeout
    seen = 0
    with client.stream("GET", url, timeout=httpx.Timeout(timeout)) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end of stream {url} within {timeout} s")
            if line.startswith("data: "):
                yield json.loads(line[6:])
                seen += 1
                if stop_after is not None and seen >= stop_after:
                    return


async def eventually(probe: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Re-check `probe` until it returns something truthy, or fail after `timeout`.

    For state another process writes after the event a test waited on.
    """
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)
    return value


def write_secrets(path: Path, data: dict[str, Any]) -> None:
    """Write the secrets file with mode 0600 from the start (never briefly readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh)
    os.chmod(path, 0o600)
