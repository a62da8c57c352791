"""Backend `modal`: a Modal deployment of the worker's job API.

The Modal app serves the same `/v1/jobs` API as any worker, so this backend
is the http one pointed at the deployment's web URL
(`https://<workspace>--<app>-<function>.modal.run`).
"""

from __future__ import annotations

from .base import Backend
from .http import HttpBackend
from .registry import BackendContext, BackendSpec, register, require_url


def _make(ctx: BackendContext) -> Backend:
    return HttpBackend(require_url(ctx, "modal", "the deployment's web URL"), ctx.token)


register(BackendSpec("modal", "a Modal deployment of the worker (its web URL)", _make,
                     endpoint="deployment URL", order=30))
