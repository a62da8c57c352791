"""The local queue of remote jobs: queue order, N at a time, cancel, resume.

Jobs wait here until a slot is free (N is the `RemoteExec.ParallelJobs`
setting, default 1 like ComfyUI's serial queue), then run as a `JobRun`.
Pending jobs can be deleted without the remote ever seeing them; running ones
are cancelled on the remote. Every change is broadcast as a queue status so
the frontend's counter includes remote jobs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..backends.base import Backend
from ..errors import RemoteExecError
from ..protocol import JobTiming
from .host import Host
from .inputs import InputHasher
from .jobrun import JobRun
from .journal import PENDING, Journal, RemoteJob
from .landing import LandedFiles

log = logging.getLogger(__name__)

FINISHED_KEPT = 200
BackendFor = Callable[[RemoteJob], Backend]


class Dispatcher:
    def __init__(self, host: Host, journal: Journal, backend_for: BackendFor,
                 parallel: Callable[[], int],
                 on_output: Callable[[dict[str, Any]], None] | None = None,
                 on_timing: Callable[[RemoteJob, JobTiming], None] | None = None) -> None:
        self.host = host
        self.journal = journal
        self.backend_for = backend_for
        self.parallel = parallel
        self.on_output = on_output
        self.on_timing = on_timing
        self.hasher = InputHasher()
        self.landed = LandedFiles()
        self.pending: list[RemoteJob] = []
        self.running: dict[str, JobRun] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.finished: OrderedDict[str, RemoteJob] = OrderedDict()

    def add(self, job: RemoteJob) -> None:
        self.journal.save(job)
        bisect.insort(self.pending, job, key=lambda j: j.number)
        self.host.queue_changed()
        self._kick()

    def remaining(self) -> int:
        return len(self.pending) + len(self.running)

    def queue_items(self) -> tuple[list[list[Any]], list[list[Any]]]:
        return ([run.job.queue_item() for run in self.running.values()],
                [job.queue_item() for job in self.pending])

    def is_active(self, prompt_id: str) -> bool:
        """Pending or running here (a cancel can still reach it)."""
        return prompt_id in self.running or any(j.prompt_id == prompt_id
                                                for j in self.pending)

    def find(self, prompt_id: str) -> RemoteJob | None:
        """A pending, running or recently finished job."""
        if prompt_id in self.running:
            return self.running[prompt_id].job
        pending = next((j for j in self.pending if j.prompt_id == prompt_id), None)
        return pending or self.finished.get(prompt_id)

    def _kick(self) -> None:
        while self.pending and len(self.running) < max(1, self.parallel()):
            self._start(self.pending.pop(0))

    def _start(self, job: RemoteJob) -> None:
        try:
            backend = self.backend_for(job)
        except RemoteExecError as exc:
            backend = FailedBackend(exc)
        run = JobRun(job, backend, self.host, self.journal, self.hasher, self.on_output,
                     on_end=self._ended, landed=self.landed, on_timing=self.on_timing)
        self.running[job.prompt_id] = run
        self.host.queue_changed()  # as ComfyUI's queue announces a prompt it takes

        async def go() -> None:
            try:
                await run.run()
            finally:
                self.tasks.pop(job.prompt_id, None)
                self._ended(job)

        self.tasks[job.prompt_id] = asyncio.get_running_loop().create_task(
            go(), name=f"remote-job-{job.prompt_id}")

    def _ended(self, job: RemoteJob) -> None:
        """The job is over for the user: it leaves the queue before its last message.

        Its task may still be taking the remote's final status; the slot is free.
        """
        if self.running.pop(job.prompt_id, None) is None:
            return
        self.finished[job.prompt_id] = job
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)
        self.host.queue_changed()
        self._kick()

    async def cancel(self, prompt_id: str) -> bool:
        """Delete a pending job, or cancel a running one on the remote."""
        for job in self.pending:
            if job.prompt_id == prompt_id:
                self.pending.remove(job)
                self.journal.remove(prompt_id)
                self.host.queue_changed()
                return True
        run = self.running.get(prompt_id)
        if run is None:
            return False
        run.cancel()
        if run.job.remote_id is not None:
            try:
                await run.backend.cancel(run.job.remote_id)
            except RemoteExecError as exc:
                log.warning("cancelling remote job %s: %s", run.job.remote_id, exc)
        return True

    async def cancel_running(self) -> None:
        for prompt_id in list(self.running):
            await self.cancel(prompt_id)

    def clear_pending(self) -> None:
        for job in list(self.pending):
            self.journal.remove(job.prompt_id)
        self.pending.clear()
        self.host.queue_changed()

    def resume(self, jobs: list[RemoteJob]) -> None:
        """Take back the journal's unfinished jobs after a restart."""
        for job in jobs:
            if job.state == PENDING:
                bisect.insort(self.pending, job, key=lambda j: j.number)
            else:
                self._start(job)
        self._kick()
        self.host.queue_changed()

    async def close(self) -> None:
        """Stop following jobs locally; remote jobs go on and resume at the next start."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class FailedBackend:
    """The backend of a job whose backend could not be set up: every call raises why."""

    name = "failed"

    def __init__(self, error: RemoteExecError) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error
