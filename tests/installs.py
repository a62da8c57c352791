"""The ComfyUIs that the integration tests run against, one test id per install.

`COMFYUI_PATHS=dir1:dir2` (os.pathsep-separated) names them; without it, the
one that `discovery.find_comfyui` finds, as the launcher would. Each becomes a
param of the session fixture `comfy_install`, with an id from its
`comfyui_version.py` (`comfy0.3.64`). A path that is not a usable ComfyUI, or
no ComfyUI at all, becomes a param whose tests skip with discovery's message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from comfy_remote_exec.discovery import ComfyInstall, ComfyUINotFound, find_comfyui


def comfy_version(root: Path) -> str:
    """`__version__` from ComfyUI's comfyui_version.py, else the folder's name."""
    try:
        text = (root / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return root.name
    found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    return found.group(1) if found else root.name


def comfy_params(env: Mapping[str, str] | None = None) -> list[Any]:
    """`pytest.param`s of a ComfyInstall, or of the reason why there is none."""
    env = os.environ if env is None else env
    paths = [p for p in env.get("COMFYUI_PATHS", "").split(os.pathsep) if p.strip()]
    found: list[ComfyInstall | str] = []
    for path in paths or [None]:
        try:
            found.append(find_comfyui(path, env=env))
        except ComfyUINotFound as exc:
            found.append(f"needs a real ComfyUI: {exc.message}")
    params, seen = [], set()
    for item in found:
        name = f"comfy{comfy_version(item.root)}" if isinstance(item, ComfyInstall) else \
            "no-comfyui"
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}-{n}", n + 1
        seen.add(unique)
        params.append(pytest.param(item, id=unique))
    return params
