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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from ...fsutil import atomic_write_json
from ...protocol import (
    COMPLETED,
    FAILED,
    JOB_STATUS,
    PREVIEW,
    QUEUED,
    RUNNING,
    TERMINAL_STATUSES,
    Event,
)

_RUNTIME = frozenset({"events", "changed"})


@dataclass
class Job:
    id: str
    status: str = QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    prompt_id: str | None = None
    priority: int = 0
    user_id: str | None = None
    webhook_url: str | None = None
    nodes_total: int = 0
    nodes_completed: list[str] = field(default_factory=list)
    current_node: str | None = None
    step: dict[str, float] | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    error_log_tail: list[str] = field(default_factory=list)
    # Not persisted in job.json: the event log has its own file.
    events: list[Event] = field(default_factory=list, repr=False)
    changed: asyncio.Event | None = field(default=None, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

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

    def track(self, kind: str, data: dict[str, Any]) -> None:
        """Update progress from one relayed event."""
        if kind == "execution_cached":
            for node in data.get("nodes") or []:
                self._completed(str(node))
        elif kind == "executing":
            node = data.get("node")
            if self.current_node and self.current_node != node:
                self._completed(self.current_node)
            self.current_node = None if node is None else str(node)
            self.step = None
        elif kind == "progress":
            self.step = {"value": float(data.get("value", 0)), "max": float(data.get("max", 0))}
        elif kind == "executed":
            node = str(data.get("node"))
            if isinstance(data.get("output"), dict):
                self.ui[node] = data["output"]
            self.outputs.extend(data.get("files") or [])

    def _completed(self, node: str) -> None:
        if node not in self.nodes_completed:
            self.nodes_completed.append(node)

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _RUNTIME}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls) if f.name not in _RUNTIME}
        return cls(**{k: v for k, v in data.items() if k in known})

    def view(self) -> dict[str, Any]:
        """The public JSON form (`GET /v1/jobs/{id}`)."""
        return {
            "job_id": self.id, "status": self.status, "progress": self.progress,
            "progress_details": {
                "current_node": self.current_node,
                "nodes_completed": len(self.nodes_completed),
                "nodes_total": self.nodes_total, "step": self.step,
            },
            "prompt_id": self.prompt_id, "priority": self.priority, "user_id": self.user_id,
            "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outputs": [dict(o) for o in self.outputs],
            "ui": self.ui, "error": self.error, "error_log_tail": self.error_log_tail,
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
        if event.type == PREVIEW:
            return
        fh = self._logs.get(job.id)
        if fh is None:
            fh = self._logs[job.id] = (self._dir(job.id) / "events.jsonl").open(
                "a", encoding="utf-8")
        fh.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
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
            if job.status in (QUEUED, RUNNING):
                was = job.status
                job.status, job.finished_at = FAILED, time.time()
                job.error = {"code": "worker_restarted", "retryable": True,
                             "message": f"the worker restarted while this job was {was}"}
                last = job.events[-1].seq if job.events else 0  # previews left gaps
                event = Event(last + 1, JOB_STATUS,
                              {"status": FAILED, "error": job.error}, time.time())
                job.events.append(event)
                self.save(job)
                self.append_event(job, event)
                self.close_events(job.id)
            jobs.append(job)
        jobs.sort(key=lambda j: j.created_at)
        return jobs
