"""The job API mounted on a bare aiohttp app, without ComfyUI: auth, errors, blobs, seed API."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from comfy_remote_exec.errors import RemoteExecError
from comfy_remote_exec.protocol import (
    FAILED,
    RUNNING,
    JobStatus,
    Lifecycle,
    NodeProgress,
    Preview,
    Progress,
    ProgressState,
)
from comfy_remote_exec.worker.api import api as api_module
from comfy_remote_exec.worker.api.api import (
    DIRS,
    SERVICE,
    add_routes,
    auth_middleware,
    error_middleware,
    protocol_middleware,
)
from comfy_remote_exec.worker.api.compat import add_compat_routes
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs
from comfy_remote_exec.worker.inputs.blobs import BlobStore
from comfy_remote_exec.worker.service.jobs import Job, JobStore
from comfy_remote_exec.worker.service.service import JobService

from ...helpers import eventually

TOKEN = "unit-token"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, JobService]]:
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http)
        app = web.Application(middlewares=[error_middleware, auth_middleware(TOKEN),
                                           protocol_middleware])
        app[SERVICE] = service
        app[DIRS] = ComfyDirs(tmp_path)
        routes = web.RouteTableDef()
        add_routes(routes)
        add_compat_routes(routes)
        app.add_routes(routes)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with TestServer(app) as server, httpx.AsyncClient(
                base_url=str(server.make_url("")), headers=headers) as client:
            yield client, service


async def test_token_required_except_light_health(api: tuple) -> None:
    client, _ = api
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anon:
        resp = await anon.get("/v1/jobs")
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"
        bad = await anon.get("/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert bad.status_code == 401
        assert (await anon.get("/health")).status_code == 503  # no ComfyUI: "starting"
    assert (await client.get("/v1/jobs")).json() == {"jobs": []}


async def test_invalid_json_and_shapes(api: tuple) -> None:
    client, _ = api
    resp = await client.post("/v1/jobs", content=b"{", headers={
        "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    resp = await client.post("/v1/jobs", json={"workflow": 3})
    assert resp.status_code == 400 and "workflow" in resp.json()["error"]["message"]
    resp = await client.get("/v1/jobs", params={"limit": "x"})
    assert resp.status_code == 400
    resp = await client.get("/v1/jobs", params={"status": "weird"})
    assert resp.status_code == 400


async def test_blob_routes(api: tuple) -> None:
    client, _ = api
    data = b"blob bytes"
    sha = hashlib.sha256(data).hexdigest()
    assert (await client.post("/v1/blobs/missing", json={"sha256": [sha]})).json() == {
        "missing": [sha]}
    assert (await client.put(f"/v1/blobs/{sha}", content=data)).status_code == 201
    assert (await client.put(f"/v1/blobs/{sha}", content=data)).json()["stored"] is False
    assert (await client.post("/v1/blobs/missing", json={"sha256": [sha]})).json() == {
        "missing": []}
    assert (await client.put("/v1/blobs/nothex", content=data)).status_code == 400
    assert (await client.post("/v1/blobs/missing", json={"sha256": ["x"]})).status_code == 400


async def test_seed_status_and_events_of_stored_job(api: tuple) -> None:
    client, service = api
    missing = await client.get("/status/unknown")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Call ID not found or invalid."}
    job = Job(id="j1", life=Lifecycle(FAILED, RemoteExecError("it broke", code="x")))
    service.jobs[job.id] = job
    job.log.append(JobStatus(FAILED))
    status = await client.get("/status/j1")
    assert status.status_code == 200
    assert status.json() == {"id": "j1", "call_id": "j1", "status": "FAILED",
                             "error": "it broke", "cancelled": False,
                             "error_details": {"code": "x", "message": "it broke",
                                               "retryable": False}}
    events = await client.get("/v1/jobs/j1/events")
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "id: 1\nevent: job_status\n" in events.text
    assert (await client.get("/v1/jobs/j1/events", params={"after": 1})).text == ""
    conflict = await client.delete("/v1/jobs/j1")
    assert conflict.status_code == 409


async def test_terminal_status_sends_webhook(tmp_path: Path) -> None:
    received: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http,
                             allow_private_urls=True)
        for status in ("completed", "failed", "cancelled"):
            job = Job(id=f"j-{status}", life=Lifecycle(RUNNING),
                      webhook_url="http://hooks.test/h", listener=service._moved)
            service.jobs[job.id] = job
            error = RemoteExecError("boom", code="execution_error") if status == "failed" else None
            assert job.life.end(status, error)
            await job.changed()
        await service.close()
    # Old clients know no cancel: it is job.failed for them, and `cancelled` says why.
    by_job = {r["job_id"]: r for r in received}
    assert {j: (r["event"], r["cancelled"]) for j, r in by_job.items()} == {
        "j-completed": ("job.completed", False), "j-failed": ("job.failed", False),
        "j-cancelled": ("job.failed", True)}
    assert by_job["j-failed"]["error"] == "boom"
    assert by_job["j-failed"]["error_details"]["code"] == "execution_error"
    assert by_job["j-cancelled"]["error"] == "Cancelled by user"
    assert by_job["j-completed"]["error"] is None
    assert all("outputs" not in r and "job" not in r for r in received)


async def test_finished_jobs_drop_previews_and_the_oldest_are_forgotten(
        tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http,
                             keep_jobs=2)
        service.preview_grace = 0.2
        streams = []
        for n in range(3):
            job = Job(id=f"j{n}", life=Lifecycle(RUNNING), listener=service._moved)
            service.store.log_for(job)
            service.jobs[job.id] = job
            service.store.save(job)
            await job.event(Progress(1, 2))
            for _ in range(3):
                job.log.append(Preview(b"\x00\x00\x00", "image/png"))
            await job.event(Progress(2, 2))
            stream = service.stream(job.id)
            assert (await anext(stream)).seq == 1  # a live reader, mid-log
            streams.append(stream)
            job.life.end("completed")
            await job.changed()
        # A reader that comes right after the end still gets the previews...
        assert [e.type async for e in service.stream("j2")].count("preview") == 3
        # ... until the grace period ends; a live reader goes on by seq across that
        # compaction: nothing lost, nothing twice.
        await eventually(lambda: all(e.type != "preview" for e in service.jobs["j2"].events),
                         "previews dropped after the grace period", timeout=10)
        assert [e.seq async for e in streams[2]] == [2, 3, 4, 5, 6]
        late = [(e.seq, e.type) async for e in service.stream("j2")]
        assert late == [(1, "progress"), (5, "progress"), (6, "job_status")]
        assert sorted(service.jobs) == ["j1", "j2"]
        assert not (tmp_path / "jobs" / "j0").exists()
        log = (tmp_path / "jobs" / "j2" / "events.jsonl").read_text().splitlines()
        assert [json.loads(line)["type"] for line in log] == ["progress", "progress",
                                                              "job_status"]
        again = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http,
                           keep_jobs=1)
        assert sorted(again.jobs) == ["j2"]
        await service.close()


async def test_protocol_version_is_negotiated(api: tuple) -> None:
    client, _ = api
    old = await client.get("/v1/jobs", headers={"Remote-Exec-Protocol": "1"})
    assert old.status_code == 400 and old.json()["error"]["code"] == "protocol_mismatch"
    assert "update the client" in old.json()["error"]["message"]
    assert (await client.get("/v1/jobs", headers={"Remote-Exec-Protocol": "2"})).is_success
    assert (await client.get("/v1/jobs")).is_success, "clients naming no version are served"
    health = (await client.get("/health")).json()
    assert health["protocol"] == 2 and health["protocols"] == [2]


async def running_job(service: JobService, job_id: str) -> Job:
    """A running job the service holds, its first event (a `progress`) logged."""
    job = Job(id=job_id, life=Lifecycle(RUNNING), listener=service._moved)
    service.store.log_for(job)
    service.jobs[job.id] = job
    await job.event(Progress(1, 4, node="1"))
    return job


@asynccontextmanager
async def raw_events(client: httpx.AsyncClient, job_id: str
                     ) -> AsyncIterator[Callable[[], Awaitable[bytes]]]:
    """GET the job's events over a bare socket; yields a reader of the next HTTP chunk,
    where the chunked encoding shows each write of the worker."""
    reader, writer = await asyncio.open_connection(client.base_url.host, client.base_url.port)

    async def chunk() -> bytes:
        size = int((await asyncio.wait_for(reader.readline(), 10)).strip(), 16)
        data = await reader.readexactly(size + 2)
        return data[:-2]

    try:
        writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b"200" in head.split(b"\r\n")[0] and b"chunked" in head.lower()
        yield chunk
    finally:
        writer.close()


async def test_events_logged_together_go_out_as_one_write(api: tuple) -> None:
    """ComfyUI sends a `progress_state` and its `progress` back to back: the event stream
    writes them as one HTTP chunk, so the client wakes once for the pair."""
    client, service = api
    job = await running_job(service, "burst")
    async with raw_events(client, job.id) as chunk:
        assert b"event: progress" in await chunk()
        await job.event(ProgressState({"1": NodeProgress(2, 4, "running", "1")}))
        await job.event(Progress(2, 4, node="1"))
        pair = await chunk()
        assert pair.count(b"\n\n") == 2, pair
        assert (pair.index(b"event: progress_state") < pair.index(b"event: progress\n")
                and b"id: 2\n" in pair and b"id: 3\n" in pair), pair
        job.life.end("completed")
        await job.changed()
        assert b"event: job_status" in await chunk()


async def test_a_quiet_event_stream_sends_keep_alive_comments(
        api: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that reports nothing for a while: the stream carries an SSE comment after
    KEEPALIVE of quiet (here 50 ms), so no proxy takes it for idle; events go on as
    before (an SSE client skips a comment)."""
    monkeypatch.setattr(api_module, "KEEPALIVE", 0.05)
    client, service = api
    job = await running_job(service, "quiet")
    async with raw_events(client, job.id) as chunk:
        assert b"event: progress" in await chunk()
        assert await chunk() == b": keep-alive\n\n"
        assert await chunk() == b": keep-alive\n\n"
        await job.event(Progress(2, 4, node="1"))
        assert b"id: 2\nevent: progress" in await chunk()
