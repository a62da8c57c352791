"""The RunPod handler's pure parts: worker-comfyui shape, previews, output transports."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from comfy_remote_exec.backends.http import HttpBackend
from comfy_remote_exec.backends.runpod import FOLLOWED_KEPT, RunpodBackend, endpoint_base
from comfy_remote_exec.errors import NotFound, RemoteExecError, RemoteUnavailable
from comfy_remote_exec.platforms.runpod.handler import (
    CHUNK_LIMIT,
    PART_BYTES,
    RunpodHandler,
    from_worker_comfyui,
    is_worker_comfyui,
    shrink_preview,
)
from comfy_remote_exec.protocol import JobSpec, OutputFile
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs


def test_worker_comfyui_shape() -> None:
    body = {"workflow": {"1": {}}, "images": [{"name": "a.png", "image": "aGk="}]}
    assert is_worker_comfyui(body) and is_worker_comfyui({"workflow": {}})
    assert not is_worker_comfyui({"workflow": {}, "media": []})
    assert from_worker_comfyui(body)["media"] == [{"name": "a.png", "data": "aGk="}]


def test_large_previews_shrink_to_fit_a_chunk() -> None:
    buf = io.BytesIO()
    Image.effect_noise((1500, 1500), 64).convert("RGB").save(buf, format="PNG")
    data = {"node": "3", "image_type": "image/png",
            "image": base64.b64encode(buf.getvalue()).decode()}
    small = shrink_preview(data)
    assert small["image_type"] == "image/jpeg" and len(small["image"]) < CHUNK_LIMIT // 4
    assert shrink_preview({"image": "abc"}) == {"image": "abc"}


async def test_outputs_travel_inline_or_in_parts_without_a_bucket(tmp_path: Path) -> None:
    dirs = ComfyDirs(tmp_path)
    (dirs.output).mkdir(parents=True)
    big = bytes(range(256)) * 5000
    (dirs.output / "big.bin").write_bytes(big)
    (dirs.output / "small.txt").write_bytes(b"small")
    handler = RunpodHandler(HttpBackend("http://127.0.0.1:9"), dirs, storage=None)
    small = {"type": "output", "subfolder": "", "filename": "small.txt", "size": 5}
    left, parts = await handler.attach(small, 100)
    assert (left, parts, base64.b64decode(small["data"])) == (95, [], b"small")
    sha = hashlib.sha256(big).hexdigest()
    file = {"type": "output", "subfolder": "", "filename": "big.bin", "size": len(big),
            "sha256": sha}
    _, parts = await handler.attach(file, 10**9)
    assert file["parts"] == len(parts) == -(-len(big) // PART_BYTES)
    assert all(len(json.dumps({"file_part": p})) < CHUNK_LIMIT for p in parts)
    # The client reassembles the parts into the file.
    client = RunpodBackend("ep", "key", api_base="http://127.0.0.1:9")
    for part in parts:
        client._take("job", {"file_part": part})
    client._take("job", {"events": [{"v": 1, "seq": 1, "type": "executed", "ts": 0,
                              "data": {"node": "1", "files": [file]}}]})
    out = OutputFile(node_id="1", key="files", filename="big.bin", subfolder="",
                     type="output", kind="file", size=len(big), sha256=sha)
    buf = io.BytesIO()
    await client.download("job", out, buf)
    assert buf.getvalue() == big
    await client.close()


async def test_downloadable_outputs_are_kept_for_the_last_few_jobs_only() -> None:
    def stream(request: httpx.Request) -> httpx.Response:
        job = request.url.path.rsplit("/", 1)[1]
        data = job.encode()
        file = {"type": "output", "subfolder": "", "filename": f"{job}.txt",
                "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "data": base64.b64encode(data).decode()}
        events = [{"v": 1, "seq": 1, "type": "executed", "ts": 0,
                   "data": {"node": "1", "files": [file]}},
                  {"v": 1, "seq": 2, "type": "job_status", "ts": 0,
                   "data": {"status": "completed"}}]
        return httpx.Response(200, json={"status": "COMPLETED",
                                         "stream": [{"output": {"events": events}}]})

    client = RunpodBackend("ep", "key", api_base="http://runpod.test",
                           client=httpx.AsyncClient(transport=httpx.MockTransport(stream)))
    outputs = {}
    for n in range(FOLLOWED_KEPT + 1):
        job = f"job{n}"
        [executed, _] = [e async for e in client.events(job)]
        outputs[job] = OutputFile.parse(executed.data["files"][0])
    for n in range(1, FOLLOWED_KEPT + 1):
        buf = io.BytesIO()
        await client.download(f"job{n}", outputs[f"job{n}"], buf)
        assert buf.getvalue() == f"job{n}".encode()
    with pytest.raises(RemoteExecError, match="no way to fetch"):
        await client.download("job0", outputs["job0"], io.BytesIO())
    await client.client.aclose()


def test_endpoint_ids_and_urls() -> None:
    assert endpoint_base("abc123") == "https://api.runpod.ai/v2/abc123"
    assert endpoint_base("http://127.0.0.1:5/v2/ep/") == "http://127.0.0.1:5/v2/ep"


async def test_client_retries_429_and_5xx_then_gives_up_clearly() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(503),
               httpx.Response(200, json={"id": "job-1", "status": "IN_QUEUE"})]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return answers.pop(0) if answers else httpx.Response(502)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        rp = RunpodBackend("ep", "key", api_base="http://rp.test/v2", client=client,
                           retry_delay=0.0)
        assert await rp.submit(JobSpec(workflow={"1": {"class_type": "X"}})) == "job-1"
        assert seen == ["Bearer key"] * 3
        with pytest.raises(RemoteUnavailable, match="502"):
            await rp.cancel("job-1")
        assert len(seen) == 3 + 6


async def test_expired_job_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "request does not exist"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        rp = RunpodBackend("ep", "key", api_base="http://rp.test/v2", client=client)
        with pytest.raises(NotFound, match="expired"):
            async for _ in rp.events("gone"):
                pass
