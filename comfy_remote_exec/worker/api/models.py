"""The model store's route: `PUT /v1/models/{folder}/{name}` places an uploaded blob.

The bytes come first through the resumable blob route (`PUT /v1/blobs/{sha256}`,
in `Content-Range` parts); this route only names where they go. Answers:
201 `{"placed": true}`; 200 `{"placed": false, "same": true}` when the file is
there with those bytes; 409 `model_conflict` when it is there with others
(never overwritten); 404 `blob_missing`; 400 for an unknown folder or a
hostile name. The placing itself is `service.models.ModelFiles`'.
"""

from __future__ import annotations

from aiohttp import web

from ...errors import BadRequest
from ...protocol import is_sha256
from ..service.models import ModelFiles
from .api import read_json

MODELS = web.AppKey("remote_exec_models", ModelFiles)


def add_model_routes(routes: web.RouteTableDef) -> None:
    @routes.put("/v1/models/{folder}/{name:.+}")
    async def place_model(request: web.Request) -> web.Response:
        body = await read_json(request)
        sha = body.get("sha256") if isinstance(body, dict) else None
        if not isinstance(sha, str) or not is_sha256(sha):
            raise BadRequest('body must be {"sha256": "<64 hex digits>"}', code="bad_hash")
        folder, name = request.match_info["folder"], request.match_info["name"]
        placed = await request.app[MODELS].place(folder, name, sha)
        body = {"placed": placed.placed, "same": placed.same, "folder": folder, "name": name,
                "verified": True}  # the placed bytes are the blob's, checked by sha256
        return web.json_response(body, status=201 if placed.placed else 200)
