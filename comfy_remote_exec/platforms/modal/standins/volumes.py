"""`VolumeStandIn`: a `modal.Volume` as a durable copy plus one view per container.

Modal's Volume is no network filesystem: a container sees the volume as it
was when mounted or last reloaded, and what it writes stays its own until it
commits (see the package's docstring). The stand-in keeps the volume's
durable contents in `remote/` and gives each container a directory of its
own (`mount(path)`), filled from `remote/` when mounted. `commit()` sends the
view's changes (new, changed and deleted files, found by comparing the files'
(mtime, size, inode) with what the last sync left) to `remote/` and then
takes the others' changes, as Modal's commit reloads; `reload()` takes the
others' committed changes and keeps this view's own uncommitted ones. Files
are replaced by rename, never rewritten in place, so a file another process
holds open (or a hard link to it) keeps its bytes. A folder emptied by
deletions goes with its last file, where the other side lacks it too.

`reload()` refuses while the process holds a file of the view open, as
Modal's does ("there are open files preventing the operation"), read from
`/proc/self/fd` on Linux. After a commit, the reload part is skipped in that
case (the commit itself went through).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .common import Both

Signature = tuple[int, int, int]  # mtime_ns, size, inode


def _scan(root: Path) -> dict[str, Signature]:
    found: dict[str, Signature] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found[path.relative_to(root).as_posix()] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return found


def _copy(src: Path, dest: Path) -> Signature:
    """Copy by temp file and rename; returns the new file's signature."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".standin-")
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    st = dest.stat()
    return st.st_mtime_ns, st.st_size, st.st_ino


def _prune(root: Path, rel: str, unless_in: Path) -> None:
    """After `root/rel` went: remove its emptied folders that `unless_in` lacks too."""
    folder = (root / rel).parent
    while folder != root and not (unless_in / folder.relative_to(root)).is_dir():
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


def open_files_under(root: Path) -> list[str]:
    """Files under `root` this process holds open (Linux; elsewhere none are seen)."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return []
    prefix = str(root.resolve()) + os.sep
    found = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


class VolumeStandIn:
    """The volume's durable copy; `mount(path)` is a container's view of it."""

    def __init__(self, remote: Path) -> None:
        self.remote = remote
        remote.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # one commit or reload at a time, volume-wide

    def mount(self, path: Path) -> VolumeMount:
        return VolumeMount(self, path)


class VolumeMount:
    """One container's view (`path`), with Modal's `commit` and `reload`."""

    def __init__(self, volume: VolumeStandIn, path: Path) -> None:
        self.volume = volume
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._base: dict[str, Signature] = {}  # the view's files as the last sync left them
        self._remote_seen: dict[str, Signature] = {}  # remote files as last taken
        with volume.lock:
            self._pull(local_changes=set())

    def _local_changes(self) -> set[str]:
        now = _scan(self.path)
        changed = {p for p, sig in now.items() if self._base.get(p) != sig}
        return changed | {p for p in self._base if p not in now}

    def _pull(self, local_changes: set[str]) -> None:
        remote = _scan(self.volume.remote)
        for rel, sig in remote.items():
            if rel in local_changes:
                continue
            if self._remote_seen.get(rel) == sig and rel in self._base:
                continue  # taken already, unchanged since
            self._base[rel] = _copy(self.volume.remote / rel, self.path / rel)
            self._remote_seen[rel] = sig
        for rel in [p for p in self._base if p not in remote and p not in local_changes]:
            (self.path / rel).unlink(missing_ok=True)
            _prune(self.path, rel, self.volume.remote)
            self._base.pop(rel, None)
            self._remote_seen.pop(rel, None)

    def _commit(self) -> None:
        with self.volume.lock:
            changes = self._local_changes()
            for rel in sorted(changes):
                src, dest = self.path / rel, self.volume.remote / rel
                if src.is_file():
                    rsig = _copy(src, dest)
                    st = src.stat()
                    self._base[rel] = (st.st_mtime_ns, st.st_size, st.st_ino)
                    self._remote_seen[rel] = rsig
                else:
                    dest.unlink(missing_ok=True)
                    _prune(self.volume.remote, rel, self.path)
                    self._base.pop(rel, None)
                    self._remote_seen.pop(rel, None)
            if not open_files_under(self.path):
                self._pull(local_changes=set())

    async def _commit_aio(self) -> None:
        await asyncio.to_thread(self._commit)

    commit = Both(_commit, _commit_aio)

    def _reload(self) -> None:
        with self.volume.lock:
            held = open_files_under(self.path)
            if held:
                raise RuntimeError("there are open files preventing the operation: "
                                   f"{held[0]}")
            self._pull(local_changes=self._local_changes())

    async def _reload_aio(self) -> None:
        await asyncio.to_thread(self._reload)

    reload = Both(_reload, _reload_aio)
