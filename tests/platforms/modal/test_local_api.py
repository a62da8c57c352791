"""The Modal app's API and GPU side, run here over the stand-ins with a real ComfyUI:
the job API's clients see what a worker shows them, while every event crosses the
queue, every file the volume (committed, then reloaded), and every stream is cut short
and resumed as Modal's 150 s limit would."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import pytest

from comfy_remote_exec.jobapi.client import JobApiClient
from comfy_remote_exec.platforms.modal.api import ModalApi, open_api
from comfy_remote_exec.platforms.modal.maintenance import DAY, StaleRules, clean_up, fail_stale_jobs
from comfy_remote_exec.platforms.modal.standins import FunctionCallStandIn
from comfy_remote_exec.protocol import JobSpec

from ...conftest import TOKEN
from ...helpers import png_bytes, workflow
from .conftest import STREAM_LIMIT, ModalRun, follow, wait_status

pytestmark = pytest.mark.comfyui


def steps(n: int, seconds: float, color: int, previews: bool = True) -> dict[str, Any]:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=n, step_seconds=seconds, previews=previews)
    flow["1"]["inputs"]["color"] = color
    return flow


def submit(run: ModalRun, body: dict[str, Any]) -> str:
    resp = run.client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])


def test_a_job_runs_and_its_stream_resumes_across_cuts(modal_run: ModalRun) -> None:
    job_id = submit(modal_run, {"workflow": steps(15, 0.2, 101)})
    events, streams = follow(modal_run.client, job_id)
    assert streams >= 2, "a 3 s job outlives the 1.5 s stream limit"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "no gap, no repeat"
    assert [e["data"]["status"] for e in events if e["type"] == "job_status"] == [
        "queued", "running", "completed"]
    types = [e["type"] for e in events]
    assert types.count("progress") == 15 and "preview" in types and "execution_success" in types
    job = modal_run.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["progress"] == 100
    # GPU seconds: the GPU side's start and end, and the container's cold start.
    assert job["timing"]["execution_s"] >= 2.5 and events[-1]["data"]["timing"] == job["timing"]
    cold = [j["timing"]["cold_start_s"] for j in modal_run.client.get("/v1/jobs").json()["jobs"]]
    assert sum(1 for c in cold if c > 0) <= 1, "only a container's first job has its cold start"
    if len(cold) == 1:  # the container's first job: ComfyUI's start, seconds of it
        assert cold[0] > 1.0
    [out] = job["outputs"]
    got = modal_run.client.get(out["url"])
    assert got.status_code == 200
    wrote = (modal_run.base / out["folder"] / out["subfolder"] / out["filename"]).read_bytes()
    assert got.content == wrote and hashlib.sha256(wrote).hexdigest() == out["sha256"]
    assert base64.b64decode(job["outputs"][0]["data"]) == wrote, "inline once ended"
    # The file reached the API through the volume: committed by the GPU side, reloaded here.
    assert (modal_run.state / "volume" / "jobs" / job_id / out["folder"] / out["filename"]
            ).read_bytes() == wrote


def test_the_extensions_client_resumes_a_stream_modal_cuts(modal_run: ModalRun) -> None:
    """With the API's own limit above Modal's cut, streams are cut mid-flight."""
    service = modal_run.local.api.service
    service.stream_limit = 60.0

    async def relay() -> list[int]:
        client = JobApiClient(modal_run.url, TOKEN)
        try:
            job_id = await client.submit(JobSpec(workflow=steps(35, 0.2, 102, previews=False)))
            return [event.seq async for event in client.events(job_id)]
        finally:
            await client.close()

    started = time.monotonic()
    try:
        seqs = asyncio.run(relay())
    finally:
        service.stream_limit = STREAM_LIMIT
    assert time.monotonic() - started > 6.0, "the job outlived the 6 s cut"
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 35


def test_an_uploaded_blob_reaches_the_gpu_side(modal_run: ModalRun) -> None:
    data = png_bytes(size=(40, 20), color=(1, 2, 3))
    sha = hashlib.sha256(data).hexdigest()
    missing = modal_run.client.post("/v1/blobs/missing", json={"sha256": [sha]}).json()
    assert missing == {"missing": [sha]}
    assert modal_run.client.put(f"/v1/blobs/{sha}", content=data).status_code == 201
    assert modal_run.client.post("/v1/blobs/missing", json={"sha256": [sha]}).json() == {
        "missing": []}
    flow = workflow("load_scale")
    flow["1"]["inputs"]["image"] = "sub/in.png"
    job_id = submit(modal_run, {"workflow": flow, "media": [{"name": "sub/in.png",
                                                              "sha256": sha}]})
    events, _ = follow(modal_run.client, job_id)
    assert events[-1]["data"]["status"] == "completed", events[-1]


def test_cancel_interrupts_a_running_job(modal_run: ModalRun) -> None:
    job_id = submit(modal_run, {"workflow": steps(200, 0.05, 103, previews=False)})
    wait_status(modal_run.client, job_id, {"running"})
    resp = modal_run.client.delete(f"/v1/jobs/{job_id}")
    assert resp.status_code in (200, 202), resp.text
    events, _ = follow(modal_run.client, job_id)
    assert events[-1]["data"]["status"] == "cancelled"
    assert "execution_interrupted" in [e["type"] for e in events]
    view = modal_run.client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "failed" and view["cancelled"] is True


def test_cancelling_a_job_no_gpu_took_yet(modal_run: ModalRun) -> None:
    function = modal_run.local.function  # one GPU slot: the second job waits for it
    blocker = submit(modal_run, {"workflow": steps(200, 0.05, 104, previews=False)})
    wait_status(modal_run.client, blocker, {"running"})
    started = function.started
    waiting = submit(modal_run, {"workflow": workflow("invert")})
    resp = modal_run.client.delete(f"/v1/jobs/{waiting}")
    assert resp.status_code == 200 and resp.json()["status"] == "failed", resp.text
    assert resp.json()["cancelled"] is True
    assert modal_run.client.delete(f"/v1/jobs/{blocker}").status_code in (200, 202)
    follow(modal_run.client, blocker)
    assert function.started == started, "the cancelled call never ran"


@pytest.mark.parametrize("case", ["unknown_node", "missing_model"])
def test_a_workflow_the_gpu_side_refuses_fails_its_job(modal_run: ModalRun, case: str) -> None:
    flow = workflow("unknown_node") if case == "unknown_node" else workflow("upscale_tiny")
    if case == "missing_model":
        flow["2"]["inputs"]["model_name"] = "not-on-the-volume.pth"
    job_id = submit(modal_run, {"workflow": flow})  # accepted at once: no GPU is asked first
    events, _ = follow(modal_run.client, job_id)
    end = events[-1]["data"]
    assert end["status"] == "failed", end
    expected = "NodeThatDoesNotExist" if case == "unknown_node" else "not-on-the-volume.pth"
    assert expected in end["error"]["message"]
    if case == "missing_model":
        assert end["error"]["node_id"] == "2"


def test_polling_api_health_and_object_info(modal_run: ModalRun) -> None:
    resp = modal_run.client.post("/submit_workflow", json={"workflow": workflow("invert")})
    assert resp.status_code == 202
    call_id = resp.json()["id"]
    deadline = time.monotonic() + 60
    while (status := modal_run.client.get(f"/status/{call_id}")).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    body = status.json()
    assert body["status"] == "COMPLETED", body
    [image] = body["output"]["images"]
    assert base64.b64decode(image["data"]).startswith(b"\x89PNG")
    health = modal_run.client.get("/health").json()
    assert health["status"] == "ok" and health["comfyui"] is True
    deep = modal_run.client.get("/health", params={"deep": 1}).json()
    assert "tiny_compact_x2.safetensors" in deep["models"]["upscale_models"]
    assert deep["system_stats"]["system"]
    assert "SaveImage" in modal_run.client.get("/v1/object_info").json()


def test_a_new_api_container_follows_the_jobs_the_old_one_left(modal_run: ModalRun) -> None:
    job_id = submit(modal_run, {"workflow": steps(40, 0.05, 105, previews=False)})
    wait_status(modal_run.client, job_id, {"running"})
    old_url = modal_run.url

    async def replace() -> str:
        await modal_run.local.api.close()  # scaled down: relays stop, the store is flushed
        modal_run.local.api = api = await modal_run_open(modal_run)
        return await modal_run.serve(api)

    modal_run.use(modal_run.call(replace()))
    assert modal_run.url != old_url
    events, _ = follow(modal_run.client, job_id)
    assert events[-1]["data"]["status"] == "completed", events[-1]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    [out] = modal_run.client.get(f"/v1/jobs/{job_id}").json()["outputs"]
    assert modal_run.client.get(out["url"]).status_code == 200


async def modal_run_open(run: ModalRun) -> ModalApi:
    """Another API container over the same Dict, Queue and Volume, with its own view."""
    return await open_api(run.local.parts(run.state / f"api-data-{time.monotonic_ns()}"),
                          token=TOKEN, stream_limit=STREAM_LIMIT, idle=1.0)


def test_stale_jobs_fail_with_the_reason(modal_run: ModalRun) -> None:
    blocker = submit(modal_run, {"workflow": steps(200, 0.05, 106, previews=False)})
    wait_status(modal_run.client, blocker, {"running"})
    started = modal_run.local.function.started
    waiting = submit(modal_run, {"workflow": workflow("invert")})
    modal_run.call(modal_run.local.api.store.flush())
    local = modal_run.local
    report = modal_run.call(fail_stale_jobs(
        local.store_dict, local.events, FunctionCallStandIn.from_id,
        rules=StaleRules(queue_timeout=60, run_timeout=3600), now=time.time() + 120))
    assert [s.job_id for s in report.failed] == [waiting]
    assert report.unfinished == 1, "the running one is not stale"
    view = wait_status(modal_run.client, waiting, {"failed"})
    assert "no GPU took the job within 60 s" in view["error"]
    assert view["error_details"]["code"] == "job_stale"
    again = modal_run.call(fail_stale_jobs(
        local.store_dict, local.events, FunctionCallStandIn.from_id,
        rules=StaleRules(queue_timeout=60, run_timeout=3600), now=time.time() + 120))
    assert again.failed == []
    modal_run.client.delete(f"/v1/jobs/{blocker}")
    follow(modal_run.client, blocker)
    assert local.function.started == started, "the stale call was cancelled before it ran"


def test_clean_up_removes_old_finished_jobs_and_their_files(modal_run: ModalRun) -> None:
    job_id = submit(modal_run, {"workflow": workflow("invert")})
    follow(modal_run.client, job_id)
    modal_run.call(modal_run.local.api.store.flush())
    remote = modal_run.state / "volume"
    assert (remote / "jobs" / job_id).is_dir()
    orphan = remote / "jobs" / "orphan-folder"
    orphan.mkdir(parents=True)
    (orphan / "x.png").write_bytes(b"x")
    local = modal_run.local
    view = local.volume.mount(modal_run.state / "cleanup-data")  # the function's container
    report = modal_run.call(clean_up(local.store_dict, local.events, view, view.path,
                                     keep=DAY, blob_keep=30 * DAY, now=time.time() + 2 * DAY))
    assert job_id in report.jobs and report.folders >= 2
    assert not (remote / "jobs" / job_id).exists() and not orphan.exists()
    assert local.store_dict.get(f"job:{job_id}") is None
    keys = list(local.store_dict.keys())  # a Dict's own iterator, as modal.Dict has
    assert not any(str(k).startswith(f"events:{job_id}:") for k in keys)
    assert list((remote / "blobs").iterdir()), "blobs are kept for 30 days"
