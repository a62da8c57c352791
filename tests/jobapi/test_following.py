"""A job submitted with its event stream in the same request (`submit_following`).

Against the worker's real job API (`build_app`, a `JobService`), with a
stand-in executor at the executor seam that runs each job in a few steps, as
ComfyUI's runner would report them. The stream yields the same events as
`GET /v1/jobs/{id}/events`, its connection serves the next job, a stream that
is cut resumes with `after=` (nothing repeated, nothing missing), and a
worker that answers the submission with JSON (one before this) still works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from comfy_remote_exec.jobapi import client as client_module
from comfy_remote_exec.jobapi.client import Following, JobApiClient
from comfy_remote_exec.protocol import (
    COMPLETED,
    Event,
    JobSpec,
    JobStatus,
    Lifecycle,
    Progress,
)
from comfy_remote_exec.worker.app import build_app
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs
from comfy_remote_exec.worker.inputs.blobs import BlobStore
from comfy_remote_exec.worker.service.jobs import Job, JobStore
from comfy_remote_exec.worker.service.service import JobService

from ..modal_standin import CuttingProxy

FLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}}


class SteppingExecutor:
    """Stands in for ComfyUI's runner at the executor seam: each job starts, reports
    `steps` progress events `gap` s apart, and completes."""

    healthy = True

    def __init__(self, steps: int = 3, gap: float = 0.0) -> None:
        self.steps, self.gap = steps, gap
        self.tasks: set[asyncio.Task[None]] = set()

    def active(self) -> int:
        return len(self.tasks)

    async def submit(self, job_id: str, workflow: dict[str, Any], media: dict[str, str], *,
                     life: Lifecycle, sink: Job, **_: Any) -> str:
        task = asyncio.get_running_loop().create_task(self._run(life, sink))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return f"p-{job_id}"

    async def _run(self, life: Lifecycle, sink: Job) -> None:
        await asyncio.sleep(0)
        life.start()
        await sink.changed()
        for step in range(1, self.steps + 1):
            await asyncio.sleep(self.gap)
            await sink.event(Progress(step, self.steps, "1"))
        life.end(COMPLETED)
        await sink.changed()

    async def cancel(self, job_id: str) -> bool:
        return False

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        return {}

    async def report(self) -> dict[str, Any]:
        return {}


@dataclass
class Worker:
    url: str
    peers: set[int]  # the client ports that reached the worker: one per connection


@pytest.fixture
async def worker(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Worker]:
    steps, gap = getattr(request, "param", (3, 0.0))
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http)
        service.attach(SteppingExecutor(steps, gap))  # type: ignore[arg-type]
        app = build_app(service, ComfyDirs(tmp_path / "base"), None)
        peers: set[int] = set()

        @web.middleware
        async def note_peer(request: web.Request, handler: Any) -> web.StreamResponse:
            peers.add(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
            return await handler(request)

        app.middlewares.insert(0, note_peer)
        async with TestServer(app) as server:
            yield Worker(str(server.make_url("")).rstrip("/"), peers)


async def collect(events: AsyncIterator[Event]) -> list[tuple[int, str]]:
    return [(e.seq, e.type) async for e in events]


async def followed(stream: Following | None, timeout: float = 10) -> list[tuple[int, str]]:
    """A submission's stream, read to its end and closed."""
    assert stream is not None
    try:
        return await asyncio.wait_for(collect(stream), timeout)
    finally:
        await stream.aclose()


async def test_the_submission_carries_the_events_and_its_connection_serves_the_next(
        worker: Worker) -> None:
    client = JobApiClient(worker.url)
    try:
        for _ in range(3):
            job_id, stream = await client.submit_following(JobSpec(workflow=FLOW))
            events = await followed(stream)
            assert events == await asyncio.wait_for(collect(client.events(job_id)), 10)
            assert [t for _, t in events] == (
                ["job_status", "job_status"] + ["progress"] * 3 + ["job_status"])
        # Following left the client's own headers alone: a plain submit still gets JSON.
        assert await client.submit(JobSpec(workflow=FLOW))
    finally:
        await client.close()
    assert len(worker.peers) == 1, "one connection served the three jobs and their replays"


async def test_a_stream_left_unread_is_released(worker: Worker) -> None:
    client = JobApiClient(worker.url)
    try:
        job_id, stream = await client.submit_following(JobSpec(workflow=FLOW))
        assert stream is not None
        await stream.aclose()  # never iterated
        assert (await asyncio.wait_for(collect(client.events(job_id)), 10))[-1][1] == "job_status"
    finally:
        await client.close()


@pytest.mark.parametrize("worker", [(8, 0.1)], indirect=True)
async def test_a_cut_submission_stream_resumes_where_it_stopped(worker: Worker) -> None:
    proxy = CuttingProxy(worker.url, cut_after=0.35)
    url = await proxy.start()
    client = JobApiClient(url, retry_delays=(0.01,) * 6)
    try:
        _, stream = await client.submit_following(JobSpec(workflow=FLOW))
        events = await followed(stream, 20)
    finally:
        await client.close()
        await proxy.close()
    assert proxy.cuts, "the submission's stream was cut"
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert events[-1][1] == "job_status" and len(events) == 11


async def test_a_worker_that_answers_with_json_gives_no_stream() -> None:
    """A worker from before this answers every submission with its 202 JSON."""
    async def submit(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"job_id": "older", "status": "queued"}, status=202)

    app = web.Application()
    app.router.add_post("/v1/jobs", submit)
    async with TestServer(app) as server:
        client = JobApiClient(str(server.make_url("")))
        try:
            assert await client.submit_following(JobSpec(workflow=FLOW)) == ("older", None)
        finally:
            await client.close()


async def test_a_followed_stream_that_goes_silent_is_resumed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that carries nothing, not even the worker's keep-alive comment, for
    SILENT_STREAM (here 0.3 s) is taken for dead, as a half-open connection behind a
    proxy would be, and resumed after its last event."""
    monkeypatch.setattr(client_module, "SILENT_STREAM", 0.3)
    asked: list[str] = []
    hang = asyncio.Event()  # never set: the first stream stays open and silent

    async def events(request: web.Request) -> web.StreamResponse:
        asked.append(request.query["after"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if request.query["after"] == "0":
            first = Event(1, Progress(1, 2, node="1"), "j")
            await resp.write(f"id: 1\nevent: progress\ndata: {first.wire_json()}\n\n".encode())
            await hang.wait()
        last = Event(2, JobStatus(COMPLETED), "j")
        await resp.write(f"id: 2\nevent: job_status\ndata: {last.wire_json()}\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_get("/v1/jobs/j/events", events)
    async with TestServer(app) as server:
        client = JobApiClient(str(server.make_url("")))
        try:
            async with asyncio.timeout(10):
                got = [e.seq async for e in client.events("j")]
        finally:
            await client.close()
    assert got == [1, 2] and asked == ["0", "1"]
