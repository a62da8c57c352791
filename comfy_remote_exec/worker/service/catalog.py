"""What this worker offers (node types, model files) and its `content_version`.

The extension keeps a copy of the worker's catalog and asks again only when
the version it sees (`GET /health`, `ETag` of `/v1/object_info`) is another
one, so the version must be cheap to ask for and must change whenever a
model file or a node type appears or disappears:

- the model listing is read again when the last one is older than `ttl`
  (ComfyUI caches its file lists itself, by directory mtime);
- when the listing changed, ComfyUI's object_info is read again too (its
  loaders' COMBOs list those files), else the executor's cached one serves
  (the runner drops it when ComfyUI restarts, e.g. with new custom nodes);
- `invalidate()` forces both at the next question (a model was placed).

Model hashes (`POST /v1/models/hashes`) are computed here, in a thread, and
cached by path, size and mtime. An executor that cannot list files itself
(Modal's API, which holds no models) lists names from its report, size 0,
and cannot hash them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ...errors import BadRequest, RemoteExecError
from ...protocol.catalog import ModelEntry, Models, content_version
from ..comfy.models import ModelFile
from .seams import Executor

TTL = 3.0  # seconds a model listing answers version questions
HASH_CHUNK = 4 * 1024 * 1024


@runtime_checkable
class ListsModelFiles(Protocol):
    async def model_files(self) -> dict[str, list[ModelFile]]: ...


@dataclass(frozen=True)
class Snapshot:
    content_version: str
    object_info: dict[str, Any]
    models: Models


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class WorkerCatalog:
    def __init__(self, executor: Callable[[], Executor], ttl: float = TTL) -> None:
        self.executor = executor
        self.ttl = ttl
        self._models: Models | None = None
        self._paths: dict[tuple[str, str], Path] = {}
        self._version: str | None = None
        self._at = 0.0
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """A model file or node type may have changed: read everything again next time."""
        self._models, self._version, self._at = None, None, 0.0

    async def _files(self, executor: Executor) -> dict[str, list[ModelFile]]:
        if isinstance(executor, ListsModelFiles):
            return await executor.model_files()
        report = await executor.report()
        listed = report.get("models") or {}
        return {str(folder): [ModelFile(str(n), 0, None) for n in names]
                for folder, names in listed.items() if isinstance(names, list)}

    async def snapshot(self, refresh: bool = False) -> Snapshot:
        """The version, object_info and models as of now (`refresh`: ComfyUI's object_info
        read again even if the listing did not change)."""
        async with self._lock:
            executor = self.executor()
            files = await self._files(executor)
            models = {f: [ModelEntry(m.name, m.size) for m in ms] for f, ms in files.items()}
            changed = self._models is None or models != self._models
            info = await executor.object_info(refresh=refresh or changed)
            self._paths = {(f, m.name): m.path for f, ms in files.items() for m in ms
                           if m.path is not None}
            self._models, self._at = models, time.monotonic()
            self._version = content_version(info, models)
            return Snapshot(self._version, info, models)

    async def version(self) -> str:
        """The content_version, from a listing at most `ttl` seconds old."""
        if self._version is not None and time.monotonic() - self._at < self.ttl:
            return self._version
        return (await self.snapshot()).content_version

    async def health_version(self) -> str | None:
        """The version for `GET /health`: asked of the executor only where that is cheap
        (a runner on this machine's ComfyUI); else the last one known, if any (Modal's
        API must not wake a GPU container for a health check)."""
        if isinstance(self.executor(), ListsModelFiles):
            return await self.version()
        return self._version

    async def hashes(self, folder: str, names: list[str]) -> dict[str, str | None]:
        """Each name's sha256, or None where the folder has no such file."""
        snap = await self.snapshot()
        if folder not in snap.models:
            raise BadRequest(f"the worker has no model folder {folder!r}",
                             code="unknown_folder", details={"folder": folder})
        out: dict[str, str | None] = {}
        for name in names:
            path = self._paths.get((folder, name))
            if path is None:
                if any(e.name == name for e in snap.models[folder]):
                    raise RemoteExecError("this worker cannot hash its models",
                                          code="not_supported", status=501)
                out[name] = None
                continue
            out[name] = await asyncio.to_thread(self._hash, path)
        return out

    def _hash(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]
