"""The worker's catalog routes against a real worker and its ComfyUI: `/v1/models`,
`content_version` (in `/health`, as `/v1/object_info`'s ETag, with 304), and
`/v1/models/hashes`; and the `http` backend's `Catalog` over them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comfy_remote_exec.backends.base import Catalog
from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.protocol.catalog import RemoteCatalog

from ...conftest import TOKEN, WorkerHandle

UPSCALER = "tiny_compact_x2.safetensors"


def version(worker: WorkerHandle) -> str:
    body = worker.client.get("/health").json()
    assert isinstance(body.get("content_version"), str), body
    return str(body["content_version"])


def until(probe: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return value


def lora_options(info: dict[str, Any]) -> list[str]:
    spec = info["LoraLoader"]["input"]["required"]["lora_name"]
    return list(spec[1]["options"]) if spec[0] == "COMBO" else list(spec[0])


def test_models_lists_files_with_sizes_under_the_version(worker: WorkerHandle) -> None:
    resp = worker.client.get("/v1/models")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    path = worker.base / "models" / "upscale_models" / UPSCALER
    assert {"name": UPSCALER, "size": path.stat().st_size} in body["folders"]["upscale_models"]
    assert "configs" not in body["folders"] and "custom_nodes" not in body["folders"]
    assert body["content_version"] == version(worker)
    assert resp.headers["ETag"] == f'"{body["content_version"]}"'


def test_object_info_etag_and_304(worker: WorkerHandle) -> None:
    resp = worker.client.get("/v1/object_info")
    assert resp.status_code == 200 and "UpscaleModelLoader" in resp.json()
    tag = resp.headers["ETag"]
    assert tag == f'"{version(worker)}"'
    again = worker.client.get("/v1/object_info", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    other = worker.client.get("/v1/object_info", headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200 and other.headers["ETag"] == tag


def test_a_model_appearing_changes_the_version(worker: WorkerHandle) -> None:
    before = version(worker)
    lora = worker.base / "models" / "loras" / "sub" / "catalog_probe.safetensors"
    lora.parent.mkdir(parents=True, exist_ok=True)
    lora.write_bytes(b"not really a lora")
    try:
        after = until(lambda: (v := version(worker)) != before and v, "the version to change")
        listing = worker.client.get("/v1/models").json()
        assert listing["content_version"] == after
        assert {"name": "sub/catalog_probe.safetensors", "size": 17} in \
            listing["folders"]["loras"]
        info = worker.client.get("/v1/object_info")
        assert info.headers["ETag"] == f'"{after}"'
        assert "sub/catalog_probe.safetensors" in lora_options(info.json())
    finally:
        lora.unlink()
    until(lambda: version(worker) == before, "the version to come back")


def test_hashes(worker: WorkerHandle) -> None:
    path = worker.base / "models" / "upscale_models" / UPSCALER
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    resp = worker.client.post("/v1/models/hashes", json={
        "folder": "upscale_models", "names": [UPSCALER, "absent.safetensors"]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"hashes": {UPSCALER: want, "absent.safetensors": None}}
    for body, code in [({"folder": "upscale_models", "names": ["../../x.safetensors"]},
                        "unsafe_name"),
                       ({"folder": "no_such_folder", "names": ["a.pt"]}, "unknown_folder"),
                       ({"folder": "loras"}, "bad_request")]:
        bad = worker.client.post("/v1/models/hashes", json=body)
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["code"] == code


def test_routes_need_the_token(worker: WorkerHandle) -> None:
    import httpx

    with httpx.Client(base_url=worker.url) as anon:
        assert anon.get("/v1/models").status_code == 401
        assert anon.post("/v1/models/hashes", json={}).status_code == 401


async def test_http_backend_catalog(worker: WorkerHandle, tmp_path: Path) -> None:
    backend = HttpBackend(worker.url, TOKEN)
    try:
        assert isinstance(backend, Catalog)
        catalog = await backend.catalog(None)
        assert isinstance(catalog, RemoteCatalog)
        assert catalog.content_version == version(worker)
        assert UPSCALER in catalog.names("upscale_models")
        assert "UpscaleModelLoader" in catalog.object_info
        assert await backend.catalog(catalog.content_version) is None  # unchanged: a 304
        stale = await backend.catalog("0123456789abcdef")
        assert stale is not None and stale.content_version == catalog.content_version
        hashes = await backend.model_hashes("upscale_models", [UPSCALER])
        assert hashes[UPSCALER] and len(hashes[UPSCALER] or "") == 64
    finally:
        await backend.close()


