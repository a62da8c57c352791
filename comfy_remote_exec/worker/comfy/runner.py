"""Run jobs on the supervised ComfyUI and turn what it does into job events.

The runner is the part of the worker that knows ComfyUI. Each run has a
`RunSink` (the job record): the runner hands it each typed event and tells it
when the job's `Lifecycle`, which the record and the run share, moved. The
runner makes every transition of a job it holds: `start` at ComfyUI's
`execution_start`, `end` in `_finish`, the one place a run ends.

Jobs go straight into ComfyUI's own queue (priority maps onto ComfyUI's
`number`), so the next job starts the moment the previous ends and a job that
has not started yet can be deleted from that queue. One WebSocket, with this
runner's `client_id` and preview metadata declared, carries the events of all
jobs; they are routed by `prompt_id`. When ComfyUI dies, the running job fails
with the log tail and jobs still waiting are queued again once ComfyUI is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ...errors import BadRequest, JobFailed, RemoteExecError, RemoteUnavailable
from ...protocol import (
    CANCELLED,
    COMPLETED,
    ENDINGS,
    FAILED,
    QUEUED,
    Executed,
    Executing,
    ExecutionError,
    ExecutionStart,
    Lifecycle,
    OutputFile,
    Payload,
)
from ..inputs.blobs import BlobStore
from ..inputs.prepare import (
    find_missing_models,
    input_prefix,
    missing_model_error,
    rewrite_media_refs,
)
from .comfy_client import ComfyClient, Message
from .comfy_process import ComfyProcess
from .models import ModelFile, model_files
from .outputs import ComfyDirs, describe, small

log = logging.getLogger(__name__)

INTERRUPT_RETRIES = 20
# Outputs up to this size travel inside their `executed` event: a client lands them
# without a download request (most previews and small images; measured in the bench).
INLINE_OUTPUT_BYTES = 256 * 1024
SMALL_OUTPUT_BYTES = 64 * 1024  # described on the loop, without a thread hop
INTERRUPT_RETRY_DELAY = 0.25


class RunSink(Protocol):
    async def event(self, payload: Payload) -> None:
        """One of ComfyUI's events for the job, typed (an `Executed` with its files)."""

    async def changed(self) -> None:
        """The job's lifecycle moved: it started, or it ended (status and error set)."""


@dataclass
class Run:
    job_id: str
    prompt_id: str
    prompt: dict[str, Any]
    number: float
    targets: list[str] | None
    url_prefix: str
    life: Lifecycle
    sink: RunSink
    result: str | None = None  # the status ComfyUI's ending message means
    error: ExecutionError | None = None
    connection: int = 0
    inputs: frozenset[str] = frozenset()  # sha256 of the files placed for this job
    extra_data: dict[str, Any] = field(default_factory=dict)
    outputs: list[OutputFile] = field(default_factory=list)
    nodes_with_output: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Runner:
    def __init__(self, process: ComfyProcess, dirs: ComfyDirs, blobs: BlobStore) -> None:
        self.process = process
        self.dirs = dirs
        self.blobs = blobs
        self.client_id = f"remote-exec-{uuid.uuid4().hex[:12]}"
        self._session: aiohttp.ClientSession | None = None
        self.client: ComfyClient | None = None
        self._runs: dict[str, Run] = {}
        self._by_prompt: dict[str, Run] = {}
        self._current: Run | None = None
        self._ws_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connection = 0
        self._closing = False
        self._seq = 0
        self._object_info: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        process.on_crash(self._on_crash)

    async def start(self) -> None:
        # A host may have started ComfyUI already (Modal: before its memory snapshot).
        if not self.process.healthy:
            await self.process.start()
        self._session = aiohttp.ClientSession()
        self.client = ComfyClient(self.process.url, self._session)
        self._ws_task = asyncio.create_task(self._ws_loop(), name="comfyui-ws")
        await asyncio.wait_for(self._connected.wait(), 30)

    async def stop(self) -> None:
        self._closing = True
        for run in list(self._runs.values()):
            await self._finish(run, FAILED, RemoteUnavailable(
                "the worker is shutting down", code="worker_stopped", job_id=run.job_id))
        for task in [self._ws_task, *self._tasks]:
            if task and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._session:
            await self._session.close()
        await self.process.stop()

    def active(self) -> int:
        return len(self._runs)

    @property
    def healthy(self) -> bool:
        return self.client is not None and self.process.healthy

    async def report(self) -> dict[str, Any]:
        """ComfyUI's `system_stats` and its model files per folder."""
        assert self.client is not None
        folders = await self.client.models()
        return {"system_stats": await self.client.system_stats(),
                "models": {folder: await self.client.models(folder)
                           for folder in (folders if isinstance(folders, list) else [])}}

    async def model_files(self) -> dict[str, list[ModelFile]]:
        """The model files ComfyUI lists, with sizes and paths (`models.model_files`)."""
        assert self.client is not None
        return await model_files(self.client)

    # -- submitting ---------------------------------------------------------------

    async def submit(self, job_id: str, workflow: dict[str, Any], media: dict[str, str], *,
                     life: Lifecycle, sink: RunSink, priority: int = 0,
                     targets: list[str] | None = None, url_prefix: str = "",
                     extra_data: dict[str, Any] | None = None,
                     prompt_id: str | None = None) -> str:
        """Place the job's inputs and queue it in ComfyUI; returns its prompt id
        (`prompt_id` when given: Modal's API answers with it before a GPU holds the job).

        `media` maps the names the workflow uses to blob hashes; each file is
        placed under its content's folder (`prepare.input_prefix`). `extra_data`
        is ComfyUI's own (e.g. `extra_pnginfo`); the runner's client id wins.
        Raises `BadRequest` with ComfyUI's node errors when ComfyUI refuses the
        prompt; nothing of the job is left behind then.
        """
        assert self.client is not None, "Runner.start() first"
        if not self._connected.is_set():  # a live WebSocket is proof enough; else probe
            await self.process.ensure_healthy(session=self._session)
        await self._check_models(workflow)
        self._seq += 1
        prompt = rewrite_media_refs(workflow, media)
        for name, sha in media.items():
            self.blobs.link_into(sha, self.dirs.input / input_prefix(sha) / name)
        run = Run(job_id=job_id, prompt_id=prompt_id or str(uuid.uuid4()), prompt=prompt,
                  number=self._seq - priority * 1_000_000, targets=targets,
                  url_prefix=url_prefix, life=life, sink=sink, inputs=frozenset(media.values()),
                  extra_data={k: v for k, v in (extra_data or {}).items()
                              if k != "client_id"})
        self._runs[job_id] = run
        self._by_prompt[run.prompt_id] = run
        try:
            await self._queue(run)
        except BaseException:
            self._forget(run)
            raise
        return run.prompt_id

    async def _check_models(self, workflow: dict[str, Any]) -> None:
        """Refuse a workflow naming models the worker lacks (model lists refreshed once)."""
        missing = find_missing_models(workflow, await self.object_info())
        if missing:
            missing = find_missing_models(workflow, await self.object_info(refresh=True))
        if missing:
            raise missing_model_error(missing)

    def forget_object_info(self) -> None:
        """A model file appeared or left: the next `object_info` asks ComfyUI again."""
        self._object_info = None

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        """ComfyUI's node definitions, cached until a model lookup misses."""
        assert self.client is not None
        if self._object_info is None or refresh:
            self._object_info = await self.client.object_info()
        return self._object_info

    async def _queue(self, run: Run) -> None:
        assert self.client is not None
        await self.client.queue_prompt(run.prompt, prompt_id=run.prompt_id,
                                       client_id=self.client_id, number=run.number,
                                       partial_execution_targets=run.targets,
                                       extra_data=run.extra_data)

    def _forget(self, run: Run) -> None:
        self._runs.pop(run.job_id, None)
        self._by_prompt.pop(run.prompt_id, None)
        if self._current is run:
            self._current = None
        in_use = {sha for other in self._runs.values() for sha in other.inputs}
        for sha in run.inputs - in_use:
            shutil.rmtree(self.dirs.input / input_prefix(sha), ignore_errors=True)

    # -- cancelling ---------------------------------------------------------------

    async def cancel(self, job_id: str) -> bool:
        """Stop a job: delete it from ComfyUI's queue, or interrupt it if it runs.

        Returns False if the runner does not know the job (already finished).
        """
        run = self._runs.get(job_id)
        if run is None or run.done.is_set():
            return False
        assert self.client is not None
        run.life.request_cancel()
        if run.life.status == QUEUED:
            await self.client.delete_queued(run.prompt_id)
            queue = await self.client.queue()
            ids = {item[1] for key in ("queue_running", "queue_pending")
                   for item in queue.get(key, []) if isinstance(item, list) and len(item) > 1}
            if run.prompt_id not in ids and run.life.status == QUEUED:
                if await self.client.history(run.prompt_id) is None:
                    await self._finish(run, CANCELLED)
                return True
        self._spawn(self._interrupt_until_done(run))
        return True

    async def _interrupt_until_done(self, run: Run) -> None:
        # ComfyUI clears its interrupt flag when a prompt starts, so an interrupt
        # that lands between dequeue and start is lost; repeat until it takes.
        assert self.client is not None
        for _ in range(INTERRUPT_RETRIES):
            with contextlib.suppress(RemoteUnavailable):
                await self.client.interrupt(run.prompt_id)
            try:
                await asyncio.wait_for(run.done.wait(), INTERRUPT_RETRY_DELAY)
                return
            except asyncio.TimeoutError:
                continue

    # -- events -------------------------------------------------------------------

    async def _ws_loop(self) -> None:
        assert self.client is not None
        while not self._closing:
            try:
                await self.process.ensure_healthy()
                self._connection += 1
                # A message already in the socket's buffer is read without a pause,
                # so the SSE writers run once ComfyUI's burst is handled and send it
                # in one write (`EventLog.batches`); the next read that must wait
                # gives them their turn.
                async for message in self.client.websocket(self.client_id,
                                                           self._connected.set):
                    await self._route(message)
            except RemoteUnavailable as exc:
                log.debug("ComfyUI WebSocket: %s", exc)
            except Exception:
                log.exception("error while handling a ComfyUI event")
            self._connected.clear()
            if not self._closing:
                await asyncio.sleep(0.2)

    async def _route(self, message: Message) -> None:
        run = self._by_prompt.get(message.prompt_id) if message.prompt_id else self._current
        if run is None or run.done.is_set():
            return
        payload = message.payload
        if isinstance(payload, ExecutionStart):
            run.connection, self._current = self._connection, run
            if run.life.start():
                await run.sink.changed()
        elif isinstance(payload, Executed):
            payload.files = await self._describe(run, payload)
        elif type(payload) in ENDINGS:
            run.result = ENDINGS[type(payload)]
            run.error = payload if isinstance(payload, ExecutionError) else None
        await run.sink.event(payload)
        if isinstance(payload, Executing) and payload.node is None:
            await self._complete(run)

    async def _describe(self, run: Run, executed: Executed) -> list[OutputFile]:
        node_id, ui = executed.node, executed.output
        run.nodes_with_output.add(node_id)
        try:
            if small(self.dirs, ui, SMALL_OUTPUT_BYTES):
                files = describe(self.dirs, node_id, ui, run.url_prefix, INLINE_OUTPUT_BYTES)
            else:
                files = await asyncio.to_thread(describe, self.dirs, node_id, ui,
                                                run.url_prefix, INLINE_OUTPUT_BYTES)
        except BadRequest as exc:
            log.warning("node %s listed an unsafe output: %s", node_id, exc)
            return []
        run.outputs.extend(files)
        return files

    async def _complete(self, run: Run) -> None:
        """ComfyUI is done with the prompt (its history entry is written)."""
        if run.result is None or run.connection != self._connection:
            await self._reconcile(run)
        if run.result == COMPLETED:
            await self._finish(run, COMPLETED)
        elif run.result == CANCELLED or run.life.cancel_requested:
            await self._finish(run, CANCELLED)
        else:
            await self._finish(run, FAILED, self._failure(run))

    async def _reconcile(self, run: Run) -> None:
        """After a WebSocket gap, take missed outputs and the result from history.

        Skipped otherwise: ComfyUI reports every output (cached ones too) in
        `executed`, and its post-prompt garbage collection can hold up the
        history request for hundreds of milliseconds.
        """
        assert self.client is not None
        with contextlib.suppress(RemoteUnavailable):
            entry = await self.client.history(run.prompt_id) or {}
            for node_id, ui in (entry.get("outputs") or {}).items():
                if node_id in run.nodes_with_output or not isinstance(ui, dict):
                    continue
                executed = Executed(node=str(node_id), display_node=str(node_id), output=ui)
                executed.files = await self._describe(run, executed)
                await run.sink.event(executed)
            if run.result is None:
                status = (entry.get("status") or {}).get("status_str")
                run.result = COMPLETED if status == "success" else None

    def _failure(self, run: Run) -> JobFailed:
        error = run.error or ExecutionError()
        node_id, node_type = error.node_id, error.node_type
        message = error.exception_message or "ComfyUI reported an error"
        where = f"{node_type} (node {node_id}): " if node_id else ""
        details: dict[str, Any] = {}
        if run.error is not None:
            details = {"exception_type": error.exception_type, "traceback": error.traceback}
        return JobFailed(f"{where}{message.strip()}", code="execution_error",
                         job_id=run.job_id, node_id=node_id, node_type=node_type,
                         details=details, log_tail=self.process.tail())

    async def _finish(self, run: Run, status: str, error: RemoteExecError | None = None
                      ) -> None:
        """The one place a run ends: out of the runner, then the shared lifecycle."""
        if run.done.is_set():
            return
        run.done.set()
        self._forget(run)
        if error is not None:
            error.job_id = run.job_id
        if run.life.end(status, error):
            try:
                await run.sink.changed()
            except Exception:
                log.exception("sink failed to record the end of job %s", run.job_id)

    # -- crashes ------------------------------------------------------------------

    async def _on_crash(self, code: int | None, tail: list[str]) -> None:
        self._object_info = None
        waiting = []
        for run in list(self._runs.values()):
            if run.life.status != QUEUED:
                await self._finish(run, FAILED, JobFailed(
                    f"ComfyUI crashed (exit code {code}) while running this job",
                    code="comfyui_crashed", job_id=run.job_id, retryable=True,
                    log_tail=tail))
            else:
                waiting.append(run)
        self._current = None
        if waiting:
            self._spawn(self._requeue(sorted(waiting, key=lambda r: r.number)))

    async def _requeue(self, runs: list[Run]) -> None:
        try:
            await self.process.ensure_healthy()
        except RemoteUnavailable as exc:
            for run in runs:
                await self._finish(run, FAILED, exc)
            return
        await self._connected.wait()
        for run in runs:
            if run.done.is_set():
                continue
            try:
                await self._queue(run)
            except RemoteExecError as exc:
                await self._finish(run, FAILED, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
