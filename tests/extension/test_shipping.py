"""Shipping local models (`extension.shipping`) through the http backend's `ModelStore`,
to a real worker app on loopback.

A 50 MB model ships and lands with the local bytes; a second ship puts at most
2 KB on the wire (counted by the client's transport); a transfer killed
halfway goes on from where it stopped, also from a new process (a new backend
and a hash cache read back from disk, which does not re-hash); a name the
remote holds with other bytes is a named conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.backends.base import ModelStore
from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.errors import Conflict
from comfy_remote_exec.extension.shipping import ShipNeed, ship_models
from comfy_remote_exec.hashcache import HashCache
from tests.model_worker import TOKEN, CountingTransport, model_worker

MB = 1024 * 1024
PART = 4 * MB


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local") / "big.safetensors"
    with path.open("wb") as fh:
        for _ in range(50):
            fh.write(os.urandom(MB))
    return path


def backend(transport: httpx.AsyncBaseTransport, url: str) -> HttpBackend:
    return HttpBackend(url, TOKEN, httpx.AsyncClient(transport=transport), part_size=PART)


def need(path: Path, name: str = "big.safetensors", folder: str = "checkpoints") -> ShipNeed:
    return ShipNeed(folder, name, path, path.stat().st_size)


async def test_a_model_ships_once_and_a_second_ship_sends_almost_nothing(
        tmp_path: Path, model_file: Path) -> None:
    async with model_worker(tmp_path) as worker:
        wire = CountingTransport()
        http = backend(wire, worker.url)
        assert isinstance(http, ModelStore)
        hashes = HashCache(tmp_path / "hashes.json")
        version = (await http.health())["content_version"]
        seen: list[int] = []
        first = await ship_models(http, [need(model_file, "sub/big.safetensors")], hashes,
                                  lambda _n, done, _t: seen.append(done))
        size = model_file.stat().st_size
        assert first[0].placed and first[0].sent == size
        assert seen[-1] == size and seen == sorted(seen)
        placed = worker.models / "checkpoints" / "sub" / "big.safetensors"
        local_sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
        assert hashlib.sha256(placed.read_bytes()).hexdigest() == local_sha
        assert worker.executor.forgotten == 1
        assert (await http.health())["content_version"] != version, "the catalog moved"

        before = wire.sent
        again = await ship_models(http, [need(model_file, "sub/big.safetensors")], hashes)
        assert again[0].same and not again[0].placed and again[0].sent == 0
        assert wire.sent - before <= 2048, f"{wire.sent - before} bytes for a repeat"
        assert hashes.hashed == 1
        await http.close()


async def test_a_transfer_killed_halfway_resumes_from_where_it_stopped(
        tmp_path: Path, model_file: Path) -> None:
    size = model_file.stat().st_size
    async with model_worker(tmp_path) as worker:
        halfway = asyncio.Event()
        hashes = HashCache(tmp_path / "state" / "hashes.json")

        def watch(_n: ShipNeed, done: int, _t: int) -> None:
            if done >= size // 2:
                halfway.set()

        first = backend(httpx.AsyncHTTPTransport(), worker.url)
        task = asyncio.create_task(ship_models(first, [need(model_file)], hashes, watch))
        await asyncio.wait_for(halfway.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await first.close()
        sha = hashes.sha256(model_file)[0]
        kept = 0
        for _ in range(100):  # the worker notices the cut request and keeps what came
            kept = worker.blobs.received(sha)
            if kept >= size // 2 - PART:
                break
            await asyncio.sleep(0.05)
        assert kept >= size // 2 - PART, "the worker kept the bytes that came"
        assert not (worker.models / "checkpoints" / "big.safetensors").exists()

        # A new process: a new backend, the hash cache read back from disk.
        restarted = HashCache(tmp_path / "state" / "hashes.json")
        wire = CountingTransport()
        second = backend(wire, worker.url)
        result = await ship_models(second, [need(model_file)], restarted)
        assert restarted.hashed == 0, "the restart did not re-hash the model"
        assert result[0].placed
        assert result[0].sent <= size - kept + PART and result[0].sent < size * 0.6
        placed = worker.models / "checkpoints" / "big.safetensors"
        assert hashlib.sha256(placed.read_bytes()).hexdigest() == sha
        await second.close()


async def test_a_name_the_remote_holds_with_other_bytes_is_a_named_conflict(
        tmp_path: Path) -> None:
    local = tmp_path / "style.safetensors"
    local.write_bytes(b"mine" * 1000)
    async with model_worker(tmp_path) as worker:
        (worker.models / "loras").mkdir(parents=True)
        (worker.models / "loras" / "style.safetensors").write_bytes(b"theirs")
        http = backend(httpx.AsyncHTTPTransport(), worker.url)
        with pytest.raises(Conflict) as caught:
            await ship_models(http, [need(local, "style.safetensors", "loras")], HashCache())
        assert caught.value.code == "model_conflict"
        assert "loras/style.safetensors" in caught.value.message
        assert (worker.models / "loras" / "style.safetensors").read_bytes() == b"theirs"
        await http.close()
