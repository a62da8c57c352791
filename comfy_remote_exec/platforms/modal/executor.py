"""The job service's `Executor` on Modal: each job is a spawned call of the GPU class.

`submit` spawns the GPU function with the job (`.spawn()`, so it returns at
once, before any GPU is up), records the call's id in the store, and starts
the job's relay: a task that reads the job's partition of the events queue
(`messages`) and feeds the job record, the run's sink, exactly as the
runner feeds it in the worker: `job.event(payload)` for each event, the
lifecycle's start and end followed by `job.changed()`. The API's own
`EventLog` numbers the events, so the SSE stream, resumption with `after=`
and the job views are the worker's.

While the partition is quiet the relay looks at the call itself
(`get(timeout=0)`): a call that ended without sending its end (it crashed,
ran past its timeout, was cancelled before it started, or its end message
was lost) ends the job with what the call says. `cancel` is
`FunctionCall.cancel()`; the GPU container then interrupts ComfyUI and sends
the end. `resume` follows the unfinished jobs an earlier API container left
in the store, by their call ids (`FunctionCall.from_id`).

`object_info` and `/health?deep` are answered from what the GPU containers
last wrote to the store (`comfy:info`), or, before any did, by calling the
GPU class's `describe` (which starts one).

The queue, the store and the GPU functions are passed in (`GpuFunctions`):
Modal's objects in the app, stand-ins in the local run and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ...errors import RemoteExecError, RemoteUnavailable
from ...protocol import CANCELLED, COMPLETED, FAILED, TERMINAL_STATUSES, Lifecycle
from ...worker.service.jobs import Job
from . import messages
from .store import INFO_KEY, ModalStore

log = logging.getLogger(__name__)

IDLE = 5.0  # seconds the relay waits on a quiet partition before it looks at the call
BATCH = 256
INFO_TTL = 30.0


@dataclass
class GpuFunctions:
    """How the API reaches the GPU class: `spawn(request)` -> a FunctionCall,
    `call_from_id(id)` -> the same again, `describe()` -> its ComfyUI's report."""

    spawn: Callable[[dict[str, Any]], Awaitable[Any]]
    call_from_id: Callable[[str], Any]
    describe: Callable[[], Awaitable[dict[str, Any]]] | None = None


@dataclass
class _Relay:
    life: Lifecycle
    sink: Job
    call: Any
    task: asyncio.Task[None] | None = None


def call_failure(exc: BaseException, job_id: str) -> RemoteExecError:
    """What a GPU call's exception means for its job."""
    if isinstance(exc, RemoteExecError):
        exc.job_id = exc.job_id or job_id
        return exc
    name = type(exc).__name__
    if name == "FunctionTimeoutError":
        return RemoteExecError(f"the job ran past the GPU function's timeout ({exc})",
                               code="job_timeout", job_id=job_id)
    return RemoteUnavailable(f"the GPU call failed: {name}: {exc}", code="gpu_call_failed",
                             retryable=True, job_id=job_id)


class ModalExecutor:
    def __init__(self, events: Any, store: ModalStore, gpu: GpuFunctions, *,
                 idle: float = IDLE, batch: int = BATCH) -> None:
        self.events = events
        self.store = store
        self.gpu = gpu
        self.idle = idle
        self.batch = batch
        self._relays: dict[str, _Relay] = {}
        self._info: tuple[float, dict[str, Any]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def healthy(self) -> bool:
        return True  # GPU containers start on demand

    def active(self) -> int:
        return len(self._relays)

    # -- submitting -------------------------------------------------------------------

    async def submit(self, job_id: str, workflow: dict[str, Any], media: dict[str, str], *,
                     life: Lifecycle, sink: Job, priority: int = 0,
                     targets: list[str] | None = None, url_prefix: str = "",
                     extra_data: dict[str, Any] | None = None) -> str:
        prompt_id = str(uuid.uuid4())
        request = {"job_id": job_id, "prompt_id": prompt_id, "workflow": workflow,
                   "media": media, "priority": priority, "targets": targets,
                   "url_prefix": url_prefix, "extra_data": extra_data or {}}
        try:
            call = await self.gpu.spawn(request)
        except RemoteExecError:
            raise
        except Exception as exc:
            raise RemoteUnavailable(f"could not start the job on Modal: {exc}",
                                    code="spawn_failed", retryable=True) from exc
        await self.store.record_run(job_id, call.object_id)
        self._follow(job_id, life, sink, call)
        return prompt_id

    def resume(self, jobs: Iterable[Job]) -> None:
        """Follow again the unfinished jobs an earlier API left (call the loop's thread)."""
        for job in jobs:
            if job.terminal or job.id in self._relays:
                continue
            run = self.store.runs.get(job.id)
            if run is None:
                self._spawn_end(job, FAILED, RemoteUnavailable(
                    "the API restarted before this job reached a GPU", code="job_lost",
                    retryable=True, job_id=job.id))
                continue
            self._follow(job.id, job.life, job, self.gpu.call_from_id(run["call_id"]))

    def _spawn_end(self, job: Job, status: str, error: RemoteExecError | None) -> None:
        async def end() -> None:
            if job.life.end(status, error):
                await job.changed()

        task = asyncio.get_running_loop().create_task(end())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _follow(self, job_id: str, life: Lifecycle, sink: Job, call: Any) -> None:
        relay = self._relays[job_id] = _Relay(life, sink, call)
        relay.task = asyncio.get_running_loop().create_task(self._relay(job_id, relay),
                                                            name=f"modal-relay-{job_id}")

    # -- relaying ---------------------------------------------------------------------

    async def _relay(self, job_id: str, relay: _Relay) -> None:
        try:
            while not relay.life.terminal:
                try:
                    items = await self.events.get_many.aio(self.batch, block=True,
                                                           timeout=self.idle,
                                                           partition=job_id)
                except queue.Empty:
                    items = []
                look = not items
                for item in items:
                    message = messages.parse(item)
                    look = look or message.kind == messages.POKE
                    await self._apply(relay, message)
                if look and not relay.life.terminal:
                    await self._check_call(job_id, relay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("relaying job %s failed", job_id)
            if relay.life.end(FAILED, RemoteUnavailable(
                    f"the API lost the job's events: {exc}", code="relay_failed",
                    retryable=True, job_id=job_id)):
                await relay.sink.changed()
        finally:
            self._relays.pop(job_id, None)
        with contextlib.suppress(Exception):
            await self.events.clear.aio(partition=job_id)

    async def _apply(self, relay: _Relay, message: messages.Message) -> None:
        life = relay.life
        if message.kind == messages.EVENT and message.payload is not None:
            await relay.sink.event(message.payload)
        elif message.kind == messages.START:
            if message.cold_start is not None and relay.sink.cold_start is None:
                relay.sink.cold_start = message.cold_start
            if life.start():
                await relay.sink.changed()
        elif message.kind == messages.END:
            status = message.status if message.status in TERMINAL_STATUSES else FAILED
            error = None if status == COMPLETED else message.error
            if life.end(status, error):
                await relay.sink.changed()

    async def _drain(self, job_id: str, relay: _Relay) -> None:
        while not relay.life.terminal:
            items = await self.events.get_many.aio(self.batch, block=False, partition=job_id)
            if not items:
                return
            for item in items:
                await self._apply(relay, messages.parse(item))

    async def _check_call(self, job_id: str, relay: _Relay) -> None:
        """The call is still queued or running, or it is over: then end the job with
        what it sent, else with what it returned or raised."""
        try:
            result = await relay.call.get.aio(timeout=0)
        except TimeoutError:  # the builtin: no result yet
            return
        except Exception as exc:
            await self._drain(job_id, relay)
            cancelled = relay.life.cancel_requested
            error = None if cancelled else call_failure(exc, job_id)
            if relay.life.end(CANCELLED if cancelled else FAILED, error):
                await relay.sink.changed()
            return
        await self._drain(job_id, relay)
        if relay.life.terminal:
            return
        ended = messages.parse({"k": messages.END, **(result if isinstance(result, dict)
                                                     else {"status": FAILED})})
        log.warning("job %s: its GPU call ended (%s) but its end never came through the "
                    "queue", job_id, ended.status)
        await self._apply(relay, ended)

    # -- cancelling -------------------------------------------------------------------

    async def cancel(self, job_id: str) -> bool:
        relay = self._relays.get(job_id)
        if relay is None or relay.life.terminal:
            return False
        relay.life.request_cancel()
        await relay.call.cancel.aio()
        with contextlib.suppress(Exception):  # wakes the relay to look at the call now
            await self.events.put.aio(messages.poke_item(), partition=job_id)
        return True

    # -- what the GPU containers report --------------------------------------------------

    async def _comfy_info(self, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if self._info is not None and not refresh and now - self._info[0] < INFO_TTL:
            return self._info[1]
        info = await self.store.dict.get.aio(INFO_KEY)
        if not isinstance(info, dict) and self.gpu.describe is not None:
            info = await self.gpu.describe()
        if not isinstance(info, dict):
            raise RemoteUnavailable("no GPU container has reported its ComfyUI yet",
                                    code="comfyui_unhealthy", retryable=True)
        self._info = (now, info)
        return info

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        info = await self._comfy_info(refresh)
        return dict(info.get("object_info") or {})

    async def report(self) -> dict[str, Any]:
        info = await self._comfy_info()
        return {"system_stats": info.get("system_stats") or {},
                "models": info.get("models") or {}, "reported_at": info.get("at")}

    async def close(self) -> None:
        tasks = [r.task for r in self._relays.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
