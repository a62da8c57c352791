"""The `runpod` backend against an in-memory RunPod: inputs, events, downloads, errors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.backends.runpod import INLINE_INPUT_LIMIT, RunpodBackend, endpoint_base
from comfy_remote_exec.errors import NotFound, RemoteExecError, RemoteUnavailable, Unauthorized
from comfy_remote_exec.protocol import (
    PROTOCOL_VERSION,
    Event,
    Executed,
    ExecutionStart,
    JobSpec,
    JobStatus,
    MediaItem,
    OutputFile,
    ProtocolMismatch,
)
from comfy_remote_exec.protocol.runpod import EventsChunk, FilePart, encode_error

from .fakes import FakeRunpod

SHA = "a" * 64


def backend(fake: FakeRunpod) -> RunpodBackend:
    return RunpodBackend("ep", "key", api_base="http://rp.test/v2", client=fake.client(),
                         retry_delay=0.0)


def output(**fields: object) -> OutputFile:
    base: dict[str, object] = dict(node_id="1", key="files", filename="f.bin", subfolder="",
                                   folder="output", type="file", size_bytes=0, sha256=SHA)
    return OutputFile(**{**base, **fields})  # type: ignore[arg-type]


def test_endpoint_ids_and_urls() -> None:
    assert endpoint_base("abc123") == "https://api.runpod.ai/v2/abc123"
    assert endpoint_base("http://127.0.0.1:5/v2/ep/") == "http://127.0.0.1:5/v2/ep"


async def test_parts_are_joined_into_data_within_one_events_call() -> None:
    big = bytes(range(256)) * 40
    sha = hashlib.sha256(big).hexdigest()
    file = output(filename="big.bin", size_bytes=len(big), sha256=sha, parts=3)
    third = -(-len(big) // 3)
    parts = [FilePart(sha, i, big[i * third:(i + 1) * third]).to_wire() for i in (2, 0, 1)]
    done = Event(2, JobStatus("completed"), 0.0)
    fake = FakeRunpod(streams={"job": [
        *parts, EventsChunk([Event(1, Executed(node="1", files=[file]), 0.0)]).to_wire(),
        EventsChunk([done]).to_wire()]})
    rp = backend(fake)
    [executed, end] = [e async for e in rp.events("job")]
    assert isinstance(executed.payload, Executed) and end.terminal
    [got] = executed.payload.files
    assert got.data is not None and base64.b64decode(got.data) == big
    # A fresh backend downloads it: nothing of the events() call is needed.
    buf = io.BytesIO()
    await backend(FakeRunpod()).download("job", got, buf)
    assert buf.getvalue() == big


async def test_missing_parts_are_an_error_naming_the_file() -> None:
    file = output(filename="lost.bin", size_bytes=10, parts=2)
    fake = FakeRunpod(streams={"job": [
        FilePart(SHA, 0, b"12345").to_wire(),
        EventsChunk([Event(1, Executed(node="1", files=[file]), 0.0)]).to_wire()]})
    with pytest.raises(RemoteUnavailable, match=r"lost\.bin: 1 of 2 parts"):
        [e async for e in backend(fake).events("job")]


async def test_download_reads_only_the_output_file() -> None:
    fake = FakeRunpod(downloads={"http://bucket.test/o/x.bin?sig=1": b"from the bucket"})
    rp = backend(fake)
    buf = io.BytesIO()
    await rp.download("job", output(data=base64.b64encode(b"inline").decode()), buf)
    await rp.download("job", output(download_url="http://bucket.test/o/x.bin?sig=1"), buf)
    assert buf.getvalue() == b"inlinefrom the bucket"
    await rp.download("job", output(data=""), buf)  # an empty file
    with pytest.raises(RemoteExecError, match="no way to fetch") as info:
        await rp.download("job", output(), buf)
    assert info.value.code == "output_unavailable"
    with pytest.raises(RemoteUnavailable, match="HTTP 404"):
        await rp.download("job", output(download_url="http://bucket.test/gone"), buf)


async def test_unknown_events_pass_through_untouched() -> None:
    wire = {"v": PROTOCOL_VERSION, "seq": 1, "type": "remote_exec.future", "ts": 1.5,
            "data": {"anything": [1, {"nested": True}]}}
    fake = FakeRunpod(streams={"job": [{"events": [wire]},
                                       EventsChunk([Event(2, JobStatus("completed"))]).to_wire(),
                                       {"not": "ours"}]})
    [unknown, _] = [e async for e in backend(fake).events("job")]
    assert unknown.type == "remote_exec.future" and unknown.to_wire() == wire


async def test_events_resume_after_a_seq_without_repeats() -> None:
    events = [Event(n, ExecutionStart(), 0.0) for n in (1, 2, 3)]
    fake = FakeRunpod(streams={"job": [EventsChunk(events).to_wire()]},
                      statuses={"job": {"status": "COMPLETED", "output": [
                          EventsChunk([*events, Event(4, JobStatus("completed"))]).to_wire()]}})
    assert [e.seq async for e in backend(fake).events("job", after=2)] == [3, 4]


@pytest.mark.parametrize(("state", "error", "code"), [
    ("CANCELLED", None, None),
    ("TIMED_OUT", None, "timed_out"),
    ("FAILED", encode_error(RemoteExecError("boom", code="node_failed", node_id="7")),
     "node_failed"),
    ("FAILED", json.dumps({"error_message": "handler crashed"}), "worker_error"),
    ("FAILED", "plain words", "runpod_failed"),
])
async def test_a_job_runpod_ended_gets_a_terminal_status(state: str, error: str | None,
                                                         code: str | None) -> None:
    status = {"status": state, **({"error": error} if error else {})}
    fake = FakeRunpod(streams={"job": [EventsChunk([Event(1, ExecutionStart())]).to_wire()]},
                      statuses={"job": status})
    [_, end] = [e async for e in backend(fake).events("job")]
    assert isinstance(end.payload, JobStatus) and end.seq == 2 and end.ts > 0
    assert end.payload.status == ("cancelled" if state == "CANCELLED" else "failed")
    assert (end.payload.error.code if end.payload.error else None) == code


async def test_a_protocol_mismatch_ends_the_job_as_one() -> None:
    mismatch = ProtocolMismatch("the client speaks protocol v2, this side speaks v3")
    fake = FakeRunpod(statuses={"job": {"status": "FAILED", "error": encode_error(mismatch)}})
    [end] = [e async for e in backend(fake).events("job")]
    assert isinstance(end.payload, JobStatus)
    assert isinstance(end.payload.error, ProtocolMismatch)
    assert "v3" in end.payload.error.message


async def test_submit_inlines_small_inputs_and_uploads_large_ones(tmp_path: Path) -> None:
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    small.write_bytes(b"small")
    large.write_bytes(b"L" * (INLINE_INPUT_LIMIT + 1))
    s_sha, l_sha = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (small, large))
    files = {s_sha: small, l_sha: large}
    spec = JobSpec(workflow={"1": {"class_type": "X"}}, media=[
        MediaItem(name="a.png", sha256=s_sha), MediaItem(name="b.png", sha256=l_sha),
        MediaItem(name="c.png", data="aGk=")])
    url = "http://bucket.test/blobs/up?sig=1"
    fake = FakeRunpod(blobs_answer={"missing": [l_sha], "uploads": {l_sha: url}})
    rp = backend(fake)
    done = await rp.submit(spec, files)
    assert (done.job_id, done.uploaded, done.reused) == ("job-2", [s_sha, l_sha], [])
    [op, job] = fake.inputs
    assert op == {"op": "blobs", "sha256": [l_sha], "protocol": PROTOCOL_VERSION}
    assert job["protocol"] == PROTOCOL_VERSION
    assert job["media"] == [{"name": "a.png", "data": base64.b64encode(b"small").decode()},
                            {"name": "b.png", "sha256": l_sha},
                            {"name": "c.png", "data": "aGk="}]
    assert fake.uploads[url] == large.read_bytes()
    # The bucket holds it now: the next job reuses it and uploads nothing.
    fake.blobs_answer = {"missing": [], "uploads": {}}
    again = await rp.submit(spec, files)
    assert (again.uploaded, again.reused) == ([s_sha], [l_sha])
    assert len(fake.uploads) == 1


async def test_a_large_input_without_a_bucket_is_refused_clearly(tmp_path: Path) -> None:
    large = tmp_path / "large.png"
    large.write_bytes(b"L" * (INLINE_INPUT_LIMIT + 1))
    sha = hashlib.sha256(large.read_bytes()).hexdigest()
    fake = FakeRunpod(blobs_answer={"missing": [sha], "uploads": {}})
    with pytest.raises(RemoteExecError, match="BUCKET_ENDPOINT_URL") as info:
        await backend(fake).submit(JobSpec(workflow={"1": {"class_type": "X"}}, media=[
            MediaItem(name="b.png", sha256=sha)]), {sha: large})
    assert info.value.code == "input_too_large"


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
        done = await rp.submit(JobSpec(workflow={"1": {"class_type": "X"}}), {})
        assert (done.job_id, done.uploaded, done.reused) == ("job-1", [], [])
        assert seen == ["Bearer key"] * 3
        with pytest.raises(RemoteUnavailable, match="502"):
            await rp.cancel("job-1")
        assert len(seen) == 3 + 6


async def test_expired_job_and_bad_key_are_clear_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] != "Bearer key":
            return httpx.Response(401)
        return httpx.Response(404, json={"error": "request does not exist"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        rp = RunpodBackend("ep", "key", api_base="http://rp.test/v2", client=client)
        with pytest.raises(NotFound, match="expired"):
            [e async for e in rp.events("gone")]
        bad = RunpodBackend("ep", "nope", api_base="http://rp.test/v2", client=client)
        with pytest.raises(Unauthorized, match="RUNPOD_API_KEY"):
            await bad.cancel("gone")
    with pytest.raises(Unauthorized, match="no RunPod API key"):
        RunpodBackend("ep", None)
