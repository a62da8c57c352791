"""Find, confine and describe the files a job produced.

ComfyUI lists a node's files in its UI output as `{filename, subfolder, type}`
under any key (`images`, `gifs`, `audio`, `latents`, `3d`, a custom node's
own key...). Every such entry becomes an `OutputFile` with its size and
sha256, whatever the key, so new output types need no code here. Names come
from node code we do not control, so each path is resolved and must stay
inside ComfyUI's output, temp or input folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BadRequest, RemoteExecError
from ...fsutil import confined, file_sha256
from ...protocol import OutputFile, b64encode, media_type, safe_relpath


@dataclass(frozen=True)
class ComfyDirs:
    """ComfyUI's folders under its `--base-directory`."""

    base: Path

    @property
    def input(self) -> Path:
        return self.base / "input"

    @property
    def output(self) -> Path:
        return self.base / "output"

    @property
    def temp(self) -> Path:
        return self.base / "temp"

    def by_type(self, type_name: str) -> Path | None:
        return {"output": self.output, "temp": self.temp, "input": self.input}.get(type_name)

    def resolve(self, type_name: str, subfolder: str, filename: str) -> Path:
        """The file's path, refusing anything that escapes its folder."""
        root = self.by_type(type_name)
        if root is None:
            raise BadRequest(f"unknown output type {type_name!r}", code="unsafe_name")
        rel = safe_relpath(f"{subfolder}/{filename}" if subfolder else filename,
                           what="output path")
        try:
            return confined(root, rel)
        except ValueError:
            raise BadRequest(f"output path {rel!r} escapes its folder",
                             code="unsafe_name") from None


def file_entries(ui: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """`(key, index, entry)` for every file-like entry of a node's UI output."""
    found = []
    for key, value in ui.items():
        if not isinstance(value, list):
            continue
        for index, item in enumerate(value):
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                found.append((key, index, item))
    return found


def small(dirs: ComfyDirs, ui: dict[str, Any], limit: int) -> bool:
    """Whether a node's output files add up to at most `limit` bytes: then describing
    them on the event loop costs less than the hop to a thread (~0.5 ms on a busy
    machine). Anything unusual (a name to refuse, a file gone) says no."""
    total = 0
    for _, _, item in file_entries(ui):
        try:
            path = dirs.resolve(str(item.get("type") or "output"),
                                str(item.get("subfolder") or ""), item["filename"])
            total += path.stat().st_size
        except (OSError, ValueError, RemoteExecError):
            return False
        if total > limit:
            return False
    return True


def describe(dirs: ComfyDirs, node_id: str, ui: dict[str, Any],
             url_prefix: str = "", inline_limit: int = 0) -> list[OutputFile]:
    """Descriptors for the files in one node's UI output (blocking: hashes files).

    Files of at most `inline_limit` bytes also carry their bytes (`data`), so a
    client lands them from the event without a download request.
    """
    files = []
    for key, index, item in file_entries(ui):
        type_name = str(item.get("type") or "output")
        subfolder = str(item.get("subfolder") or "")
        path = dirs.resolve(type_name, subfolder, item["filename"])
        if not path.is_file():
            continue
        rel = path.relative_to(dirs.by_type(type_name).resolve())  # type: ignore[union-attr]
        sub = rel.parent.as_posix()
        size = path.stat().st_size
        data = None
        if size <= inline_limit:
            raw = path.read_bytes()
            size, sha, data = len(raw), hashlib.sha256(raw).hexdigest(), b64encode(raw)
        else:
            sha = file_sha256(path).hexdigest()
        files.append(OutputFile(
            node_id=node_id, key=key, index=index, filename=rel.name,
            subfolder="" if sub == "." else sub, folder=type_name,
            type=media_type(rel.name), size_bytes=size, sha256=sha,
            url=f"{url_prefix}/{type_name}/{rel.as_posix()}" if url_prefix else "",
            data=data,
        ))
    return files
