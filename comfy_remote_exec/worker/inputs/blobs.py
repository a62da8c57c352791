"""Content-addressed store of input files, keyed by sha256.

Clients ask which hashes are missing and upload only those, so an input sent
once is never sent again. On RunPod and Modal the store lives on the network
volume and outlives workers. Writes go to a temporary file and are renamed
into place only after the hash is verified, so a reader never sees a partial
or wrong blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from ...errors import BadRequest, PayloadTooLarge
from ...protocol import is_sha256

DEFAULT_BLOB_LIMIT = 4 * 1024**3


class BlobStore:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_BLOB_LIMIT) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

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
