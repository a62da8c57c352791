"""Files shared by the API and the GPU containers: one `modal.Volume`, the data volume.

It holds two things (`root` is where the container mounts it):

- `blobs/`: the content-addressed input cache (`BlobStore`). The API writes
  uploads there and commits (the job service's `storage.publish()`); a GPU
  container reloads before it places a job's inputs (`refresh()`).
- `jobs/<job_id>/<folder>/<subfolder>/<name>`: each job's output files. The
  GPU container's ComfyUI writes into its own, container-local folders, and
  several containers number their files alike (`ComfyUI_00001_.png` in each),
  so each file is copied into its job's folder here and committed before the
  `executed` event that names it leaves the container (`publish_outputs`).
  The API reloads before serving a file it does not see yet
  (`refresh_files`), and finds a job's files through `job_dirs`.

A reload fails while the container holds files of the volume open (a
download being served, an upload being written): `refresh` and `publish`
retry for a while, then give up with a warning; a file already seen is
served either way. The object wrapped is a `modal.Volume` or a stand-in
with the same `commit`/`reload` (`.aio`) methods; nothing here imports
`modal`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ...protocol import OutputFile
from ...worker.comfy.outputs import ComfyDirs

log = logging.getLogger(__name__)

RETRY_FOR = 10.0  # seconds a reload or commit is retried while files are open
RETRY_DELAY = 0.2


class VolumeStorage:
    """The job service's `Storage` seam over the data volume (either side)."""

    def __init__(self, volume: Any, root: Path, *, retry_for: float = RETRY_FOR) -> None:
        self.volume = volume
        self.root = root
        self.retry_for = retry_for
        self._lock = asyncio.Lock()

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dirs(self, job_id: str) -> ComfyDirs | None:
        return ComfyDirs(self.jobs_dir / job_id)

    async def _retry(self, what: str, op: Any) -> bool:
        deadline = time.monotonic() + self.retry_for
        async with self._lock:  # one commit or reload of this container at a time
            while True:
                try:
                    await op.aio()
                    return True
                except RuntimeError as exc:  # Modal's "open files" (and conflicts)
                    if time.monotonic() >= deadline:
                        log.warning("data volume %s failed: %s", what, exc)
                        return False
                await asyncio.sleep(RETRY_DELAY)

    async def publish(self) -> None:
        """Commit what this container wrote."""
        await self._retry("commit", self.volume.commit)

    async def refresh(self) -> None:
        """Reload, to see what the other containers committed."""
        await self._retry("reload", self.volume.reload)


def copy_outputs(files: list[OutputFile], local: ComfyDirs, job: ComfyDirs) -> int:
    """Copy a job's output files from the container's ComfyUI folders into its folder on
    the volume (blocking). Returns the bytes copied; a file that is gone is skipped."""
    copied = 0
    for out in files:
        try:
            src = local.resolve(out.folder, out.subfolder, out.filename)
            dest = job.resolve(out.folder, out.subfolder, out.filename)
        except Exception:  # an unsafe name never left the runner; keep the job going
            log.warning("not publishing %s/%s", out.folder, out.relpath)
            continue
        if dest.is_file() and dest.stat().st_size == out.size_bytes:
            continue  # a cached output named again
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            shutil.copyfile(src, tmp)
        except FileNotFoundError:
            log.warning("output %s/%s is gone before it was published", out.folder,
                        out.relpath)
            continue
        tmp.replace(dest)
        copied += out.size_bytes
    return copied


async def publish_outputs(storage: VolumeStorage, job_id: str, files: list[OutputFile],
                          local: ComfyDirs) -> None:
    """Make a job's files readable by the API: copied into its folder, committed."""
    dirs = storage.job_dirs(job_id)
    assert dirs is not None
    await asyncio.to_thread(copy_outputs, files, local, dirs)
    await storage.publish()
