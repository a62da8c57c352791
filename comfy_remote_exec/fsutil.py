"""Small filesystem helpers shared by the worker and the extension."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024


def atomic_write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    """Write JSON so a reader (or a crashed process) never sees a partial file.

    `durable` also syncs it to disk before the rename, so it survives a power
    loss too; records that are rebuilt anyway after a restart can skip that.
    """
    # One string, one write: `json.dump` to a file takes the pure-Python encoder.
    text = json.dumps(data, separators=(",", ":")).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def confined(root: Path, rel: str) -> Path:
    """`root/rel` resolved, or ValueError if it leaves `root` (through `..` or a symlink)."""
    base = root.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"{rel!r} escapes {root}")
    return path


def file_sha256(path: Path) -> hashlib._Hash:
    """The sha256 of a file, read in 1 MiB chunks (the hasher, so a caller can go on)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest


def human_size(n: int) -> str:
    """A byte count for people: `512 B`, `1.5 MiB`, `12.0 GiB`."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
