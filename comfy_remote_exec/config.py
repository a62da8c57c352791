"""Where the extension's settings and secrets come from.

Three layers, most specific first:
1. the user's ComfyUI settings (`RemoteExec.*`, saved by the frontend);
2. environment variables (the launcher sets `REMOTE_EXEC_*` defaults);
3. built-in defaults (remote mode off, the `local` backend, one job at a time).

Secrets (the worker token, cloud API keys) never live in ComfyUI settings:
they come from environment variables or from a config file under
platformdirs that must not be readable by group or others. Nothing here is
ever returned by a GET route; `public_view()` is the only outward form.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from .backends import registry
from .errors import ConfigError

APP = "comfy-remote-exec"
SETTING_ENABLED = "RemoteExec.Enabled"
SETTING_BACKEND = "RemoteExec.Backend"
SETTING_URL = "RemoteExec.EndpointURL"
SETTING_PARALLEL = "RemoteExec.ParallelJobs"
SETTING_SHIP_MAX_GB = "RemoteExec.ShipModelsMaxGB"
DEFAULT_SHIP_MAX_GB = 2.0



def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("REMOTE_EXEC_STATE_DIR"):
        return Path(env["REMOTE_EXEC_STATE_DIR"]).expanduser()
    return Path(platformdirs.user_data_dir(APP))


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("REMOTE_EXEC_CONFIG"):
        return Path(env["REMOTE_EXEC_CONFIG"]).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "config.yaml"


_secrets_cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def load_secrets(path: Path) -> dict[str, Any]:
    """The secrets file, refused if others can read it (like ssh does with keys).

    Re-read only when it changes (a chmod too): it is consulted on every Run.
    """
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size, st.st_mode)
    cached = _secrets_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    data = _read_secrets(path, st)
    _secrets_cache[path] = (stamp, data)
    return data


def _read_secrets(path: Path, st: os.stat_result) -> dict[str, Any]:
    if not stat.S_ISREG(st.st_mode):
        return {}
    mode = stat.S_IMODE(st.st_mode)
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); "
                          f"run: chmod 600 {path}", code="config_insecure")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return data


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RemoteConfig:
    """The effective configuration for one prompt."""

    enabled: bool
    backend: str
    url: str | None
    parallel: int
    token: str | None = None
    ship_max_gb: float = DEFAULT_SHIP_MAX_GB  # local models up to this size ship with a run

    def public_view(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "backend": self.backend, "url": self.url,
                "parallel": self.parallel, "token_configured": bool(self.token),
                "ship_max_gb": self.ship_max_gb}


def resolve(settings: Mapping[str, Any], env: Mapping[str, str] | None = None,
            secrets: Mapping[str, Any] | None = None) -> RemoteConfig:
    env = os.environ if env is None else env
    secrets = {} if secrets is None else secrets
    enabled = settings.get(SETTING_ENABLED)
    if enabled is None:
        enabled = _truthy(env.get("REMOTE_EXEC_ENABLED", "0"))
    backend = str(settings.get(SETTING_BACKEND) or env.get("REMOTE_EXEC_BACKEND") or "local")
    spec = registry.get(backend)
    if spec is None:
        raise ConfigError(f"unknown backend {backend!r}; choose one of "
                          f"{', '.join(registry.names())}", code="unknown_backend")
    section = _section(secrets, backend)
    if not spec.endpoint:  # the launcher's own worker; the URL setting is for remote ones
        url = env.get("REMOTE_EXEC_URL") or None
    else:
        url = (settings.get(SETTING_URL) or env.get("REMOTE_EXEC_URL")
               or section.get(spec.endpoint_key) or section.get("url") or None)
    try:
        parallel = int(settings.get(SETTING_PARALLEL) or env.get("REMOTE_EXEC_PARALLEL") or 1)
    except (TypeError, ValueError):
        parallel = 1
    try:
        ship_max_gb = float(settings.get(SETTING_SHIP_MAX_GB)
                            or env.get("REMOTE_EXEC_SHIP_MODELS_MAX_GB") or DEFAULT_SHIP_MAX_GB)
    except (TypeError, ValueError):
        ship_max_gb = DEFAULT_SHIP_MAX_GB
    return RemoteConfig(enabled=_truthy(enabled), backend=backend, url=url,
                        parallel=max(1, min(parallel, 64)),
                        token=token_for(backend, env, secrets),
                        ship_max_gb=max(0.0, ship_max_gb))


def backend_section(secrets: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """The backend's section of the secrets file (its settings beside the credential),
    for its factory only: never shown or logged."""
    return dict(_section(secrets, backend))


def _section(secrets: Mapping[str, Any], backend: str) -> Mapping[str, Any]:
    raw = secrets.get(backend)
    return raw if isinstance(raw, dict) else {}


def token_for(backend: str, env: Mapping[str, str], secrets: Mapping[str, Any]) -> str | None:
    """The credential of `backend`: its env var, else its section of the secrets file
    (which ones: the backend's registration)."""
    spec = registry.get(backend)
    env_name, key = (spec.credential_env, spec.credential_key) if spec else \
        ("REMOTE_EXEC_TOKEN", "token")
    return env.get(env_name) or _section(secrets, backend).get(key) or None
