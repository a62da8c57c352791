"""Backend `modal`: the worker's job API as the deployed Modal app serves it.

The Modal app (`platforms/modal/`, deployed from `deploy/modal/`) serves the
same `/v1/jobs` API as any worker, from a light CPU web function, and runs
jobs in GPU containers it starts on demand. So this backend is the `http`
one pointed at that function's web URL, with two differences:

- **Where the URL comes from.** `--url`, the Endpoint URL setting or
  `modal.url` in the config file, as for `http`: the function's web URL,
  `https://<workspace>--<app>-<function>.modal.run`, or its custom domain
  (`label=`/`custom_domains=`). Without one, the URL the launcher found for
  the deployed app (`modal_url.py`: asked of Modal once, then cached) is used.
  The token is the job API's bearer token (`REMOTE_EXEC_TOKEN`, or
  `modal.token` in the config file), not a Modal token.
- **Cold or warm.** `health()` reads the API function's `GET /health`, which
  the Modal app extends with its GPU containers:

      {"status": "ok", ..., "gpu": {"warm": 1}}

  `gpu.warm` (an integer) counts the GPU containers up now, idle or busy;
  other keys of `gpu` pass through. With `warm` > 0 the badge says warm,
  with 0 cold: the next run waits for a GPU container to start. An app that
  reports no `gpu` shows as plainly healthy.

Modal ends every web request at 150 s. `jobapi.client` needs no request that
long: the event stream resumes with `after=`, and large inputs and outputs
cross in parts (32 MiB), each resumed after a cut.
"""

from __future__ import annotations

from typing import Any

from .. import modal_url
from ..errors import ConfigError
from .base import Backend
from .http import HttpBackend
from .registry import BackendContext, BackendSpec, register


class ModalBackend(HttpBackend):
    name = "modal"
    # Its API holds no model folder (the GPU containers read the models Volume, which the
    # stack's fill writes): preflight refuses missing models instead of shipping them.
    ships_models = False

    async def health(self) -> dict[str, Any]:
        body = await self.api.health()
        gpu = body.get("gpu")
        warm = gpu.get("warm") if isinstance(gpu, dict) else None
        if isinstance(warm, int) and not isinstance(warm, bool):
            body["status"] = "warm" if warm > 0 else "cold"
        return body


def deployment_url(ctx: BackendContext) -> str:
    """The configured URL, else the one the launcher found and cached."""
    if ctx.url:
        return ctx.url
    app, function = modal_url.names(ctx.env)
    url = modal_url.cached(app, function, ctx.env)
    if url:
        return url
    raise ConfigError("the modal backend needs the deployment's web URL: set "
                      "RemoteExec.EndpointURL, pass --url to the launcher, or let the launcher "
                      "find it: run `pip install modal` and `modal token new`, then "
                      "`python launcher/launch.py --backend modal`", code="no_endpoint")


def _make(ctx: BackendContext) -> Backend:
    return ModalBackend(deployment_url(ctx), ctx.token)


register(BackendSpec("modal", "a Modal deployment of the worker (its web URL)", _make,
                     endpoint="deployment URL", order=30))
