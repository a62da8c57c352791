"""The catalog over RunPod: a `describe` job our handler answers from the worker's
catalog routes, under the real runpod SDK loop, through the emulator. Once the
extension's cache holds it, reading it starts no job."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfy_remote_exec.backends.base import Catalog
from comfy_remote_exec.backends.runpod import RunpodBackend
from comfy_remote_exec.extension.catalog import RemoteCatalogCache

from ..runpod_emulator import RunpodEmulator
from .conftest import SdkWorker

pytestmark = pytest.mark.comfyui

UPSCALER = "tiny_compact_x2.safetensors"


@pytest.fixture
async def backend(emulator: RunpodEmulator, comfy_worker: SdkWorker
                  ) -> AsyncIterator[RunpodBackend]:
    rp = RunpodBackend(emulator.endpoint, emulator.api_key, api_base=emulator.api_base)
    yield rp
    await rp.close()


def describe_jobs(emulator: RunpodEmulator) -> int:
    return sum(1 for job in emulator.jobs.values() if job.input.get("action") == "describe")


async def test_describe_and_hashes_through_the_sdk_loop(
        backend: RunpodBackend, emulator: RunpodEmulator, comfy_worker: SdkWorker) -> None:
    assert isinstance(backend, Catalog)
    catalog = await backend.catalog(None)
    assert catalog is not None and len(catalog.content_version) == 16
    assert UPSCALER in catalog.names("upscale_models")
    assert "UpscaleModelLoader" in catalog.object_info
    job = next(j for j in emulator.jobs.values() if j.input.get("action") == "describe")
    assert job.input["protocol"] == 2 and job.status == "COMPLETED"
    assert await backend.catalog(catalog.content_version) is None  # unchanged
    assert comfy_worker.base is not None
    path = comfy_worker.base / "models" / "upscale_models" / UPSCALER
    hashes = await backend.model_hashes("upscale_models", [UPSCALER, "none.pth"])
    assert hashes == {UPSCALER: hashlib.sha256(path.read_bytes()).hexdigest(),
                      "none.pth": None}


async def test_a_warm_cache_starts_no_job(backend: RunpodBackend, emulator: RunpodEmulator,
                                          tmp_path: Path) -> None:
    cache = RemoteCatalogCache(backend, tmp_path / "catalog.json",
                               max_age=backend.catalog_max_age)
    before = describe_jobs(emulator)
    catalog = await cache.refresh()
    assert catalog is not None and describe_jobs(emulator) == before + 1
    again = RemoteCatalogCache(backend, tmp_path / "catalog.json",
                               max_age=backend.catalog_max_age)  # a restart
    assert await again.wait_current(5) == catalog
    assert not again.stale()
    again.note_version(catalog.content_version)
    assert describe_jobs(emulator) == before + 1
    assert len(emulator.queue) == 0
