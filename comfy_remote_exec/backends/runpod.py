"""Backend `runpod`: a RunPod serverless endpoint running our worker image.

Uses RunPod's public endpoint API: `/run` to submit, `/stream/{id}` polled
adaptively, `/status/{id}` to fill any gap and to learn how a job ended,
`/cancel/{id}` and `/health` (warm or cold workers). 429 and 5xx are retried
with backoff (honouring `Retry-After`); a bad key is a clear `Unauthorized`,
an unknown or expired job a `NotFound`.

Polling: every `POLL_RUNNING` (50 ms) while the job runs, so an event waits
25 ms for its poll on average (relay p95 58 ms through the extension on the
emulator, 103 ms at 100 ms); backing off from `POLL_MIN` to `POLL_MAX` while
it waits for a worker, where a cold start can take minutes. The price is
about 18 `/stream` requests a second per job being followed (10 at 100 ms),
against RunPod's 2000 per 10 s per endpoint for `/status` and `/stream`.

It keeps the `Backend` contract (`base.py`) with no state between calls:

- `submit(spec, files)` puts small inputs inline in the job (base64 `data` in
  their media item); larger ones go up to the presigned URLs the worker hands
  out (a `{"op": "blobs"}` job), unless the endpoint's volume or bucket holds
  them already. Every job's input names the protocol version (`"protocol"`).
- `events(job_id, after)` reads the stream's chunks (`protocol.runpod`); the
  `file_part`s of an output too large to travel inline are held only while
  that one call runs, and joined into the `OutputFile`'s `data` before the
  `executed` event that lists it is yielded.
- `download` reads only the `OutputFile`: inline `data`, or a presigned
  `download_url` (the endpoint's bucket).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from ..errors import NotFound, RemoteExecError, RemoteUnavailable, Unauthorized
from ..jobapi.streams import copy_body, file_chunks, http_client
from ..protocol import (
    CANCELLED,
    FAILED,
    PROTOCOL_VERSION,
    Event,
    Executed,
    JobSpec,
    JobStatus,
    OutputFile,
    b64encode,
)
from ..protocol.catalog import DESCRIBE, MODEL_HASHES, RemoteCatalog, unpack_catalog
from ..protocol.runpod import (
    BlobsAnswer,
    BlobsRequest,
    ErrorChunk,
    EventsChunk,
    FilePart,
    decode_error,
    parse_chunk,
    runpod_timing,
)
from .base import Backend, ShipResult, Submitted
from .registry import BackendContext, BackendSpec, register, require_url
from .runpod_volume import NetworkVolumeStore, VolumeConfig

DEFAULT_API = "https://api.runpod.ai/v2"
# /run takes 10 MB of JSON and base64 adds a third: the inputs inlined in one job
# stay under this many bytes together; the rest go through the endpoint's bucket.
INLINE_INPUT_LIMIT = 6 * 1024 * 1024
POLL_RUNNING = 0.05  # /stream while the job runs
POLL_MIN, POLL_MAX = 0.1, 2.0  # /stream while it waits for a worker, backing off
RETRIES = 5
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}

Parts = dict[str, dict[int, bytes]]


def endpoint_base(endpoint: str, api_base: str = DEFAULT_API) -> str:
    """An endpoint id, or a full `https://…/v2/<id>` URL, as the endpoint's base URL."""
    if endpoint.startswith(("http://", "https://")):
        return endpoint.rstrip("/")
    return f"{api_base.rstrip('/')}/{endpoint}"


def join_parts(event: Event, parts: Parts, job_id: str) -> None:
    """Give each file of an `executed` event that came in `parts` its `data`."""
    if not isinstance(event.payload, Executed):
        return
    for file in event.payload.files:
        if file.parts is None or file.data is not None:
            continue
        got = parts.get(file.sha256, {})
        if any(i not in got for i in range(file.parts)):
            raise RemoteUnavailable(
                f"{file.filename}: {sum(i in got for i in range(file.parts))} of "
                f"{file.parts} parts arrived", code="output_parts_missing", job_id=job_id)
        file.data = b64encode(b"".join(got[i] for i in range(file.parts)))
    for file in event.payload.files:  # joined: their parts are not needed again
        parts.pop(file.sha256, None)


def ended(state: str, status: Mapping[str, Any]) -> JobStatus:
    """The terminal status for a job RunPod itself ended (or lost)."""
    if state == "CANCELLED":
        return JobStatus(CANCELLED)
    if state == "TIMED_OUT":
        return JobStatus(FAILED, RemoteExecError(
            "RunPod stopped the job: execution timeout reached", code="timed_out",
            retryable=True))
    return JobStatus(FAILED, decode_error(status.get("error"),
                                          fallback=f"the RunPod job ended {state}"))


def timed(event: Event, answer: Mapping[str, Any]) -> Event:
    """A terminal status with RunPod's own `delayTime` / `executionTime` in its timing."""
    if not (event.terminal and isinstance(event.payload, JobStatus)):
        return event
    timing = runpod_timing(event.payload.timing, answer)
    return replace(event, payload=replace(event.payload, timing=timing))


class RunpodBackend:
    name = "runpod"

    def __init__(self, endpoint: str, api_key: str | None, *, api_base: str = DEFAULT_API,
                 client: httpx.AsyncClient | None = None, ttl_ms: int = 24 * 3600 * 1000,
                 execution_timeout_ms: int = 3600 * 1000, retry_delay: float = 0.5) -> None:
        if not api_key:
            raise Unauthorized("no RunPod API key: set RUNPOD_API_KEY or runpod.api_key in "
                               "the config file", code="no_api_key")
        self.base = endpoint_base(endpoint, api_base)
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self._own_client = client is None
        self.client = client or http_client()
        self.policy = {"ttl": ttl_ms, "executionTimeout": execution_timeout_ms}
        self.retry_delay = retry_delay

    # -- HTTP ---------------------------------------------------------------------------

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        delay = self.retry_delay
        for attempt in range(RETRIES + 1):
            try:
                resp = await self.client.request(method, f"{self.base}{path}",
                                                 headers=self.headers, **kwargs)
            except httpx.HTTPError as exc:
                if attempt == RETRIES:
                    raise RemoteUnavailable(f"{what}: cannot reach RunPod ({exc})",
                                            code="runpod_unreachable") from exc
            else:
                if resp.status_code == 401:
                    raise Unauthorized("RunPod refused the API key (HTTP 401): check "
                                       "RUNPOD_API_KEY", code="bad_api_key")
                if resp.status_code == 404:
                    raise NotFound(f"{what}: RunPod does not know it (expired or wrong "
                                   "endpoint id)", code="runpod_not_found")
                if resp.is_success:
                    return resp.json()
                if resp.status_code != 429 and resp.status_code < 500:
                    raise RemoteExecError(f"{what}: RunPod answered {resp.status_code}: "
                                          f"{resp.text[:300]}", status=resp.status_code)
                if attempt == RETRIES:
                    raise RemoteUnavailable(f"{what}: RunPod answered {resp.status_code}",
                                            status=resp.status_code)
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _run(self, body: dict[str, Any], what: str) -> str:
        job = await self._call("POST", "/run", what, json={
            "input": {**body, "protocol": PROTOCOL_VERSION}, "policy": self.policy})
        return str(job["id"])

    # -- inputs -------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, files: Mapping[str, Path]) -> Submitted:
        body = spec.to_dict()
        media: list[dict[str, Any]] = body.get("media", [])
        hashes = list(dict.fromkeys(m["sha256"] for m in media if m.get("sha256")))
        inline: dict[str, str] = {}
        large: list[str] = []
        budget = INLINE_INPUT_LIMIT
        for sha in hashes:
            size = files[sha].stat().st_size
            if size <= budget:
                inline[sha] = b64encode(await asyncio.to_thread(files[sha].read_bytes))
                budget -= size
            else:
                large.append(sha)
        uploaded, reused = await self._upload(large, files)
        for item in media:
            data = inline.get(item.get("sha256") or "")
            if data is not None:
                del item["sha256"]
                item["data"] = data
        job_id = await self._run(body, "submitting the job")
        return Submitted(job_id, [*inline, *uploaded], reused)

    async def _upload(self, hashes: list[str], files: Mapping[str, Path]
                      ) -> tuple[list[str], list[str]]:
        """Put inputs too large for `/run` into the endpoint's bucket, unless it or the
        worker's volume holds them; returns (uploaded, reused)."""
        if not hashes:
            return [], []
        answer = BlobsAnswer.parse(await self._run_op(BlobsRequest(hashes).to_wire()))
        uploaded = []
        for sha in hashes:
            if sha not in answer.missing:
                continue
            path, url = files[sha], answer.uploads.get(sha)
            if not url:
                raise RemoteExecError(
                    f"{path.name} is too large for RunPod's /run and the endpoint has no "
                    "bucket (BUCKET_ENDPOINT_URL) for uploads", code="input_too_large")
            try:
                resp = await self.client.put(url, content=file_chunks(path), headers={
                    "Content-Length": str(path.stat().st_size)})
            except httpx.HTTPError as exc:
                raise RemoteUnavailable(f"uploading {path.name} failed: {exc}") from exc
            if not resp.is_success:
                raise RemoteUnavailable(f"uploading {path.name} failed: HTTP "
                                        f"{resp.status_code}", status=resp.status_code)
            uploaded.append(sha)
        return uploaded, [sha for sha in hashes if sha not in answer.missing]

    async def _run_op(self, body: dict[str, Any]) -> Any:
        """Run a worker operation as a job of its own and return its one answer."""
        return (await self._run_op_all(body))[0]

    async def _run_op_all(self, body: dict[str, Any]) -> list[Any]:
        """Run a worker operation as a job of its own and return its answers (the
        stream's chunks); a streamed error chunk is raised."""
        job_id = await self._run(body, "asking the worker")
        delay = POLL_MIN
        while True:
            status = await self._call("GET", f"/status/{job_id}", "asking the worker")
            state = status.get("status")
            if state in TERMINAL:
                output = status.get("output")
                if state == "COMPLETED" and output:
                    answers = output if isinstance(output, list) else [output]
                    for answer in answers:
                        if isinstance(parse_chunk(answer), ErrorChunk):
                            raise parse_chunk(answer).error  # type: ignore[union-attr]
                    return answers
                raise ended(str(state), status).error or RemoteUnavailable(
                    f"the worker could not answer: its job ended {state} without an answer")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX)

    # -- the catalog (a job: the worker's routes are not reachable) ----------------------

    catalog_max_age = 24 * 3600.0  # each check is a job, which may wake a GPU worker

    async def catalog(self, known_version: str | None) -> RemoteCatalog | None:
        return unpack_catalog(await self._run_op_all(
            {"action": DESCRIBE, "known_version": known_version}))

    async def preflight_hashes(self, folder: str, names: list[str]
                               ) -> dict[str, str | None] | None:
        return None  # asking is a job (the volume's backend knows them without one)

    async def model_hashes(self, folder: str, names: list[str]) -> dict[str, str | None]:
        answer = await self._run_op({"action": MODEL_HASHES, "folder": folder,
                                     "names": list(names)})
        hashes = answer.get("hashes") if isinstance(answer, dict) else None
        return {str(k): (str(v) if v else None) for k, v in (hashes or {}).items()}

    # -- events -------------------------------------------------------------------------

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        parts: Parts = {}  # this call's file parts, by sha256 and index
        delay = POLL_MIN
        while True:
            answer = await self._call("GET", f"/stream/{job_id}", "following the job")
            items = answer.get("stream") or []
            for item in items:
                for event in self._take(job_id, item.get("output"), parts, after):
                    after = event.seq
                    yield timed(event, answer)
                    if event.terminal:
                        return
            status = answer.get("status")
            if status in TERMINAL:
                async for event in self._ending(job_id, after, parts):
                    yield event
                return
            # Poll briskly while the job runs; back off only while it waits for a worker.
            if items or status == "IN_PROGRESS":
                delay = POLL_MIN
                await asyncio.sleep(POLL_RUNNING)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, POLL_MAX)

    @staticmethod
    def _take(job_id: str, output: object, parts: Parts, after: int) -> list[Event]:
        """The new events of one stream item, with their files' parts joined; a part
        is kept in `parts` until the event that lists its file."""
        chunk = parse_chunk(output)
        if isinstance(chunk, FilePart):
            parts.setdefault(chunk.sha256, {})[chunk.index] = chunk.data
        elif isinstance(chunk, ErrorChunk):  # a failure streamed before the job ended
            return [Event(after + 1, JobStatus(FAILED, chunk.error), time.time())]
        elif isinstance(chunk, EventsChunk):
            new = []
            for event in chunk.events:
                if event.seq > after:
                    join_parts(event, parts, job_id)
                    new.append(event)
                    after = event.seq
            return new
        return []

    async def _ending(self, job_id: str, after: int, parts: Parts) -> AsyncIterator[Event]:
        """The job ended: replay what the stream missed from /status, or say how it ended."""
        status = await self._call("GET", f"/status/{job_id}", "reading the job's end")
        output = status.get("output")
        for item in output if isinstance(output, list) else []:
            for event in self._take(job_id, item, parts, after):
                after = event.seq
                yield timed(event, status)
                if event.terminal:
                    return
        yield timed(Event(after + 1, ended(str(status.get("status")), status), time.time()),
                    status)

    # -- the rest -----------------------------------------------------------------------

    async def cancel(self, job_id: str) -> None:
        await self._call("POST", f"/cancel/{job_id}", "cancelling the job")

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        if output.data is not None:
            try:
                data = base64.b64decode(output.data, validate=True)
            except (binascii.Error, ValueError):
                raise RemoteExecError(f"{output.filename}: its inline data is not base64",
                                      code="bad_output", job_id=job_id) from None
            await asyncio.to_thread(dest.write, data)
        elif output.download_url:
            try:
                async with self.client.stream("GET", output.download_url) as resp:
                    if not resp.is_success:
                        raise RemoteUnavailable(
                            f"downloading {output.filename} from the bucket failed: HTTP "
                            f"{resp.status_code}", status=resp.status_code, job_id=job_id)
                    await copy_body(resp, dest)
            except httpx.HTTPError as exc:
                raise RemoteUnavailable(f"downloading {output.filename} from the bucket "
                                        f"failed: {type(exc).__name__}",
                                        job_id=job_id) from exc
        else:
            raise RemoteExecError(f"{output.filename} came with no way to fetch it",
                                  code="output_unavailable", job_id=job_id)

    async def health(self) -> dict[str, Any]:
        data = await self._call("GET", "/health", "checking the endpoint")
        workers = data.get("workers") or {}
        warm = int(workers.get("idle", 0)) + int(workers.get("running", 0)) > 0
        return {"status": "warm" if warm else "cold", "workers": workers,
                "jobs": data.get("jobs") or {}}

    async def close(self) -> None:
        if self._own_client:
            await self.client.aclose()


class RunpodVolumeBackend(RunpodBackend):
    """A RunPod endpoint whose network volume is configured: also a `ModelStore`, which
    ships models into the volume over RunPod's S3 API (`runpod_volume`), no job needed."""

    ships_models = True

    def __init__(self, endpoint: str, api_key: str | None, *, volume: NetworkVolumeStore,
                 **kwargs: Any) -> None:
        super().__init__(endpoint, api_key, **kwargs)
        self.volume = volume

    async def ship_model(self, folder: str, name: str, path: Path, sha256: str,
                         progress: Callable[[int, int], None] | None = None) -> ShipResult:
        return await self.volume.ship_model(folder, name, path, sha256, progress)

    async def preflight_hashes(self, folder: str, names: list[str]
                               ) -> dict[str, str | None] | None:
        """The volume's own record of its models' sha256 (no job started)."""
        return await self.volume.model_hashes(folder, names)


def _make(ctx: BackendContext) -> Backend:
    endpoint = require_url(ctx, "runpod", "an endpoint id")
    api_base = ctx.env.get("RUNPOD_API_BASE", DEFAULT_API)
    volume = VolumeConfig.from_settings(ctx.env, ctx.section)
    if volume is not None:
        return RunpodVolumeBackend(endpoint, ctx.token, api_base=api_base,
                                   volume=NetworkVolumeStore(volume))
    return RunpodBackend(endpoint, ctx.token, api_base=api_base)


register(BackendSpec("runpod", "a RunPod serverless endpoint running the worker image", _make,
                     endpoint="endpoint id", endpoint_key="endpoint_id",
                     credential_env="RUNPOD_API_KEY", credential_key="api_key",
                     launcher_option="--endpoint", order=20))
