"""Through a front that cuts every request (the Modal stand-in), on a bare app.

The worker's job API without ComfyUI, behind `CuttingProxy`, with parts small
enough to be cut midway: an input goes up in parts and arrives whole, an
output comes down in `Range` parts and arrives whole, where one request for
either is cut off. A worker that predates parts still gets the input whole.
A quiet event stream (a job waiting for a GPU) is followed across any number
of cuts, while a stream that keeps dropping at once is given up.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from comfy_remote_exec.errors import RemoteUnavailable
from comfy_remote_exec.jobapi.client import JobApiClient
from comfy_remote_exec.protocol import (
    COMPLETED,
    QUEUED,
    Event,
    JobStatus,
    Lifecycle,
    OutputFile,
)
from comfy_remote_exec.worker.api.api import (
    DIRS,
    SERVICE,
    add_routes,
    error_middleware,
    protocol_middleware,
)
from comfy_remote_exec.worker.comfy.outputs import ComfyDirs
from comfy_remote_exec.worker.inputs.blobs import BlobStore
from comfy_remote_exec.worker.service.jobs import Job, JobStore
from comfy_remote_exec.worker.service.service import JobService

from ..helpers import eventually
from ..modal_standin import CuttingProxy

MIB = 1024 * 1024
# 4 MB/s through the stand-in, cut at 0.4 s: a 2 MiB part (0.5 s) is always cut.
RATE, CUT, PART = 4e6, 0.4, 2 * MIB
FAST = (0.01,) * 6  # retry delays: a cut here is expected, not a failing worker


@dataclass
class Bare:
    url: str
    service: JobService
    base: Path
    proxy: CuttingProxy


def app_for(service: JobService, base: Path, *, parts: bool = True) -> web.Application:
    app = web.Application(middlewares=[error_middleware, protocol_middleware])
    app[SERVICE] = service
    app[DIRS] = ComfyDirs(base)
    routes = web.RouteTableDef()
    if parts:
        add_routes(routes)
    else:  # the blob route as it was before parts: the whole body, whatever it says
        @routes.put("/v1/blobs/{sha256}")
        async def blob_put(request: web.Request) -> web.Response:
            await service.put_blob(request.content.iter_chunked(MIB), request.match_info["sha256"])
            return web.json_response({"stored": True}, status=201)
    app.add_routes(routes)
    return app


@pytest.fixture(params=[True], ids=["parts"])
async def bare(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Bare]:
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http)
        async with TestServer(app_for(service, tmp_path, parts=request.param)) as server:
            proxy = CuttingProxy(str(server.make_url("")), cut_after=CUT, rate=RATE)
            url = await proxy.start()
            try:
                yield Bare(url, service, tmp_path, proxy)
            finally:
                await proxy.close()


def input_file(tmp_path: Path, size: int) -> tuple[Path, str, bytes]:
    data = os.urandom(size)
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), data


async def test_an_input_in_parts_arrives_whole_through_cuts(bare: Bare, tmp_path: Path) -> None:
    path, sha, data = input_file(tmp_path, 7 * MIB + 12345)
    client = JobApiClient(bare.url, part_size=PART, retry_delays=FAST)
    try:
        await client.upload_blob(sha, path)
        assert await client.missing_blobs([sha]) == []
    finally:
        await client.close()
    assert bare.service.blobs.path(sha).read_bytes() == data
    assert len(bare.proxy.cuts) >= 3, "parts were cut midway and went on from there"
    assert not bare.service.blobs.partial_path(sha).exists()


async def test_one_request_for_the_input_is_cut(bare: Bare, tmp_path: Path) -> None:
    """Why parts: the same input in one request never arrives."""
    path, sha, _ = input_file(tmp_path, 3 * MIB)
    client = JobApiClient(bare.url, part_size=64 * MIB)
    try:
        with pytest.raises(RemoteUnavailable):
            await client.upload_blob(sha, path)
    finally:
        await client.close()
    assert bare.proxy.cuts and not bare.service.blobs.has(sha)


@pytest.mark.parametrize("bare", [False], ids=["before-parts"], indirect=True)
async def test_a_worker_before_parts_gets_the_input_whole(bare: Bare, tmp_path: Path) -> None:
    bare.proxy.cut_after = 60.0
    path, sha, data = input_file(tmp_path, 3 * MIB)
    client = JobApiClient(bare.url, part_size=PART)
    try:
        await client.upload_blob(sha, path)
    finally:
        await client.close()
    assert bare.service.blobs.path(sha).read_bytes() == data


def listed_output(bare: Bare, data: bytes, name: str = "big.bin") -> tuple[str, OutputFile]:
    path = bare.base / "output" / "cuts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    out = OutputFile(node_id="1", key="files", filename=name, subfolder="cuts",
                     folder="output", type="file", size_bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest())
    job = Job(id="j-out", life=Lifecycle(COMPLETED), outputs=[out])
    bare.service.jobs[job.id] = job
    return job.id, out


@pytest.mark.parametrize("size", [5 * MIB + 999, PART, 0])
async def test_an_output_in_range_parts_arrives_whole_through_cuts(bare: Bare,
                                                                    size: int) -> None:
    data = os.urandom(size)
    job_id, out = listed_output(bare, data)
    client = JobApiClient(bare.url, part_size=PART, retry_delays=FAST)
    buf = io.BytesIO()
    try:
        await client.download(job_id, out, buf)
    finally:
        await client.close()
    assert buf.getvalue() == data
    if size > PART:
        assert len(bare.proxy.cuts) >= 2, "parts were cut midway and went on from there"


async def test_a_server_without_range_still_serves_the_whole_file() -> None:
    """A front that ignores `Range` answers 200 with everything: what came before the
    cut is skipped, not written twice."""
    data = os.urandom(3 * MIB)

    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/v1/jobs/j/outputs/output/x.bin", whole)
    async with TestServer(app) as server:
        # The first answer is cut midway; the second comes whole.
        proxy = CuttingProxy(str(server.make_url("")), cut_after=CUT, rate=RATE, max_cuts=1)
        client = JobApiClient(await proxy.start(), part_size=PART, retry_delays=FAST)
        out = OutputFile(node_id="1", key="files", filename="x.bin", subfolder="",
                         folder="output", type="file", size_bytes=len(data), sha256="")
        buf = io.BytesIO()
        try:
            await client.download("j", out, buf)
        finally:
            await client.close()
            await proxy.close()
    assert buf.getvalue() == data
    assert len(proxy.cuts) == 1 and len(proxy.requests) == 2


def queued_job(bare: Bare) -> Job:
    job = Job(id="j-quiet", life=Lifecycle(QUEUED))
    bare.service.jobs[job.id] = job
    job.log.append(JobStatus(QUEUED))
    return job


async def test_a_quiet_stream_is_followed_across_many_cuts(bare: Bare) -> None:
    """No event for longer than the retries would allow, but each connection stayed up
    (here `steady` 0.3 s, Modal's cut at 150 s against 5 s): the job's end arrives."""
    job = queued_job(bare)
    client = JobApiClient(bare.url, retry_delays=FAST)
    client.steady = 0.3
    try:
        follow = asyncio.ensure_future(_collect(client.events(job.id)))
        await eventually(lambda: len(bare.proxy.cuts) > len(FAST) + 2,
                         "the quiet stream is cut again and again", timeout=20)
        assert not follow.done()
        assert job.life.start() and job.life.end(COMPLETED)
        await job.changed()
        events = await asyncio.wait_for(follow, 10)
    finally:
        await client.close()
    assert [(e.seq, e.type) for e in events] == [(1, "job_status"), (2, "job_status")]


async def test_a_stream_that_keeps_dropping_at_once_is_given_up(bare: Bare) -> None:
    job = queued_job(bare)
    client = JobApiClient(bare.url, retry_delays=FAST)
    client.steady = 30.0
    try:
        with pytest.raises(RemoteUnavailable, match="event stream"):
            await asyncio.wait_for(_collect(client.events(job.id, after=1)), 20)
    finally:
        await client.close()
    assert len(bare.proxy.cuts) == len(FAST) + 1


async def _collect(events: AsyncIterator[Event]) -> list[Event]:
    return [e async for e in events]
