"""A job's GPU seconds (`protocol.timing`): measuring, the wire, RunPod's figures."""

from __future__ import annotations

import time

from comfy_remote_exec.platforms.modal import messages
from comfy_remote_exec.protocol import COMPLETED, Event, JobStatus, JobTiming
from comfy_remote_exec.protocol.runpod import runpod_timing
from comfy_remote_exec.protocol.timing import process_started_at


def test_measure_splits_wait_cold_start_and_execution() -> None:
    timing = JobTiming.measure(created=100.0, started=103.0, finished=110.0)
    assert timing == JobTiming(queue_wait_s=3.0, cold_start_s=0.0, execution_s=7.0)
    assert timing.gpu_seconds == 10.0
    # A cold start before the job was accepted (the worker's): apart from the wait.
    before = JobTiming.measure(100.0, 101.0, 105.0, cold_start=(80.0, 95.0))
    assert before == JobTiming(1.0, 15.0, 4.0)
    # One inside the wait (Modal's container started for this job): not counted twice.
    inside = JobTiming.measure(100.0, 112.0, 115.0, cold_start=(101.0, 111.0))
    assert inside == JobTiming(2.0, 10.0, 3.0)
    # A job that never started waited all its life.
    assert JobTiming.measure(100.0, None, 104.0) == JobTiming(4.0, 0.0, 0.0)


def test_timing_travels_in_the_terminal_job_status() -> None:
    status = JobStatus(COMPLETED, None, JobTiming(0.5, 12.25, 3.0))
    wire = Event(7, status, 1.0).to_wire()
    assert wire["data"]["timing"] == {"queue_wait_s": 0.5, "cold_start_s": 12.25,
                                      "execution_s": 3.0}
    back = Event.parse(wire).payload
    assert isinstance(back, JobStatus) and back.timing == JobTiming(0.5, 12.25, 3.0)
    # An older worker sends none; a bad one is dropped, never an error.
    assert JobStatus.from_data({"status": "completed"}).timing is None
    assert JobStatus.from_data({"status": "completed",
                                "timing": {"execution_s": "x"}}).timing is None
    assert "timing" not in JobStatus(COMPLETED).to_data()


def test_runpod_delay_time_splits_into_cold_start_and_queue_wait() -> None:
    worker = JobTiming(queue_wait_s=0.1, cold_start_s=20.0, execution_s=4.0)
    # RunPod's delay (25 s) holds the container's cold start the worker reported.
    split = runpod_timing(worker, {"delayTime": 25_000})
    assert split == JobTiming(queue_wait_s=5.0, cold_start_s=20.0, execution_s=4.1)
    # executionTime, once known, is what RunPod bills as execution.
    billed = runpod_timing(worker, {"delayTime": 25_000, "executionTime": 4_500})
    assert billed == JobTiming(5.0, 20.0, 4.5)
    # A warm worker: all of the delay is queue.
    warm = runpod_timing(JobTiming(0.0, 0.0, 2.0), {"delayTime": 800, "executionTime": 2100})
    assert warm == JobTiming(0.8, 0.0, 2.1)
    # A cold start longer than RunPod's delay cannot exceed it.
    assert runpod_timing(worker, {"delayTime": 3_000}) == JobTiming(0.0, 3.0, 4.1)
    assert runpod_timing(worker, {}) is worker
    assert runpod_timing(None, {"executionTime": 1000}) == JobTiming(0.0, 0.0, 1.0)


def test_modal_start_message_carries_the_containers_cold_start() -> None:
    item = messages.start_item((10.0, 25.5))
    assert messages.parse(item).cold_start == (10.0, 25.5)
    assert messages.parse(messages.start_item()).cold_start is None
    assert messages.parse({"k": "start", "cold_start": ["a", 1]}).cold_start is None


def test_process_start_is_before_now() -> None:
    started = process_started_at()
    assert 0 <= time.time() - started < 24 * 3600
