"""Job records and event logs in a `modal.Dict`: the job service's `Store` on Modal.

The API container keeps its jobs in memory, like the worker, and persists
them here so that an API container started later (after a scale-down or a
redeploy) and the scheduled functions see them. Keys:

- `job:<id>`: the job's record (`Job.record()`, plain JSON-able data);
- `events:<id>:<n>`: the n-th batch of its events in their wire shape
  (preview frames stay in memory, as the worker keeps them off its disk);
- `run:<id>`: `{"call_id", "spawned_at"}`, the GPU call that runs it;
- `comfy:info`: what the GPU containers last reported of their ComfyUI
  (`object_info`, `system_stats`, model lists), for `/v1/object_info` and
  `/health?deep` without starting a GPU.

Writes are behind: `save` and `append_event` mark the key dirty and a
flusher task writes the dirty keys every `interval` (at once when a job
ends), so an event never waits for a Dict round trip on its way to the
client. An API that dies between flushes loses up to `interval` of events
of its running jobs from the record (never from their GPU calls, whose end
comes back through the queue or the call's result). `close()` flushes.

The `modal.Dict` (or `DictStandIn`) is passed in; its `.aio` methods are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ...errors import RemoteExecError
from ...protocol import Event, Preview
from ...worker.service.jobs import EventLog, Job

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
INFO_KEY = "comfy:info"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def run_key(job_id: str) -> str:
    return f"run:{job_id}"


def events_key(job_id: str, n: int) -> str:
    return f"events:{job_id}:{n}"


def split_key(key: Any) -> tuple[str, str, int]:
    """`("job" | "run" | "events", job_id, n)`; ("", "", 0) for other keys."""
    if not isinstance(key, str):
        return "", "", 0
    kind, _, rest = key.partition(":")
    if kind in ("job", "run"):
        return kind, rest, 0
    if kind == "events":
        job_id, _, n = rest.rpartition(":")
        return ("events", job_id, int(n)) if n.isdigit() else ("", "", 0)
    return "", "", 0


async def read_all(store_dict: Any) -> tuple[dict[str, dict[str, Any]],
                                              dict[str, dict[int, list[Any]]],
                                              dict[str, dict[str, Any]]]:
    """Every job record, event batch and run of the Dict: (records, events, runs)."""
    records: dict[str, dict[str, Any]] = {}
    events: dict[str, dict[int, list[Any]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    async for key, value in store_dict.items.aio():
        kind, job_id, n = split_key(key)
        if kind == "job" and isinstance(value, dict):
            records[job_id] = value
        elif kind == "run" and isinstance(value, dict):
            runs[job_id] = value
        elif kind == "events" and isinstance(value, list):
            events.setdefault(job_id, {})[n] = value
    return records, events, runs


class ModalStore:
    """The `Store` seam over a Dict. Build it with `await ModalStore.open(d)`."""

    def __init__(self, store_dict: Any, *, interval: float = FLUSH_INTERVAL) -> None:
        self.dict = store_dict
        self.interval = interval
        self.runs: dict[str, dict[str, Any]] = {}
        self._loaded: list[Job] = []
        self._batches: dict[str, int] = {}  # job id -> the number of its next event batch
        self._records: dict[str, dict[str, Any]] = {}  # dirty job records
        self._events: dict[str, list[Any]] = {}  # unwritten events per job
        self._removed: set[str] = set()
        self._dirty = asyncio.Event()
        self._urgent = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    async def open(cls, store_dict: Any, *, interval: float = FLUSH_INTERVAL) -> ModalStore:
        store = cls(store_dict, interval=interval)
        records, events, runs = await read_all(store_dict)
        store.runs = runs
        for job_id, record in records.items():
            try:
                job = Job.from_record(record)
            except (KeyError, TypeError, ValueError):
                log.warning("skipping the unreadable record of job %s", job_id)
                continue
            wire: list[Event] = []
            for n in sorted(events.get(job_id, {})):
                for raw in events[job_id][n]:
                    try:
                        wire.append(Event.parse(raw))
                    except RemoteExecError:
                        break
            wire.sort(key=lambda e: e.seq)
            job.log = EventLog(job.id, store, wire)
            store._batches[job_id] = max(events.get(job_id, {0: []}), default=0) + 1
            store._loaded.append(job)
        store._loaded.sort(key=lambda j: j.created_at)
        store._flusher = asyncio.create_task(store._flush_loop(), name="modal-store-flush")
        return store

    # -- the Store seam (sync: it only marks things for the flusher) ------------------

    def load_all(self) -> list[Job]:
        """The stored jobs, oldest first, as they are: unfinished ones still run on
        their GPU calls, and the executor follows them again (`ModalExecutor.resume`)."""
        return list(self._loaded)

    def log_for(self, job: Job) -> EventLog:
        job.log = EventLog(job.id, self, job.log.events)
        self._batches.setdefault(job.id, 0)
        return job.log

    def save(self, job: Job) -> None:
        self._removed.discard(job.id)
        self._records[job.id] = job.record()
        self._mark(urgent=job.terminal)

    def append_event(self, job_id: str, event: Event) -> None:
        if isinstance(event.payload, Preview):
            return
        self._events.setdefault(job_id, []).append(event.to_wire())
        self._mark(urgent=event.terminal)

    def close_events(self, job_id: str) -> None:
        self._mark(urgent=True)

    def remove(self, job_id: str) -> None:
        self._records.pop(job_id, None)
        self._events.pop(job_id, None)
        self.runs.pop(job_id, None)
        self._removed.add(job_id)
        self._mark(urgent=False)

    # -- runs (written at once: the scheduled functions and a new API need them) --------

    async def record_run(self, job_id: str, call_id: str) -> None:
        run = {"call_id": call_id, "spawned_at": time.time()}
        self.runs[job_id] = run
        await self.dict.put.aio(run_key(job_id), run)

    # -- writing -------------------------------------------------------------------

    def _mark(self, urgent: bool) -> None:
        self._dirty.set()
        if urgent:
            self._urgent.set()

    async def _flush_loop(self) -> None:
        # Stopped by `close` through `_closing`, not by cancelling: on Python 3.11 a
        # cancel that lands as `wait_for`'s inner wait completes is swallowed, and the
        # loop would wait on `_dirty` for ever.
        while not self._closing:
            await self._dirty.wait()
            if self._closing:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), self.interval)
            try:
                await self.flush()
            except Exception:  # a Dict hiccup: keep what is pending, try again later
                log.exception("writing job records to the Dict failed")
                await asyncio.sleep(self.interval)

    async def flush(self) -> None:
        """Write every dirty record, new event batch and removal now."""
        self._dirty.clear()
        self._urgent.clear()
        records, self._records = self._records, {}
        events, self._events = self._events, {}
        removed, self._removed = self._removed, set()
        updates: dict[str, Any] = {job_key(i): r for i, r in records.items()}
        for job_id, batch in events.items():
            n = self._batches.get(job_id, 0)
            self._batches[job_id] = n + 1
            updates[events_key(job_id, n)] = batch
        try:
            if updates:
                await self.dict.update.aio(updates)
        except BaseException:
            for job_id, record in records.items():  # put back what did not get written
                self._records.setdefault(job_id, record)
            for job_id, batch in events.items():
                self._batches[job_id] -= 1
                self._events[job_id] = batch + self._events.get(job_id, [])
            self._removed |= removed
            self._dirty.set()
            raise
        for job_id in removed:
            try:
                await self._delete(job_id)
            except BaseException:
                self._removed.add(job_id)
                self._dirty.set()
                raise

    async def _delete(self, job_id: str) -> None:
        await delete_job(self.dict, job_id, self._batches.pop(job_id, 0))

    async def close(self) -> None:
        """Stop the flush loop, then write what is pending."""
        self._closing = True
        self._dirty.set()
        self._urgent.set()
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self.flush()


async def delete_job(store_dict: Any, job_id: str, batches: int | None = None) -> None:
    """Remove a job's record, run and event batches from the Dict."""
    await store_dict.pop.aio(job_key(job_id), None)
    await store_dict.pop.aio(run_key(job_id), None)
    n = 0
    while batches is None or n < batches:
        if await store_dict.pop.aio(events_key(job_id, n), None) is None and batches is None:
            break
        n += 1
