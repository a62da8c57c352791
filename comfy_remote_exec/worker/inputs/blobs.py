"""Content-addressed store of input files, keyed by sha256.

Clients ask which hashes are missing and upload only those, so an input sent
once is never sent again. On RunPod and Modal the store lives on the network
volume and outlives workers. Writes go to a temporary file and are renamed
into place only after the hash is verified, so a reader never sees a partial
or wrong blob.

A large blob may also come in parts (`put_part`), because a platform may cut
any one request (Modal at 150 s). The parts of one blob append to
`.partial/<sha256>`, each starting exactly where the stored bytes end; the
bytes of a part that was cut off stay, so the client goes on from there. The
blob is hashed as it grows (the hasher is kept between parts, and rebuilt
from the file when another process wrote the last part) and appears under
its name only once all its bytes are in and hash to it. Partial uploads
untouched for `PARTIAL_TTL` are removed when a new one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from ...errors import BadRequest, Conflict, PayloadTooLarge
from ...fsutil import file_sha256
from ...protocol import ContentRange, is_sha256

DEFAULT_BLOB_LIMIT = 4 * 1024**3
PARTIAL_TTL = 24 * 3600.0  # seconds an abandoned partial upload is kept


@dataclass(frozen=True)
class PartResult:
    """Where a blob's upload in parts stands: `received` bytes of `total` stored,
    whether the blob is complete (verified, in the store), and whether this call
    completed it (`stored`)."""

    received: int
    total: int
    complete: bool
    stored: bool = False


class BlobStore:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_BLOB_LIMIT) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self._hashers: dict[str, tuple[int, hashlib._Hash]] = {}  # sha -> (bytes, hasher)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise BadRequest(f"{sha256!r} is not a sha256 hex digest", code="bad_hash")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def missing(self, hashes: Iterable[str]) -> list[str]:
        return [h for h in dict.fromkeys(hashes) if not self.has(h)]

    def _commit(self, tmp: Path, actual: str, expected: str | None) -> Path:
        if expected is not None and actual != expected:
            tmp.unlink(missing_ok=True)
            raise BadRequest(f"content hash is {actual}, not the declared {expected}",
                             code="hash_mismatch")
        dest = self.path(actual)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)
        return dest

    def _tempfile(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        return fd, Path(name)

    def put_bytes(self, data: bytes, expected: str | None = None) -> tuple[str, Path]:
        actual = hashlib.sha256(data).hexdigest()
        if self.has(actual) and (expected is None or expected == actual):
            return actual, self.path(actual)
        fd, tmp = self._tempfile()
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return actual, self._commit(tmp, actual, expected)

    async def put_stream(self, chunks: AsyncIterator[bytes], expected: str) -> Path:
        """Stream an upload to disk, hashing as it goes; verified before it is visible."""
        self.path(expected)
        fd, tmp = self._tempfile()
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLarge(f"blob is larger than {self.max_bytes} bytes",
                                              code="too_large")
                    digest.update(chunk)
                    fh.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._commit(tmp, digest.hexdigest(), expected)

    # -- uploads in parts ---------------------------------------------------------------

    def partial_path(self, sha256: str) -> Path:
        self.path(sha256)  # checks the name
        return self.root / ".partial" / sha256

    def received(self, sha256: str) -> int:
        """Bytes of `sha256`'s upload in parts stored so far (0 if none)."""
        try:
            return self.partial_path(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    async def put_part(self, chunks: AsyncIterator[bytes], sha256: str,
                       part: ContentRange) -> PartResult:
        """Append one part of `sha256` (or, with no bytes, say where the upload stands
        and finish one whose bytes are all in). Parts of one blob take turns."""
        if part.total > self.max_bytes:
            raise PayloadTooLarge(f"blob is larger than {self.max_bytes} bytes",
                                  code="too_large")
        async with self._locks.setdefault(sha256, asyncio.Lock()):
            result = await self._put_part(chunks, sha256, part)
        if result.complete:  # later parts find the blob, whichever lock they hold
            self._locks.pop(sha256, None)
        return result

    async def _put_part(self, chunks: AsyncIterator[bytes], sha256: str,
                        part: ContentRange) -> PartResult:
        if self.has(sha256):
            return PartResult(part.total, part.total, True)
        received = self.received(sha256)
        if received > part.total:  # not the file this upload says it is: start again
            self.partial_path(sha256).unlink(missing_ok=True)
            self._hashers.pop(sha256, None)
            received = 0
        if part.start is None:  # a status query: it finishes an upload whose bytes are in
            if received == part.total:
                try:
                    await self._finish(sha256, part.total)
                except BadRequest:  # wrong bytes, now gone: the upload starts again
                    return PartResult(0, part.total, False)
                return PartResult(received, part.total, True, stored=True)
            return PartResult(received, part.total, False)
        if part.start != received:
            raise Conflict(f"this part starts at byte {part.start}, but {received} bytes of "
                           "the blob are stored: send the part that starts there",
                           code="offset_mismatch", details={"received": received})
        partial = self.partial_path(sha256)
        if received == 0:
            partial.parent.mkdir(exist_ok=True)
            await asyncio.to_thread(self._forget_abandoned)
        digest = await self._hasher(sha256, received)
        written, cut = 0, None
        try:
            with partial.open("ab") as fh:
                async for chunk in chunks:
                    if written + len(chunk) > part.length:
                        fh.truncate(part.start)
                        raise BadRequest(f"the part holds more than the {part.length} bytes "
                                         "its Content-Range names", code="bad_range")
                    fh.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
        except BadRequest:
            self._hashers.pop(sha256, None)
            raise
        except Exception as exc:  # cut off: the bytes that came stay, the client goes on
            cut = exc
        received = part.start + written
        if partial.stat().st_size == received:
            self._hashers[sha256] = (received, digest)
        else:
            self._hashers.pop(sha256, None)
        if received == part.total:
            await self._finish(sha256, part.total)
        if cut is not None:
            raise cut
        done = received == part.total
        return PartResult(received, part.total, done, stored=done)

    async def _hasher(self, sha256: str, received: int) -> hashlib._Hash:
        kept = self._hashers.pop(sha256, None)
        if kept is not None and kept[0] == received:
            return kept[1]
        if received == 0:
            return hashlib.sha256()
        return await asyncio.to_thread(file_sha256, self.partial_path(sha256))

    async def _finish(self, sha256: str, total: int) -> None:
        """All of the blob's bytes are in: verify, and make it visible."""
        digest = await self._hasher(sha256, total)
        self._commit(self.partial_path(sha256), digest.hexdigest(), sha256)

    def _forget_abandoned(self) -> None:
        cutoff = time.time() - PARTIAL_TTL
        for path in (self.root / ".partial").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    self._hashers.pop(path.name, None)

    def link_into(self, sha256: str, dest: Path) -> None:
        """Place a blob at `dest` (hard link when possible, else a copy)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.path(sha256)
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
