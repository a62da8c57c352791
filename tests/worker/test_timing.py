"""Acceptance: a real worker's job records carry their GPU seconds (`timing`)."""

from __future__ import annotations

import time

import pytest

from ..conftest import WorkerHandle
from ..helpers import workflow

pytestmark = pytest.mark.comfyui


def test_job_records_and_terminal_events_carry_timing(worker: WorkerHandle) -> None:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=3, step_seconds=0.1, previews=False)
    flow["1"]["inputs"]["color"] = int(time.monotonic_ns() % 0xFFFFFF)
    job, events = worker.run({"workflow": flow})
    assert job["status"] == "completed", job
    timing = job["timing"]
    assert set(timing) == {"queue_wait_s", "cold_start_s", "execution_s"}
    assert timing["execution_s"] >= 0.3  # three steps of 0.1 s
    assert timing["queue_wait_s"] >= 0
    end = events[-1]
    assert end["type"] == "job_status" and end["data"]["timing"] == timing
    # The cold start (worker start → ComfyUI ready) belongs to the first job only.
    jobs = worker.client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    cold = [j for j in jobs if j["timing"]["cold_start_s"] > 0]
    assert len(cold) <= 1
    if cold:
        assert cold[0]["job_id"] == min(jobs, key=lambda j: j["created_at"])["job_id"]
        assert cold[0]["timing"]["cold_start_s"] > 1.0  # ComfyUI takes seconds to start
