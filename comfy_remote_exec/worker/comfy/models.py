"""The model files the worker's ComfyUI sees, with their sizes and paths.

The names are ComfyUI's own (`GET /models/{folder}`: what its loaders list,
extra model paths included), so the extension can offer them in the same
COMBOs; the folders and their directories come from ComfyUI's
`/experiment/models` (every model folder but `configs` and `custom_nodes`).
The worker shares ComfyUI's filesystem, so a name's size and path are read
here: the first of the folder's directories that holds it, as ComfyUI's
`folder_paths.get_full_path` picks. A ComfyUI without `/experiment/models`
still lists its names, with size 0 and no path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .comfy_client import ComfyClient

SKIPPED_FOLDERS = frozenset({"configs", "custom_nodes"})


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str  # relative, with `/`
    size: int
    path: Path | None


def locate(dirs: list[str], name: str) -> tuple[int, Path | None]:
    """`name`'s size and path in the first of `dirs` that holds it."""
    for base in dirs:
        path = Path(base) / name
        try:
            if path.is_file():
                return path.stat().st_size, path
        except OSError:
            continue
    return 0, None


def _folder_dirs(raw: Any) -> dict[str, list[str]] | None:
    if not isinstance(raw, list):
        return None
    out: dict[str, list[str]] = {}
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            dirs = item.get("folders")
            out[item["name"]] = [str(d) for d in dirs] if isinstance(dirs, list) else []
    return out


async def model_files(client: ComfyClient) -> dict[str, list[ModelFile]]:
    """Every model folder of the ComfyUI behind `client`, with its files."""
    folders = _folder_dirs(await client.get_json("/experiment/models"))
    if folders is None:
        names = await client.models()
        folders = {str(f): [] for f in names} if isinstance(names, list) else {}
    out: dict[str, list[ModelFile]] = {}
    for folder, dirs in folders.items():
        if folder in SKIPPED_FOLDERS:
            continue
        names = await client.models(folder)
        listed = [str(n).replace("\\", "/") for n in names] if isinstance(names, list) else []

        def stat_all(dirs: list[str] = dirs, listed: list[str] = listed) -> list[ModelFile]:
            return [ModelFile(n, *locate(dirs, n)) for n in listed]

        out[folder] = await asyncio.to_thread(stat_all)
    return out
