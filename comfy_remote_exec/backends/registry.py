"""The backend registry: the one list of backends, each declared by its own module.

A backend module registers a `BackendSpec` (its name, what its endpoint
setting means, where its credential comes from, and a factory) by calling
`register()` at import. The extension's core, the configuration, the
`/remote_exec/status` route (and through it the settings combo in the
browser) and the launcher all read the list from here, so adding a backend
touches its own module and nothing else.

Built-in backends are the modules of this package that register one; more
can be named in `REMOTE_EXEC_BACKEND_MODULES` (comma-separated module paths),
for a backend that lives outside this package.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Backend

EXTRA_MODULES_ENV = "REMOTE_EXEC_BACKEND_MODULES"


@dataclass(frozen=True)
class BackendContext:
    """What a factory gets: the resolved endpoint and credential, and the machine."""

    url: str | None
    token: str | None
    env: Mapping[str, str]
    comfyui_root: Path
    state_dir: Path
    comfy_args: tuple[str, ...] = ()  # this ComfyUI's flags a worker here should share
    # The backend's section of the secrets file (settings beside its credential).
    section: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    summary: str  # one line for the settings tooltip and the launcher's help
    factory: Callable[[BackendContext], Backend]
    # What the Endpoint URL setting means for it ("" if it takes none from settings).
    endpoint: str = "worker URL"
    # Its section's key in the secrets file that may hold the endpoint.
    endpoint_key: str = "url"
    # The environment variable, then the secrets-file key, of its credential.
    credential_env: str = "REMOTE_EXEC_TOKEN"
    credential_key: str = "token"
    # The launcher option that sets its endpoint (`--url` or `--endpoint`).
    launcher_option: str = "--url"
    order: int = 100  # its place in lists (the settings combo, the launcher's help)
    # Called at ComfyUI's prestartup, before it imports torch, for a backend that starts
    # its own worker: start it then, so it is up about when ComfyUI is (see `local`).
    prestart: Callable[[BackendContext], None] | None = None
    # Stops what `prestart` started that no backend adopted once the extension started.
    discard: Callable[[], None] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def public_view(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "endpoint": self.endpoint}


_specs: dict[str, BackendSpec] = {}
_loaded = False


def register(spec: BackendSpec) -> BackendSpec:
    _specs[spec.name] = spec
    return spec


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = __name__.rsplit(".", 1)[0]
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not module.name.startswith("_") and module.name not in ("base", "registry"):
            importlib.import_module(f"{package}.{module.name}")
    for name in os.environ.get(EXTRA_MODULES_ENV, "").split(","):
        if name.strip():
            importlib.import_module(name.strip())


def specs() -> dict[str, BackendSpec]:
    """Every registered backend, by name, in list order."""
    _load()
    return dict(sorted(_specs.items(), key=lambda item: (item[1].order, item[0])))


def names() -> tuple[str, ...]:
    return tuple(specs())


def get(name: str) -> BackendSpec | None:
    _load()
    return _specs.get(name)


def require_url(ctx: BackendContext, spec_name: str, what: str) -> str:
    """The endpoint a backend cannot work without, or a `ConfigError` saying how to set it."""
    if not ctx.url:
        raise ConfigError(f"the {spec_name} backend needs {what}: set RemoteExec.EndpointURL "
                          "in the settings, the launcher option, or the config file",
                          code="no_endpoint")
    return ctx.url


def discard_prestarted() -> None:
    """Stop the workers backends started at prestartup and did not adopt."""
    for spec in specs().values():
        if spec.discard is not None:
            spec.discard()
