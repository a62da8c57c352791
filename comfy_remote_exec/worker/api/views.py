"""The public shapes of `/v1/jobs`: the answers its existing clients read.

The job API predates this project (`shared/specs/job-apis.md`), and clients
written for it must work unchanged, so every answer carries its fields with
its meanings, and ours only beside them:

- times are ISO 8601 in UTC (`created_at`, `started_at`, `completed_at`);
- `status` is one of `queued`, `running`, `completed`, `failed`: a cancelled
  job is `failed` with `error: "Cancelled by user"` and our `cancelled: true`,
  since old clients poll until `completed` or `failed` (the event stream
  still says `cancelled`);
- `error` is the message, `error_details` the error family's dict;
- `progress` (0-100) blends node coverage and sampler steps 50/50;
- `timing` (ours): the job's GPU seconds, `queue_wait_s`, `cold_start_s` and
  `execution_s` (`protocol.timing`), also in the terminal `job_status` event;
- `outputs[]` has `filename`, `type` (the media kind), `size_bytes`,
  `node_id` and `data`: base64 of the file, or the text itself for
  `type: "text"` (`encoding` says which). Text a node shows (its UI's
  `text`, e.g. PreviewAny) is an output of its own, `text_output_<node>.txt`.

`data` is inline by default (`inline=auto`) once the job has ended, for
outputs up to `INLINE_LIMIT` each; `inline=all` inlines every output, at any
time, and `inline=none` none (`base64=1` is the older spelling of `all`). An
output without `data` says why in `data_omitted`, and its `url` downloads it.
"""

from __future__ import annotations

import base64
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BadRequest, RemoteExecError
from ...protocol import (
    CANCELLED,
    COMPLETED,
    FAILED,
    MAX_MEDIA_BYTES,
    QUEUED,
    OutputFile,
    Progress,
)
from ..comfy.outputs import ComfyDirs
from ..service.jobs import Job
from ..service.service import RECENT_RUNS
from ..service.webhooks import CANCELLED_BY_USER, utc_iso

INLINE_LIMIT = MAX_MEDIA_BYTES  # the most one output may weigh to travel inline by default
INLINE_MODES = ("auto", "all", "none")
DEFAULT_ESTIMATE = 30.0  # seconds a job takes before the worker has finished any


def iso(ts: float | None) -> str | None:
    return None if ts is None else utc_iso(ts)


def public_status(job: Job) -> str:
    """The status old clients know: a cancelled job shows as failed."""
    return FAILED if job.status == CANCELLED else job.status


def error_details(job: Job) -> dict[str, Any] | None:
    """The error family's dict, without its log tail (that is `error_log_tail`)."""
    error = job.life.error
    if job.status == CANCELLED:  # as the webhook says it
        error = RemoteExecError(CANCELLED_BY_USER, code="cancelled")
    if error is None:
        return None
    out = error.to_dict()
    out.pop("log_tail", None)
    return out


def error_message(job: Job) -> str | None:
    if job.status == CANCELLED:
        return CANCELLED_BY_USER
    if job.life.error is not None:
        return job.life.error.message
    return "the job failed" if job.status == FAILED else None


# -- progress ----------------------------------------------------------------------------


def last_step(job: Job) -> tuple[float, float] | None:
    """The sampler steps: the running node's, else the last that a node reported."""
    if job.step and job.step.get("max"):
        return float(job.step["value"]), float(job.step["max"])
    for event in reversed(job.events):
        payload = event.payload
        if isinstance(payload, Progress) and payload.max:
            return float(payload.value), float(payload.max)
    return None


def progress(job: Job) -> int:
    """0-100: half node coverage, half the sampler's steps; 100 only when completed.

    The steps half is the latest node with steps (a sampler, an upscaler's
    tiles) and holds after that node ends, so progress does not drop when the
    sampler hands on to the decoder; a second such node starts it over. In a
    workflow whose nodes report no steps it stays 0.
    """
    if job.status == COMPLETED:
        return 100
    if not job.nodes_total:
        return 0
    nodes = min(1.0, len(job.nodes_completed) / job.nodes_total)
    step = last_step(job)
    steps = min(1.0, step[0] / step[1]) if step else 0.0
    return min(99, int(50 * nodes + 50 * steps))


def progress_details(job: Job) -> dict[str, Any]:
    step = job.step if job.step and job.step.get("max") else None
    return {"current_node": job.current_node, "nodes_completed": len(job.nodes_completed),
            "nodes_total": job.nodes_total,
            "step": f"{int(step['value'])}/{int(step['max'])}" if step else None}


# -- outputs -----------------------------------------------------------------------------


def inline_mode(query: Mapping[str, str]) -> str:
    """`?inline=auto|all|none` (default auto); `?base64=1` is `all`."""
    mode = query.get("inline")
    if mode is None:
        return "all" if query.get("base64", "") in ("1", "true", "yes") else "auto"
    if mode not in INLINE_MODES:
        raise BadRequest(f"inline must be one of {', '.join(INLINE_MODES)}")
    return mode


def omitted(job: Job, size: int, mode: str) -> str | None:
    """Why an output goes without `data`, or None when it carries it."""
    if mode == "none":
        return "not_requested"
    if mode == "all":
        return None
    if not job.terminal:
        return "job_running"
    return "too_large" if size > INLINE_LIMIT else None


def text_outputs(job: Job) -> list[dict[str, Any]]:
    """The text each node shows (its UI's `text`), one output per string."""
    items = []
    for node, ui in job.ui.items():
        texts = ui.get("text") if isinstance(ui, dict) else None
        if not isinstance(texts, list):
            continue
        strings = [t for t in texts if isinstance(t, str)]
        for index, text in enumerate(strings):
            suffix = f"_{index}" if index else ""
            items.append({"node_id": str(node), "type": "text", "key": "text", "index": index,
                          "filename": f"text_output_{node}{suffix}.txt",
                          "size_bytes": len(text.encode("utf-8")), "data": text,
                          "encoding": "text"})
    return items


@dataclass
class Inline:
    """An output item whose bytes are still to be read into `data`."""

    item: dict[str, Any]
    file: OutputFile


def output_items(job: Job, mode: str) -> tuple[list[dict[str, Any]], list[Inline]]:
    """The `outputs` list, and the files whose `data` is still to be read."""
    items: list[dict[str, Any]] = []
    pending = []
    for out in job.outputs:
        item: dict[str, Any] = out.to_dict()
        item.pop("data", None)
        reason = omitted(job, out.size_bytes, mode)
        if reason is None:
            pending.append(Inline(item, out))
        else:
            item["data_omitted"] = reason
        items.append(item)
    for text in text_outputs(job):
        reason = omitted(job, text["size_bytes"], mode)
        if reason is not None:
            del text["data"], text["encoding"]
            text["data_omitted"] = reason
        items.append(text)
    return items, pending


def read_inline(dirs: ComfyDirs, pending: Iterable[Inline]) -> None:
    """Fill in `data` (blocking file reads: run it in a thread)."""
    for entry in pending:
        try:
            path: Path = dirs.resolve(entry.file.folder, entry.file.subfolder,
                                      entry.file.filename)
            raw = path.read_bytes()
        except (OSError, BadRequest):
            entry.item["data_omitted"] = "gone"
            continue
        if entry.file.type == "text":
            try:
                entry.item["data"], entry.item["encoding"] = raw.decode("utf-8"), "text"
                continue
            except UnicodeDecodeError:
                pass
        entry.item["data"] = base64.b64encode(raw).decode("ascii")
        entry.item["encoding"] = "base64"


# -- whole answers -----------------------------------------------------------------------


def job_summary(job: Job) -> dict[str, Any]:
    """One job of `GET /v1/jobs`: theirs (`job_id`, `status`, `created_at`,
    `progress`), then ours."""
    life = job.life
    return {
        "job_id": job.id, "status": public_status(job), "created_at": iso(job.created_at),
        "progress": progress(job), "started_at": iso(life.started_at),
        "completed_at": iso(life.finished_at), "error": error_message(job),
        "cancelled": job.status == CANCELLED, "prompt_id": job.prompt_id,
        "priority": job.priority, "user_id": job.user_id,
        "timing": job.timing().to_dict(),
    }


def job_view(job: Job, mode: str = "none") -> tuple[dict[str, Any], list[Inline]]:
    """`GET /v1/jobs/{id}` (and the answer to its DELETE), and the outputs whose
    `data` `read_inline` is still to read."""
    life = job.life
    outputs, pending = output_items(job, mode)
    error = error_details(job)
    view = {
        "job_id": job.id, "status": public_status(job), "created_at": iso(job.created_at),
        "started_at": iso(life.started_at), "completed_at": iso(life.finished_at),
        "progress": progress(job), "progress_details": progress_details(job),
        "outputs": outputs, "error": error_message(job),
        # ours
        "cancelled": job.status == CANCELLED, "error_details": error,
        "error_log_tail": life.error.log_tail if life.error else [],
        "prompt_id": job.prompt_id, "priority": job.priority, "user_id": job.user_id,
        "ui": job.ui, "timing": job.timing().to_dict(),
    }
    return view, pending


def estimated_time(job: Job, jobs: Iterable[Job]) -> int:
    """Seconds until `job` is done, a hint: the median run of the recent completed
    jobs (or `DEFAULT_ESTIMATE`), times the unfinished jobs up to this one."""
    done, ahead = [], 0
    for other in jobs:
        life = other.life
        if (other.status == COMPLETED and life.started_at is not None
                and life.finished_at is not None):
            done.append((life.finished_at, life.finished_at - life.started_at))
        elif not other.terminal and other.id != job.id and other.created_at <= job.created_at:
            ahead += 1
    done.sort()
    recent = [seconds for _, seconds in done[-RECENT_RUNS:]]
    typical = statistics.median(recent) if recent else DEFAULT_ESTIMATE
    return max(1, math.ceil(typical * (ahead + 1)))


def submit_answer(job: Job, jobs: Iterable[Job]) -> dict[str, Any]:
    """`POST /v1/jobs`'s 202: theirs (`job_id`, `status`, `created_at`,
    `estimated_time`), then ours."""
    return {"job_id": job.id, "status": QUEUED, "created_at": iso(job.created_at),
            "estimated_time": estimated_time(job, jobs), "prompt_id": job.prompt_id}
