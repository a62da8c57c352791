"""The Modal app's scheduled work: stale jobs every minute, a clean-up daily at 03:00.

Both run in their own containers, apart from the API, and work on the Modal
objects directly (the store's Dict, the events Queue, the data Volume):

- `fail_stale_jobs`: a job still queued after `queue_timeout` (no GPU took
  it) or still running past `run_timeout` has its GPU call cancelled and is
  failed with the reason. The failure travels as the job's end through its
  queue partition, the way a GPU container ends a job, so the API records
  it, sends the webhook and ends the event streams as for any other end; an
  API that is not running meanwhile takes it when it starts. Calls that
  ended without their end reaching the API are the API's own business: its
  relay ends such jobs with what the call says. The function returns what
  it found, and how many jobs are unfinished; the app then wakes the API
  (`wake`), which relays jobs only while it runs.
- `clean_up`: finished jobs older than `keep` are removed from the Dict with
  their output folders on the data volume and their queue partitions, as are
  output folders no record names any more; input blobs unused for
  `blob_keep` are removed. The volume is reloaded first and committed after.
  An API container running meanwhile still lists the jobs it holds in memory
  (their files then read as gone) until it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ...errors import RemoteExecError
from ...protocol import FAILED, QUEUED, RUNNING, TERMINAL_STATUSES
from . import messages
from .store import events_key, job_key, read_all, run_key

log = logging.getLogger(__name__)

DAY = 24 * 3600.0


@dataclass(frozen=True)
class StaleRules:
    queue_timeout: float = 1800.0  # seconds a job may wait for a GPU
    run_timeout: float = 3900.0  # seconds a job may run (the GPU function's timeout + grace)


@dataclass
class Stale:
    job_id: str
    reason: str


@dataclass
class StaleReport:
    failed: list[Stale] = field(default_factory=list)
    unfinished: int = 0  # jobs queued or running that are not stale


async def fail_stale_jobs(store_dict: Any, events: Any, call_from_id: Callable[[str], Any], *,
                          rules: StaleRules | None = None,
                          now: float | None = None) -> StaleReport:
    rules = rules or StaleRules()
    now = time.time() if now is None else now
    records, _events, runs = await read_all(store_dict)
    report = StaleReport()
    for job_id, record in sorted(records.items()):
        status = record.get("status")
        run = runs.get(job_id)
        if status in TERMINAL_STATUSES or run is None or run.get("stale_at"):
            continue
        call = call_from_id(str(run["call_id"]))
        try:
            await call.get.aio(timeout=0)
        except TimeoutError:  # the builtin: the call is still queued or running
            pass
        except Exception:  # it ended: the API's relay ends the job with what it says
            continue
        else:
            continue
        created, started = float(record.get("created_at") or now), record.get("started_at")
        reason = None
        if status == QUEUED and now - created > rules.queue_timeout:
            reason = (f"no GPU took the job within {rules.queue_timeout:.0f} s (Modal had no "
                      "GPU of the configured types free, or the GPU containers were busy)")
        elif status == RUNNING and started and now - float(started) > rules.run_timeout:
            reason = f"the job ran longer than {rules.run_timeout:.0f} s"
        if reason is None:
            report.unfinished += 1
            continue
        error = RemoteExecError(f"stale job failed: {reason}", code="job_stale",
                                retryable=True, job_id=job_id)
        with contextlib.suppress(Exception):
            await call.cancel.aio()
        await events.put.aio(messages.end_item(FAILED, error), partition=job_id)
        await store_dict.put.aio(run_key(job_id), {**run, "stale_at": now})
        log.warning("job %s: %s", job_id, error.message)
        report.failed.append(Stale(job_id, error.message))
    return report


async def wake(url: str | None) -> bool:
    """Ask the API for `/health`, which starts its container if none runs: it relays the
    unfinished jobs' ends (and sends their webhooks) only while it runs."""
    if not url:
        return False
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=30.0)) as client:
            await client.get(f"{url.rstrip('/')}/health")
        return True
    except httpx.HTTPError as exc:
        log.warning("could not wake the API at %s: %s", url, exc)
        return False


@dataclass
class CleanupReport:
    jobs: list[str] = field(default_factory=list)
    folders: int = 0  # output folders removed (the jobs' and orphans')
    blobs: int = 0
    bytes_freed: int = 0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove_files(data_root: Path, jobs: list[str], known: set[str], keep: float,
                  blob_keep: float, now: float, report: CleanupReport) -> None:
    """Blocking: the job folders, orphan folders and old blobs."""
    jobs_dir = data_root / "jobs"
    doomed = set(jobs)
    if jobs_dir.is_dir():
        for folder in jobs_dir.iterdir():
            orphan = folder.name not in known and now - folder.stat().st_mtime > keep
            if folder.is_dir() and (folder.name in doomed or orphan):
                report.bytes_freed += _size(folder)
                shutil.rmtree(folder, ignore_errors=True)
                report.folders += 1
    blobs = data_root / "blobs"
    if blobs.is_dir():
        for blob in blobs.rglob("*"):
            if blob.is_file() and now - blob.stat().st_mtime > blob_keep:
                report.bytes_freed += blob.stat().st_size
                blob.unlink(missing_ok=True)
                report.blobs += 1


async def clean_up(store_dict: Any, events: Any, data_volume: Any, data_root: Path, *,
                   keep: float = 7 * DAY, blob_keep: float = 30 * DAY,
                   now: float | None = None) -> CleanupReport:
    now = time.time() if now is None else now
    report = CleanupReport()
    await data_volume.reload.aio()
    records, events_batches, runs = await read_all(store_dict)
    for job_id, record in sorted(records.items()):
        finished = record.get("finished_at")
        if record.get("status") in TERMINAL_STATUSES and finished and now - finished > keep:
            report.jobs.append(job_id)
    for job_id in report.jobs:
        await store_dict.pop.aio(job_key(job_id), None)
        await store_dict.pop.aio(run_key(job_id), None)
        for n in events_batches.get(job_id, {}):
            await store_dict.pop.aio(events_key(job_id, n), None)
        with contextlib.suppress(Exception):
            await events.clear.aio(partition=job_id)
    known = (set(records) | set(runs)) - set(report.jobs)
    await asyncio.to_thread(_remove_files, data_root, report.jobs, known, keep, blob_keep,
                            now, report)
    await data_volume.commit.aio()
    log.info("clean-up: %d jobs, %d folders, %d blobs, %d bytes", len(report.jobs),
             report.folders, report.blobs, report.bytes_freed)
    return report
