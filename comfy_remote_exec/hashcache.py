"""The sha256 of local files, kept by path, size and mtime, across restarts.

Inputs and models travel by content, so each is hashed before it is sent. A
20 MB input or a 10 GB checkpoint is read once: the digest is kept while the
file's size and modification time hold, in memory and (when a `store` path is
given) in a JSON file in the extension's state directory, so a restart of
ComfyUI does not re-read a model that did not change. The file is rewritten
whole (atomically) after each new digest; it is small (a line per file).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from .fsutil import atomic_write_json, file_sha256

log = logging.getLogger(__name__)

MAX_ENTRIES = 4096


class HashCache:
    def __init__(self, store: Path | None = None) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha)
        self.hashed = 0  # files read to hash them (a test's and the bench's witness)
        if store is not None and store.is_file():
            try:
                raw = json.loads(store.read_text(encoding="utf-8"))
                self._entries = {str(k): (int(v[0]), int(v[1]), str(v[2]))
                                 for k, v in raw.items()}
            except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
                log.warning("ignoring the hash cache %s: %s", store, exc)

    def cached(self, path: Path) -> tuple[str, int] | None:
        """`(sha256, size)` if the digest is kept for the file as it is now (no reading)."""
        st = path.stat()
        with self._lock:
            kept = self._entries.get(str(path))
        if kept is not None and kept[:2] == (st.st_size, st.st_mtime_ns):
            return kept[2], st.st_size
        return None

    def sha256(self, path: Path) -> tuple[str, int]:
        """`(sha256, size)` of `path` (blocking when it must read the file)."""
        st = path.stat()
        key = str(path)
        with self._lock:
            kept = self._entries.get(key)
        if kept is not None and kept[:2] == (st.st_size, st.st_mtime_ns):
            return kept[2], st.st_size
        sha = file_sha256(path).hexdigest()
        with self._lock:
            self.hashed += 1
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (st.st_size, st.st_mtime_ns, sha)
            self._save()
        return sha, st.st_size

    def _save(self) -> None:
        if self.store is None:
            return
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.store, {k: list(v) for k, v in self._entries.items()},
                              durable=False)
        except OSError as exc:
            log.warning("could not save the hash cache %s: %s", self.store, exc)
