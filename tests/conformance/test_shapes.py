"""Conformance without a ComfyUI: every answer of the job API and the polling API,
for a job in every state, and every webhook body, against the schemas of
`shared/specs/job-apis.md`; and the schemas themselves refuse the old shapes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from comfy_remote_exec.errors import JobFailed
from comfy_remote_exec.protocol import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    Executed,
    Executing,
    ExecutionCached,
    Lifecycle,
    OutputFile,
    Progress,
)
from comfy_remote_exec.worker.api import views
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

from ..helpers import png_bytes
from .conform import check, check_answer, violations

TOKEN = "conformance-token"
PNG = png_bytes((4, 4))


class StubRunner:
    """What `JobService.cancel` asks of a runner: this one holds no run, so the
    service ends the job itself (as for a job ComfyUI no longer has)."""

    healthy = True

    async def cancel(self, job_id: str) -> bool:
        return False


def output(node: str, name: str, kind: str, data: bytes, dirs: ComfyDirs) -> OutputFile:
    path = dirs.output / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return OutputFile(node_id=node, key="images" if kind == "image" else "files",
                      filename=name, subfolder="", folder="output", type=kind,
                      size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                      url=f"/v1/jobs/x/outputs/output/{name}")


def stock_jobs(service: JobService, dirs: ComfyDirs) -> dict[str, Job]:
    """A job in each state, as the runner leaves them."""
    jobs = {
        "queued": Job(id="queued", nodes_total=3),
        "running": Job(id="running", life=Lifecycle(RUNNING, started_at=1.0e9),
                       nodes_total=4, prompt_id="p-run"),
        "completed": Job(id="completed", life=Lifecycle(COMPLETED, started_at=1.0e9,
                                                        finished_at=1.0e9 + 3),
                         nodes_total=3, user_id="u1", priority=2),
        "failed": Job(id="failed", life=Lifecycle(FAILED, JobFailed(
            "KSampler (node 3): out of memory", code="execution_error", node_id="3",
            log_tail=["line 1", "line 2"]), started_at=1.0e9, finished_at=1.0e9 + 1),
            nodes_total=3),
        "cancelled": Job(id="cancelled", life=Lifecycle(CANCELLED, started_at=1.0e9,
                                                        finished_at=1.0e9 + 2),
                         nodes_total=3),
    }
    for n, job in enumerate(jobs.values()):
        job.created_at = 1.0e9 + n
    running = jobs["running"]
    running.track(ExecutionCached(["1"]))
    running.track(Executing("2"))
    running.track(Progress(12, 49, "2"))
    running.log.append(Progress(12, 49, "2"))
    running.outputs.append(output("9", "early.png", "image", PNG, dirs))
    done = jobs["completed"]
    done.track(Executed("3", "3", {"images": []}, [output("3", "done.png", "image", PNG, dirs)]))
    done.track(Executed("4", "4", {"text": ["hello", "world"]},
                        [output("4", "notes.txt", "text", "é text\n".encode(), dirs)]))
    for job in jobs.values():
        service.jobs[job.id] = job
    return jobs


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Job]]]:
    """The API on a bare app, and a client that checks every answer it gets."""
    async def conforms(resp: httpx.Response) -> None:
        await resp.aread()
        check_answer(resp.request.method, resp.request.url.raw_path.decode(),
                     resp.status_code, resp.json())

    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http)
        dirs = ComfyDirs(tmp_path / "comfy")
        app = web.Application(middlewares=[error_middleware, auth_middleware(TOKEN),
                                           protocol_middleware])
        app[SERVICE], app[DIRS] = service, dirs
        routes = web.RouteTableDef()
        add_routes(routes)
        add_compat_routes(routes)
        app.add_routes(routes)
        service.attach(StubRunner())  # type: ignore[arg-type]
        jobs = stock_jobs(service, dirs)
        async with TestServer(app) as server, httpx.AsyncClient(
                base_url=str(server.make_url("")), headers={"Authorization": f"Bearer {TOKEN}"},
                event_hooks={"response": [conforms]}) as client:
            yield client, jobs


async def test_job_views_in_every_state(api: tuple) -> None:
    client, _ = api
    got = {}
    for job_id in ("queued", "running", "completed", "failed", "cancelled"):
        resp = await client.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200
        got[job_id] = resp.json()
    assert got["queued"]["status"] == "queued" and got["queued"]["progress"] == 0
    running = got["running"]
    assert running["status"] == "running"
    assert running["progress_details"] == {"current_node": "2", "nodes_completed": 1,
                                           "nodes_total": 4, "step": "12/49"}
    assert running["progress"] == int(50 * 1 / 4 + 50 * 12 / 49)
    assert running["started_at"] == "2001-09-09T01:46:40.000+00:00"
    done = got["completed"]
    assert done["progress"] == 100 and done["error"] is None
    assert done["completed_at"] == "2001-09-09T01:46:43.000+00:00"
    image, text_file, *texts = done["outputs"]
    assert (image["filename"], image["type"], image["node_id"]) == ("done.png", "image", "3")
    assert base64.b64decode(image["data"]) == PNG and image["encoding"] == "base64"
    assert image["size_bytes"] == len(PNG) and image["folder"] == "output"
    assert text_file["type"] == "text" and text_file["data"] == "é text\n"
    assert [(t["filename"], t["data"]) for t in texts] == [
        ("text_output_4.txt", "hello"), ("text_output_4_1.txt", "world")]
    failed = got["failed"]
    assert failed["error"] == "KSampler (node 3): out of memory"
    assert failed["error_details"]["code"] == "execution_error"
    assert failed["error_log_tail"] == ["line 1", "line 2"] and not failed["cancelled"]
    cancelled = got["cancelled"]
    assert (cancelled["status"], cancelled["error"], cancelled["cancelled"]) == (
        "failed", "Cancelled by user", True)
    assert cancelled["error_details"]["code"] == "cancelled"


async def test_inline_data_by_size_and_request(api: tuple, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    client, _ = api

    async def outputs(job_id: str, **params: str) -> list[dict[str, Any]]:
        resp = await client.get(f"/v1/jobs/{job_id}", params=params)
        assert resp.status_code == 200, resp.text
        return list(resp.json()["outputs"])

    # A running job's outputs come without data unless asked for.
    [early] = await outputs("running")
    assert "data" not in early and early["data_omitted"] == "job_running"
    for params in ({"inline": "all"}, {"base64": "1"}):
        [early] = await outputs("running", **params)
        assert base64.b64decode(early["data"]) == PNG
    assert all(o["data_omitted"] == "not_requested" and "data" not in o
               for o in await outputs("completed", inline="none"))
    monkeypatch.setattr(views, "INLINE_LIMIT", len(PNG) - 1)
    image, *_ = await outputs("completed")
    assert "data" not in image and image["data_omitted"] == "too_large"
    image, *_ = await outputs("completed", inline="all")
    assert base64.b64decode(image["data"]) == PNG
    bad = await client.get("/v1/jobs/completed", params={"inline": "some"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


async def test_gone_output_is_said_not_failed(api: tuple, tmp_path: Path) -> None:
    client, _ = api
    (tmp_path / "comfy" / "output" / "done.png").unlink()
    image, *_ = (await client.get("/v1/jobs/completed")).json()["outputs"]
    assert "data" not in image and image["data_omitted"] == "gone"


async def test_list_and_its_status_filter(api: tuple) -> None:
    client, _ = api
    everything = (await client.get("/v1/jobs")).json()["jobs"]
    assert [j["job_id"] for j in everything] == [
        "cancelled", "failed", "completed", "running", "queued"]
    assert all("outputs" not in j for j in everything)
    failed = (await client.get("/v1/jobs", params={"status": "failed"})).json()["jobs"]
    assert [(j["job_id"], j["cancelled"]) for j in failed] == [("cancelled", True),
                                                              ("failed", False)]
    only = (await client.get("/v1/jobs", params={"status": "cancelled"})).json()["jobs"]
    assert [(j["job_id"], j["status"]) for j in only] == [("cancelled", "failed")]
    assert len((await client.get("/v1/jobs", params={"status": "failed", "limit": 1})
                ).json()["jobs"]) == 1


async def test_polling_status_in_every_state(api: tuple) -> None:
    client, _ = api
    running = await client.get("/status/running")
    assert running.status_code == 202 and running.json()["id"] == "running"
    assert (await client.get("/status/queued")).json()["status"] == "RUNNING"
    done = (await client.get("/status/completed")).json()
    [image] = done["output"]["images"]  # images only: the text file is not one
    assert (image["filename"], image["type"]) == ("done.png", "base64")
    assert base64.b64decode(image["data"]) == PNG
    failed = (await client.get("/status/failed")).json()
    assert (failed["status"], failed["error"]) == ("FAILED", "KSampler (node 3): out of memory")
    cancelled = (await client.get("/status/cancelled")).json()
    assert (cancelled["status"], cancelled["error"], cancelled["cancelled"]) == (
        "FAILED", "Cancelled by user", True)
    unknown = await client.get("/status/nope")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Call ID not found or invalid."}


async def test_polling_errors_are_plain_strings(api: tuple) -> None:
    client, _ = api
    bad = await client.post("/submit_workflow", content=b"{",
                            headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("the body is not valid")
    assert bad.json()["error_details"]["code"] == "invalid_json"
    shapeless = await client.post("/submit_workflow", json={"workflow": 3})
    assert shapeless.status_code == 400 and isinstance(shapeless.json()["error"], str)
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anon:
        refused = await anon.get("/status/completed")
        assert refused.status_code == 401 and isinstance(refused.json()["error"], str)
        check_answer("GET", "/status/completed", 401, refused.json())
        # The /v1 routes keep our error dict.
        v1 = await anon.get("/v1/jobs")
        assert v1.status_code == 401 and v1.json()["error"]["code"] == "unauthorized"


async def test_cancel_answers_with_the_job_view(api: tuple) -> None:
    client, jobs = api
    jobs["queued"].listener = None
    resp = await client.delete("/v1/jobs/queued")
    assert resp.status_code == 200
    job = resp.json()
    assert (job["status"], job["error"], job["cancelled"], job["message"]) == (
        "failed", "Cancelled by user", True, "Job cancelled")
    assert jobs["queued"].status == CANCELLED  # our own status, as the event stream says
    conflict = await client.delete("/v1/jobs/completed")
    assert conflict.status_code == 409  # already over: nothing to cancel


async def test_webhook_bodies(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    def receive(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http,
                             allow_private_urls=True)
        for status in (COMPLETED, FAILED, CANCELLED):
            job = Job(id=f"j-{status}", life=Lifecycle(RUNNING), user_id="u",
                      webhook_url="http://hooks.test/h", listener=service._moved)
            job.outputs.append(OutputFile(node_id="1", key="images", filename="a.png",
                                          subfolder="", folder="output", type="image",
                                          size_bytes=1, sha256="a" * 64))
            service.jobs[job.id] = job
            error = JobFailed("boom", code="execution_error") if status == FAILED else None
            assert job.life.end(status, error)
            await job.changed()
        await service.close()
    assert len(received) == 3
    for body in received:
        check("webhook", body)
    events = {b["job_id"]: (b["event"], b["status"], b["cancelled"], b["error"])
              for b in received}
    assert events == {"j-completed": ("job.completed", "completed", False, None),
                      "j-failed": ("job.failed", "failed", False, "boom"),
                      "j-cancelled": ("job.failed", "failed", True, "Cancelled by user")}


# -- the schemas refuse the shapes of before --------------------------------------------


GOOD_JOB: dict[str, Any] = {
    "job_id": "j", "status": "completed", "created_at": "2025-01-31T12:00:00Z",
    "started_at": "2025-01-31T12:00:01.5+00:00", "completed_at": "2025-01-31T12:00:09Z",
    "progress": 100, "error": None,
    "progress_details": {"current_node": None, "nodes_completed": 3, "nodes_total": 3,
                         "step": None},
    "outputs": [{"filename": "a.mp4", "type": "video", "size_bytes": 3, "node_id": "9",
                 "data": "AAEC"},
                {"node_id": "112", "type": "text", "filename": "text_output_112.txt",
                 "size_bytes": 5, "data": "hello"}],
}


@pytest.mark.parametrize(("change", "why"), [
    ({"created_at": 1738324800.0}, "a Unix time"),
    ({"status": "cancelled"}, "a status old clients do not stop on"),
    ({"completed_at": None}, "no completion time for a completed job"),
    ({"error": {"code": "x", "message": "y"}}, "the error as a dict"),
    ({"status": "failed", "error": None}, "a failure without its message"),
    ({"progress": 99.5}, "a fractional progress"),
    ({"progress_details": {"current_node": "3", "nodes_completed": 1, "nodes_total": 3,
                           "step": {"value": 12, "max": 49}}}, "the step as a dict"),
    ({"outputs": [{"filename": "a.png", "type": "output", "size_bytes": 3, "node_id": "9"}]},
     "the folder type for `type`"),
    ({"outputs": [{"filename": "a.png", "type": "image", "size_bytes": 3, "node_id": "9",
                   "data": "not base64!"}]}, "data that is not base64"),
])
def test_job_schema_refuses(change: dict[str, Any], why: str) -> None:
    assert violations("job", GOOD_JOB) == []
    assert violations("job", GOOD_JOB | change), why


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("submit", {"job_id": "j", "status": "queued", "created_at": "2025-01-31T12:00:00Z",
                "estimated_time": 30}, {"estimated_time": None}),
    ("submit", {"job_id": "j", "status": "queued", "created_at": "2025-01-31T12:00:00Z",
                "estimated_time": 30}, {"created_at": 1738324800.0}),
    ("webhook", {"event": "job.failed", "job_id": "j", "timestamp": "2025-01-31T12:00:00Z"},
     {"event": "job.cancelled"}),
    ("webhook", {"event": "job.failed", "job_id": "j", "timestamp": "2025-01-31T12:00:00Z"},
     {"job": {"outputs": []}}),
    ("polling_submit", {"id": "c", "status": "RUNNING"}, {"id": None}),
    ("polling_completed", {"id": "c", "status": "COMPLETED", "output": {"images": [
        {"filename": "a.png", "type": "base64", "data": "AAEC"}]}},
     {"output": {"images": [{"filename": "a.png", "data": "AAEC"}]}}),
    ("polling_failed", {"id": "c", "status": "FAILED", "error": "x"}, {"status": "CANCELLED"}),
    ("polling_error", {"error": "Call ID not found or invalid."}, {"error": {"code": "x"}}),
])
def test_other_schemas_refuse(name: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
    assert violations(name, good) == []
    assert violations(name, good | bad)
