"""ComfyUI's node and model answers, with the remote's added (remote mode on).

`intercept`'s middleware lets ComfyUI answer these GETs (with and without
`/api`) and hands the answer here: `/object_info`, `/object_info/{class}`,
`/models`, `/models/{folder}`, `/experiment/models` and
`/experiment/models/{folder}`. With remote mode on for the request's user and
a catalog of the remote at hand (`RemoteCatalogCache`: the first page load
waits a few seconds for it, later ones never wait), the answer becomes the
union (`union`); otherwise ComfyUI's answer passes untouched, byte for byte.
A local 404 for a folder only the remote has becomes the remote's listing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from ..errors import RemoteExecError
from ..protocol.catalog import RemoteCatalog
from . import union
from .catalog import MAX_AGE
from .core import RemoteExec

log = logging.getLogger(__name__)

FIRST_WAIT = 5.0  # seconds a request waits for the first catalog of a remote


def wanted(method: str, path: str) -> bool:
    """Whether `path` (without `/api`) is one of the answers the union changes."""
    if method != "GET":
        return False
    parts = path.strip("/").split("/")
    if parts[0] in ("object_info", "models"):
        return len(parts) <= 2
    return parts[0] == "experiment" and len(parts) in (2, 3) and parts[1] == "models"


async def catalog_for(core: RemoteExec, request: web.Request) -> RemoteCatalog | None:
    user = core.host.request_user(request)
    if not core.remote_enabled(user):
        return None
    try:
        cache = core.catalog_for(user)
        # A remote whose catalog is a job (RunPod: it may wait for a worker to boot) is
        # not waited on; the page shows the remote's things once it came.
        return await cache.wait_current(FIRST_WAIT if cache.max_age <= MAX_AGE else 0.0)
    except RemoteExecError as exc:
        log.debug("no remote catalog: %s", exc.message)
        return None


def _json(response: web.StreamResponse) -> Any:
    if not isinstance(response, web.Response) or response.status != 200:
        return None
    try:
        return json.loads(response.body if isinstance(response.body, bytes) else b"")
    except ValueError:
        return None


def apply(path: str, local: Any, status: int, catalog: RemoteCatalog) -> Any:
    """The union's answer for `path` given ComfyUI's (`local`: its JSON, None for a
    404 or what is not JSON); None: leave ComfyUI's answer as it is."""
    parts = path.strip("/").split("/")
    found = status == 200
    if parts[0] == "object_info":
        if not isinstance(local, dict):
            return None
        if len(parts) == 1:
            return union.union_object_info(local, catalog)
        return union.union_node_info(parts[1], local, catalog)
    if parts[0] == "models":
        if len(parts) == 1:
            return union.union_folders(local, catalog) if isinstance(local, list) else None
        if (found and not isinstance(local, list)) or (not found and parts[1]
                                                       not in catalog.models):
            return None
        return union.union_files(local if found else None, parts[1], catalog)
    if len(parts) == 2:
        return union.union_experiment_folders(local, catalog) \
            if isinstance(local, list) else None
    if (found and not isinstance(local, list)) or (not found and parts[2]
                                                   not in catalog.models):
        return None
    return union.union_experiment_files(local if found else None, parts[2], catalog)


async def union_response(core: RemoteExec, request: web.Request, path: str,
                         response: web.StreamResponse) -> web.StreamResponse:
    if response.status not in (200, 404):
        return response
    catalog = await catalog_for(core, request)
    if catalog is None:
        return response
    answer = apply(path, _json(response), response.status, catalog)
    if answer is None:
        return response
    return web.json_response(answer)
