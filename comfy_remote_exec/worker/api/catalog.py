"""The job API's catalog routes: what the worker offers, under its content_version.

- `GET /v1/object_info`: ComfyUI's node definitions, with `ETag:
  "<content_version>"`; `If-None-Match` with that tag answers 304, no body.
- `GET /v1/models`: `{"content_version", "folders": {folder: [{name, size}]}}`.
- `POST /v1/models/hashes` `{"folder", "names"}`: `{"hashes": {name: sha256|null}}`.

The version and the listing are `service.catalog`'s (`WorkerCatalog`).
"""

from __future__ import annotations

from aiohttp import web

from ...errors import BadRequest
from ...protocol import safe_relpath
from ...protocol.catalog import models_to_dict
from ..service.service import JobService


def _etag(version: str) -> str:
    return f'"{version}"'


def _matches(request: web.Request, version: str) -> bool:
    tags = [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]
    return _etag(version) in tags or f"W/{_etag(version)}" in tags


async def catalog_object_info(service: JobService, request: web.Request) -> web.Response:
    if request.headers.get("If-None-Match"):
        version = await service.catalog.version()
        if _matches(request, version):
            return web.Response(status=304, headers={"ETag": _etag(version)})
    snap = await service.catalog.snapshot(refresh=True)
    return web.json_response(snap.object_info, headers={"ETag": _etag(snap.content_version)})


async def catalog_models(service: JobService, request: web.Request) -> web.Response:
    snap = await service.catalog.snapshot()
    return web.json_response({"content_version": snap.content_version,
                              "folders": models_to_dict(snap.models)},
                             headers={"ETag": _etag(snap.content_version)})


async def catalog_hashes(service: JobService, body: object) -> web.Response:
    folder = body.get("folder") if isinstance(body, dict) else None
    names = body.get("names") if isinstance(body, dict) else None
    if not isinstance(folder, str) or not folder or not isinstance(names, list) \
            or not all(isinstance(n, str) for n in names):
        raise BadRequest('body must be {"folder": "<model folder>", "names": ["<file>", ...]}')
    for name in names:
        safe_relpath(name, what="model name")  # a hostile name is refused, never looked up
    return web.json_response({"hashes": await service.catalog.hashes(folder, names)})
