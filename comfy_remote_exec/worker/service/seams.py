"""The parts the job service works over, so each host brings its own.

The service (submitting, cancelling, listing, following, webhooks) is the
same everywhere; what differs is where its state lives and where jobs run:

- `Store`: job records and their persisted event logs. The worker keeps them
  in files (`jobs.JobStore`); Modal in a `modal.Dict`.
- `Executor`: runs a job and feeds its events to the job record (the run's
  sink) and moves its lifecycle. The worker's is the `Runner` on its own
  ComfyUI; Modal's spawns the GPU class and relays the events it sends back
  through a `modal.Queue` partition per job.
- `Storage`: where input blobs and output files are shared between the API
  and the executor. The worker needs nothing (one filesystem: a job's files
  are in its ComfyUI's folders); Modal commits and reloads a `modal.Volume`
  and keeps each job's files in a folder of its own there, since several GPU
  containers, each with its own ComfyUI, name their files alike.

Each part is a `Protocol`; the local implementations are the defaults.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...protocol import Event, Lifecycle
from ..comfy.outputs import ComfyDirs
from .jobs import EventLog, Job


class Store(Protocol):
    def load_all(self) -> list[Job]:
        """Every stored job, oldest first. Unfinished ones are marked failed where
        nothing runs them any more (the worker's, whose ComfyUI went with it); Modal's
        GPU calls outlive the API, so its executor picks them up again instead."""
        ...

    def save(self, job: Job) -> None: ...

    def remove(self, job_id: str) -> None: ...

    def log_for(self, job: Job) -> EventLog:
        """Give a new job its event log, persisted here."""
        ...

    def append_event(self, job_id: str, event: Event) -> None: ...

    def close_events(self, job_id: str) -> None: ...


class Executor(Protocol):
    @property
    def healthy(self) -> bool:
        """Whether jobs can run now (a cold executor that starts on demand counts)."""
        ...

    def active(self) -> int:
        """Jobs it holds, queued or running."""
        ...

    async def submit(self, job_id: str, workflow: dict[str, Any], media: dict[str, str], *,
                     life: Lifecycle, sink: Job, priority: int = 0,
                     targets: list[str] | None = None, url_prefix: str = "",
                     extra_data: dict[str, Any] | None = None) -> str:
        """Queue the job; returns ComfyUI's prompt id. `media` maps the names the
        workflow uses to blob hashes. Events go to `sink`; the executor makes every
        transition of `life` (start, and the one end)."""
        ...

    async def cancel(self, job_id: str) -> bool:
        """Stop the job; False if the executor does not hold it (it ended)."""
        ...

    async def object_info(self, refresh: bool = False) -> dict[str, Any]: ...

    async def report(self) -> dict[str, Any]:
        """`system_stats` and the model files per folder, for `/health?deep`."""
        ...


class Storage(Protocol):
    async def publish(self) -> None:
        """Make what this side wrote (blobs, outputs) visible to the other side."""
        ...

    async def refresh(self) -> None:
        """See what the other side published."""
        ...

    def job_dirs(self, job_id: str) -> ComfyDirs | None:
        """Where this job's output files are, or None: in the API's own ComfyUI folders."""
        ...


class LocalStorage:
    """One filesystem for the API and the executor: nothing to publish or refresh."""

    async def publish(self) -> None:
        return None

    async def refresh(self) -> None:
        return None

    def job_dirs(self, job_id: str) -> ComfyDirs | None:
        return None
