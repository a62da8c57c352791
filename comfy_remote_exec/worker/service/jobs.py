"""Job records: state, progress, event log, and their persistence on disk.

Each job has a directory with `job.json` (rewritten atomically: temp file,
fsync, rename) and `events.jsonl` (appended). A worker restart therefore loses
no record; jobs that were queued or running at the time are marked failed with
the reason, since the ComfyUI that held them is gone. Preview frames never
reach the file (nobody replays them, and they are most of a log's size); a
finished job drops them from memory too, and the oldest finished jobs are
removed past a limit.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

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
    Lifecycle,
    OutputFile,
    Payload,
    Preview,
    Progress,
)


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
    # Not persisted in job.json: the event log has its own file.
    events: list[Event] = field(default_factory=list, repr=False)
    changed: asyncio.Event | None = field(default=None, repr=False)

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
            self.outputs.extend(payload.files)

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
                   outputs=outputs, ui=dict(data.get("ui") or {}))

    def view(self) -> dict[str, Any]:
        """The public JSON form (`GET /v1/jobs/{id}`)."""
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
        }


class JobStore:
    """Job records under `root/<job_id>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._logs: dict[str, TextIO] = {}

    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def save(self, job: Job) -> None:
        folder = self._dir(job.id)
        folder.mkdir(exist_ok=True)
        atomic_write_json(folder / "job.json", job.record())

    def append_event(self, job: Job, event: Event) -> None:
        """Append to the job's event log (kept open until `close_events`).

        Preview frames stay in memory only: no reader of the file wants them.
        """
        if isinstance(event.payload, Preview):
            return
        fh = self._logs.get(job.id)
        if fh is None:
            fh = self._logs[job.id] = (self._dir(job.id) / "events.jsonl").open(
                "a", encoding="utf-8")
        fh.write(json.dumps(event.to_wire(), separators=(",", ":")) + "\n")
        fh.flush()

    def close_events(self, job_id: str) -> None:
        fh = self._logs.pop(job_id, None)
        if fh is not None:
            fh.close()

    def remove(self, job_id: str) -> None:
        self.close_events(job_id)
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    def load_all(self) -> list[Job]:
        """Every stored job, oldest first; unfinished ones are marked failed."""
        jobs = []
        for record in self.root.glob("*/job.json"):
            try:
                job = Job.from_record(json.loads(record.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue
            events_file = record.parent / "events.jsonl"
            if events_file.exists():
                for line in events_file.read_text(encoding="utf-8").splitlines():
                    try:
                        job.events.append(Event.parse(json.loads(line)))
                    except (ValueError, Exception):
                        break
            was = job.status
            if job.life.end(FAILED, RemoteExecError(
                    f"the worker restarted while this job was {was}",
                    code="worker_restarted", retryable=True, job_id=job.id)):
                last = job.events[-1].seq if job.events else 0  # previews left gaps
                event = Event(last + 1, JobStatus(FAILED, job.life.error), time.time())
                job.events.append(event)
                self.save(job)
                self.append_event(job, event)
                self.close_events(job.id)
            jobs.append(job)
        jobs.sort(key=lambda j: j.created_at)
        return jobs
