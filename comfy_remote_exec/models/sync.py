"""Compare this machine's model folders with the remote's, and ship what it lacks.

The local side is the local ComfyUI's layout: `<ComfyUI>/models/<folder>` and
the folders its `extra_model_paths.yaml` adds (ComfyUI's own format: sections
with an optional `base_path` and `<folder>: <paths>`). The remote side is its
catalog (`Catalog`). A model the remote lacks is shipped by the same engine as
a run's (`extension.shipping`); one it holds under the name with other bytes
is a conflict, reported, never overwritten. Sizes tell most files apart;
same-size files are compared by sha256 (the local hash cache; the remote's
`model_hashes`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backends.base import Catalog
from ..errors import BadRequest
from ..extension.shipping import ShipNeed
from ..fsutil import human_size
from ..hashcache import HashCache
from ..protocol.catalog import RemoteCatalog
from ..protocol.models import MODEL_FOLDERS, check_model_name

MODEL_EXTS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl",
                        ".sft", ".gguf", ".onnx", ".yaml", ".json"})


@dataclass
class Plan:
    ship: list[ShipNeed] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # "folder/name" already there
    conflicts: list[str] = field(default_factory=list)  # "folder/name: why"


def folder_roots(comfyui: Path) -> dict[str, list[Path]]:
    """Model folder -> local directories, as the local ComfyUI sees them."""
    roots: dict[str, list[Path]] = {}
    base = comfyui / "models"
    for folder in sorted(MODEL_FOLDERS | ({p.name for p in base.iterdir() if p.is_dir()}
                                          if base.is_dir() else set())):
        roots.setdefault(folder, []).append(base / folder)
    extra = comfyui / "extra_model_paths.yaml"
    if extra.is_file():
        for section in (yaml.safe_load(extra.read_text(encoding="utf-8")) or {}).values():
            if isinstance(section, dict):
                _extra_section(section, comfyui, roots)
    return roots


def _extra_section(section: dict[str, Any], comfyui: Path, roots: dict[str, list[Path]]
                   ) -> None:
    base = Path(os.path.expanduser(str(section.get("base_path", comfyui))))
    if not base.is_absolute():
        base = comfyui / base
    for folder, paths in section.items():
        if folder in ("base_path", "is_default") or not isinstance(paths, str):
            continue
        for line in paths.splitlines():
            if line.strip():
                path = Path(os.path.expanduser(line.strip()))
                roots.setdefault(str(folder), []).append(path if path.is_absolute()
                                                         else base / path)


def local_models(roots: dict[str, list[Path]], only: str | None = None
                 ) -> dict[str, dict[str, Path]]:
    """Folder -> {name: path} of the model files under each folder's directories."""
    out: dict[str, dict[str, Path]] = {}
    for folder, dirs in roots.items():
        if only is not None and folder != only:
            continue
        for root in dirs:
            for path in sorted(root.rglob("*")) if root.is_dir() else []:
                name = path.relative_to(root).as_posix()
                if not path.is_file() or path.suffix.lower() not in MODEL_EXTS:
                    continue
                try:
                    check_model_name(name)
                except BadRequest:
                    continue  # hidden files and names the remote would refuse
                out.setdefault(folder, {}).setdefault(name, path)
    return out


async def plan(catalog: RemoteCatalog, local: dict[str, dict[str, Path]], backend: object,
               hashes: HashCache) -> Plan:
    result = Plan()
    for folder, files in sorted(local.items()):
        remote = {e.name: e.size for e in catalog.models.get(folder, [])}
        same_size: list[str] = []
        for name, path in sorted(files.items()):
            size = path.stat().st_size
            if name not in remote:
                result.ship.append(ShipNeed(folder, name, path, size))
            elif remote[name] and remote[name] != size:
                result.conflicts.append(f"{folder}/{name}: {size} bytes here, "
                                        f"{remote[name]} on the remote")
            else:
                same_size.append(name)
        if same_size and isinstance(backend, Catalog):
            theirs = await backend.model_hashes(folder, same_size)
            for name in same_size:
                mine = (await asyncio.to_thread(hashes.sha256, files[name]))[0]
                if theirs.get(name) not in (None, mine):
                    result.conflicts.append(f"{folder}/{name}: other bytes on the remote "
                                            "(same size, another sha256)")
                else:
                    result.present.append(f"{folder}/{name}")
        else:
            result.present += [f"{folder}/{name}" for name in same_size]
    return result


def describe(result: Plan, dry_run: bool) -> Iterable[str]:
    verb = "would ship" if dry_run else "to ship"
    for need in result.ship:
        yield f"{verb}: {need.folder}/{need.name} ({human_size(need.size)})"
    for line in result.conflicts:
        yield f"conflict: {line}; never overwritten: rename the local file or remove the " \
              "remote one"
