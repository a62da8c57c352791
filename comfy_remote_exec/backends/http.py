"""Backend `http`: the worker's job API at any URL (any host, the local worker).

A thin `Backend` (and `ModelStore`) over `jobapi.client.JobApiClient`: `submit` asks which
input blobs the worker lacks, streams those up (`PUT /v1/blobs/{sha256}`, in
parts when large), then posts the job; events come over SSE, outputs from
the worker's URLs (in `Range` parts when large).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from ..errors import RemoteUnavailable
from ..jobapi.client import PART_SIZE, JobApiClient
from ..protocol import Event, JobSpec, OutputFile
from ..protocol.catalog import RemoteCatalog, models_from_dict
from .base import Backend, ShipResult, Submitted
from .registry import BackendContext, BackendSpec, register, require_url


class HttpBackend:
    name = "http"
    ships_models = True
    catalog_max_age = 60.0  # a check is one conditional request

    def __init__(self, url: str, token: str | None = None,
                 client: httpx.AsyncClient | None = None, *, part_size: int = PART_SIZE) -> None:
        self.api = JobApiClient(url, token, client, part_size=part_size)

    @property
    def url(self) -> str:
        return self.api.url

    async def submit(self, spec: JobSpec, files: Mapping[str, Path]) -> Submitted:
        hashes = list(dict.fromkeys(m.sha256 for m in spec.media if m.sha256))
        missing = set(await self.api.missing_blobs(hashes))
        uploaded, reused = [], []
        for sha in hashes:
            if sha in missing:
                await self.api.upload_blob(sha, files[sha])
                uploaded.append(sha)
            else:
                reused.append(sha)
        job_id, events = await self.api.submit_following(spec)
        return Submitted(job_id, uploaded, reused, events)

    async def ship_model(self, folder: str, name: str, path: Path, sha256: str,
                         progress: Callable[[int, int], None] | None = None) -> ShipResult:
        """`ModelStore`: upload the blob unless the worker holds it (in parts, resumed
        from what it kept), then place it (`PUT /v1/models/{folder}/{name}`)."""
        sent = 0
        if await self.api.missing_blobs([sha256]):
            sent = await self.api.upload_blob(sha256, path, progress, resume=True)
        elif progress is not None:
            size = path.stat().st_size
            progress(size, size)
        answer = await self.api.place_model(folder, name, sha256)
        return ShipResult(folder, name, sha256, sent, bool(answer.get("placed")),
                          bool(answer.get("same")), verified=bool(answer.get("verified")))

    def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        return self.api.events(job_id, after)

    async def cancel(self, job_id: str) -> None:
        await self.api.cancel(job_id)

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        await self.api.download(job_id, output, dest)

    async def health(self) -> dict[str, Any]:
        return await self.api.health()

    async def catalog(self, known_version: str | None) -> RemoteCatalog | None:
        """The worker's catalog, or None while its version is `known_version` (a 304)."""
        for _ in range(3):  # a model may land between the two reads: read both again
            version, info = await self.api.object_info(known_version)
            if info is None:
                return None
            listing = await self.api.models()
            if version is None or listing.get("content_version") == version:
                return RemoteCatalog(str(listing.get("content_version") or ""), info,
                                     models_from_dict(listing.get("folders") or {}))
        raise RemoteUnavailable("the worker's models keep changing while they are read",
                                code="catalog_unstable", retryable=True)

    async def model_hashes(self, folder: str, names: list[str]) -> dict[str, str | None]:
        return await self.api.model_hashes(folder, names)

    async def preflight_hashes(self, folder: str, names: list[str]
                               ) -> dict[str, str | None] | None:
        return await self.model_hashes(folder, names)

    async def close(self) -> None:
        await self.api.close()


def _make(ctx: BackendContext) -> Backend:
    return HttpBackend(require_url(ctx, "http", "the worker's URL"), ctx.token)


register(BackendSpec("http", "a worker's job API at any URL", _make, order=10))
