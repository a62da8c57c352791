"""`RemoteCatalogCache` over the real `http` backend, its worker played by an
`httpx.MockTransport` that keeps the job API's catalog contract (ETag, 304)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.errors import BadRequest
from comfy_remote_exec.extension.catalog import RemoteCatalogCache
from comfy_remote_exec.protocol.catalog import (
    ModelEntry,
    RemoteCatalog,
    content_version,
    pack_catalog,
    unpack_catalog,
)


class FakeWorker:
    """The worker's catalog routes over a dict of models; counts what it is asked."""

    def __init__(self) -> None:
        self.models: dict[str, list[ModelEntry]] = {
            "upscale_models": [ModelEntry("tiny.safetensors", 10)]}
        self.info: dict[str, Any] = {"UpscaleModelLoader": {"input": {}}}
        self.calls: list[str] = []
        self.down = False

    @property
    def version(self) -> str:
        return content_version(self.info, self.models)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if self.down:
            return httpx.Response(503, json={"error": {"code": "comfyui_unhealthy",
                                                       "message": "down"}})
        tag = f'"{self.version}"'
        if request.url.path == "/v1/object_info":
            if request.headers.get("If-None-Match") == tag:
                return httpx.Response(304, headers={"ETag": tag})
            return httpx.Response(200, json=self.info, headers={"ETag": tag})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"content_version": self.version, "folders": {
                f: [e.to_dict() for e in es] for f, es in self.models.items()}})
        return httpx.Response(404)


def make(tmp_path: Path, worker: FakeWorker, clock: list[float] | None = None
         ) -> RemoteCatalogCache:
    client = httpx.AsyncClient(transport=httpx.MockTransport(worker.handle))
    now = clock if clock is not None else [1000.0]
    return RemoteCatalogCache(HttpBackend("http://worker", "t", client),
                              tmp_path / "catalog" / "x.json", max_age=60,
                              clock=lambda: now[0])


async def test_fetch_persist_and_start_warm(tmp_path: Path) -> None:
    worker = FakeWorker()
    cache = make(tmp_path, worker)
    assert cache.current() is None and cache.stale()
    assert cache.status() == {"content_version": None, "fetched_at": None, "age_s": None,
                              "refreshing": False, "error": None}
    catalog = await cache.refresh()
    assert catalog is not None and catalog.names("upscale_models") == ["tiny.safetensors"]
    assert catalog.content_version == worker.version
    assert json.loads((tmp_path / "catalog" / "x.json").read_text())["catalog"][
        "content_version"] == worker.version
    calls = len(worker.calls)
    warm = make(tmp_path, worker)  # a restart: the saved copy, no request
    assert warm.current() == catalog and len(worker.calls) == calls
    assert warm.status()["fetched_at"] == 1000.0  # type: ignore[index]


async def test_unchanged_is_one_conditional_request(tmp_path: Path) -> None:
    worker = FakeWorker()
    clock = [1000.0]
    cache = make(tmp_path, worker, clock)
    first = await cache.refresh()
    worker.calls.clear()
    clock[0] += 120
    assert cache.stale()
    assert await cache.refresh() is first
    assert worker.calls == ["GET /v1/object_info"]  # answered 304
    assert not cache.stale() and cache.status()["age_s"] == 0  # type: ignore[index]


async def test_note_version_refreshes_only_on_another_version(tmp_path: Path) -> None:
    worker = FakeWorker()
    cache = make(tmp_path, worker)
    await cache.refresh()
    worker.calls.clear()
    cache.note_version(worker.version)
    assert cache._task is None or cache._task.done()
    assert worker.calls == []
    worker.models["loras"] = [ModelEntry("new.safetensors", 3)]
    cache.note_version(worker.version)
    task = cache._task
    assert task is not None
    await asyncio.wait_for(task, 5)
    current = cache.current()
    assert current is not None and current.names("loras") == ["new.safetensors"]
    assert current.content_version == worker.version


async def test_a_failed_refresh_keeps_the_copy(tmp_path: Path) -> None:
    worker = FakeWorker()
    cache = make(tmp_path, worker)
    first = await cache.refresh()
    worker.down = True
    task = cache.refresh_soon(force=True)
    assert task is not None and await asyncio.wait_for(task, 5) is first
    assert cache.current() is first
    assert cache.status()["error"]  # type: ignore[index]


async def test_wait_current_fetches_once_when_cold(tmp_path: Path) -> None:
    worker = FakeWorker()
    cache = make(tmp_path, worker)
    got = await cache.wait_current(5)
    assert got is not None and got.content_version == worker.version
    worker.calls.clear()
    assert await cache.wait_current(5) is got and worker.calls == []


async def test_a_backend_without_catalog(tmp_path: Path) -> None:
    class Plain:
        name = "plain"

    cache = RemoteCatalogCache(Plain(), tmp_path / "c.json")  # type: ignore[arg-type]
    assert not cache.supported and cache.status() is None
    assert await cache.refresh() is None and cache.refresh_soon() is None


def test_runpod_packing_round_trip() -> None:
    info = {f"Node{i}": {"input": {"required": {"x": ["INT", {"default": i}]}}}
            for i in range(3000)}
    catalog = RemoteCatalog("abcd", info, {"loras": [ModelEntry("a/b.safetensors", 5)]})
    chunks = pack_catalog(catalog, 4096)
    assert len(chunks) > 1 and all(len(c["catalog_gz"]) <= 4096 for c in chunks)
    assert unpack_catalog(list(reversed(chunks))) == catalog
    assert unpack_catalog([{"content_version": "abcd", "unchanged": True}]) is None


async def test_a_failing_remote_is_not_waited_on_again(tmp_path: Path) -> None:
    worker = FakeWorker()
    worker.down = True
    cache = make(tmp_path, worker)
    assert await cache.wait_current(5) is None and cache.status()["error"]  # type: ignore[index]
    calls = len(worker.calls)
    assert await cache.wait_current(5) is None  # no wait: it failed just now
    task = cache._task
    if task is not None:
        await task
    assert len(worker.calls) > calls  # yet it tries again in the background


def test_hostile_model_names_are_refused() -> None:
    for name in ["../etc/passwd", "/abs.safetensors", "a/../../b.pt", "", "x\x00.pt"]:
        with pytest.raises(BadRequest) as refused:
            RemoteCatalog.from_dict({"content_version": "v", "object_info": {},
                                     "models": {"loras": [{"name": name, "size": 1}]}})
        assert refused.value.code == "unsafe_name"
