"""The local journal of remote jobs, so a restart loses nothing already paid for.

One JSON file per job under the state directory (platformdirs by default),
rewritten atomically at each step that matters: accepted, submitted (with the
remote job id), each output landed, finished. After a restart, unfinished jobs
are resumed: pending ones are dispatched again, submitted ones re-follow their
remote job from the first event, and outputs already landed are not fetched
twice.

Writes happen on the journal's own writer thread, one at a time and in the
order they were asked for (a removal too, so a late write can never bring a
finished job back). The event loop only takes a shallow snapshot: an fsync
(several ms on a busy disk) never holds up the relay. `save` returns the
write's future for a caller that must know it is on disk.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_json

PENDING, SUBMITTED, DONE = "pending", "submitted", "done"


@dataclass
class RemoteJob:
    prompt_id: str
    number: float | int  # ComfyUI's: an int, or the float a client chose
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    client_id: str | None
    outputs_to_execute: list[str]
    backend: str
    url: str | None = None
    partial_execution_targets: list[str] | None = None
    state: str = PENDING
    remote_id: str | None = None
    created_at: float = field(default_factory=time.time)
    landed: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    status: str | None = None
    error: dict[str, Any] | None = None
    ship_models: list[dict[str, Any]] = field(default_factory=list)  # preflight's ShipNeeds
    timing: dict[str, Any] | None = None  # the remote's GPU seconds (`protocol.timing`)
    cost: dict[str, Any] | None = None  # what they cost (`extension.cost.JobCost`)

    def queue_item(self) -> list[Any]:
        """The job as an entry of ComfyUI's `/queue` lists."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data,
                self.outputs_to_execute]

    def view(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("prompt", "extra_data")}


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="remote-exec-journal")

    def _path(self, prompt_id: str) -> Path:
        return self.root / f"{prompt_id}.json"

    def save(self, job: RemoteJob, *, durable: bool = True) -> Future[None]:
        """Rewrite the job's entry atomically, on the writer thread. `durable` (the
        default) also syncs it to disk: the accepted job and its remote id must survive
        even a power loss; a landed output's note may skip that, since a lost note only
        means the file is fetched again."""
        record = {f.name: _shallow(getattr(job, f.name)) for f in fields(job)}
        return self._writer.submit(atomic_write_json, self._path(job.prompt_id), record,
                                   durable=durable)

    def remove(self, prompt_id: str) -> Future[None]:
        return self._writer.submit(self._path(prompt_id).unlink, missing_ok=True)

    def flush(self) -> None:
        """Wait for the writes asked for so far (blocking)."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        """Wait for the writes asked for so far."""
        self._writer.shutdown(wait=True)

    def unfinished(self) -> list[RemoteJob]:
        jobs = []
        for path in self.root.glob("*.json"):
            try:
                job = RemoteJob(**json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue
            if job.state != DONE:
                jobs.append(job)
        return sorted(jobs, key=lambda j: j.number)


def _shallow(value: Any) -> Any:
    """A copy the loop may go on changing (landed outputs, uploads) while it is written."""
    return value.copy() if isinstance(value, (dict, list)) else value
