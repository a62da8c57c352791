"""The control-plane emulator against the real `runpod` SDK worker loop (no ComfyUI)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from ..runpod_emulator import RunpodEmulator
from .conftest import SdkWorker


@pytest.fixture
def api(echo: tuple[RunpodEmulator, SdkWorker]) -> Iterator[httpx.Client]:
    emu, _ = echo
    with httpx.Client(base_url=f"{emu.api_base}/{emu.endpoint}",
                      headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=30) as client:
        yield client


def wait_status(api: httpx.Client, job_id: str, wanted: set[str]) -> dict:
    """Poll /status as a RunPod client does, with a deadline."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = api.get(f"/status/{job_id}").json()
        if status["status"] in wanted:
            return status
        time.sleep(0.05)
    raise TimeoutError(f"{job_id} never reached {wanted}")


def wait_stream(api: httpx.Client, job_id: str) -> list[dict]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = api.get(f"/stream/{job_id}").json()["stream"]
        if items:
            return list(items)
        time.sleep(0.05)
    raise TimeoutError(f"{job_id} streamed nothing")


def test_stream_drains_and_output_aggregates(api: httpx.Client) -> None:
    done = api.post("/runsync", json={"input": {"mode": "echo", "chunks": 3}}).json()
    assert done["status"] == "COMPLETED"
    assert done["output"] == [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]
    job = api.post("/run", json={"input": {"mode": "echo", "chunks": 2}}).json()
    assert job["status"] == "IN_QUEUE"
    wait_status(api, job["id"], {"COMPLETED"})
    first = api.get(f"/stream/{job['id']}").json()
    assert [i["output"] for i in first["stream"]] == [{"chunk": 0}, {"chunk": 1}]
    # RunPod's timing figures (ms), on /stream as on /status.
    status = api.get(f"/status/{job['id']}").json()
    assert isinstance(first["delayTime"], int) and isinstance(first["executionTime"], int)
    assert status["delayTime"] == first["delayTime"] >= 0
    assert api.get(f"/stream/{job['id']}").json()["stream"] == []


def test_failures_are_failed(api: httpx.Client) -> None:
    raised = api.post("/runsync", json={"input": {"mode": "fail"}}).json()
    assert raised["status"] == "FAILED" and "on purpose" in raised["error"]
    handled = api.post("/runsync", json={"input": {"mode": "error"}}).json()
    assert handled["status"] == "FAILED" and handled["error"] == "a handled error"


def test_cancel_reaches_the_worker_through_the_stop_channel(
        api: httpx.Client, echo: tuple[RunpodEmulator, SdkWorker]) -> None:
    emu, worker = echo
    job = api.post("/run", json={"input": {"mode": "wait", "chunks": 1}}).json()
    wait_stream(api, job["id"])  # the handler runs (a stop before that is ignored by the SDK)
    assert api.post(f"/cancel/{job['id']}").json()["status"] == "CANCELLED"
    # The SDK worker is free again: the next job completes.
    assert api.post("/runsync", json={"input": {"chunks": 1}}).json()["status"] == "COMPLETED"
    assert ("GET", f"/v2/{emu.endpoint}/job-stop/worker-1") in emu.requests
    assert "Job stopped" in worker.log.read_text()


def test_execution_timeout(api: httpx.Client) -> None:
    job = api.post("/run", json={"input": {"mode": "wait"},
                                 "policy": {"executionTimeout": 300}}).json()
    assert wait_status(api, job["id"], {"TIMED_OUT"})["status"] == "TIMED_OUT"


def test_bad_key_and_ttl(api: httpx.Client, echo: tuple[RunpodEmulator, SdkWorker]) -> None:
    emu, _ = echo
    bad = httpx.post(f"{emu.api_base}/{emu.endpoint}/run", json={"input": {}},
                     headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    job = api.post("/run", json={"input": {"chunks": 1}, "policy": {"ttl": 60_000}}).json()
    assert wait_status(api, job["id"], {"COMPLETED"})["output"] == [{"chunk": 0}]
    emu.advance(61)
    assert api.get(f"/status/{job['id']}").status_code == 404
    emu.advance(-61)
    assert api.get("/status/nope").status_code == 404


def test_health_reports_warm_workers(api: httpx.Client) -> None:
    health = api.get("/health").json()
    assert health["workers"]["ready"] >= 1
    assert set(health["jobs"]) >= {"completed", "failed", "inProgress", "inQueue"}
