"""Run one accepted prompt on a backend and make it look local.

In order: ship the models preflight found the remote lacks (`shipping`, with
the loader node's native progress bar and a `remote_exec.shipping` toast),
ship the inputs the remote lacks and submit, then follow the
remote's typed events until its terminal `job_status`. Each event is re-sent
to the submitting client under the local prompt id; each `executed` waits for
its files to land locally and then points at them; the history entry is
written before the final messages go out, exactly as ComfyUI orders it, so
the frontend finds the outputs when it asks. Event types this side does not
know are passed to the client untouched.

The run's `Lifecycle` (queued → running → an ending) is the one source of its
status and error, and `_end` is the one place a run ends: whatever stopped
it (ComfyUI's last `executing` after its ending message, the remote's
terminal status, a refused submission, a lost remote, a cancel), it completes
the history entry, turning a failure that is not a ComfyUI error of its own
into an `execution_error` the stock frontend shows, then takes the job out of
the queue and journal and sends the last `executing`. A run that ended at
ComfyUI's `executing` still reads the remote's terminal status afterwards, for
the record and the error toast, without holding up the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..backends.base import Backend, EventStream, ModelStore
from ..errors import RemoteExecError
from ..protocol import (
    CANCELLED,
    COMPLETED,
    ENDINGS,
    FAILED,
    RUNNING,
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    JobSpec,
    JobStatus,
    JobTiming,
    JsonObject,
    Lifecycle,
    MediaItem,
    Payload,
    Preview,
    ProgressState,
    Unknown,
)
from .host import Host
from .inputs import InputHasher
from .journal import DONE, SUBMITTED, Journal, RemoteJob
from .landing import LandedFiles, Lander
from .preflight import needs_from_json
from .shipping import ShipNeed, ship_models

log = logging.getLogger(__name__)

# `extra_data` keys that mean something only to this ComfyUI; the rest (such as
# `extra_pnginfo`, the editor's workflow saved into PNGs) goes to the remote's.
LOCAL_EXTRA_DATA = frozenset({"client_id", "create_time", "remote_exec"})
# The ComfyUI messages stamped with a millisecond `timestamp`; also the ones a
# history entry keeps in `status.messages`.
STAMPED: frozenset[type[Payload]] = frozenset(
    {ExecutionStart, ExecutionCached, ExecutionSuccess, ExecutionError, ExecutionInterrupted})


def comfy_message(payload: Payload, prompt_id: str, ts: float) -> JsonObject:
    """The data of the ComfyUI WebSocket message a payload came from, under the local
    `prompt_id` (the inverse of the worker's translation)."""
    data = payload.to_data()
    if isinstance(payload, Executed):
        data.pop("files", None)
    if isinstance(payload, ProgressState):
        data["nodes"] = {nid: {**state.to_data(), "prompt_id": prompt_id}
                         for nid, state in payload.nodes.items()}
    data["prompt_id"] = prompt_id
    if type(payload) in STAMPED:
        data["timestamp"] = int((ts or time.time()) * 1000)
    return data


class JobRun:
    def __init__(self, job: RemoteJob, backend: Backend, host: Host, journal: Journal,
                 hasher: InputHasher, on_output: Callable[[dict[str, Any]], None] | None = None,
                 on_end: Callable[[RemoteJob], None] | None = None,
                 landed: LandedFiles | None = None,
                 on_timing: Callable[[RemoteJob, JobTiming], None] | None = None) -> None:
        self.job = job
        self.backend = backend
        self.host = host
        self.journal = journal
        self.hasher = hasher
        self.lander = Lander(host.output_dir, host.temp_dir, landed)
        self.on_output = on_output
        self.on_end = on_end
        self.on_timing = on_timing  # the remote's terminal status told its GPU seconds
        self.life = Lifecycle()
        self.outputs: dict[str, JsonObject] = {}
        self.meta: dict[str, JsonObject] = {}
        self.messages: list[list[Any]] = []
        self.executed_nodes: list[str] = []
        self.history_written = False
        self.ending: str | None = None  # the status ComfyUI's ending message means
        self.remote_ended = False  # the remote's terminal status was taken

    # -- the run --------------------------------------------------------------------

    async def run(self) -> None:
        """Run to the end. Cancellation (shutdown) leaves the journal entry to resume from."""
        events: AsyncIterator[Event] | None = None
        opened: EventStream | None = None  # the stream the submission opened, if it did
        try:
            try:
                if self.job.remote_id is None:
                    opened = await self._submit()
                assert self.job.remote_id is not None
                events = opened or self.backend.events(self.job.remote_id)
                status, error = await self._follow(events)
            except RemoteExecError as exc:
                exc.job_id = exc.job_id or self.job.remote_id
                status, error = FAILED, exc
            except Exception as exc:
                log.exception("remote job %s failed in the extension", self.job.prompt_id)
                status, error = FAILED, RemoteExecError(f"{type(exc).__name__}: {exc}",
                                                        code="extension_error")
            self._end(status, error)
            if events is not None and not self.remote_ended:
                await self._remote_status(events)
        finally:
            if opened is not None:
                await opened.aclose()

    def cancel(self) -> bool:
        """Note a cancel (the dispatcher tells the remote); False once the run ended."""
        return self.life.request_cancel()

    async def _ship_models(self) -> None:
        """Ship the models preflight found missing, before the job is submitted; the
        percentage shows on the loader node's progress bar and in a toast."""
        job = self.job
        needs = needs_from_json(job.ship_models)
        if not isinstance(self.backend, ModelStore):
            raise RemoteExecError(f"the {self.backend.name} backend cannot ship models; put "
                                  f"{', '.join(f'{n.folder}/{n.name}' for n, _ in needs)} on "
                                  "the remote", code="ship_unsupported")
        nodes = {(n.folder, n.name): node for n, node in needs}
        shown: dict[tuple[str, str], int] = {}

        def progress(need: ShipNeed, done: int, total: int) -> None:
            percent = 100 if total <= 0 else min(100, done * 100 // total)
            key = (need.folder, need.name)
            if shown.get(key) == percent:
                return
            shown[key] = percent
            self.host.send("remote_exec.shipping", {
                "prompt_id": job.prompt_id, "folder": need.folder, "name": need.name,
                "done": done, "total": total, "percent": percent, "finished": False},
                job.client_id)
            node = nodes.get(key)
            if node is not None:
                self.host.send("progress", {"value": percent, "max": 100, "node": node,
                                            "prompt_id": job.prompt_id}, job.client_id)

        results = await ship_models(self.backend, [n for n, _ in needs], self.hasher.cache,
                                    progress)
        for result in results:
            self.host.send("remote_exec.shipping", {
                "prompt_id": job.prompt_id, "folder": result.folder, "name": result.name,
                "sent": result.sent, "percent": 100, "finished": True}, job.client_id)
        job.ship_models = []
        self.journal.save(job)

    async def _submit(self) -> EventStream | None:
        """Submit the job (shipping its models first); the event stream the submission
        opened, if the backend opened one."""
        job = self.job
        if job.ship_models:
            await self._ship_models()
        roots = {"input": self.host.input_dir, "output": self.host.output_dir,
                 "temp": self.host.temp_dir}
        files = self.hasher.collect(job.prompt, roots, cached_only=True)
        if files is None:  # something to read: hash in a thread
            files = await asyncio.to_thread(self.hasher.collect, job.prompt, roots) or []
        spec = JobSpec(workflow=job.prompt,
                       media=[MediaItem(name=f.name, sha256=f.sha256) for f in files],
                       partial_execution_targets=job.partial_execution_targets,
                       extra={"local_prompt_id": job.prompt_id},
                       extra_data={k: v for k, v in job.extra_data.items()
                                   if k not in LOCAL_EXTRA_DATA})
        if self.life.cancel_requested:
            raise RemoteExecError("cancelled before it started", code="cancelled")
        submitted = await self.backend.submit(spec, {f.sha256: f.path for f in files})
        job.uploaded += submitted.uploaded
        job.reused += submitted.reused
        job.remote_id = submitted.job_id
        job.state = SUBMITTED
        self.journal.save(job)
        if self.life.cancel_requested:  # cancelled while the submission was in flight
            try:
                await self.backend.cancel(job.remote_id)
            except BaseException:
                if submitted.events is not None:
                    await submitted.events.aclose()
                raise
        return submitted.events

    async def _follow(self, events: AsyncIterator[Event]
                      ) -> tuple[str, RemoteExecError | None]:
        """Relay events until the job is over: ComfyUI's last `executing` after its
        ending message, or the remote's terminal status."""
        async for event in events:
            payload = event.payload
            if isinstance(payload, JobStatus):
                self.job.status = payload.status
                if payload.status == RUNNING:
                    self.life.start()
                if payload.terminal:
                    self.remote_ended = True
                    self._timed(payload)
                    return payload.status, payload.error
            elif (isinstance(payload, Executing) and payload.node is None
                  and self.ending is not None):
                return self.ending, None
            else:
                await self._relay(event, payload)
        raise RemoteExecError("the remote event stream ended before the job did",
                              code="stream_ended", retryable=True)

    async def _remote_status(self, events: AsyncIterator[Event]) -> None:
        """After the end: the remote's own status, for the record and the toast."""
        try:
            async for event in events:
                payload = event.payload
                if isinstance(payload, JobStatus) and payload.terminal:
                    self._timed(payload)
                    if payload.error is not None and payload.status != COMPLETED:
                        self.job.error = payload.error.to_dict()
                        self._notify_error(payload.error)
                    return
        except RemoteExecError as exc:
            log.debug("remote job %s: no final status (%s)", self.job.remote_id, exc)

    def _timed(self, status: JobStatus) -> None:
        if status.timing is None:
            return  # an older worker's
        self.job.timing = status.timing.to_dict()
        if self.on_timing is not None:
            self.on_timing(self.job, status.timing)

    async def _relay(self, event: Event, payload: Payload) -> None:
        job = self.job
        if isinstance(payload, Preview):
            self.host.send_preview(payload.image, payload.image_type, {
                "node_id": payload.node, "prompt_id": job.prompt_id,
                "display_node_id": payload.display_node or payload.node,
                "parent_node_id": payload.parent_node,
                "real_node_id": payload.real_node or payload.node}, job.client_id)
            return
        if isinstance(payload, Unknown):
            self.host.send(payload.type, payload.data, job.client_id)
            return
        if isinstance(payload, Executing) and payload.node is None:
            return  # the run's own end sends it, after the history entry
        message = comfy_message(payload, job.prompt_id, event.ts)
        if isinstance(payload, Executed):
            message["output"] = output = await self._land(payload)
            self.outputs[payload.node] = output
            self.meta[payload.node] = {
                "node_id": payload.node, "display_node": payload.display_node,
                "parent_node": None, "real_node_id": payload.node}
        elif isinstance(payload, Executing) and payload.node is not None:
            self.executed_nodes.append(payload.node)
        if type(payload) in STAMPED:
            self.messages.append([payload.TYPE, message])
        if type(payload) in ENDINGS:
            # The history entry first, as ComfyUI writes it before these messages.
            self.ending = ENDINGS[type(payload)]
            self.job.status = self.ending  # the record says what the user now sees
            self._write_history(self.ending == COMPLETED)
        self.host.send(payload.TYPE, message, job.client_id)

    async def _land(self, executed: Executed) -> JsonObject:
        """The node's UI output, with each remote file replaced by its landed copy."""
        output: JsonObject = {k: list(v) if isinstance(v, list) else v
                              for k, v in executed.output.items()}
        for out in executed.files:
            key = f"{out.node_id}/{out.key}/{out.index}/{out.sha256}"
            entry = self.job.landed.get(key)
            if entry is None or self.lander.existing(entry, out) is None:
                assert self.job.remote_id is not None
                entry = await self.lander.land(self.backend, self.job.remote_id, out,
                                               f"{self.job.backend}:{self.job.url or ''}")
                self.job.landed[key] = entry
                self.journal.save(self.job, durable=False)
                if self.on_output is not None and entry["type"] == "output":
                    self.on_output(entry)
            items = output.get(out.key)
            if isinstance(items, list) and out.index < len(items) and isinstance(
                    items[out.index], dict):
                items[out.index] = {**items[out.index], **entry}  # type: ignore[dict-item]
        return output

    # -- the end --------------------------------------------------------------------

    def _end(self, status: str, error: RemoteExecError | None) -> None:
        """The one place a run ends: history, lifecycle, queue, journal, last message."""
        job = self.job
        if status != COMPLETED and error is not None:
            job.error = error.to_dict()
            self._notify_error(error)
        if not self.history_written:
            if (status == CANCELLED or self.life.cancel_requested
                    or (error is not None and error.code == "cancelled")):
                status = CANCELLED
                self._conclude(ExecutionInterrupted(node_id="", node_type="",
                                                   executed=list(self.executed_nodes)))
            elif status == COMPLETED:
                self._write_history(True)
            else:
                status = FAILED
                if not self.messages:
                    self._send(ExecutionStart())
                self._conclude(self._error_payload(error))
        self.life.end(status, None if status == COMPLETED else error)
        job.status, job.state = status, DONE
        self.journal.remove(job.prompt_id)
        if self.on_end is not None:
            self.on_end(job)
        self.host.send("executing", {"node": None, "prompt_id": job.prompt_id},
                       job.client_id)

    def _send(self, payload: Payload) -> None:
        message = comfy_message(payload, self.job.prompt_id, 0.0)
        if type(payload) in STAMPED:
            self.messages.append([payload.TYPE, message])
        self.host.send(payload.TYPE, message, self.job.client_id)

    def _conclude(self, payload: Payload) -> None:
        """An ending the remote never sent: into history, then to the client."""
        message = comfy_message(payload, self.job.prompt_id, 0.0)
        self.messages.append([payload.TYPE, message])
        self._write_history(False)
        self.host.send(payload.TYPE, message, self.job.client_id)

    def _error_payload(self, error: RemoteExecError | None) -> ExecutionError:
        """An `execution_error` for a failure with no ComfyUI error event of its own
        (the remote refused the job, crashed, or could not be reached)."""
        message = error.message if error else "the remote job failed"
        return ExecutionError(
            node_id=(error.node_id if error else None) or "",
            node_type=(error.node_type if error else None) or "",
            executed=list(self.executed_nodes), exception_message=f"[remote] {message}",
            exception_type=f"RemoteExec.{error.code if error else 'error'}",
            traceback=[f"{line}\n" for line in (error.log_tail if error else [])[-20:]],
            current_inputs={}, current_outputs=[])

    def _notify_error(self, error: RemoteExecError) -> None:
        self.host.send("remote_exec.error", {
            "prompt_id": self.job.prompt_id, "message": error.message, "code": error.code,
            "node_id": error.node_id, "log_tail": error.log_tail[-20:]}, self.job.client_id)

    def _write_history(self, success: bool) -> None:
        if self.history_written:
            return
        self.history_written = True
        job = self.job
        self.host.add_history(job.prompt_id, {
            "prompt": [job.number, job.prompt_id, job.prompt, job.extra_data,
                       job.outputs_to_execute],
            "outputs": self.outputs,
            "status": {"status_str": "success" if success else "error",
                       "completed": success, "messages": self.messages},
            "meta": self.meta,
        })
