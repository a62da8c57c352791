"""Backend `runpod`: a RunPod serverless endpoint running our worker image.

Uses RunPod's public endpoint API: `/run` to submit, `/stream/{id}` polled
adaptively (every 0.1 s while the job runs, backing off while it is queued),
`/status/{id}` to fill any gap and to learn how a job ended, `/cancel/{id}`
and `/health` (warm or cold workers). 429 and 5xx are retried
with backoff (honouring `Retry-After`), a bad key is a clear `Unauthorized`.

Inputs small enough for `/run` travel inline; larger ones go up through
presigned URLs that the worker hands out (`{"op": "blobs"}` job), and are
skipped when the endpoint's volume or bucket already holds them. Outputs come
back inline, as presigned URLs, or in `file_part` chunks (see the handler).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from ..errors import NotFound, RemoteExecError, RemoteUnavailable, Unauthorized
from ..protocol import JOB_STATUS, Event, JobSpec, OutputFile
from .base import Backend
from .registry import BackendContext, BackendSpec, register, require_url
from .streams import copy_body, file_chunks

DEFAULT_API = "https://api.runpod.ai/v2"
INLINE_INPUT_LIMIT = 6 * 1024 * 1024  # /run accepts 10 MB of JSON; base64 adds a third
POLL_MIN, POLL_MAX = 0.1, 2.0
RETRIES = 5
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
FOLLOWED_KEPT = 4  # jobs whose stream ended and whose outputs may still be downloaded


def endpoint_base(endpoint: str, api_base: str = DEFAULT_API) -> str:
    """An endpoint id, or a full `https://…/v2/<id>` URL, as the endpoint's base URL."""
    if endpoint.startswith(("http://", "https://")):
        return endpoint.rstrip("/")
    return f"{api_base.rstrip('/')}/{endpoint}"


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
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        self.policy = {"ttl": ttl_ms, "executionTimeout": execution_timeout_ms}
        self.retry_delay = retry_delay
        self._inline: dict[str, Path] = {}
        # Per job: output descriptors and file parts by sha256, kept for `download`
        # while the job's stream is followed and for the last few jobs after.
        self._files: dict[str, dict[str, dict[str, Any]]] = {}
        self._parts: dict[str, dict[str, dict[int, bytes]]] = {}
        self._followed: deque[str] = deque()

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

    # -- inputs -------------------------------------------------------------------------

    async def missing_blobs(self, hashes: list[str]) -> list[str]:
        # Small inputs ride inline in /run; large ones are checked in upload_blob.
        return list(hashes)

    async def upload_blob(self, sha256: str, path: Path) -> None:
        size = path.stat().st_size
        if size <= INLINE_INPUT_LIMIT:
            self._inline[sha256] = path
            return
        answer = await self._run_op({"op": "blobs", "sha256": [sha256]})
        if sha256 not in answer.get("missing", []):
            return
        url = answer.get("uploads", {}).get(sha256)
        if not url:
            raise RemoteExecError(f"{path.name} is too large for RunPod's /run and the "
                                  "endpoint has no bucket (BUCKET_ENDPOINT_URL) for uploads",
                                  code="input_too_large")

        resp = await self.client.put(url, content=file_chunks(path),
                                     headers={"Content-Length": str(size)})
        if not resp.is_success:
            raise RemoteUnavailable(f"uploading {path.name} failed: HTTP {resp.status_code}")

    async def _run_op(self, body: dict[str, Any]) -> dict[str, Any]:
        job = await self._call("POST", "/run", "asking the worker",
                               json={"input": body, "policy": self.policy})
        delay = POLL_MIN
        while True:
            status = await self._call("GET", f"/status/{job['id']}", "asking the worker")
            if status.get("status") in TERMINAL:
                output = status.get("output")
                if status.get("status") != "COMPLETED" or not output:
                    raise RemoteUnavailable(f"the worker could not answer: {status}")
                return dict(output[0] if isinstance(output, list) else output)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX)

    # -- jobs ---------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> str:
        body = spec.to_dict()
        for item in body.get("media", []):
            path = self._inline.pop(item.get("sha256") or "", None)
            if path is not None:
                data = await asyncio.to_thread(path.read_bytes)
                item.pop("sha256")
                item["data"] = base64.b64encode(data).decode("ascii")
        job = await self._call("POST", "/run", "submitting the job",
                               json={"input": body, "policy": self.policy})
        return str(job["id"])

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        try:
            async for event in self._follow(job_id, after):
                yield event
        finally:
            self._followed.append(job_id)
            while len(self._followed) > FOLLOWED_KEPT:
                old = self._followed.popleft()
                if old not in self._followed:
                    self._files.pop(old, None)
                    self._parts.pop(old, None)

    async def _follow(self, job_id: str, after: int) -> AsyncIterator[Event]:
        delay = POLL_MIN
        while True:
            answer = await self._call("GET", f"/stream/{job_id}", "following the job")
            got = False
            for item in answer.get("stream") or []:
                for event in self._take(job_id, item.get("output")):
                    got = True
                    if event.seq <= after:
                        continue
                    after = event.seq
                    yield event
                    if event.terminal:
                        return
            status = answer.get("status")
            if status in TERMINAL:
                async for event in self._ending(job_id, after):
                    yield event
                return
            # Poll briskly while the job runs; back off only while it waits for a
            # worker (a cold start can take minutes).
            delay = POLL_MIN if got or status == "IN_PROGRESS" else min(delay * 1.5, POLL_MAX)
            await asyncio.sleep(delay)

    def _take(self, job_id: str, output: Any) -> list[Event]:
        """Events of one stream chunk; file parts are kept for `download`."""
        if not isinstance(output, dict):
            return []
        part = output.get("file_part")
        if isinstance(part, dict):
            parts = self._parts.setdefault(job_id, {}).setdefault(str(part["sha256"]), {})
            parts[int(part["index"])] = base64.b64decode(part["data"])
        events = [Event.parse(raw) for raw in output.get("events") or []]
        files = self._files.setdefault(job_id, {})
        for event in events:
            for file in event.data.get("files") or [] if event.type == "executed" else []:
                files[str(file.get("sha256"))] = file
        return events

    async def _ending(self, job_id: str, after: int) -> AsyncIterator[Event]:
        """The job ended: replay what the stream missed from /status, or say how it ended."""
        status = await self._call("GET", f"/status/{job_id}", "reading the job's end")
        output = status.get("output")
        for item in output if isinstance(output, list) else []:
            for event in self._take(job_id, item):
                if event.seq > after:
                    after = event.seq
                    yield event
                    if event.terminal:
                        return
        state = status.get("status")
        if state == "CANCELLED":
            data: dict[str, Any] = {"status": "cancelled"}
        else:
            data = {"status": "failed", "error": self._error(status)}
        yield Event(after + 1, JOB_STATUS, data, 0.0)

    @staticmethod
    def _error(status: dict[str, Any]) -> dict[str, Any]:
        raw = status.get("error")
        if status.get("status") == "TIMED_OUT":
            return {"code": "timed_out", "message": "RunPod stopped the job: execution "
                    "timeout reached", "retryable": True}
        try:
            error = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            error = None
        if isinstance(error, dict) and error.get("message"):
            return error
        if isinstance(error, dict) and error.get("error_message"):  # the SDK's own report
            return {"code": "worker_error", "message": str(error["error_message"])}
        return {"code": "runpod_failed", "message": str(raw or f"job {status.get('status')}")}

    async def cancel(self, job_id: str) -> None:
        await self._call("POST", f"/cancel/{job_id}", "cancelling the job")

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        file = self._files.get(job_id, {}).get(output.sha256) or {}
        if "data" in file:
            dest.write(base64.b64decode(file["data"]))
        elif "download_url" in file:
            async with self.client.stream("GET", file["download_url"]) as resp:
                if not resp.is_success:
                    raise RemoteUnavailable(f"downloading {output.filename} from the bucket "
                                            f"failed: HTTP {resp.status_code}")
                await copy_body(resp, dest)
        elif "parts" in file:
            parts = self._parts.get(job_id, {}).get(output.sha256, {})
            if len(parts) != int(file["parts"]):
                raise RemoteUnavailable(f"{output.filename}: {len(parts)} of {file['parts']} "
                                        "parts arrived")
            for index in range(int(file["parts"])):
                dest.write(parts[index])
        else:
            raise RemoteExecError(f"{output.filename} came with no way to fetch it",
                                  code="output_unavailable")

    async def health(self) -> dict[str, Any]:
        data = await self._call("GET", "/health", "checking the endpoint")
        workers = data.get("workers") or {}
        warm = int(workers.get("idle", 0)) + int(workers.get("running", 0)) > 0
        return {"status": "warm" if warm else "cold", "workers": workers,
                "jobs": data.get("jobs") or {}}

    async def close(self) -> None:
        if self._own_client:
            await self.client.aclose()


def _make(ctx: BackendContext) -> Backend:
    endpoint = require_url(ctx, "runpod", "an endpoint id")
    return RunpodBackend(endpoint, ctx.token,
                         api_base=ctx.env.get("RUNPOD_API_BASE", DEFAULT_API))


register(BackendSpec("runpod", "a RunPod serverless endpoint running the worker image", _make,
                     endpoint="endpoint id", endpoint_key="endpoint_id",
                     credential_env="RUNPOD_API_KEY", credential_key="api_key",
                     launcher_option="--endpoint", order=20))
