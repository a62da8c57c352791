"""The benchmark's figures for shipping models and preflight (issue 11).

- `model_ship_mb_s`: a model (50 MB; smaller in `--tiny`) shipped to the
  local backend's worker over loopback, by the run's engine, hashing excluded;
- `repeat_model_bytes`: request bytes on the wire to ship the same model again
  (headers and bodies: the client's counting transport plus the file bytes the
  store reports it streamed);
- `preflight_ms`: median time to preflight the upscale workflow against the
  worker's real catalog, held warm (no round trip: conflicts by size).
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.extension.preflight import conflicts, preflight
from comfy_remote_exec.extension.shipping import ShipNeed, ship_models
from comfy_remote_exec.hashcache import HashCache
from tests.helpers import workflow

from .harness import CountingTransport, HttpStack


def write_model(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 1024 * 1024))
            fh.write(chunk)
            left -= len(chunk)


async def model_ship(stack: HttpStack, root: Path, size: int) -> dict[str, dict[str, Any]]:
    """`model_ship_mb_s` and `repeat_model_bytes` (see the module's docstring)."""
    model = root / "bench-models" / f"ship-{secrets.token_hex(4)}.safetensors"
    model.parent.mkdir(parents=True, exist_ok=True)
    write_model(model, size)
    hashes = HashCache()
    hashes.sha256(model)  # hashing is the local cache's, not the transfer's
    need = ShipNeed("checkpoints", model.name, model, size)
    results = []
    for _ in range(2):
        transport = CountingTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            backend = HttpBackend(stack.worker_url, stack.token, client)
            began = time.perf_counter()
            shipped = (await ship_models(backend, [need], hashes))[0]
            results.append((time.perf_counter() - began, transport.sent + shipped.sent,
                            shipped))
    (first_s, first_bytes, first), (_, repeat_bytes, again) = results
    assert first.placed and again.same, "the bench's model did not ship as expected"
    return {
        "model_ship_mb_s": {"value": round(size / 1024**2 / first_s, 1),
                            "model_bytes": size, "seconds": round(first_s, 3),
                            "wire_bytes": first_bytes},
        "repeat_model_bytes": {"value": repeat_bytes, "model_bytes": size},
    }


async def preflight_ms(stack: HttpStack, runs: int) -> dict[str, Any]:
    """Median ms of a warm preflight of the upscale workflow against the real catalog."""
    async with httpx.AsyncClient() as client:
        backend = HttpBackend(stack.worker_url, stack.token, client)
        catalog = await backend.catalog(None)
    assert catalog is not None
    flow = workflow("upscale_tiny")
    hashes = HashCache()
    known: dict[tuple[str, str, str], str | None] = {}

    def local(_folder: str, _name: str) -> Path | None:
        return None

    times = []
    for _ in range(max(runs, 5)):
        began = time.perf_counter()
        result = preflight(flow, catalog, local, max_ship_bytes=2 * 1024**3)
        await conflicts(result, flow, catalog, None, lambda p: hashes.sha256(p)[0], known)
        times.append((time.perf_counter() - began) * 1000)
        assert result.ok, result.refusal()
    return {"value": round(statistics.median(times), 3), "runs": len(times),
            "max_ms": round(max(times), 3), "node_types": len(catalog.object_info)}
