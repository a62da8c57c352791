"""`python -m comfy_remote_exec models sync [--folder F] [--dry-run]`.

Ships the local ComfyUI's models that the configured remote lacks, with the
engine a run uses (by content, resumable: run it again after a cut and it goes
on), shows progress with tqdm, and names conflicts (exit status 1). The remote
is the one the extension would use: the ComfyUI user's `RemoteExec.*`
settings, over the environment, over the secrets file, as in `config`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..backends import registry
from ..backends.base import Backend, Catalog, ModelStore
from ..backends.registry import BackendContext
from ..config import backend_section, config_path, load_secrets, resolve, state_dir
from ..discovery import find_comfyui
from ..errors import ConfigError, RemoteExecError
from ..extension.shipping import ShipNeed, ship_models
from ..fsutil import human_size
from ..hashcache import HashCache
from .sync import describe, folder_roots, local_models, plan


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m comfy_remote_exec models",
                                  description="Local model files and the remote's.")
    sub = top.add_subparsers(dest="command", required=True)
    sync = sub.add_parser("sync", help="ship the local models the remote lacks")
    sync.add_argument("--folder", help="only this model folder (checkpoints, loras, ...)")
    sync.add_argument("--dry-run", action="store_true", help="list what would ship")
    sync.add_argument("--comfyui", help="the local ComfyUI (default: as the launcher finds it)")
    return top


def user_settings(comfyui: Path) -> dict[str, Any]:
    """The default user's ComfyUI settings (the `RemoteExec.*` ones matter here)."""
    path = comfyui / "user" / "default" / "comfy.settings.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def make_backend(comfyui: Path, env: Mapping[str, str]) -> Backend:
    secrets = load_secrets(config_path(env))
    cfg = resolve(user_settings(comfyui), env, secrets)
    spec = registry.get(cfg.backend)
    if spec is None:
        raise ConfigError(f"the {cfg.backend} backend is not available", code="unknown_backend")
    return spec.factory(BackendContext(url=cfg.url, token=cfg.token, env=dict(env),
                                       comfyui_root=comfyui, state_dir=state_dir(env),
                                       comfy_args=(),
                                       section=backend_section(secrets, cfg.backend)))


async def sync(backend: Backend, comfyui: Path, folder: str | None, dry_run: bool,
               hashes: HashCache, out: Any = sys.stderr) -> int:
    if not isinstance(backend, Catalog) or not isinstance(backend, ModelStore):
        raise ConfigError(f"the {backend.name} backend cannot list or receive models",
                          code="ship_unsupported")
    catalog = await backend.catalog(None)
    assert catalog is not None
    local = local_models(folder_roots(comfyui), folder)
    result = await plan(catalog, local, backend, hashes)
    for line in describe(result, dry_run):
        print(line, file=out)
    total = sum(n.size for n in result.ship)
    print(f"{len(result.present)} already on the remote, {len(result.ship)} to ship "
          f"({human_size(total)}), {len(result.conflicts)} conflicts", file=out)
    if dry_run or not result.ship:
        return 1 if result.conflicts else 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=out,
              desc="shipping") as bar:

        def progress(need: ShipNeed, done: int, _total: int) -> None:
            bar.set_postfix_str(f"{need.folder}/{need.name}", refresh=False)
            bar.update(done - bar.n)

        shipped = await ship_models(backend, result.ship, hashes, progress)
    sent = sum(r.sent for r in shipped)
    print(f"shipped {len(shipped)} models, {human_size(sent)} sent", file=out)
    return 1 if result.conflicts else 0


async def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    comfyui = find_comfyui(args.comfyui, env=env).root
    backend = make_backend(comfyui, env)
    try:
        return await sync(backend, comfyui, args.folder, args.dry_run,
                          HashCache(state_dir(env) / "hashes.json"))
    finally:
        await backend.close()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args, os.environ if env is None else env))
    except RemoteExecError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run again to resume", file=sys.stderr)
        return 130
