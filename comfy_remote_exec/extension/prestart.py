"""Start the remote side while ComfyUI itself starts: its prestartup hook.

ComfyUI runs each custom node's `prestartup_script.py` before it imports torch
and loads nodes. The repository's one calls `prestart()` here with plain
values read from ComfyUI (its user directory, its install, its parsed
arguments), so nothing in this module imports ComfyUI. With remote mode on,
the configured backend may start its own worker now (`BackendSpec.prestart`:
the `local` backend does), side by side with ComfyUI's start, instead of when
the extension starts, seconds later; the backend adopts it when the first job
or the warm-up asks. Nothing here may stop ComfyUI from starting: any failure
is logged and the worker starts later, the usual way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends import registry
from ..backends.registry import BackendContext
from ..config import config_path, load_secrets, resolve, state_dir
from ..fsutil import confined
from .host import DEFAULT_USER

log = logging.getLogger("comfy_remote_exec")


def cache_flags(args: Any) -> list[str]:
    """ComfyUI's cache flags (`--cache-lru N`, ...) from its parsed arguments, for a worker
    on this machine to cache as this ComfyUI does."""
    flags = []
    if getattr(args, "cache_lru", 0):
        flags += ["--cache-lru", str(args.cache_lru)]
    for name in ("cache_classic", "cache_none"):
        if getattr(args, name, False):
            flags.append("--" + name.replace("_", "-"))
    ram = getattr(args, "cache_ram", None)  # v0.26: a list of GB (empty: not given)
    if ram:
        flags += ["--cache-ram", *(str(v) for v in ram)] if isinstance(ram, list) \
            else ["--cache-ram", str(ram)]
    return flags


def settings_file(user_dir: Path, user: str = DEFAULT_USER) -> Path:
    """A user's `comfy.settings.json`; ValueError for a user name that leaves the folder."""
    return confined(user_dir, f"{user}/comfy.settings.json")


def read_settings(path: Path) -> dict[str, Any]:
    """Saved settings, or {} when there are none or they do not parse."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def prestart(*, user_dir: Path, comfyui_root: Path, args: Any,
             env: Mapping[str, str] | None = None) -> str | None:
    """Let the configured backend start its worker now; the backend's name if it did."""
    env = dict(os.environ if env is None else env)
    try:
        cfg = resolve(read_settings(settings_file(user_dir)), env,
                      load_secrets(config_path(env)))
        spec = registry.get(cfg.backend) if cfg.enabled else None
        if spec is None or spec.prestart is None:
            return None
        spec.prestart(BackendContext(url=cfg.url, token=cfg.token, env=env,
                                     comfyui_root=comfyui_root, state_dir=state_dir(env),
                                     comfy_args=tuple(cache_flags(args))))
    except Exception as exc:  # never in the way of ComfyUI's start
        log.warning("comfy-remote-exec: the worker starts later (%s)", exc)
        return None
    log.info("comfy-remote-exec: the %s worker is starting alongside ComfyUI", spec.name)
    return spec.name
