"""The job service's parts without a ComfyUI: job records and their store, webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.protocol import (
    COMPLETED,
    FAILED,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionInterrupted,
    JobStatus,
    Lifecycle,
    OutputFile,
    Progress,
)
from comfy_remote_exec.worker.inputs.blobs import BlobStore
from comfy_remote_exec.worker.service.jobs import FLUSH_EVERY, Job, JobStore
from comfy_remote_exec.worker.service.service import RECENT_RUNS, JobService
from comfy_remote_exec.worker.service.webhooks import WebhookSender

from ...helpers import eventually

# -- jobs ------------------------------------------------------------------------------


def test_progress_tracking() -> None:
    job = Job(id="j", nodes_total=4)
    job.track(ExecutionCached(["1"]))
    job.track(Executing("2"))
    job.track(Progress(1, 2, "2"))
    assert job.progress == pytest.approx(37.5)
    job.track(Executing("3"))
    file = OutputFile(node_id="3", key="images", filename="a.png", subfolder="",
                      folder="output", type="image", size_bytes=1, sha256="a" * 64)
    job.track(Executed("3", "3", {"text": ["x"]}, [file]))
    view = job.view()
    assert view["progress_details"] == {"current_node": "3", "nodes_completed": 2,
                                        "nodes_total": 4, "step": None}
    assert view["ui"] == {"3": {"text": ["x"]}} and job.outputs == [file]
    assert view["outputs"][0]["type"] == "image" and view["outputs"][0]["size_bytes"] == 1


def test_store_survives_restart_and_fails_unfinished_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    for job_id, status in (("a", "completed"), ("b", "running"), ("c", "queued")):
        store.save(Job(id=job_id, life=Lifecycle(status=status)))
    again = {j.id: j for j in JobStore(tmp_path).load_all()}
    assert again["a"].status == "completed"
    for job_id in ("b", "c"):
        assert again[job_id].status == FAILED
        error = again[job_id].life.error
        assert error is not None and "worker restarted" in error.message
        last = again[job_id].events[-1].payload
        assert isinstance(last, JobStatus) and last.status == FAILED
    # Loading twice changes nothing more.
    assert [j.status for j in JobStore(tmp_path).load_all()] == [
        again[k].status for k in sorted(again, key=lambda k: again[k].created_at)]


# -- webhooks --------------------------------------------------------------------------


async def test_webhook_retries_with_backoff_then_succeeds() -> None:
    calls: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(503 if len(calls) < 3 else 200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = WebhookSender(client, allow_private=True, base_delay=0.001)
        assert await sender.send("http://hooks.test/x", "job.completed", {"job_id": "j"})
    assert len(calls) == 3 and calls[-1]["event"] == "job.completed"


@pytest.mark.parametrize(("status", "expected"), [(404, 1), (503, 3)])
async def test_webhook_gives_up_on_client_errors_and_after_its_attempts(
        status: int, expected: int) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = WebhookSender(client, allow_private=True, attempts=3, base_delay=0.001)
        assert not await sender.send("http://hooks.test/x", "job.failed", {})
    assert calls == expected


# -- timing ----------------------------------------------------------------------------


async def test_job_timing_in_record_view_and_terminal_event(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = Job(id="t", created_at=time.time() - 2.0, cold_start=(1.0, 31.0))
    store.log_for(job)
    assert job.life.start()
    await job.changed()
    running = job.events[-1].payload
    assert isinstance(running, JobStatus) and running.timing is None
    assert job.life.end(COMPLETED)
    await job.changed()
    end = job.events[-1].payload
    assert isinstance(end, JobStatus) and end.timing is not None
    assert end.timing.cold_start_s == 30.0
    assert end.timing.queue_wait_s >= 1.9 and end.timing.execution_s >= 0
    assert job.view()["timing"] == end.timing.to_dict()
    again = JobStore(tmp_path).load_all()[0]
    assert again.cold_start == (1.0, 31.0) and again.timing() == end.timing


# -- the service's finished jobs ---------------------------------------------------------


async def test_finished_jobs_are_pruned_in_finishing_order_and_feed_the_estimate(
        tmp_path: Path) -> None:
    """The service keeps what a submit's estimate and a job's end need as jobs end, so
    neither walks every job: the first to finish go first, whatever their age."""
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http,
                             keep_jobs=3)
        jobs = [Job(id=f"j{i}", listener=service._moved) for i in range(RECENT_RUNS + 5)]
        for job in jobs:
            service.jobs[job.id] = job
            service._note(job)
        assert [j.id for j in service.estimate_basis()] == [j.id for j in jobs], \
            "all unfinished"
        for job in reversed(jobs[1:]):  # the newest finish first, the oldest not at all
            assert job.life.start() and job.life.end(COMPLETED if job.id != "j3" else FAILED)
            await job.changed()
    assert sorted(service.jobs) == ["j0", "j1", "j2", "j3"], \
        "the three that finished last are kept, and the unfinished one"
    assert not (tmp_path / "jobs" / "j4").exists()
    completed = [j.id for j in reversed(jobs[1:]) if j.id != "j3"]
    assert [j.id for j in service.estimate_basis()] == [*completed[-RECENT_RUNS:], "j0"]


def test_events_before_the_first_save_wait_in_memory(tmp_path: Path) -> None:
    """Nothing touches the disk between a submit and its hand-off to ComfyUI: the
    first events wait for the job's first save, which writes them in order; a log
    that ended before that is closed once written."""
    store = JobStore(tmp_path)
    job = Job(id="early")
    store.log_for(job)
    job.log.append(JobStatus("queued"))
    assert not (tmp_path / "early").exists()
    assert job.life.start() and job.life.end(COMPLETED)
    job.log.append(Executing("1"))
    job.log.append(JobStatus(COMPLETED))  # terminal: the log is complete
    store.save(job)
    lines = (tmp_path / "early" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert "early" not in store._logs, "closed once written"
    [loaded] = JobStore(tmp_path).load_all()
    assert [e.seq for e in loaded.events] == [1, 2, 3] and loaded.status == COMPLETED

    gone = Job(id="gone")
    store.log_for(gone)
    gone.log.append(JobStatus("queued"))
    store.remove(gone.id)  # ComfyUI refused it: nothing was written, nothing waits
    assert not (tmp_path / "gone").exists() and "gone" not in store._waiting


async def test_a_running_jobs_log_is_written_out_in_batches(tmp_path: Path) -> None:
    """Lines wait in the buffer for at most FLUSH_QUIET, not a syscall each; the end
    of the job writes and closes the log at once; `flush` (the way out) writes all."""
    store = JobStore(tmp_path)
    job = Job(id="busy")
    store.log_for(job)
    store.save(job)
    path = tmp_path / "busy" / "events.jsonl"
    for step in range(1, 6):
        job.log.append(Progress(step, 5, "1"))
    await eventually(lambda: len(path.read_text().splitlines()) == 5,
                     "the buffered lines are written out", timeout=5)
    job.log.append(Progress(1, 1, "2"))
    store.flush()
    assert len(path.read_text().splitlines()) == 6
    job.log.append(JobStatus(FAILED))
    assert len(path.read_text().splitlines()) == 7 and "busy" not in store._logs


async def test_a_busy_log_is_written_out_by_its_events_not_by_a_timer(tmp_path: Path
                                                                     ) -> None:
    """An event that comes FLUSH_EVERY after the last write-out has the log written in
    its own loop turn; one sooner leaves its line buffered under a timer of
    FLUSH_QUIET, which the next late-enough event makes needless."""
    store = JobStore(tmp_path)
    job = Job(id="ticks")
    store.log_for(job)
    store.save(job)
    path = tmp_path / "ticks" / "events.jsonl"
    job.log.append(Progress(1, 3, "1"))
    await asyncio.sleep(0)  # one loop turn: the readers', then the write-out
    assert len(path.read_text().splitlines()) == 1
    job.log.append(Progress(2, 3, "1"))
    await asyncio.sleep(0)
    assert len(path.read_text().splitlines()) == 1  # within FLUSH_EVERY: buffered
    timer = store._flush_handle
    assert isinstance(timer, asyncio.TimerHandle)
    assert timer.when() - asyncio.get_running_loop().time() > 10 * FLUSH_EVERY
    store._flushed_at -= FLUSH_EVERY  # as though the next tick came 50 ms later
    job.log.append(Progress(3, 3, "1"))
    await asyncio.sleep(0)
    assert len(path.read_text().splitlines()) == 3
    assert timer.cancelled() and store._flush_handle is None


async def test_a_reader_takes_what_was_logged_together_as_one_batch() -> None:
    """`batches` hands a reader everything new when it looks (what the SSE writer sends
    in one write); `follow` yields the same events one by one; both end after the
    terminal status."""
    job = Job(id="j", life=Lifecycle("running"))
    job.log.append(Executing("1"))
    batches = job.log.batches()
    assert [e.seq for e in await anext(batches)] == [1]
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0)
    assert not waiting.done(), "a reader with nothing new waits"
    job.log.append(Progress(1, 2))  # a burst: logged in one turn of the loop
    job.log.append(Progress(2, 2))
    assert [e.seq for e in await asyncio.wait_for(waiting, 5)] == [2, 3]
    job.life.end(COMPLETED)
    await job.changed()
    assert [[e.seq for e in b] async for b in batches] == [[4]]
    assert [e.seq async for e in job.log.follow(1)] == [2, 3, 4]
    assert [[e.seq for e in b] async for b in job.log.batches(2)] == [[3, 4]]


# -- cancelling --------------------------------------------------------------------------


class EndingExecutor:
    """Ends a cancelled job the way the runner does when ComfyUI's last messages come in
    one burst: `execution_interrupted` `pre` loop turns after the cancel, then
    `executing`, then the job's end, `gap` turns apart."""

    healthy = True

    def __init__(self, job: Job, pre: int, gap: int) -> None:
        self.job, self.pre, self.gap = job, pre, gap
        self.tasks: list[asyncio.Task] = []

    async def cancel(self, job_id: str) -> bool:
        self.tasks.append(asyncio.get_running_loop().create_task(self._end()))
        return True

    async def _end(self) -> None:
        for _ in range(self.pre):
            await asyncio.sleep(0)
        await self.job.event(ExecutionInterrupted("1"))
        for _ in range(self.gap):
            await asyncio.sleep(0)
        await self.job.event(Executing(None))
        for _ in range(self.gap):
            await asyncio.sleep(0)
        assert self.job.life.end(FAILED)
        await self.job.changed()


async def test_cancel_returns_as_soon_as_the_job_ends(tmp_path: Path) -> None:
    """CI saw a cancel answer after its whole 5 s wait while the job had ended 10 ms
    after the interrupt: the wait woke on each event and could miss the last one (it
    did for two of these spacings)."""
    async with httpx.AsyncClient() as http:
        service = JobService(JobStore(tmp_path / "jobs"), BlobStore(tmp_path / "blobs"), http)
        for pre in range(4):
            for gap in range(8):
                job = Job(id=f"c{pre}{gap}", life=Lifecycle("running"),
                          listener=service._moved)
                service.jobs[job.id] = job
                executor = EndingExecutor(job, pre, gap)
                service.attach(executor)  # type: ignore[arg-type]
                started = time.monotonic()
                cancelled = await service.cancel(job.id, wait=1.0)
                assert cancelled.status == FAILED
                assert time.monotonic() - started < 0.5, \
                    f"the cancel waited past the job's end ({pre=}, {gap=})"
                await asyncio.gather(*executor.tasks)
