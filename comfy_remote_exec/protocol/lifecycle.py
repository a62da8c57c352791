"""A job's lifecycle: the one state machine both sides keep.

    queued ──start──▶ running ──end──▶ completed | failed | cancelled
       └───────────────end──────────────▶ failed | cancelled

The worker's job record and the runner's run share one `Lifecycle` per job,
and the extension's `JobRun` keeps one for the local prompt. A lifecycle
ends once: `end()` is the only way into a terminal status, and only its first
call counts (it returns True to the caller that ended the job, which is the
one that reports it). A cancel is a request until the job ends, because a job
may still complete or fail before the interrupt lands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import RemoteExecError

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "queued", "running", "completed", "failed", "cancelled")
JOB_STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})


class LifecycleError(RemoteExecError):
    """A transition the state machine does not have (a bug, not bad input)."""

    code = "bad_transition"


@dataclass(slots=True)
class Lifecycle:
    status: str = QUEUED
    error: RemoteExecError | None = None
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def start(self) -> bool:
        """queued → running; False if it was running already or has ended."""
        if self.status != QUEUED:
            return False
        self.status, self.started_at = RUNNING, time.time()
        return True

    def request_cancel(self) -> bool:
        """Note a cancel; False if the job has ended (nothing to cancel)."""
        if self.terminal:
            return False
        self.cancel_requested = True
        return True

    def end(self, status: str, error: RemoteExecError | None = None) -> bool:
        """Move into a terminal status. True for the call that ended the job."""
        if status not in TERMINAL_STATUSES:
            raise LifecycleError(f"{status!r} is not an ending")
        if status == COMPLETED and error is not None:
            raise LifecycleError("a completed job carries no error")
        if self.terminal:
            return False
        self.status, self.error, self.finished_at = status, error, time.time()
        return True
