"""The RunPod handler on a fake job API: chunks, previews, output transports, protocol.

The last tests carry what the handler yields through an in-memory RunPod to
the `runpod` backend, as the SDK's stream would (no ComfyUI, no SDK loop).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from comfy_remote_exec.backends.runpod import RunpodBackend
from comfy_remote_exec.errors import RemoteExecError
from comfy_remote_exec.jobapi.client import JobApiClient
from comfy_remote_exec.platforms.runpod.handler import (
    CHUNK_LIMIT,
    PART_BYTES,
    PREVIEW_LIMIT,
    RunpodHandler,
    from_worker_comfyui,
    is_worker_comfyui,
    shrink_preview,
)
from comfy_remote_exec.protocol import (
    PROTOCOL_VERSION,
    Event,
    Executed,
    ExecutionStart,
    JobStatus,
    JobTiming,
    OutputFile,
    Preview,
    Progress,
    Unknown,
)
from comfy_remote_exec.protocol.runpod import FilePart, decode_error, parse_chunk
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs

from .fakes import FakeJobApi, FakeRunpod

WORKFLOW = {"1": {"class_type": "X", "inputs": {}}}
OURS = {"workflow": WORKFLOW, "protocol": PROTOCOL_VERSION}  # what the `runpod` backend sends


def handler_on(api: FakeJobApi, base: Path, **kw: Any) -> RunpodHandler:
    return RunpodHandler(JobApiClient("http://worker.test", "t", api.client()),
                         ComfyDirs(base), storage=None, **kw)


async def collect(handler: RunpodHandler, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in handler.handle({"id": "rp-1", "input": body})]


def described(dirs: ComfyDirs, name: str, data: bytes, folder: str = "output") -> OutputFile:
    root = dirs.output if folder == "output" else dirs.temp
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    return OutputFile(node_id="9", key="images", filename=name, subfolder="", folder=folder,
                      type="image" if name.endswith(".png") else "file",
                      size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      url=f"/v1/jobs/w1/outputs/{folder}/{name}")


def test_worker_comfyui_shape() -> None:
    body = {"workflow": {"1": {}}, "images": [{"name": "a.png", "image": "aGk="}]}
    assert is_worker_comfyui(body) and is_worker_comfyui({"workflow": {}})
    assert not is_worker_comfyui({"workflow": {}, "media": []})
    assert not is_worker_comfyui({"workflow": {}, "protocol": 2})
    assert from_worker_comfyui(body)["media"] == [{"name": "a.png", "data": "aGk="}]


def test_large_previews_shrink_to_fit_a_chunk() -> None:
    buf = io.BytesIO()
    Image.effect_noise((1500, 1500), 64).convert("RGB").save(buf, format="PNG")
    big = Preview(image=buf.getvalue(), image_type="image/png", node="3")
    small = shrink_preview(big)
    assert small.image_type == "image/jpeg" and small.node == "3"
    assert len(small.image) <= PREVIEW_LIMIT and len(small.image) < CHUNK_LIMIT // 4
    tiny = Preview(image=b"not even an image", image_type="image/png")
    assert shrink_preview(tiny) == Preview(image=b"not even an image", image_type="image/png")


async def test_outputs_travel_inline_or_in_parts_without_a_bucket(tmp_path: Path) -> None:
    dirs = ComfyDirs(tmp_path)
    handler = handler_on(FakeJobApi([]), tmp_path)
    small = described(dirs, "small.txt", b"small")
    left, parts = await handler.attach(small, 100)
    assert (left, parts, small.url) == (95, [], "")
    assert small.data is not None and base64.b64decode(small.data) == b"small"
    big_bytes = bytes(range(256)) * 5000
    big = described(dirs, "big.bin", big_bytes)
    _, parts = await handler.attach(big, 10**9)
    assert big.parts == len(parts) == -(-len(big_bytes) // PART_BYTES) and big.data is None
    assert b"".join(p.data for p in parts) == big_bytes
    assert all(len(json.dumps(p.to_wire())) < CHUNK_LIMIT for p in parts)
    # Inline only while the job's inline budget lasts.
    over = described(dirs, "over.txt", b"x" * 10)
    _, parts = await handler.attach(over, 5)
    assert over.data is None and over.parts == len(parts) == 1


async def test_a_job_of_another_protocol_version_is_refused(tmp_path: Path) -> None:
    api = FakeJobApi([Event(1, JobStatus("completed"))])
    handler = handler_on(api, tmp_path)
    [answer] = await collect(handler, {"workflow": WORKFLOW, "protocol": PROTOCOL_VERSION + 1})
    error = decode_error(answer["error"])
    assert error.code == "protocol_mismatch" and "update this side" in error.message
    assert error.details == {"theirs": PROTOCOL_VERSION + 1, "ours": PROTOCOL_VERSION}
    [answer] = await collect(handler, {"op": "blobs", "sha256": [], "protocol": "one"})
    assert decode_error(answer["error"]).code == "protocol_mismatch"
    assert api.submitted == []
    # Our own version, and inputs naming none (existing clients), are served.
    for body in (OURS, {"workflow": WORKFLOW, "priority": 0}):
        chunks = await collect(handler, body)
        assert [parse_chunk(c) is not None for c in chunks] == [True]
    assert [s["workflow"] for s in api.submitted] == [WORKFLOW, WORKFLOW]
    assert all("protocol" not in s for s in api.submitted)


async def test_progress_reaches_the_sdk_from_the_typed_payload(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    api = FakeJobApi([Event(1, Progress(value=3, max=10, node="5")),
                      Event(2, JobStatus("completed"))])
    handler = handler_on(api, tmp_path, progress=lambda job, data: seen.append(data))
    await collect(handler, OURS)
    assert seen == [{"node": "5", "value": 3, "max": 10}]


async def test_a_failed_job_ends_with_an_error_chunk(tmp_path: Path) -> None:
    failed = JobStatus("failed", RemoteExecError("it broke", code="node_failed", node_id="2"))
    handler = handler_on(FakeJobApi([Event(1, failed)]), tmp_path)
    [events, error] = await collect(handler, OURS)
    assert parse_chunk(events) is not None
    assert decode_error(error["error"]).to_dict() == failed.error.to_dict()  # type: ignore[union-attr]


async def test_worker_comfyui_answer_picks_output_images(tmp_path: Path) -> None:
    dirs = ComfyDirs(tmp_path)
    files = [described(dirs, "a.png", b"png-a"), described(dirs, "p.png", b"png-p", "temp"),
             described(dirs, "t.txt", b"text"),
             described(dirs, "big.png", b"B" * (PART_BYTES + 1))]
    api = FakeJobApi([Event(1, Executed(node="9", files=files)),
                      Event(2, JobStatus("completed"))])
    [answer] = await collect(handler_on(api, tmp_path),
                             {"workflow": WORKFLOW, "images": []})
    assert answer == {"images": [
        {"filename": "a.png", "type": "base64", "data": base64.b64encode(b"png-a").decode()},
        {"filename": "big.png", "type": "base64",
         "data": base64.b64encode(b"B" * (PART_BYTES + 1)).decode()}]}


async def through_runpod(chunks: list[dict[str, Any]]) -> list[Event]:
    """What the backend's events() makes of a handler's chunks, streamed by RunPod."""
    fake = FakeRunpod(streams={"rp-1": chunks})
    rp = RunpodBackend("ep", "key", api_base="http://rp.test/v2", client=fake.client())
    return [event async for event in rp.events("rp-1")]


async def test_large_outputs_in_parts_reach_the_backend_joined(tmp_path: Path) -> None:
    dirs = ComfyDirs(tmp_path)
    data = Image.effect_noise((900, 900), 90).tobytes()
    big = described(dirs, "big.bin", data)
    api = FakeJobApi([Event(1, ExecutionStart()), Event(2, Executed(node="9", files=[big])),
                      Event(3, JobStatus("completed"))])
    chunks = await collect(handler_on(api, tmp_path), OURS)
    kinds = [type(parse_chunk(c)).__name__ for c in chunks]
    assert kinds.count("FilePart") == -(-len(data) // PART_BYTES) > 1
    assert all(len(json.dumps(c)) <= CHUNK_LIMIT for c in chunks)
    events = await through_runpod(chunks)
    assert [e.seq for e in events] == [1, 2, 3]
    [got] = events[1].payload.files  # type: ignore[union-attr]
    assert (got.parts, got.url) == (len([k for k in kinds if k == "FilePart"]), "")
    assert got.data is not None and base64.b64decode(got.data) == data
    buf = io.BytesIO()
    await RunpodBackend("ep", "key").download("rp-1", got, buf)  # a fresh backend
    assert hashlib.sha256(buf.getvalue()).hexdigest() == got.sha256


async def test_unknown_event_types_pass_through_the_stream_untouched(tmp_path: Path) -> None:
    future = Event(1, Unknown("remote_exec.future", {"x": [1, {"y": None}], "z": "w"}), 7.0)
    api = FakeJobApi([future, Event(2, JobStatus("completed"), 8.0)])
    chunks = await collect(handler_on(api, tmp_path), OURS)
    [first, end] = await through_runpod(chunks)
    assert isinstance(first.payload, Unknown) and first.to_wire() == future.to_wire()
    assert end.terminal and end.to_wire() == Event(2, JobStatus("completed"), 8.0).to_wire()


def test_file_parts_round_trip() -> None:
    part = FilePart("b" * 64, 3, b"\x00\xff")
    assert parse_chunk(json.loads(json.dumps(part.to_wire()))) == part


async def test_the_first_job_carries_the_containers_cold_start(tmp_path: Path) -> None:
    ran = JobTiming(queue_wait_s=0.25, cold_start_s=5.0, execution_s=2.0)
    api = FakeJobApi([Event(1, JobStatus("completed", None, ran))])
    handler = handler_on(api, tmp_path, cold_start=(100.0, 130.0))

    async def end() -> JobTiming | None:
        [chunk] = await collect(handler, OURS)
        parsed = parse_chunk(chunk)
        assert parsed is not None
        [event] = parsed.events  # type: ignore[union-attr]
        assert isinstance(event.payload, JobStatus)
        return event.payload.timing

    # The handler's span (its start to the worker ready) holds the worker's own.
    assert await end() == JobTiming(0.25, 30.0, 2.0)
    assert await end() == ran, "only the first job"
