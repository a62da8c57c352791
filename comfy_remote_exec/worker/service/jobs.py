"""Job records: state, progress, event log, and their persistence on disk.

A `Job` is also the runner's sink for its run (`event`, `changed`): an event
goes from the runner into the job's `EventLog`, and from there to every
reader, with no other stop on the way. What the service must do when a job
moves (webhooks, pruning) reaches it through the job's `listener`.

Each job has a directory with `job.json` (rewritten atomically: temp file,
then rename) and `events.jsonl` (appended; written out at most every 50 ms
while events flow, within a second once they stop, and at once when the job
ends). A worker restart therefore loses
no record (neither is synced to disk at each step: that is the extension's
journal's job, which holds what a client paid for, and it costs each job
milliseconds here); jobs that were queued or running at the time are marked failed with
the reason, since the ComfyUI that held them is gone. Preview frames never
reach the file (nobody replays them, and they are most of a log's size); a
finished job drops them from memory too, and the oldest finished jobs are
removed past a limit.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

from ...errors import RemoteExecError
from ...fsutil import atomic_write_json
from ...protocol import (
    COMPLETED,
    FAILED,
    Event,
    Executed,
    Executing,
    ExecutionCached,
    JobStatus,
    JobTiming,
    Lifecycle,
    OutputFile,
    Payload,
    Preview,
    Progress,
)

FLUSH_EVERY = 0.05  # seconds: a busy log is written out at most this often...
FLUSH_QUIET = 1.0  # ...and a quiet one's lines wait at most this long


class LogStore(Protocol):
    """Where an event log and its job's record persist (`JobStore`, Modal's store)."""

    def append_event(self, job_id: str, event: Event) -> None: ...

    def close_events(self, job_id: str) -> None: ...

    def save(self, job: Job) -> None: ...


class EventLog:
    """One job's numbered events: kept in memory, appended to the store's file
    (previews only in memory), and handed to every reader as they come."""

    def __init__(self, job_id: str, store: LogStore | None = None,
                 events: list[Event] | None = None) -> None:
        self.job_id = job_id
        self.store = store
        self.events: list[Event] = events or []
        self._news: asyncio.Event | None = None
        self._next = (self.events[-1].seq if self.events else 0) + 1  # previews leave gaps

    def append(self, payload: Payload) -> Event:
        event = Event(self._next, payload, time.time())
        self._next += 1
        self.events.append(event)
        if self.store is not None:
            try:
                self.store.append_event(self.job_id, event)
                if event.terminal:
                    self.store.close_events(self.job_id)
            except OSError:
                pass  # the record in memory still serves; the file is best effort
        news, self._news = self._news, None
        if news is not None:
            news.set()
        return event

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].terminal

    async def follow(self, after: int = 0) -> AsyncIterator[Event]:
        """Events with `seq > after`, live, ending after the terminal status."""
        async for batch in self.batches(after):
            for event in batch:
                yield event

    async def batches(self, after: int = 0) -> AsyncIterator[list[Event]]:
        """`follow`'s events, as the runs that were logged together: everything new
        when the reader looks. A reader that writes each run at once sends a burst
        (ComfyUI's `progress_state` and its `progress`, an `executed` and the
        messages after it) in one write, so the other side wakes once for it."""
        last = after
        while True:
            # By seq, not position: a finished job's log is compacted under us.
            start = bisect.bisect_right(self.events, last, key=lambda e: e.seq)
            if start < len(self.events):
                batch = self.events[start:]
                last = batch[-1].seq
                yield batch
                continue
            if self.ended:
                return
            if self._news is None:
                self._news = asyncio.Event()
            await self._news.wait()

    async def until_ended(self) -> None:
        """Until the terminal status is logged. It looks at the log each time it wakes
        rather than waiting for "the next event", so a burst that ends the job between
        two of its waits (Python 3.11's `wait_for` starts its coroutine a loop turn
        late) cannot leave it waiting for an event that never comes."""
        async for _ in self.batches(self.events[-1].seq if self.events else 0):
            pass

    def drop_previews(self) -> None:
        self.events = [e for e in self.events if not isinstance(e.payload, Preview)]


@dataclass
class Job:
    id: str
    life: Lifecycle = field(default_factory=Lifecycle)
    created_at: float = field(default_factory=time.time)
    prompt_id: str | None = None
    priority: int = 0
    user_id: str | None = None
    webhook_url: str | None = None
    nodes_total: int = 0
    nodes_completed: list[str] = field(default_factory=list)
    current_node: str | None = None
    step: dict[str, float] | None = None
    outputs: list[OutputFile] = field(default_factory=list)
    ui: dict[str, Any] = field(default_factory=dict)
    # The (process start, ComfyUI ready) span of the cold start this job was the first
    # after, or None (`protocol.timing`).
    cold_start: tuple[float, float] | None = None
    # Not persisted in job.json: the event log has its own file.
    log: EventLog = field(default=None, repr=False)  # type: ignore[assignment]
    listener: Callable[[Job], Awaitable[None]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = EventLog(self.id)

    @property
    def events(self) -> list[Event]:
        return self.log.events

    # -- the runner's sink --------------------------------------------------------------

    async def event(self, payload: Payload) -> None:
        """One of ComfyUI's events: progress, then the log."""
        if self.terminal:
            return
        self.track(payload)
        self.log.append(payload)

    async def changed(self) -> None:
        """The lifecycle moved: log its `job_status`, record it, tell the listener.

        The event goes first and the stream's readers get their turn before the
        record is written (about a millisecond of JSON and a rename), so the write
        is never on an event's way."""
        if self.terminal:
            self.current_node, self.step = None, None
        self.log.append(JobStatus(self.status, self.life.error,
                                  self.timing() if self.terminal else None))
        if self.log.store is not None:
            await asyncio.sleep(0)
            self.log.store.save(self)
        if self.listener is not None:
            await self.listener(self)

    def timing(self) -> JobTiming:
        """Its GPU seconds so far: queue wait, cold start, execution."""
        life = self.life
        return JobTiming.measure(self.created_at, life.started_at,
                                 life.finished_at if self.terminal else time.time(),
                                 self.cold_start)

    @property
    def status(self) -> str:
        return self.life.status

    @property
    def terminal(self) -> bool:
        return self.life.terminal

    @property
    def progress(self) -> float:
        if self.status == COMPLETED:
            return 100.0
        if not self.nodes_total:
            return 0.0
        done = float(len(self.nodes_completed))
        if self.step and self.step.get("max"):
            done += min(1.0, self.step["value"] / self.step["max"])
        return round(min(99.9, 100.0 * done / self.nodes_total), 1)

    def track(self, payload: Payload) -> None:
        """Update progress from one relayed event."""
        if isinstance(payload, ExecutionCached):
            for node in payload.nodes:
                self._completed(node)
        elif isinstance(payload, Executing):
            if self.current_node and self.current_node != payload.node:
                self._completed(self.current_node)
            self.current_node = payload.node
            self.step = None
        elif isinstance(payload, Progress):
            self.step = {"value": float(payload.value), "max": float(payload.max)}
        elif isinstance(payload, Executed):
            self.ui[payload.node] = payload.output
            # The record keeps the descriptors, not the bytes some carried inline.
            self.outputs.extend(replace(f, data=None) for f in payload.files)

    def _completed(self, node: str) -> None:
        if node not in self.nodes_completed:
            self.nodes_completed.append(node)

    def record(self) -> dict[str, Any]:
        """What job.json holds: the lifecycle flat, outputs as their wire dicts."""
        life = self.life
        return {
            "id": self.id, "status": life.status, "created_at": self.created_at,
            "started_at": life.started_at, "finished_at": life.finished_at,
            "error": life.error.to_dict() if life.error else None,
            "cancel_requested": life.cancel_requested,
            "prompt_id": self.prompt_id, "priority": self.priority, "user_id": self.user_id,
            "webhook_url": self.webhook_url, "nodes_total": self.nodes_total,
            "nodes_completed": self.nodes_completed, "current_node": self.current_node,
            "step": self.step, "outputs": [o.to_dict() for o in self.outputs], "ui": self.ui,
            "cold_start": list(self.cold_start) if self.cold_start else None,
            "timing": self.timing().to_dict(),
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Job:
        error = data.get("error")
        life = Lifecycle(status=str(data.get("status") or "queued"),
                         error=RemoteExecError.from_dict(error)
                         if isinstance(error, dict) else None,
                         cancel_requested=bool(data.get("cancel_requested")),
                         started_at=data.get("started_at"),
                         finished_at=data.get("finished_at"))
        outputs = []
        for raw in data.get("outputs") or []:
            try:
                outputs.append(OutputFile.parse(raw))
            except RemoteExecError:
                continue  # a v1 record's descriptor; its files are still in `ui`
        return cls(id=str(data["id"]), life=life, created_at=float(data["created_at"]),
                   prompt_id=data.get("prompt_id"), priority=int(data.get("priority") or 0),
                   user_id=data.get("user_id"), webhook_url=data.get("webhook_url"),
                   nodes_total=int(data.get("nodes_total") or 0),
                   nodes_completed=list(data.get("nodes_completed") or []),
                   current_node=data.get("current_node"), step=data.get("step"),
                   outputs=outputs, ui=dict(data.get("ui") or {}),
                   cold_start=cold_span(data.get("cold_start")))

    def view(self) -> dict[str, Any]:
        """The job's state as plain JSON (Unix times, the error as its dict), for the
        service's webhooks; the job API's answers are `worker/api/views.py`'s."""
        life = self.life
        error = life.error.to_dict() if life.error else None
        tail = error.pop("log_tail", []) if error else []
        return {
            "job_id": self.id, "status": self.status, "progress": self.progress,
            "progress_details": {
                "current_node": self.current_node,
                "nodes_completed": len(self.nodes_completed),
                "nodes_total": self.nodes_total, "step": self.step,
            },
            "prompt_id": self.prompt_id, "priority": self.priority, "user_id": self.user_id,
            "created_at": self.created_at, "started_at": life.started_at,
            "finished_at": life.finished_at,
            "outputs": [o.to_dict() for o in self.outputs],
            "ui": self.ui, "error": error, "error_log_tail": tail,
            "timing": self.timing().to_dict(),
        }


def cold_span(raw: Any) -> tuple[float, float] | None:
    """A record's `cold_start` span, or None when it has none (or not two numbers)."""
    if (isinstance(raw, list) and len(raw) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)):
        return float(raw[0]), float(raw[1])
    return None


class JobStore:
    """Job records under `root/<job_id>/`: `job.json` and the event log `events.jsonl`.

    A job's folder is made by its first `save` (the service saves once ComfyUI took
    the job); events logged before that wait in memory, so no file is touched
    between a submit and its hand-off to ComfyUI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._logs: dict[str, TextIO] = {}
        self._saved: set[str] = set()  # jobs whose folder exists
        self._waiting: dict[str, list[str]] = {}  # event lines of jobs not saved yet
        self._ended: set[str] = set()  # of those, the ones whose log is complete
        self._dirty: set[str] = set()  # logs with lines not written out yet
        self._flush_handle: asyncio.Handle | None = None
        self._flushed_at = 0.0

    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def log_for(self, job: Job) -> EventLog:
        """Give a new job its log, persisted here."""
        job.log = EventLog(job.id, self, job.log.events)
        return job.log

    def save(self, job: Job) -> None:
        folder = self._dir(job.id)
        if job.id not in self._saved:
            folder.mkdir(exist_ok=True)
            self._saved.add(job.id)
        atomic_write_json(folder / "job.json", job.record(), durable=False)
        waiting = self._waiting.pop(job.id, None)
        if waiting:
            fh = self._open(job.id)
            fh.write("".join(waiting))
            self._flush_soon(job.id)
            if job.id in self._ended:
                self.close_events(job.id)

    def _open(self, job_id: str) -> TextIO:
        fh = self._logs.get(job_id)
        if fh is None:
            fh = self._logs[job_id] = (self._dir(job_id) / "events.jsonl").open(
                "a", encoding="utf-8")
        return fh

    def append_event(self, job_id: str, event: Event) -> None:
        """Append to the job's event log (kept open until `close_events`).

        Preview frames stay in memory only: no reader of the file wants them.
        """
        if isinstance(event.payload, Preview):
            return
        if isinstance(event.payload, Executed) and event.payload.files:
            # Inline output bytes stay out of the file; a replay downloads them by url.
            wire = event.to_wire()
            wire["data"] = {**event.payload.to_data(), "files": [
                {k: v for k, v in f.to_dict().items() if k != "data"}
                for f in event.payload.files]}
            line = json.dumps(wire, separators=(",", ":")) + "\n"
        else:
            line = event.wire_json() + "\n"
        if job_id not in self._saved:
            self._waiting.setdefault(job_id, []).append(line)
            return
        self._open(job_id).write(line)
        self._flush_soon(job_id)

    def _flush_soon(self, job_id: str) -> None:
        """Write a log's buffered lines out soon: a syscall per event would cost a busy
        job's progress events as much as their JSON.

        An event that comes `FLUSH_EVERY` after the last write-out has it done in the
        same loop turn, after the stream's readers had their turn; otherwise a timer
        writes the lines out after `FLUSH_QUIET`, unless an event does first. So a
        running job's log never wakes the worker on its own: a timer per write-out
        was a wake of its own between two of a job's progress ticks, on the cores
        the job computes on."""
        self._dirty.add(job_id)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool reading the store): at once
            self.flush()
            return
        busy = time.monotonic() - self._flushed_at >= FLUSH_EVERY
        pending = self._flush_handle
        if pending is not None:
            if not busy or not isinstance(pending, asyncio.TimerHandle):
                return  # a write-out as soon or sooner is on its way
            pending.cancel()  # the quiet timer: this turn writes instead
        self._flush_handle = (loop.call_soon(self.flush) if busy
                              else loop.call_later(FLUSH_QUIET, self.flush))

    def flush(self) -> None:
        """Write out every log's buffered lines (also on the way out)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_handle = None
        self._flushed_at = time.monotonic()
        for job_id in self._dirty:
            fh = self._logs.get(job_id)
            if fh is not None:
                with contextlib.suppress(OSError):
                    fh.flush()
        self._dirty.clear()

    def close_events(self, job_id: str) -> None:
        if job_id in self._waiting:
            self._ended.add(job_id)  # its first save writes the lines, then closes
            return
        self._ended.discard(job_id)
        self._dirty.discard(job_id)
        fh = self._logs.pop(job_id, None)
        if fh is not None:
            fh.close()

    def remove(self, job_id: str) -> None:
        self._waiting.pop(job_id, None)
        self.close_events(job_id)
        self._saved.discard(job_id)
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    def load_all(self) -> list[Job]:
        """Every stored job, oldest first; unfinished ones are marked failed."""
        jobs = []
        for record in self.root.glob("*/job.json"):
            try:
                job = Job.from_record(json.loads(record.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue
            self._saved.add(job.id)
            events: list[Event] = []
            events_file = record.parent / "events.jsonl"
            if events_file.exists():
                for line in events_file.read_text(encoding="utf-8").splitlines():
                    try:
                        events.append(Event.parse(json.loads(line)))
                    except (ValueError, RemoteExecError):
                        break  # a torn last line, or a log of another protocol version
            job.log = EventLog(job.id, self, events)
            was = job.status
            if job.life.end(FAILED, RemoteExecError(
                    f"the worker restarted while this job was {was}",
                    code="worker_restarted", retryable=True, job_id=job.id)):
                self.save(job)
                job.log.append(JobStatus(FAILED, job.life.error))
            jobs.append(job)
        jobs.sort(key=lambda j: j.created_at)
        return jobs
