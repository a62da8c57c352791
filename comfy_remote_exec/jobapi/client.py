"""A client of the worker's job API over HTTP: blobs, jobs, events, outputs.

Both sides use it: the `http` and `local` backends build on it, and the
RunPod handler drives the worker in its container with it. It uses an
injected `httpx.AsyncClient`, so tests can hand it a real loopback server or
a `MockTransport`. All httpx errors are translated here: 4xx from the worker
become the worker's own error (code, message, node, details), network
failures become retryable `RemoteUnavailable`. Every request names the
protocol version (`Remote-Exec-Protocol`), so a worker of another version
refuses it with `protocol_mismatch` instead of misreading it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from httpx_sse import SSEError, aconnect_sse

from ..errors import RemoteExecError, RemoteUnavailable, Unauthorized
from ..protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, Event, JobSpec, OutputFile
from .streams import copy_body, file_chunks, http_client

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


def _raise_for(resp: httpx.Response, what: str) -> None:
    if resp.is_success:
        return
    try:
        body = resp.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        raise RemoteExecError.from_dict(error, status=resp.status_code)
    if resp.status_code == 401:
        raise Unauthorized(f"the worker refused the token ({what})")
    message = f"{what}: the worker answered HTTP {resp.status_code}"
    if resp.status_code >= 500:
        raise RemoteUnavailable(message, status=resp.status_code)
    raise RemoteExecError(message, status=resp.status_code)


class JobApiClient:
    def __init__(self, url: str, token: str | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._own_client = client is None
        self.client = client or http_client()
        self.headers = headers

    async def _call(self, method: str, path: str, what: str,
                    headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        try:
            resp = await self.client.request(method, f"{self.url}{path}",
                                             headers={**self.headers, **(headers or {})},
                                             **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteUnavailable(f"{what}: cannot reach the worker at {self.url} ({exc})",
                                    code="worker_unreachable") from exc
        _raise_for(resp, what)
        return resp

    async def missing_blobs(self, hashes: list[str]) -> list[str]:
        if not hashes:
            return []
        resp = await self._call("POST", "/v1/blobs/missing", "checking inputs",
                                json={"sha256": hashes})
        return list(resp.json()["missing"])

    async def upload_blob(self, sha256: str, path: Path) -> None:
        await self._call("PUT", f"/v1/blobs/{sha256}", f"uploading {path.name}",
                         content=file_chunks(path),
                         headers={"Content-Type": "application/octet-stream"})

    async def submit(self, spec: JobSpec) -> str:
        """Queue the job; returns its id."""
        resp = await self._call("POST", "/v1/jobs", "submitting the job", json=spec.to_dict())
        return str(resp.json()["job_id"])

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Follow the SSE stream (httpx-sse); a dropped stream resumes with `after=`, so
        nothing repeats or goes missing, after a short backoff."""
        failures = 0
        while True:
            try:
                async with aconnect_sse(
                        self.client, "GET", f"{self.url}/v1/jobs/{job_id}/events",
                        params={"after": after}, headers=self.headers,
                        timeout=httpx.Timeout(60.0, read=None)) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        _raise_for(source.response, "following the job")
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            continue
                        event = Event.parse(json.loads(sse.data))
                        if event.seq <= after:
                            continue
                        after = event.seq
                        failures = 0
                        yield event
                        if event.terminal:
                            return
            except (httpx.HTTPError, SSEError) as exc:
                if failures >= len(RECONNECT_DELAYS):
                    raise RemoteUnavailable(f"lost the worker's event stream: {exc}",
                                            code="worker_unreachable", job_id=job_id) from exc
                await asyncio.sleep(RECONNECT_DELAYS[failures])
                failures += 1

    async def cancel(self, job_id: str) -> None:
        try:
            await self._call("DELETE", f"/v1/jobs/{job_id}", "cancelling the job")
        except RemoteExecError as exc:
            if exc.status != 409:  # already finished: nothing to cancel
                raise

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        path = output.url or f"/v1/jobs/{job_id}/outputs/{output.folder}/{output.relpath}"
        try:
            async with self.client.stream("GET", f"{self.url}{path}",
                                          headers=self.headers) as resp:
                if not resp.is_success:
                    await resp.aread()
                    _raise_for(resp, f"downloading {output.filename}")
                await copy_body(resp, dest)
        except httpx.HTTPError as exc:
            raise RemoteUnavailable(f"downloading {output.filename} failed: {exc}",
                                    code="worker_unreachable", job_id=job_id) from exc

    async def health(self) -> dict[str, Any]:
        resp = await self._call("GET", "/health", "checking the worker")
        return dict(resp.json())

    async def close(self) -> None:
        if self._own_client:
            await self.client.aclose()

