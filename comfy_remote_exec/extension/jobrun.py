"""Run one accepted prompt on a backend and make it look local.

In order: ship the inputs the remote lacks, submit, then follow the remote's
events. Each event is re-sent to the submitting client under the local
prompt id; each `executed` waits for its files to land locally and then
points at them; the history entry is written before the final events go out,
exactly as ComfyUI orders it, so the frontend finds the outputs when it asks.
A failure that is not a ComfyUI error of its own (refused job, crash, lost
remote) is turned into an `execution_error` the stock frontend shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..backends.base import Backend
from ..errors import RemoteExecError
from ..protocol import (
    CANCELLED,
    COMPLETED,
    FAILED,
    JOB_STATUS,
    PREVIEW,
    TERMINAL_STATUSES,
    Event,
    JobSpec,
    MediaItem,
    OutputFile,
)
from .host import Host
from .inputs import InputHasher
from .journal import DONE, SUBMITTED, Journal, RemoteJob
from .landing import LandedFiles, Lander
from .relay import HISTORY_MESSAGES, comfy_message, error_message, preview_parts

log = logging.getLogger(__name__)

# `extra_data` keys that mean something only to this ComfyUI; the rest (such as
# `extra_pnginfo`, the editor's workflow saved into PNGs) goes to the remote's.
LOCAL_EXTRA_DATA = frozenset({"client_id", "create_time", "remote_exec"})
ENDINGS = {"execution_success": COMPLETED, "execution_error": FAILED,
           "execution_interrupted": CANCELLED}


class JobRun:
    def __init__(self, job: RemoteJob, backend: Backend, host: Host, journal: Journal,
                 hasher: InputHasher, on_output: Callable[[dict[str, Any]], None] | None = None,
                 on_end: Callable[[RemoteJob], None] | None = None,
                 landed: LandedFiles | None = None) -> None:
        self.job = job
        self.backend = backend
        self.host = host
        self.journal = journal
        self.hasher = hasher
        self.lander = Lander(host.output_dir, host.temp_dir, landed)
        self.on_output = on_output
        self.on_end = on_end
        self.outputs: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.messages: list[list[Any]] = []
        self.executed_nodes: list[str] = []
        self.history_written = False
        self.ended = False
        self.cancel_requested = False

    # -- the run --------------------------------------------------------------------

    async def run(self) -> None:
        """Run to the end. Cancellation (shutdown) leaves the journal entry to resume from."""
        try:
            if self.job.remote_id is None:
                await self._submit()
            await self._follow()
        except RemoteExecError as exc:
            exc.job_id = exc.job_id or self.job.remote_id
            self._fail(exc.to_dict())
        except Exception as exc:
            log.exception("remote job %s failed in the extension", self.job.prompt_id)
            self._fail({"code": "extension_error", "message": f"{type(exc).__name__}: {exc}"})
        self.job.state = DONE
        self.journal.remove(self.job.prompt_id)

    async def _submit(self) -> None:
        job = self.job
        roots = {"input": self.host.input_dir, "output": self.host.output_dir,
                 "temp": self.host.temp_dir}
        files = await asyncio.to_thread(self.hasher.collect, job.prompt, roots)
        missing = set(await self.backend.missing_blobs([f.sha256 for f in files]))
        for item in files:
            if item.sha256 in missing:
                await self.backend.upload_blob(item.sha256, item.path)
                job.uploaded.append(item.sha256)
                missing.discard(item.sha256)
            else:
                job.reused.append(item.sha256)
        spec = JobSpec(workflow=job.prompt,
                       media=[MediaItem(name=f.name, sha256=f.sha256) for f in files],
                       partial_execution_targets=job.partial_execution_targets,
                       extra={"local_prompt_id": job.prompt_id},
                       extra_data={k: v for k, v in job.extra_data.items()
                                   if k not in LOCAL_EXTRA_DATA})
        if self.cancel_requested:
            raise RemoteExecError("cancelled before it started", code="cancelled")
        job.remote_id = await self.backend.submit(spec)
        job.state = SUBMITTED
        self.journal.save(job)
        if self.cancel_requested:  # cancelled while the submission was in flight
            await self.backend.cancel(job.remote_id)

    async def _follow(self) -> None:
        assert self.job.remote_id is not None
        async for event in self.backend.events(self.job.remote_id):
            await self._handle(event)
            if event.terminal:
                return
        raise RemoteExecError("the remote event stream ended before the job did",
                              code="stream_ended", retryable=True)

    async def _handle(self, event: Event) -> None:
        job = self.job
        if event.type == JOB_STATUS:
            await self._on_status(event.data)
            return
        if event.type == PREVIEW:
            image, image_type, meta = preview_parts(event.data, job.prompt_id)
            self.host.send_preview(image, image_type, meta, job.client_id)
            return
        message = comfy_message(event, job.prompt_id)
        if message is None:
            return
        kind, data = message
        if kind == "executed":
            data["output"] = await self._land(event.data)
            node = str(event.data.get("node"))
            self.outputs[node] = data["output"]
            self.meta[node] = {"node_id": node, "display_node": event.data.get("display_node"),
                               "parent_node": None, "real_node_id": node}
        elif kind == "executing" and event.data.get("node") is not None:
            self.executed_nodes.append(str(event.data["node"]))
        if kind in HISTORY_MESSAGES:
            self.messages.append([kind, data])
        if kind in ENDINGS:
            # The record says what the user sees; the remote's own status follows.
            job.status = ENDINGS[kind]
            self._write_history(kind == "execution_success")
        if kind == "executing" and event.data.get("node") is None:
            self._end()  # only after the history entry; else the failure path ends it
            return
        self.host.send(kind, data, job.client_id)

    async def _land(self, data: dict[str, Any]) -> dict[str, Any]:
        """The node's UI output, with each remote file replaced by its landed copy."""
        output = {k: list(v) if isinstance(v, list) else v
                  for k, v in (data.get("output") or {}).items()}
        for raw in data.get("files") or []:
            out = OutputFile.parse(raw)
            key = f"{out.node_id}/{out.key}/{out.index}/{out.sha256}"
            entry = self.job.landed.get(key)
            if entry is None or self.lander.existing(entry, out) is None:
                assert self.job.remote_id is not None
                entry = await self.lander.land(self.backend, self.job.remote_id, out,
                                               f"{self.job.backend}:{self.job.url or ''}")
                self.job.landed[key] = entry
                self.journal.save(self.job)
                if self.on_output is not None and entry["type"] == "output":
                    self.on_output(entry)
            items = output.get(out.key)
            if isinstance(items, list) and out.index < len(items) and isinstance(
                    items[out.index], dict):
                items[out.index] = {**items[out.index], **entry}
        return output

    async def _on_status(self, data: dict[str, Any]) -> None:
        status = data.get("status")
        self.job.status = status
        if status not in TERMINAL_STATUSES:
            return
        if status == COMPLETED:
            self._write_history(True)
        elif status == CANCELLED:
            if not self.history_written:
                self._interrupted()
        elif status == FAILED:
            error = data.get("error") or {}
            self.job.error = error
            self._notify_error(error)
            if not self.history_written:
                self._fail(error)
        self._end()

    # -- endings ----------------------------------------------------------------------

    def _interrupted(self) -> None:
        self._conclude("execution_interrupted", {
            "prompt_id": self.job.prompt_id, "node_id": "", "node_type": "",
            "executed": self.executed_nodes, "timestamp": 0})

    def _fail(self, error: dict[str, Any]) -> None:
        """End the job locally with an error the frontend shows."""
        if self.job.error is None:
            self.job.error = error
            self._notify_error(error)
        if self.history_written:
            self._end()
            return
        if error.get("code") == "cancelled" or self.cancel_requested:
            self._interrupted()
            return
        if not self.messages:
            start = {"prompt_id": self.job.prompt_id, "timestamp": 0}
            self.messages.append(["execution_start", start])
            self.host.send("execution_start", start, self.job.client_id)
        self._conclude("execution_error",
                       error_message(self.job.prompt_id, error, self.executed_nodes))

    def _conclude(self, kind: str, data: dict[str, Any]) -> None:
        """An ending the remote never sent: into history, to the client, then the end."""
        self.messages.append([kind, data])
        self.job.status = ENDINGS[kind]
        self._write_history(False)
        self.host.send(kind, data, self.job.client_id)
        self._end()

    def _notify_error(self, error: dict[str, Any]) -> None:
        self.host.send("remote_exec.error", {
            "prompt_id": self.job.prompt_id, "message": error.get("message"),
            "code": error.get("code"), "node_id": error.get("node_id"),
            "log_tail": (error.get("log_tail") or [])[-20:]}, self.job.client_id)

    def _end(self) -> None:
        """As ComfyUI does: out of the queue first, then the last `executing`.

        The job is done for the user; its journal entry goes, so a restart
        does not replay it, while the task may still take the remote's status.
        """
        if self.ended or not self.history_written:
            return
        self.ended = True
        self.job.state = DONE
        self.journal.remove(self.job.prompt_id)
        if self.on_end is not None:
            self.on_end(self.job)
        self.host.send("executing", {"node": None, "prompt_id": self.job.prompt_id},
                       self.job.client_id)

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
