"""The one seam between the extension and any remote: the `Backend` protocol.

A backend uploads content-addressed inputs, submits a `JobSpec`, streams the
job's wire events (resuming after drops on its own), cancels, and downloads
output files. Every transport error leaves a backend as a `RemoteExecError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..protocol import Event, JobSpec, OutputFile


class Backend(Protocol):
    name: str

    async def missing_blobs(self, hashes: list[str]) -> list[str]:
        """Which of these input hashes the remote does not hold yet."""
        ...

    async def upload_blob(self, sha256: str, path: Path) -> None: ...

    async def submit(self, spec: JobSpec) -> str:
        """Queue a job; returns the remote job id. Raises `BadRequest` if refused."""
        ...

    def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The job's events with `seq > after`, ending after its terminal status."""
        ...

    async def cancel(self, job_id: str) -> None: ...

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        """Stream one output file into `dest`."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...
