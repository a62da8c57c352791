"""Find the local files a workflow references, and hash them once.

Any string input that names an existing file in the local input folder is
shipped: LoadImage, LoadImageMask, video and audio loaders, any upload COMBO,
files in subfolders, and `name [input]` annotations. So are `name [output]`
and `name [temp]` values (Load Image from Outputs iterating on an earlier
result). Looking at values rather than at node types means custom loader
nodes need no code here. Hashes are cached by path, size and mtime
(`hashcache`), so a 20 MB input is read once, not per run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadRequest
from ..fsutil import confined
from ..hashcache import HashCache
from ..protocol import media_name, safe_relpath, split_annotation


@dataclass(frozen=True)
class LocalInput:
    name: str
    path: Path
    sha256: str
    size: int


def referenced_files(prompt: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Media name -> (folder, relative path) for every value that may name a file."""
    found: dict[str, tuple[str, str]] = {}
    for node in prompt.values():
        for value in (node.get("inputs") or {}).values() if isinstance(node, dict) else []:
            if not isinstance(value, str) or not value:
                continue
            bare, _, folder = split_annotation(value)
            try:
                bare = safe_relpath(bare)
            except BadRequest:
                continue
            found.setdefault(media_name(bare, folder), (folder, bare))
    return found


class InputHasher:
    """Inputs hashed through the one `HashCache` (models use it too)."""

    def __init__(self, cache: HashCache | None = None) -> None:
        self.cache = cache or HashCache()

    def sha256(self, path: Path) -> tuple[str, int]:
        return self.cache.sha256(path)

    def collect(self, prompt: dict[str, Any], roots: dict[str, Path], *,
                cached_only: bool = False) -> list[LocalInput] | None:
        """Every referenced file that exists under its folder's root (blocking: hashes).

        `roots` maps `input`, `output` and `temp` to the local folders. With
        `cached_only`, None as soon as a file would have to be read to hash it: the
        caller then hashes in a thread, and otherwise spares the hop to one.
        """
        found = []
        for name, (folder, bare) in sorted(referenced_files(prompt).items()):
            try:
                path = confined(roots[folder], bare)
            except (KeyError, ValueError):
                continue
            if path.is_file() and os.access(path, os.R_OK):
                known = self.cache.cached(path) if cached_only else self.sha256(path)
                if known is None:
                    return None
                found.append(LocalInput(name=name, path=path, sha256=known[0], size=known[1]))
        return found
