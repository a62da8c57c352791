"""A client of the worker's job API over HTTP: blobs, jobs, events, outputs.

Both sides use it: the `http` and `local` backends build on it, and the
RunPod handler drives the worker in its container with it. It uses an
injected `httpx.AsyncClient`, so tests can hand it a real loopback server or
a `MockTransport`. All httpx errors are translated here: 4xx from the worker
become the worker's own error (code, message, node, details), network
failures become retryable `RemoteUnavailable`. Every request names the
protocol version (`Remote-Exec-Protocol`), so a worker of another version
refuses it with `protocol_mismatch` instead of misreading it.

A platform may cut any request (Modal cuts every web request at 150 s), so
nothing here needs one request to last: the event stream resumes with
`after=`; an input larger than `part_size` (32 MiB) goes up in parts
(`Content-Range`, see `worker/inputs/blobs.py`), each its own request, and
after a cut the client asks where the upload stands and goes on from there;
an output larger than a part comes down in `Range` requests, and a cut part
resumes from its last byte. A worker that predates parts gets the whole
input in one request, as before.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse

from ..errors import RemoteExecError, RemoteUnavailable, Unauthorized
from ..protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    ContentRange,
    Event,
    JobSpec,
    OutputFile,
)
from .streams import copy_body, file_chunks, http_client

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
PART_SIZE = 32 * 1024 * 1024  # the bytes of one upload or download request
STEADY = 5.0  # seconds an event stream stayed up: its end was a cut, not a failure
# A followed stream that carries nothing this long is dead (the worker sends a
# comment after 15 s of quiet): it is resumed. Not for the submission's own stream,
# whose answer waits for the job's inputs to be ready.
SILENT_STREAM = 60.0
CUT_STATUSES = frozenset({408, 429, 502, 503, 504})


class _Cut(Exception):
    """A transfer's request was cut off (or answered the way a platform answers
    one it cut: a redirect, a 5xx): go on from where it stands."""


class Following:
    """A job's event stream opened by its submission: iterate it, and `aclose` it
    when done with it, iterated or not (that releases its response)."""

    def __init__(self, events: AsyncGenerator[Event, None],
                 stack: contextlib.AsyncExitStack) -> None:
        self._events, self._stack = events, stack

    def __aiter__(self) -> Following:
        return self

    async def __anext__(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()
        await self._stack.aclose()


class _Counting:
    """A `dest` that counts what was written to it, even when the copy is cut."""

    def __init__(self, dest: BinaryIO) -> None:
        self.dest, self.count = dest, 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return self.dest.write(data)


Progress = Callable[[int, int], None]


class _Sent:
    """The file bytes an upload handed to the wire, and its `progress` callback."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress, self.count = total, progress, 0

    async def counted(self, chunks: AsyncIterator[bytes], start: int) -> AsyncIterator[bytes]:
        done = start
        async for chunk in chunks:
            yield chunk
            self.count += len(chunk)
            done += len(chunk)
            if self.progress is not None:
                self.progress(done, self.total)


def _error_code(resp: httpx.Response) -> tuple[str | None, dict[str, Any]]:
    try:
        body = resp.json()
    except ValueError:
        return None, {}
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, {}
    details = error.get("details")
    return str(error.get("code")), details if isinstance(details, dict) else {}


def _is_cut(resp: httpx.Response) -> bool:
    """Answered the way a platform's front answers a request it cut or could not
    place (Modal: a 303 to the result after 150 s; a 502-504 while containers move)."""
    return resp.is_redirect or resp.status_code in CUT_STATUSES


def _raise_for(resp: httpx.Response, what: str) -> None:
    if resp.is_success or resp.status_code == 304:  # 304: only conditional requests get it
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
                 client: httpx.AsyncClient | None = None, *, part_size: int = PART_SIZE,
                 retry_delays: tuple[float, ...] = RECONNECT_DELAYS) -> None:
        self.url = url.rstrip("/")
        self.part_size = part_size
        self.retry_delays = retry_delays
        self.steady = STEADY
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

    async def upload_blob(self, sha256: str, path: Path, progress: Progress | None = None,
                          *, resume: bool = False) -> int:
        """Upload `path` as blob `sha256`: in one request, or in parts if it is larger
        than a part or `resume` is asked (each resumed after a cut, until the worker has
        verified it). Returns the file bytes sent; `progress(done, total)` follows them
        (`done` counts from where a resumed upload stood)."""
        size = path.stat().st_size
        sent = _Sent(size, progress)
        if ((size > self.part_size or resume)
                and await self._upload_parts(sha256, path, size, sent)):
            return sent.count
        await self._call("PUT", f"/v1/blobs/{sha256}", f"uploading {path.name}",
                         content=sent.counted(file_chunks(path), 0),
                         headers={"Content-Type": "application/octet-stream"})
        return sent.count

    async def place_model(self, folder: str, name: str, sha256: str) -> dict[str, Any]:
        """Place blob `sha256` as the worker's model `folder/name` (`PUT /v1/models`):
        `{"placed": bool, "same": bool}`; other bytes there: `model_conflict` (409)."""
        where = f"/v1/models/{quote(folder, safe='')}/{quote(name, safe='/')}"
        resp = await self._call("PUT", where,
                                f"placing {folder}/{name}", json={"sha256": sha256})
        return dict(resp.json())

    async def _upload_parts(self, sha256: str, path: Path, size: int,
                            sent: _Sent | None = None) -> bool:
        """The upload in parts; False if the worker predates them (it then refuses the
        first status query, an empty body, with `hash_mismatch`)."""
        sent = sent or _Sent(size, None)
        what = f"uploading {path.name}"
        received: int | None = None  # unknown: ask the worker first
        best, failures = -1, 0
        while True:
            if received is None:
                part, body = ContentRange(None, None, size), None
            else:
                stop = min(received + self.part_size, size)
                part, body = ContentRange.of(received, stop, size), (received, stop)
            try:
                resp = await self.client.put(
                    f"{self.url}/v1/blobs/{sha256}",
                    content=sent.counted(file_chunks(path, *body), body[0]) if body else b"",
                    headers={**self.headers, "Content-Type": "application/octet-stream",
                             "Content-Range": part.header(),
                             "Content-Length": str(part.length)})
                if _is_cut(resp):
                    raise _Cut(f"HTTP {resp.status_code}")
            except (httpx.HTTPError, _Cut) as exc:
                failures += 1
                if failures > len(self.retry_delays):
                    raise RemoteUnavailable(f"{what}: the worker at {self.url} keeps cutting "
                                            f"the upload off ({exc})",
                                            code="worker_unreachable") from exc
                await asyncio.sleep(self.retry_delays[failures - 1])
                received = None  # ask where it stands
                continue
            code, details = _error_code(resp)
            if resp.status_code == 409 and code == "offset_mismatch":
                received = int(details.get("received", 0))
                failures += 1
            elif part.start is None and code == "hash_mismatch":
                return False
            else:
                _raise_for(resp, what)
                answer = resp.json()
                if answer.get("complete"):
                    return True
                received = int(answer["received"])
            if received > best:
                best, failures = received, 0
            elif failures > len(self.retry_delays):
                raise RemoteUnavailable(f"{what}: the upload makes no progress on the worker "
                                        f"at {self.url}", code="worker_unreachable")

    async def submit(self, spec: JobSpec) -> str:
        """Queue the job; returns its id."""
        resp = await self._call("POST", "/v1/jobs", "submitting the job", json=spec.to_dict())
        return str(resp.json()["job_id"])

    async def submit_following(self, spec: JobSpec) -> tuple[str, Following | None]:
        """Queue the job and open its event stream in the same request (`Accept:
        text/event-stream`); returns its id and the stream, which yields what
        `events(job_id)` would, resuming the same way if it drops. A worker that
        answers with JSON (one that predates this) gives the id and no stream."""
        stack = contextlib.AsyncExitStack()
        try:  # (httpx-sse sets Accept in the headers it is given: a copy of ours)
            source = await stack.enter_async_context(aconnect_sse(
                self.client, "POST", f"{self.url}/v1/jobs", json=spec.to_dict(),
                headers=dict(self.headers), timeout=httpx.Timeout(60.0, read=None)))
            resp = source.response
            if not resp.is_success or not resp.headers.get(
                    "content-type", "").startswith("text/event-stream"):
                await resp.aread()
                _raise_for(resp, "submitting the job")
                await stack.aclose()
                return str(resp.json()["job_id"]), None
            sse = source.aiter_sse()
            first = await anext(sse)
            if first.event != "submitted":
                raise RemoteExecError(f"submitting the job: the worker's stream began with "
                                      f"{first.event!r}, not its answer",
                                      code="protocol_error")
            job_id = str(first.json()["job_id"])
        except httpx.HTTPError as exc:
            await stack.aclose()
            raise RemoteUnavailable(f"submitting the job: cannot reach the worker at "
                                    f"{self.url} ({exc})", code="worker_unreachable") from exc
        except BaseException:
            await stack.aclose()
            raise
        return job_id, Following(self._follow(job_id, 0, (stack, sse)), stack)

    def events(self, job_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """Follow the SSE stream (httpx-sse). A stream that drops or ends before the job
        does resumes with `after=`, so nothing repeats or goes missing, after a short
        backoff; it gives up after `retry_delays` in a row that brought no event and
        stayed up less than `steady` s (Modal's cut at 150 s is no failure)."""
        return self._follow(job_id, after, None)

    async def _follow(self, job_id: str, after: int,
                      first: tuple[contextlib.AsyncExitStack, AsyncIterator[ServerSentEvent]]
                      | None) -> AsyncGenerator[Event, None]:
        """`events`, taking them from `first` (a stream the submission opened) first."""
        failures = 0
        while True:
            opened, got = None, False
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if first is not None:
                        held, messages = first
                        first = None
                        stack.push_async_callback(held.aclose)
                    else:
                        source = await stack.enter_async_context(aconnect_sse(
                            self.client, "GET", f"{self.url}/v1/jobs/{job_id}/events",
                            params={"after": after}, headers=dict(self.headers),
                            timeout=httpx.Timeout(60.0, read=SILENT_STREAM)))
                        if _is_cut(source.response):
                            raise _Cut(f"HTTP {source.response.status_code}")
                        if not source.response.is_success:
                            await source.response.aread()
                            _raise_for(source.response, "following the job")
                        messages = source.aiter_sse()
                    opened = time.monotonic()
                    async for sse in messages:
                        if not sse.data:
                            continue
                        event = Event.parse(json.loads(sse.data))
                        if event.seq <= after:
                            continue
                        after, got = event.seq, True
                        yield event
                        if event.terminal:
                            return
                problem: Exception = _Cut("the stream ended before the job did")
            except (httpx.HTTPError, SSEError, _Cut) as exc:
                problem = exc
            if got or (opened is not None and time.monotonic() - opened >= self.steady):
                failures = 0
            if failures >= len(self.retry_delays):
                raise RemoteUnavailable(f"lost the worker's event stream: {problem}",
                                        code="worker_unreachable", job_id=job_id) from problem
            await asyncio.sleep(self.retry_delays[failures])
            failures += 1

    async def cancel(self, job_id: str) -> None:
        try:
            await self._call("DELETE", f"/v1/jobs/{job_id}", "cancelling the job")
        except RemoteExecError as exc:
            if exc.status != 409:  # already finished: nothing to cancel
                raise

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        """Stream an output into `dest`: one request while it fits in a part, else
        `Range` requests of a part each; a cut request goes on from its last byte. An
        output that came with its bytes (`data`) needs no request at all."""
        if output.data is not None:
            dest.write(base64.b64decode(output.data))  # small: no thread hop
            return
        path = output.url or f"/v1/jobs/{job_id}/outputs/{output.folder}/{output.relpath}"
        what = f"downloading {output.filename}"
        total = output.size_bytes
        written = _Counting(dest)
        failures = 0
        while total is None or written.count < total:
            offset = written.count
            whole = offset == 0 and total is not None and total <= self.part_size
            ranged = {} if whole else {"Range": f"bytes={offset}-{offset + self.part_size - 1}"}
            try:
                async with self.client.stream("GET", f"{self.url}{path}",
                                              headers={**self.headers, **ranged}) as resp:
                    if _is_cut(resp):
                        raise _Cut(f"HTTP {resp.status_code}")
                    if resp.status_code == 416:  # nothing at `offset`: the end, if it is
                        total = ContentRange.parse(resp.headers.get("Content-Range", "")).total
                        if total != offset:
                            raise RemoteExecError(f"{what}: the worker holds {total} bytes, "
                                                  f"{offset} came", job_id=job_id)
                        break
                    if not resp.is_success:
                        await resp.aread()
                        _raise_for(resp, what)
                    if resp.status_code == 206:
                        got = ContentRange.parse(resp.headers.get("Content-Range", ""))
                        if got.start != offset:
                            raise RemoteExecError(f"{what}: asked for byte {offset}, got "
                                                  f"{got.start}", job_id=job_id)
                        total = got.total
                        await copy_body(resp, written)
                    else:  # the whole file (a server without Range): skip what came
                        await copy_body(resp, written, skip=offset)
                        total = written.count
            except (httpx.HTTPError, _Cut) as exc:
                if written.count > offset:
                    failures = 0
                failures += 1
                if failures > len(self.retry_delays):
                    raise RemoteUnavailable(f"{what} failed: {exc}",
                                            code="worker_unreachable", job_id=job_id) from exc
                await asyncio.sleep(self.retry_delays[failures - 1])
            else:
                failures = 0

    async def object_info(self, known_version: str | None = None
                          ) -> tuple[str | None, dict[str, Any] | None]:
        """`(content_version, object_info)`; `(version, None)` when it is `known_version`
        still (the worker answered 304)."""
        headers = {"If-None-Match": f'"{known_version}"'} if known_version else None
        resp = await self._call("GET", "/v1/object_info", "reading the worker's nodes",
                                headers=headers)
        version = resp.headers.get("ETag", "").removeprefix("W/").strip('"') or None
        if resp.status_code == 304:
            return version or known_version, None
        return version, dict(resp.json())

    async def models(self) -> dict[str, Any]:
        """`{"content_version", "folders": {folder: [{name, size}]}}`."""
        resp = await self._call("GET", "/v1/models", "listing the worker's models")
        return dict(resp.json())

    async def model_hashes(self, folder: str, names: list[str]) -> dict[str, str | None]:
        resp = await self._call("POST", "/v1/models/hashes", "hashing the worker's models",
                                json={"folder": folder, "names": names})
        hashes = resp.json().get("hashes") or {}
        return {str(k): (str(v) if v else None) for k, v in hashes.items()}

    async def health(self) -> dict[str, Any]:
        resp = await self._call("GET", "/health", "checking the worker")
        return dict(resp.json())

    async def close(self) -> None:
        if self._own_client:
            await self.client.aclose()

