"""The worker's model store: a blob placed as a model file.

A model shipped from the local machine travels as a blob (by content, in
resumable parts, `PUT /v1/blobs/{sha256}`) and is then placed under
`<base>/models/<folder>/<name>`, the layout ComfyUI's `--base-directory`
reads. Placing never overwrites: a file already there with the same bytes is
"same", one with other bytes is a `model_conflict`. The file appears at its
name whole, with the blob's verified bytes, or not at all (hard link, else a
copy to a part file checked against the sha256, then a link into place, which
fails instead of replacing when a file won the race); the answer says so
(`verified`), and the client need not ask for the file's hash again.
Hashes of files already there are cached by path, size and mtime, so a
repeated place of a 10 GB checkpoint does not re-read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import Conflict, NotFound, RemoteExecError
from ...fsutil import file_sha256
from ...protocol.models import MODEL_FOLDERS, check_model_folder, check_model_name
from ..inputs.blobs import BlobStore


@dataclass(frozen=True)
class Placed:
    """What `place` did: `placed` the file now, or found it there with the `same` bytes."""

    placed: bool
    same: bool
    path: Path


class ModelFiles:
    """`<root>/<folder>/<name>` for every model folder ComfyUI knows, plus any folder
    already under `root`; `on_change` runs after a file is placed (object_info and
    the content version must see it)."""

    def __init__(self, root: Path, blobs: BlobStore,
                 on_change: Callable[[], None] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.root = root
        self.blobs = blobs
        self.on_change = on_change
        self._hashes: dict[Path, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha)

    def folders(self) -> frozenset[str]:
        extra = ({p.name for p in self.root.iterdir() if p.is_dir()
                  and not p.name.startswith(".")} if self.root.is_dir() else set())
        return MODEL_FOLDERS | extra

    def path(self, folder: str, name: str) -> Path:
        folder = check_model_folder(folder, self.folders())
        return self.root / folder / check_model_name(name)

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the cache while its size and mtime hold."""
        st = path.stat()
        kept = self._hashes.get(path)
        if kept is not None and kept[:2] == (st.st_size, st.st_mtime_ns):
            return kept[2]
        sha = file_sha256(path).hexdigest()
        self._hashes[path] = (st.st_size, st.st_mtime_ns, sha)
        return sha

    async def place(self, folder: str, name: str, sha256: str) -> Placed:
        if not self.enabled:
            raise RemoteExecError("this API holds no model folders (Modal: fill the models "
                                  "Volume instead)", code="not_supported", status=501)
        dest = self.path(folder, name)
        self.blobs.path(sha256)  # checks the hash's form
        if dest.exists() or dest.is_symlink():
            return self._existing(dest, folder, name, sha256,
                                  await asyncio.to_thread(self.sha256, dest))
        if not self.blobs.has(sha256):
            raise NotFound(f"blob {sha256} is not on the worker; upload it with "
                           "PUT /v1/blobs/{sha256} first", code="blob_missing",
                           details={"sha256": sha256})
        try:
            await asyncio.to_thread(self._link, self.blobs.path(sha256), dest)
        except FileExistsError:  # another request placed it first
            return self._existing(dest, folder, name, sha256,
                                  await asyncio.to_thread(self.sha256, dest))
        if self.on_change is not None:
            self.on_change()
        return Placed(placed=True, same=False, path=dest)

    def _existing(self, dest: Path, folder: str, name: str, sha256: str,
                  actual: str) -> Placed:
        if actual != sha256:
            raise Conflict(f"{folder}/{name} already exists on the worker with other "
                           f"bytes (sha256 {actual[:12]}…, not {sha256[:12]}…); it is never "
                           "overwritten: rename the local file or remove the remote one",
                           code="model_conflict",
                           details={"folder": folder, "name": name, "remote_sha256": actual,
                                    "sha256": sha256})
        return Placed(placed=False, same=True, path=dest)

    @staticmethod
    def _link(src: Path, dest: Path) -> None:
        """`src` at `dest`, whole: a hard link (the blob's own bytes, verified when it was
        stored), else a copy to a part file, checked against the blob's sha256, linked
        in. Either way `os.link` refuses an existing `dest` (FileExistsError)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
            return
        except FileExistsError:
            raise
        except OSError:
            pass  # another filesystem, or links not allowed: copy
        part = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            shutil.copyfile(src, part)
            if file_sha256(part).hexdigest() != src.name:  # the blob's name is its sha256
                raise RemoteExecError(f"copying the blob to {dest.name} changed its bytes",
                                      code="model_copy_failed")
            os.link(part, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
