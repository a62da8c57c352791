"""The job service behind the worker's HTTP API.

It owns the job records, turns a `JobSpec` into blobs plus a prepared
workflow for the executor, and hands the executor each job as its run's sink:
the job's events go from the executor straight into the job's event log, not
through here. The service hears when a job moves (its `listener`): the end
sends the webhook, and finished jobs are pruned. Where records live, where
jobs run and how files are shared are its parts (`seams`): the worker's own,
or Modal's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import PurePosixPath
from typing import Any

import httpx

from ...errors import BadRequest, Conflict, NotFound, RemoteUnavailable
from ...protocol import (
    CANCELLED,
    COMPLETED,
    JOB_STATUSES,
    MAX_MEDIA_BYTES,
    ContentRange,
    Event,
    JobSpec,
    JobStatus,
    MediaItem,
    decode_base64,
    safe_relpath,
)
from ..inputs.blobs import BlobStore, PartResult
from ..inputs.media import check_content, image_ext
from ..inputs.prepare import apply_overrides
from ..inputs.urls import check_url, fetch_url
from .catalog import WorkerCatalog
from .jobs import Job, JobStore
from .seams import Executor, LocalStorage, Storage, Store
from .webhooks import WebhookSender

log = logging.getLogger(__name__)

KEEP_JOBS = 500
RECENT_RUNS = 20  # completed jobs a submit's estimated_time is taken from
PREVIEW_GRACE = 60.0  # seconds a finished job keeps its preview frames in memory


class JobService:
    def __init__(self, store: Store, blobs: BlobStore, http: httpx.AsyncClient, *,
                 allow_private_urls: bool = False, storage: Storage | None = None,
                 max_media_bytes: int = MAX_MEDIA_BYTES, keep_jobs: int = KEEP_JOBS) -> None:
        self.store = store
        self.blobs = blobs
        self.storage: Storage = storage or LocalStorage()
        self.http = http
        self.allow_private_urls = allow_private_urls
        self.max_media_bytes = max_media_bytes
        self.executor: Executor | None = None
        self.webhooks = WebhookSender(http, allow_private=allow_private_urls)
        self.keep_jobs = keep_jobs
        self.preview_grace = PREVIEW_GRACE
        # What this worker offers; `catalog.invalidate()` after a model file was placed.
        self.catalog = WorkerCatalog(self._ready)
        self._cold_start: tuple[float, float] | None = None
        self.jobs: dict[str, Job] = {job.id: job for job in store.load_all()}
        # Kept as jobs end, so neither a submit's estimate nor a job's end walks them all:
        self._finished: dict[str, None] = {}  # finished job ids, the first to finish first
        self.recent: deque[Job] = deque(maxlen=RECENT_RUNS)  # the last jobs completed
        self._unfinished: dict[str, Job] = {}
        for job in sorted(self.jobs.values(), key=lambda j: j.life.finished_at or j.created_at):
            job.listener = self._moved
            self._note(job)
        self._prune()

    def attach(self, executor: Executor) -> None:
        self.executor = executor

    def cold_started(self, began: float, ready: float) -> None:
        """The ComfyUI behind came up (process start at `began`, ready at `ready`): the
        next job submitted is the first after that start, and its timing counts it."""
        self._cold_start = (began, ready)

    # -- the ComfyUI behind (the API asks here, never the executor) -------------------

    @property
    def healthy(self) -> bool:
        return self.executor is not None and self.executor.healthy

    def active(self) -> int:
        return self.executor.active() if self.executor else 0

    def _ready(self) -> Executor:
        if self.executor is None or not self.executor.healthy:
            raise RemoteUnavailable("ComfyUI is not running yet", code="comfyui_unhealthy")
        return self.executor

    async def object_info(self) -> dict[str, Any]:
        return await self._ready().object_info(refresh=True)

    def models_changed(self) -> None:
        """A model file appeared (placed by the model store): the executor's cached
        object_info (its model lists) and the catalog (its content_version) are stale."""
        forget = getattr(self.executor, "forget_object_info", None)
        if forget is not None:
            forget()
        self.catalog.invalidate()

    async def comfy_report(self) -> dict[str, Any]:
        """`system_stats` and the model files per folder (`/health?deep`)."""
        return await self._ready().report()

    # -- files shared with the executor ------------------------------------------------

    async def put_blob(self, chunks: AsyncIterator[bytes], sha256: str) -> bool:
        """Store an uploaded input; False if it was there already."""
        if self.blobs.has(sha256):
            return False
        await self.blobs.put_stream(chunks, sha256)
        await self.storage.publish()
        return True

    async def put_blob_part(self, chunks: AsyncIterator[bytes], sha256: str,
                            part: ContentRange) -> PartResult:
        """Store one part of an input uploaded in parts (`BlobStore.put_part`)."""
        result = await self.blobs.put_part(chunks, sha256, part)
        if result.stored:
            await self.storage.publish()
        return result

    async def refresh_files(self) -> None:
        """Before serving an output: see what the executor published."""
        await self.storage.refresh()

    async def close(self) -> None:
        await self.webhooks.drain()
        if isinstance(self.store, JobStore):
            self.store.flush()

    # -- queries --------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", code="job_not_found", job_id=job_id)
        return job

    def list(self, status: str | None = None, limit: int = 50) -> list[Job]:
        if status is not None and status not in JOB_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(JOB_STATUSES)}")
        jobs = [j for j in self.jobs.values() if status is None or j.status == status]
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        return jobs[: max(0, limit)]

    async def stream(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Events with `seq > after`, live, ending after the terminal status."""
        async for batch in self.stream_batches(job_id, after):
            for event in batch:
                yield event

    def stream_batches(self, job_id: str, after: int = 0) -> AsyncIterator[Sequence[Event]]:
        """`stream`, as the runs of events that were logged together (`EventLog.batches`):
        what the SSE writer sends in one write."""
        return self.get(job_id).log.batches(after)

    # -- submitting -----------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Job:
        assert self.executor is not None
        if spec.webhook_url:
            await check_url(spec.webhook_url, allow_private=self.allow_private_urls)
        job_id = uuid.uuid4().hex
        media = {m.name: await self._media_blob(m) for m in spec.media}
        values: dict[int, Any] = {}
        for i, ov in enumerate(spec.inputs):
            if ov.type == "raw":
                continue
            name, sha = await self._override_blob(i, ov.type, ov.value, ov.name)
            media[name] = sha
            values[i] = name
        workflow = apply_overrides(spec.workflow, spec.inputs, values)
        job = Job(id=job_id, priority=spec.priority, user_id=spec.user_id,
                  webhook_url=spec.webhook_url, nodes_total=len(workflow),
                  listener=self._moved, cold_start=self._cold_start)
        self._cold_start = None
        self.store.log_for(job)
        self.jobs[job_id] = job
        self._unfinished[job_id] = job
        # Recorded once ComfyUI took it (below); a crash before that loses a job that
        # never ran, and its client sees it as unknown.
        job.log.append(JobStatus(job.status))
        try:
            if media:
                await self.storage.publish()
            prompt_id = await self.executor.submit(
                job_id, workflow, media, life=job.life, sink=job, priority=spec.priority,
                targets=spec.partial_execution_targets,
                url_prefix=f"/v1/jobs/{job_id}/outputs", extra_data=spec.extra_data)
        except BaseException:
            self._cold_start = self._cold_start or job.cold_start  # the next job claims it
            self.jobs.pop(job_id, None)
            self._unfinished.pop(job_id, None)
            self.store.remove(job_id)
            raise
        job.prompt_id = prompt_id
        self.store.save(job)
        return job

    async def _media_blob(self, item: MediaItem) -> str:
        if item.sha256 is not None:
            if not self.blobs.has(item.sha256):
                raise BadRequest(f"media {item.name!r}: blob {item.sha256} is not on the "
                                 "worker; upload it with PUT /v1/blobs/{sha256} first",
                                 code="missing_blob", details={"missing": [item.sha256]})
            return item.sha256
        if item.url is not None:
            data = await fetch_url(self.http, item.url, allow_private=self.allow_private_urls,
                                   limit=self.max_media_bytes)
        else:
            data = decode_base64(item.data, what=f"media {item.name!r}",
                                 limit=self.max_media_bytes)
        await asyncio.to_thread(check_content, item.name, data[:64], data)
        sha, _ = await asyncio.to_thread(self.blobs.put_bytes, data)
        return sha

    async def _override_blob(self, index: int, kind: str, value: Any,
                             name: str | None) -> tuple[str, str]:
        where = f"inputs[{index}]"
        if not isinstance(value, str):
            raise BadRequest(f"{where}.value must be a string for type {kind}")
        if kind == "image_url":
            data = await fetch_url(self.http, value, allow_private=self.allow_private_urls,
                                   limit=self.max_media_bytes)
        else:
            data = decode_base64(value, what=f"{where}.value", limit=self.max_media_bytes)
        sha, _ = await asyncio.to_thread(self.blobs.put_bytes, data)
        if name is None:
            name = f"override_{sha[:16]}{image_ext(data)}"
        elif PurePosixPath(name).suffix == "":
            name = safe_relpath(name + image_ext(data))
        await asyncio.to_thread(check_content, name, data[:64], data)
        return name, sha

    # -- cancelling -----------------------------------------------------------------

    async def cancel(self, job_id: str, wait: float = 5.0) -> Job:
        job = self.get(job_id)
        if job.terminal:
            raise Conflict(f"job {job_id} is already {job.status}", code="job_finished",
                           job_id=job_id)
        assert self.executor is not None
        if not await self.executor.cancel(job_id) and job.life.end(CANCELLED):
            await job.changed()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.log.until_ended(), wait)
        return job

    # -- a job moved ------------------------------------------------------------------

    def estimate_basis(self) -> tuple[Job, ...]:
        """The jobs a submit's `estimated_time` is taken from: the last completed ones
        and the unfinished ones."""
        return (*self.recent, *self._unfinished.values())

    def _note(self, job: Job) -> None:
        if not job.terminal:
            self._unfinished[job.id] = job
            return
        self._unfinished.pop(job.id, None)
        self._finished[job.id] = None
        if job.status == COMPLETED:
            self.recent.append(job)

    async def _moved(self, job: Job) -> None:
        if not job.terminal:
            return
        self._note(job)
        if job.webhook_url:
            self.webhooks.send(job.webhook_url, f"job.{job.status}", job.view())
        # A client that attaches after a fast job ended still gets its previews, as a
        # local run shows them; then they leave memory.
        asyncio.get_running_loop().call_later(self.preview_grace, job.log.drop_previews)
        self._prune()

    def _prune(self) -> None:
        """Forget the oldest finished jobs beyond `keep_jobs`."""
        while len(self._finished) > self.keep_jobs:
            job_id = next(iter(self._finished))
            del self._finished[job_id]
            if self.jobs.pop(job_id, None) is not None:
                self.store.remove(job_id)
