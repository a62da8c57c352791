"""The one seam between the extension and any remote: the `Backend` protocol.

The contract, which every backend keeps and the extension relies on (as
httpx states its transport's):

* **Calls.** The extension calls `submit` once per job, then `events` for
  that job (again after a restart, with the last `seq` it took as `after`),
  `download` for files those events listed, and `cancel` at any time after
  `submit` returned. `health` and `close` may be called at any time; `close`
  is last. Calls for different jobs may run concurrently.
* **Inputs.** `submit(spec, files)`: every `spec.media` item with a `sha256`
  has its local file in `files` (sha256 → path). The backend makes each
  available to the job its own way (the job API's blob store, RunPod's inline
  base64 or a bucket), skipping what the remote already holds, and reports
  which it sent and which it reused. Nothing of that outlives the call.
* **Events.** `events(job_id, after)` yields the job's `Event`s with
  `seq > after`, in order, without gaps or repeats, resuming dropped
  connections on its own, and ends right after the terminal `job_status`.
  When the remote itself loses the job, the backend makes up that terminal
  `job_status` (failed, with the reason). Event types it does not know pass
  through as `Unknown`.
* **Outputs.** Each `OutputFile` of an `Executed` event carries everything
  `download` needs (`url`, inline `data`, `download_url`, or `parts` already
  joined into `data` by `events`); `download(job_id, output, dest)` writes its
  bytes into `dest` and needs no state from earlier calls.
* **Submit and follow.** `submit` may open the job's event stream in the
  same request and return it in `Submitted.events`: it yields what
  `events(job_id)` would, resuming the same way. The extension then takes
  the job's events from it instead of calling `events` first, and `aclose`s
  it when done with it, whether it iterated it or not.
* **No hidden state.** A backend keeps nothing between calls beyond its
  connection settings and pooled connections; anything a later call needs
  travels in what an earlier call returned.
* **Errors.** Every failure leaves a backend as a `RemoteExecError`: refused
  jobs as `BadRequest` with the remote's code and details, a wrong key as
  `Unauthorized`, an unreachable remote as retryable `RemoteUnavailable`, a
  protocol version the remote does not speak as `ProtocolMismatch`. No httpx
  or aiohttp exception escapes.
* **Protocol.** Every request names the wire protocol version it speaks
  (`Remote-Exec-Protocol`, or `"protocol"` in a RunPod job's input).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from ..protocol import Event, JobSpec, OutputFile
from ..protocol.catalog import RemoteCatalog


class EventStream(Protocol):
    """An open stream of a job's events; `aclose` releases it."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Submitted:
    """What `submit` did: the remote job id, which inputs went up or were reused, and
    the job's event stream where the submission opened it (see the contract)."""

    job_id: str
    uploaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    events: EventStream | None = None


class Backend(Protocol):
    name: str

    async def submit(self, spec: JobSpec, files: Mapping[str, Path]) -> Submitted:
        """Ship the inputs the remote lacks and queue the job."""
        ...

    def events(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The job's events with `seq > after`, ending after its terminal status."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Ask the remote to stop the job; a job that already ended is not an error."""
        ...

    async def download(self, job_id: str, output: OutputFile, dest: BinaryIO) -> None:
        """Stream one output file into `dest`."""
        ...

    async def health(self) -> dict[str, Any]:
        """`{"status": ...}` and whatever else the remote tells (workers, queue)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ShipResult:
    """What `ship_model` did: the file bytes `sent` (0 when the remote held them),
    whether the model was `placed` now or found there with the `same` bytes, and
    whether the store `verified` the placed file's sha256 on its own."""

    folder: str
    name: str
    sha256: str
    sent: int
    placed: bool
    same: bool
    verified: bool = False  # the store checked the placed bytes' sha256 itself


@runtime_checkable
class ModelStore(Protocol):
    """A backend that can ship a local model file into the remote's model folders.

    By content: bytes the remote already holds are not sent again; an upload cut
    off (or a process restarted) goes on from the bytes the remote kept. A name
    the remote holds with other bytes is never overwritten: `Conflict` with code
    `model_conflict`. `ships_models` is False where the remote cannot take models
    now (Modal's API, which reuses the http client, holds no models volume)."""

    ships_models: bool

    async def ship_model(self, folder: str, name: str, path: Path, sha256: str,
                         progress: Callable[[int, int], None] | None = None) -> ShipResult:
        ...


@runtime_checkable
class Catalog(Protocol):
    """Optional: what the remote offers (its node types and model files).

    `catalog(known_version)` returns None while the remote's content_version is
    still `known_version`, else the whole `RemoteCatalog`. The backend caches
    nothing (the extension's `RemoteCatalogCache` does). `catalog_max_age`: the
    seconds a cached copy serves before the extension asks again whether it changed
    (a 304 from the job API; on RunPod a job, so there a day)."""

    catalog_max_age: float

    async def catalog(self, known_version: str | None) -> RemoteCatalog | None: ...

    async def model_hashes(self, folder: str, names: list[str]) -> dict[str, str | None]:
        """Each name's sha256 on the remote, None where it has no such file."""
        ...

    async def preflight_hashes(self, folder: str, names: list[str]
                               ) -> dict[str, str | None] | None:
        """What `model_hashes` answers, where asking costs no GPU time; else None (the
        preflight then trusts a same-size file)."""
        ...
