"""ComfyUI's `extra_model_paths.yaml`, read as ComfyUI reads it, for `stack freeze`.

Many installs keep models (and sometimes custom nodes) outside their own
folders, in an A1111 install or on a shared drive, and name those folders in
`extra_model_paths.yaml` (beside ComfyUI's `main.py`, or given with
`--extra-model-paths-config`). ComfyUI adds them to its search paths when it
starts; `freeze` never starts ComfyUI, so it reads the same file:

- each top-level section maps ComfyUI folder names (`checkpoints`, `loras`,
  `custom_nodes`, ...) to a path, or to several, one per line;
- a section's `base_path` (`~` and `$VARS` expanded; relative to the file
  when relative) goes before each of its relative paths; without one, a
  relative path is relative to the file;
- `is_default: true` searches the section's folders before the install's
  own, as ComfyUI does; otherwise after them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .spec import StackError

FILE_NAME = "extra_model_paths.yaml"


@dataclass(frozen=True)
class SearchPath:
    """One folder ComfyUI searches for files of `folder` (its folder name)."""

    folder: str
    path: Path
    first: bool = False  # searched before the install's own folders (`is_default`)


def read_extra_paths(config: Path) -> list[SearchPath]:
    """The search paths `config` adds, in its order; a clear `StackError` for a file
    ComfyUI could not use either."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StackError(f"cannot read {config}: {exc}") from exc
    if data is None:
        return []
    if not isinstance(data, dict):
        raise StackError(f"{config}: expected sections of folder paths, got "
                         f"{type(data).__name__}")
    here = config.resolve().parent
    found: list[SearchPath] = []
    for name, section in data.items():
        if section is None:
            continue
        if not isinstance(section, dict):
            raise StackError(f"{config}: section {name!r} is not a mapping of folders")
        entries = dict(section)
        base = entries.pop("base_path", None)
        first = entries.pop("is_default", False) is True
        root = here
        if base is not None:
            root = Path(os.path.expandvars(os.path.expanduser(str(base))))
            root = root if root.is_absolute() else here / root
        for folder, value in entries.items():
            lines = value.split("\n") if isinstance(value, str) else \
                value if isinstance(value, list) else None
            if lines is None:
                raise StackError(f"{config}: {name}.{folder} is not a path")
            for line in (str(item).strip() for item in lines):
                if line:
                    found.append(SearchPath(str(folder),
                                            Path(os.path.normpath(root / line)), first))
    return found


def configs_of(comfyui: Path, given: list[Path] | None) -> list[Path]:
    """The files ComfyUI would read: those given (`--extra-model-paths-config`), else
    the install's own `extra_model_paths.yaml` if it has one."""
    if given is not None:
        return given
    own = comfyui / FILE_NAME
    return [own] if own.is_file() else []


def search_paths(data: Path, configs: list[Path]) -> list[SearchPath]:
    """Every folder searched, in ComfyUI's order: `is_default` extras, the install's
    own (`models/<folder>`, `custom_nodes`), the other extras."""
    extras = [p for config in configs for p in read_extra_paths(config)]
    models = data / "models"
    own = [SearchPath(p.name, p) for p in sorted(models.iterdir()) if p.is_dir()] \
        if models.is_dir() else []
    own.append(SearchPath("custom_nodes", data / "custom_nodes"))
    return ([p for p in extras if p.first] + own + [p for p in extras if not p.first])
