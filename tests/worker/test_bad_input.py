"""Acceptance: every kind of bad input gets a clear 4xx JSON error and writes nothing."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.protocol import MAX_MEDIA_BYTES

from ..conftest import WorkerHandle
from ..helpers import png_bytes, workflow

pytestmark = pytest.mark.comfyui


def snapshot(base: Path) -> set[str]:
    """Every file under the worker's input and state folders."""
    found = set()
    for folder in ("input", "remote_exec"):
        root = base / folder
        if root.exists():
            found |= {str(p.relative_to(base)) for p in root.rglob("*") if p.is_file()}
    return found


@pytest.fixture
def untouched(worker: WorkerHandle) -> Iterator[None]:
    before = snapshot(worker.base)
    yield
    assert snapshot(worker.base) == before, "a refused request left files behind"


def refused(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code, error
    return error


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def submit(worker: WorkerHandle, body: object) -> httpx.Response:
    return worker.client.post("/v1/jobs", json=body)


def test_invalid_json(worker: WorkerHandle, untouched: None) -> None:
    resp = worker.client.post("/v1/jobs", content=b"{not json",
                              headers={"Content-Type": "application/json"})
    refused(resp, 400, "invalid_json")


@pytest.mark.parametrize("body", [{"workflow": [1, 2]}, {"workflow": "x"}, {}, [1],
                                  {"workflow": {"1": {"inputs": {}}}}])
def test_workflow_not_an_object(worker: WorkerHandle, untouched: None, body: object) -> None:
    refused(submit(worker, body), 400, "invalid_request")


def test_unknown_node_type_passes_comfyui_validation_through(
        worker: WorkerHandle, untouched: None) -> None:
    error = refused(submit(worker, {"workflow": workflow("unknown_node")}), 400)
    assert "NodeThatDoesNotExist" in error["message"]
    # ComfyUI's own type for it: `invalid_prompt` before v0.26, `missing_node_type` since.
    assert error["details"]["error"]["type"] in ("invalid_prompt", "missing_node_type")
    assert "node_errors" in error["details"]


def test_missing_model_is_named_with_what_the_worker_has(
        worker: WorkerHandle, untouched: None) -> None:
    flow = workflow("upscale_tiny")
    flow["2"]["inputs"]["model_name"] = "4x-UltraSharp.pth"
    error = refused(submit(worker, {"workflow": flow}), 400, "missing_model")
    assert "4x-UltraSharp.pth" in error["message"]
    assert "upscale_models" in error["message"]
    assert "tiny_compact_x2.safetensors" in error["message"]
    assert error["node_id"] == "2"
    missing = error["details"]["missing_models"][0]
    assert missing["available"] == ["tiny_compact_x2.safetensors"]


def test_bad_link(worker: WorkerHandle, untouched: None) -> None:
    flow = workflow("invert")
    flow["2"]["inputs"]["image"] = ["99", 0]
    error = refused(submit(worker, {"workflow": flow}), 400)
    assert "99" in str(error["details"]) or "99" in error["message"]


def test_wrong_override_node_id(worker: WorkerHandle, untouched: None) -> None:
    body = {"workflow": workflow("invert"),
            "inputs": [{"node": "42", "field": "width", "value": 8}]}
    error = refused(submit(worker, body), 400, "unknown_node_id")
    assert "42" in error["message"]


def test_override_sets_values(worker: WorkerHandle) -> None:
    image = png_bytes(size=(40, 30))
    body = {"workflow": workflow("load_scale"), "inputs": [
        {"node": "1", "field": "image", "type": "image_base64", "value": b64(image)},
        {"node": "2", "field": "width", "value": 64}]}
    job, _ = worker.run(body)
    assert job["status"] == "completed", job


def test_base64_garbage(worker: WorkerHandle, untouched: None) -> None:
    body = {"workflow": workflow("load_scale"),
            "media": [{"name": "example.png", "data": "!!!not base64!!!"}]}
    refused(submit(worker, body), 400, "bad_base64")


def test_too_many_media(worker: WorkerHandle, untouched: None) -> None:
    media = [{"name": f"m{i}.png", "data": b64(png_bytes())} for i in range(11)]
    refused(submit(worker, {"workflow": workflow("invert"), "media": media}), 413)


def test_media_over_size_limit(worker: WorkerHandle, untouched: None) -> None:
    huge = "A" * (MAX_MEDIA_BYTES * 4 // 3 + 8)
    body = {"workflow": workflow("invert"), "media": [{"name": "big.png", "data": huge}]}
    refused(submit(worker, body), 413, "too_large")


@pytest.mark.parametrize("name,data", [("fake.png", b"this is not an image"),
                                       ("fake.mp4", b"not a video at all, no ftyp"),
                                       ("fake.wav", b"nope")])
def test_content_not_of_declared_type(worker: WorkerHandle, untouched: None,
                                      name: str, data: bytes) -> None:
    body = {"workflow": workflow("invert"), "media": [{"name": name, "data": b64(data)}]}
    error = refused(submit(worker, body), 400, "bad_media")
    assert name in error["message"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.png", "http://localhost/x.png",
                                 "http://10.1.2.3/x.png", "http://192.168.0.1/x.png",
                                 "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]/x.png", "file:///etc/passwd"])
def test_private_urls_refused(worker: WorkerHandle, untouched: None, url: str) -> None:
    body = {"workflow": workflow("invert"), "media": [{"name": "x.png", "url": url}]}
    refused(submit(worker, body), 400, "unsafe_url")


def test_private_webhook_refused(worker: WorkerHandle, untouched: None) -> None:
    body = {"workflow": workflow("invert"), "webhook_url": "http://127.0.0.1:1/hook"}
    refused(submit(worker, body), 400, "unsafe_url")


@pytest.mark.parametrize("name", ["../../x.png", "/etc/x.png", "a/../../x.png",
                                  "x\x00.png", "C:\\x.png", "a//b.png", ""])
def test_hostile_file_names(worker: WorkerHandle, untouched: None, name: str) -> None:
    body = {"workflow": workflow("invert"), "media": [{"name": name, "data": b64(png_bytes())}]}
    refused(submit(worker, body), 400, "unsafe_name")


def test_blob_hash_mismatch(worker: WorkerHandle, untouched: None) -> None:
    data = b"some bytes"
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    refused(worker.client.put(f"/v1/blobs/{wrong}", content=data), 400, "hash_mismatch")
    assert worker.client.post("/v1/blobs/missing",
                              json={"sha256": [wrong]}).json() == {"missing": [wrong]}


def test_unknown_blob_reference(worker: WorkerHandle, untouched: None) -> None:
    sha = hashlib.sha256(b"never uploaded").hexdigest()
    body = {"workflow": workflow("load_scale"), "media": [{"name": "example.png",
                                                           "sha256": sha}]}
    error = refused(submit(worker, body), 400, "missing_blob")
    assert error["details"]["missing"] == [sha]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic dGVzdA=="}])
def test_missing_or_wrong_token(worker: WorkerHandle, headers: dict) -> None:
    with httpx.Client(base_url=worker.url, headers=headers) as anon:
        refused(anon.post("/v1/jobs", json={"workflow": workflow("invert")}), 401,
                "unauthorized")
        refused(anon.get("/v1/jobs"), 401, "unauthorized")
        refused(anon.get("/health", params={"deep": 1}), 401, "unauthorized")
        assert anon.get("/health").status_code == 200


def test_unknown_job(worker: WorkerHandle) -> None:
    refused(worker.client.get("/v1/jobs/nope"), 404, "job_not_found")
    refused(worker.client.delete("/v1/jobs/nope"), 404, "job_not_found")


def test_output_download_is_confined_to_listed_files(worker: WorkerHandle) -> None:
    job, _ = worker.run({"workflow": workflow("invert")})
    for path in ("output/../../remote_exec/jobs", "output/%2e%2e/x", "input/x.png",
                 "output/invert_99999_.png"):
        resp = worker.client.get(f"/v1/jobs/{job['job_id']}/outputs/{path}")
        assert resp.status_code in (400, 404), (path, resp.status_code)
