"""`PUT /v1/models/{folder}/{name}`: a blob placed as a model file, on the real app.

The blob comes through the blob route; placing puts it under
`<base>/models/<folder>/<name>` whole, never overwrites (same bytes: 200,
other bytes: 409 `model_conflict`), refuses unknown folders and hostile names,
and makes the executor's cached object_info stale.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from comfy_remote_exec.worker.app import build_app
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs
from comfy_remote_exec.worker.inputs.blobs import BlobStore
from comfy_remote_exec.worker.service.jobs import JobStore
from comfy_remote_exec.worker.service.service import JobService

DATA = os.urandom(50_000)
SHA = hashlib.sha256(DATA).hexdigest()
TOKEN = "t0ken"


class Executor:
    """Just what the model route reaches: the object_info cache to forget."""

    healthy = True

    def __init__(self) -> None:
        self.forgotten = 0

    def active(self) -> int:
        return 0

    def forget_object_info(self) -> None:
        self.forgotten += 1

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        return {}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path, Executor]]:
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http)
        executor = Executor()
        service.attach(executor)  # type: ignore[arg-type]
        app = build_app(service, ComfyDirs(tmp_path / "base"), TOKEN)
        async with TestServer(app) as server, httpx.AsyncClient(
                base_url=str(server.make_url("")),
                headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield client, tmp_path / "base" / "models", executor


async def upload(client: httpx.AsyncClient, data: bytes = DATA) -> str:
    sha = hashlib.sha256(data).hexdigest()
    resp = await client.put(f"/v1/blobs/{sha}", content=data,
                            headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
    assert resp.status_code in (200, 201), resp.text
    return sha


async def place(client: httpx.AsyncClient, folder: str, name: str,
                sha: str = SHA) -> httpx.Response:
    return await client.put(f"/v1/models/{folder}/{name}", json={"sha256": sha})


async def test_a_blob_is_placed_once_and_the_object_info_cache_is_forgotten(api: tuple) -> None:
    client, models, executor = api
    await upload(client)
    first = await place(client, "loras", "sub/style.safetensors")
    assert first.status_code == 201 and first.json()["placed"] is True
    assert (models / "loras" / "sub" / "style.safetensors").read_bytes() == DATA
    assert executor.forgotten == 1
    again = await place(client, "loras", "sub/style.safetensors")
    assert again.status_code == 200
    assert again.json()["placed"] is False and again.json()["same"] is True
    assert executor.forgotten == 1, "nothing changed the second time"
    assert not [p for p in (models / "loras" / "sub").iterdir() if p.name.startswith(".")]


async def test_other_bytes_under_the_name_are_a_conflict_never_overwritten(api: tuple) -> None:
    client, models, _ = api
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "m.ckpt").write_bytes(b"theirs")
    await upload(client)
    resp = await place(client, "checkpoints", "m.ckpt")
    assert resp.status_code == 409
    error = resp.json()["error"]
    assert error["code"] == "model_conflict" and "checkpoints/m.ckpt" in error["message"]
    assert (models / "checkpoints" / "m.ckpt").read_bytes() == b"theirs"


async def test_a_blob_not_uploaded_is_named(api: tuple) -> None:
    client, _, _ = api
    resp = await place(client, "vae", "v.safetensors", "ab" * 32)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "blob_missing"


@pytest.mark.parametrize("folder,name,code", [
    ("nope", "x.safetensors", "unknown_folder"),
    ("loras", "../x.safetensors", "unsafe_name"),
    ("loras", "a/../../x", "unsafe_name"),
    ("loras", ".hidden.safetensors", "unsafe_name"),
    ("loras", "a%5Cb.safetensors", "unsafe_name"),
    ("loras", "a%00b.safetensors", "unsafe_name"),
    ("loras", "%2Fetc%2Fpasswd", "unsafe_name"),
])
async def test_unknown_folders_and_hostile_names_are_refused(api: tuple, folder: str,
                                                             name: str, code: str) -> None:
    client, models, _ = api
    await upload(client)
    resp = await client.put(httpx.URL(str(client.base_url).rstrip("/")
                                      + f"/v1/models/{folder}/{name}"),
                            json={"sha256": SHA})
    assert resp.status_code in (400, 404), resp.text
    if resp.status_code == 400:
        assert resp.json()["error"]["code"] == code
    assert not models.exists() or not any(models.rglob("*.safetensors"))


async def test_a_folder_already_under_models_is_known(api: tuple) -> None:
    client, models, _ = api
    (models / "my_custom").mkdir(parents=True)
    await upload(client)
    assert (await place(client, "my_custom", "x.bin")).status_code == 201


async def test_without_the_token_nothing_is_placed(api: tuple) -> None:
    client, _, _ = api
    resp = await client.put("/v1/models/loras/x.safetensors", json={"sha256": SHA},
                            headers={"Authorization": ""})
    assert resp.status_code == 401


async def test_an_api_without_model_folders_says_so(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http)
        app = build_app(service, ComfyDirs(tmp_path / "base"), None, models=False)
        async with TestServer(app) as server, httpx.AsyncClient(
                base_url=str(server.make_url(""))) as client:
            resp = await client.put("/v1/models/loras/x.safetensors", json={"sha256": SHA})
    assert resp.status_code == 501 and resp.json()["error"]["code"] == "not_supported"
