"""Land remote output files in the local `output/` (or `temp/` for previews).

A file goes where a local run would have put it: same subfolder, same name.
It is streamed to a hidden part-file in that folder, its sha256 and size are
checked against the remote's descriptor, and only then linked into place;
`os.link` fails rather than overwrite, so an existing file is never touched.
If the name is taken, the next free number is taken the way ComfyUI's own
counter does (`name_00002_.png`), whatever the bytes: a batch of identical
images lands as that many files, as in a local run. Each remote file lands
once: `LandedFiles` remembers where a remote file (its remote, path and
sha256) landed, so a cached remote output that names it again points at the
same local file, and the journal does the same for a job resumed after a
restart.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

from ..backends.base import Backend
from ..errors import RemoteExecError
from ..fsutil import CHUNK, confined, file_sha256
from ..protocol import OutputFile

COUNTER = re.compile(r"^(?P<prefix>.*)_(?P<n>\d{5,})_(?P<ext>\.[^.]*)?$")


class HashingWriter:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)


def _same_file(path: Path, sha256: str, size: int) -> bool:
    if not path.is_file() or path.stat().st_size != size:
        return False
    return file_sha256(path).hexdigest() == sha256


def _family(filename: str) -> tuple[str, str]:
    """`(prefix, ext)` of a name, as ComfyUI's counter would number it."""
    match = COUNTER.match(filename)
    if match:
        return match["prefix"], match["ext"] or ""
    stem, dot, ext = filename.rpartition(".")
    return (stem, f".{ext}") if dot and stem else (filename, "")


def numbered(folder: Path, filename: str) -> list[str]:
    """Names in `folder` of the form `prefix_NNNNN_ext` for `filename`'s prefix."""
    prefix, ext = _family(filename)
    pattern = re.compile(re.escape(prefix) + r"_(\d{5,})_" + re.escape(ext) + "$")
    return sorted(name for name in os.listdir(folder) if pattern.match(name))


def candidate_names(filename: str, taken: list[str]) -> list[str]:
    """The remote's name first, then fresh counter names after the highest `taken`
    (the folder's `numbered` names)."""
    prefix, ext = _family(filename)
    used = [int(name[len(prefix) + 1:].split("_", 1)[0]) for name in taken]
    start = max(used, default=0) + 1
    return [filename, *(f"{prefix}_{n:05}_{ext}" for n in range(start, start + 1000))]


Identity = tuple[str, ...]


class LandedFiles:
    """Where recent remote files landed: identity -> (UI entry, size, mtime_ns).

    Bounded and in memory; an entry counts only while its file is unchanged.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._seen: OrderedDict[Identity, tuple[dict[str, Any], int, int]] = OrderedDict()

    def remember(self, identity: Identity, entry: dict[str, Any], path: Path) -> None:
        st = path.stat()
        self._seen[identity] = (entry, st.st_size, st.st_mtime_ns)
        self._seen.move_to_end(identity)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def recall(self, identity: Identity, root: Path) -> dict[str, Any] | None:
        found = self._seen.get(identity)
        if found is None:
            return None
        entry, size, mtime = found
        try:
            st = confined(root, _relpath(entry)).stat()
        except (OSError, ValueError):
            st = None
        if st is None or (st.st_size, st.st_mtime_ns) != (size, mtime):
            del self._seen[identity]
            return None
        return entry


def _relpath(entry: dict[str, Any]) -> str:
    return f"{entry['subfolder']}/{entry['filename']}" if entry.get("subfolder") \
        else str(entry["filename"])


class Lander:
    def __init__(self, output_dir: Path, temp_dir: Path,
                 landed: LandedFiles | None = None) -> None:
        self.output_dir = output_dir
        self.temp_dir = temp_dir
        self.landed = landed if landed is not None else LandedFiles()

    def root(self, type_name: str) -> Path:
        return self.output_dir if type_name == "output" else self.temp_dir

    def local_type(self, type_name: str) -> str:
        return "output" if type_name == "output" else "temp"

    def existing(self, entry: dict[str, Any], out: OutputFile) -> dict[str, Any] | None:
        """A landed entry still valid on disk (used when resuming)."""
        try:
            path = confined(self.root(entry["type"]), _relpath(entry))
        except (KeyError, ValueError):
            return None
        return entry if _same_file(path, out.sha256, out.size_bytes) else None

    async def land(self, backend: Backend, remote_id: str, out: OutputFile,
                   remote: str = "") -> dict[str, Any]:
        """Download `out` (unless this remote file landed before) and return its local
        UI entry `{filename, subfolder, type}`. `remote` names the remote it came from."""
        identity = (remote, out.folder, out.relpath, out.sha256)
        known = self.landed.recall(identity, self.root(out.folder))
        if known is not None:
            return known
        root = self.root(out.folder)
        try:
            folder = confined(root, out.subfolder)
        except ValueError:
            raise RemoteExecError(f"output subfolder {out.subfolder!r} escapes {root}",
                                  code="unsafe_name") from None
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".remote_exec-{uuid.uuid4().hex}.part"
        try:
            with part.open("wb") as fh:
                writer = HashingWriter(fh)
                await backend.download(remote_id, out, writer)  # type: ignore[arg-type]
            if writer.digest.hexdigest() != out.sha256 or writer.size != out.size_bytes:
                raise RemoteExecError(
                    f"{out.filename} arrived corrupted (sha256 or size differs)",
                    code="output_corrupted", retryable=True)
            name = self._place(part, folder, out)
        finally:
            part.unlink(missing_ok=True)
        sub = folder.relative_to(root.resolve()).as_posix()
        entry = {"filename": name, "subfolder": "" if sub == "." else sub,
                 "type": self.local_type(out.folder)}
        self.landed.remember(identity, entry, folder / name)
        return entry

    def _place(self, part: Path, folder: Path, out: OutputFile) -> str:
        # The remote's own name when it is free; the folder is listed (for the next
        # counter) only when it is not, so a big output folder costs nothing per file.
        if _take(part, folder / out.filename):
            return out.filename
        for name in candidate_names(out.filename, numbered(folder, out.filename))[1:]:
            if _take(part, folder / name):
                return name
        raise RemoteExecError(f"no free name for {out.filename} in {folder}",
                              code="output_name_exhausted")


def _take(part: Path, dest: Path) -> bool:
    """Give `part`'s bytes the name `dest` unless it exists (never overwriting)."""
    try:
        os.link(part, dest)
        return True
    except FileExistsError:
        return False
    except OSError:
        # No hard links here (some filesystems): exclusive create instead.
        try:
            with dest.open("xb") as fh, part.open("rb") as src:
                shutil.copyfileobj(src, fh, CHUNK)
        except FileExistsError:
            return False
        return True
