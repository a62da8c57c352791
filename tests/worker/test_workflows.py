"""Acceptance: real workflows run through the job API on a real ComfyUI."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json

import pytest

from ..conftest import WorkerHandle
from ..helpers import png_bytes, workflow

pytestmark = pytest.mark.comfyui


def download_matches(worker: WorkerHandle, job: dict) -> None:
    """Every listed output downloads byte-identical to the file ComfyUI wrote."""
    assert job["outputs"], job
    for out in job["outputs"]:
        resp = worker.client.get(out["url"])
        assert resp.status_code == 200, resp.text
        folder = worker.base / out["folder"] / out["subfolder"]
        on_disk = (folder / out["filename"]).read_bytes()
        assert resp.content == on_disk
        assert hashlib.sha256(on_disk).hexdigest() == out["sha256"]
        assert out["size_bytes"] == len(on_disk)


def assert_ordered(events: list[dict]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "job_status"


def test_invert(worker: WorkerHandle) -> None:
    job, events = worker.run({"workflow": workflow("invert")})
    assert job["status"] == "completed", job
    assert_ordered(events)
    types = [e["type"] for e in events]
    for expected in ("execution_start", "executing", "executed", "execution_success"):
        assert expected in types
    assert [e["data"]["status"] for e in events if e["type"] == "job_status"] == [
        "queued", "running", "completed"]
    executed = next(e for e in events if e["type"] == "executed")
    assert executed["data"]["node"] == "3"
    assert executed["data"]["files"][0]["sha256"] == job["outputs"][0]["sha256"]
    assert job["progress"] == 100
    assert job["progress_details"]["nodes_completed"] == 3
    download_matches(worker, job)


@pytest.mark.parametrize("name", ["example.png", "sub/dir/example.png"])
def test_load_image_of_uploaded_input(worker: WorkerHandle, name: str) -> None:
    flow = workflow("load_scale")
    flow["1"]["inputs"]["image"] = name
    data = png_bytes()
    job, _ = worker.run({"workflow": flow, "media": [
        {"name": name, "data": base64.b64encode(data).decode()}]})
    assert job["status"] == "completed", job
    download_matches(worker, job)
    # The per-job input folder is gone once the job is over.
    assert not any((worker.base / "input" / "remote_exec").glob(f"{job['job_id']}*"))


def test_annotated_input_reference(worker: WorkerHandle) -> None:
    flow = workflow("load_scale")
    flow["1"]["inputs"]["image"] = "annotated.png [input]"
    job, _ = worker.run({"workflow": flow, "media": [
        {"name": "annotated.png", "data": base64.b64encode(png_bytes()).decode()}]})
    assert job["status"] == "completed", job


def test_a_fast_bar_is_relayed_as_comfyui_026_throttles_it(worker: WorkerHandle) -> None:
    """A bar updated every 20 ms: its first update, then one when 100 ms passed, and its
    last; on 0.3.64 by the worker's hook, on 0.26 by ComfyUI itself."""
    flow = {"1": {"class_type": "RemoteExecBenchTicks",
                  "inputs": {"ticks": 40, "interval": 0.02, "seed": 7}}}
    job, events = worker.run({"workflow": flow})
    assert job["status"] == "completed", job
    sent = json.loads(job["ui"]["1"]["text"][0])  # when the node made each update
    values = [e["data"]["value"] for e in events if e["type"] == "progress"]
    assert values[0] == 1 and values[-1] == 40 and values == sorted(set(values)), values
    # The node stamps an update just before making it, a switch of the GIL (5 ms)
    # from when ComfyUI's hook looks at the clock.
    went = [sent[int(v) - 1] for v in values[:-1]]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(went)]
    assert gaps and all(0.09 <= g <= 0.2 for g in gaps), gaps
    assert len(values) < 30, "held back"


def test_tiny_upscale_model_only_on_worker_emits_progress(worker: WorkerHandle) -> None:
    job, events = worker.run({"workflow": workflow("upscale_tiny")})
    assert job["status"] == "completed", job
    assert_ordered(events)
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert progress and all(p["node"] == "3" for p in progress)
    assert progress[-1]["value"] == progress[-1]["max"]
    download_matches(worker, job)


def test_animated_webp(worker: WorkerHandle) -> None:
    job, _ = worker.run({"workflow": workflow("animated")})
    assert job["status"] == "completed", job
    assert job["outputs"][0]["filename"].endswith(".webp")
    assert job["ui"]["3"]["animated"] == [True]
    download_matches(worker, job)


def test_save_video(worker: WorkerHandle) -> None:
    job, _ = worker.run({"workflow": workflow("video")})
    assert job["status"] == "completed", job
    out = job["outputs"][0]
    assert out["type"] == "video" and out["subfolder"] == "video"
    download_matches(worker, job)


def test_preview_any_text(worker: WorkerHandle) -> None:
    job, events = worker.run({"workflow": workflow("preview_any")})
    assert job["status"] == "completed", job
    assert job["ui"]["2"]["text"] == ["hello remote"]
    executed = next(e for e in events if e["type"] == "executed")
    assert executed["data"]["output"]["text"] == ["hello remote"]


def test_any_file_output(worker: WorkerHandle) -> None:
    flow = {"1": {"class_type": "RemoteExecTestFile",
                  "inputs": {"name": "data.bin", "subfolder": "files", "size": 300_000}}}
    job, _ = worker.run({"workflow": flow})
    assert job["status"] == "completed", job
    assert job["outputs"][0]["type"] == "file"
    download_matches(worker, job)


def test_previews_are_relayed_and_temp_outputs_marked(worker: WorkerHandle) -> None:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=3, step_seconds=0.01)
    job, events = worker.run({"workflow": flow})
    assert job["status"] == "completed", job
    previews = [e["data"] for e in events if e["type"] == "preview"]
    assert len(previews) == 3
    assert previews[0]["node"] == "2" and previews[0]["image_type"] == "image/jpeg"
    assert base64.b64decode(previews[0]["image"])[:2] == b"\xff\xd8"
    assert job["outputs"][0]["folder"] == "temp" and job["outputs"][0]["preview"] is True


def test_inline_data_by_default_or_on_request(worker: WorkerHandle) -> None:
    job, _ = worker.run({"workflow": workflow("invert")})
    # A finished job's small outputs come inline; `inline=none` leaves them out.
    plain = worker.client.get(f"/v1/jobs/{job['job_id']}").json()
    data = base64.b64decode(plain["outputs"][0]["data"])
    assert hashlib.sha256(data).hexdigest() == plain["outputs"][0]["sha256"]
    bare = worker.client.get(f"/v1/jobs/{job['job_id']}?inline=none").json()
    assert "data" not in bare["outputs"][0]
    # `base64=1`, the older spelling of `inline=all`, still works.
    full = worker.client.get(f"/v1/jobs/{job['job_id']}?base64=1").json()
    assert full["outputs"][0]["data"] == plain["outputs"][0]["data"]


def test_resume_after_dropped_connection(worker: WorkerHandle) -> None:
    job_id = worker.submit({"workflow": workflow("upscale_tiny")})["job_id"]
    first = worker.events(job_id, stop_after=5)
    rest = worker.events(job_id, after=first[-1]["seq"])
    whole = worker.events(job_id)
    assert first + rest == whole
    assert_ordered(whole)


def test_list_jobs_and_status_filter(worker: WorkerHandle) -> None:
    job, _ = worker.run({"workflow": workflow("invert")})
    listed = worker.client.get("/v1/jobs", params={"status": "completed", "limit": 500}).json()
    assert job["job_id"] in [j["job_id"] for j in listed["jobs"]]
    assert all(j["status"] == "completed" for j in listed["jobs"])
    assert len(worker.client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]) == 1


def test_priority_runs_first(worker: WorkerHandle) -> None:
    blocker = workflow("steps")
    blocker["2"]["inputs"].update(steps=10, step_seconds=0.05, previews=False)
    first = worker.submit({"workflow": blocker})["job_id"]
    low = worker.submit({"workflow": workflow("invert") | {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                     "color": 1}}}})["job_id"]
    high = worker.submit({"workflow": workflow("invert") | {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                     "color": 2}}}, "priority": 5})["job_id"]
    for job_id in (first, low, high):
        worker.events(job_id)
    jobs = {j: worker.client.get(f"/v1/jobs/{j}").json() for j in (first, low, high)}
    assert all(j["status"] == "completed" for j in jobs.values())
    assert jobs[high]["started_at"] < jobs[low]["started_at"]


def test_seed_api(worker: WorkerHandle) -> None:
    resp = worker.client.post("/submit_workflow", json={"workflow": workflow("invert")})
    assert resp.status_code == 202
    call_id = resp.json()["id"]
    assert resp.json() == {"id": call_id, "call_id": call_id, "status": "RUNNING"}
    worker.events(call_id)
    done = worker.client.get(f"/status/{call_id}")
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
    image = base64.b64decode(done.json()["output"]["images"][0]["data"])
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    missing = worker.client.get("/status/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Call ID not found or invalid."}


def test_object_info_and_deep_health(worker: WorkerHandle) -> None:
    info = worker.client.get("/v1/object_info").json()
    assert "RemoteExecTestSteps" in info and "SaveImage" in info
    deep = worker.client.get("/health", params={"deep": 1}).json()
    assert deep["comfyui"] is True
    assert deep["models"]["upscale_models"] == ["tiny_compact_x2.safetensors"]
