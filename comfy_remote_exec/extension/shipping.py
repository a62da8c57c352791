"""Ship local model files to the remote: the engine behind preflight and the CLI.

A workflow may name a model the remote lacks but this machine has. Rather
than fail on the GPU, the file is shipped first, by content: hashed through
the one `HashCache` (a 10 GB checkpoint is read once, not per run or per
restart), uploaded only if the remote lacks those bytes, in resumable parts,
then placed under its name in the remote's model folder. The backend does the
transfer (`backends.base.ModelStore`); this module orders the needs, sums
their progress into one figure, and checks the result where the backend can
tell the remote file's hash. A name the remote holds with other bytes is a
`model_conflict`, never an overwrite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..backends.base import ModelStore, ShipResult
from ..errors import RemoteExecError
from ..hashcache import HashCache
from ..protocol.models import check_model_name

# (need being shipped, bytes done over all needs, bytes of all needs)
ShipProgress = Callable[["ShipNeed", int, int], None]


@dataclass(frozen=True)
class ShipNeed:
    """A model the remote lacks that this machine has: `folder/name` from `local_path`."""

    folder: str
    name: str
    local_path: Path
    size: int


class ShipFailed(RemoteExecError):
    """The remote's file after shipping does not hash to the local one."""

    status = 502


async def ship_models(store: ModelStore, needs: Sequence[ShipNeed], hashes: HashCache,
                      progress: ShipProgress | None = None) -> list[ShipResult]:
    """Ship every need through `store`, in order; one failure stops the rest (its
    error, a `RemoteExecError`, names the model)."""
    total = sum(need.size for need in needs)
    done = 0
    results = []
    for need in needs:
        check_model_name(need.name)
        sha, size = await asyncio.to_thread(hashes.sha256, need.local_path)

        def step(sent: int, _size: int, need: ShipNeed = need, base: int = done) -> None:
            if progress is not None:
                progress(need, base + sent, total)

        result = await store.ship_model(need.folder, need.name, need.local_path, sha, step)
        if result.placed and not result.verified:  # "same": the remote compared them
            await verify(store, need, sha)
        done += size
        if progress is not None:
            progress(need, done, total)
        results.append(result)
    return results


async def verify(store: object, need: ShipNeed, sha: str) -> None:
    """Where the backend can tell the remote file's hash (`Catalog.model_hashes`), it
    must be the local file's."""
    model_hashes = getattr(store, "model_hashes", None)
    if model_hashes is None:
        return
    try:
        remote = (await model_hashes(need.folder, [need.name])).get(need.name)
    except RemoteExecError as exc:
        if exc.code in ("not_supported", "unknown_folder"):
            return  # a remote that cannot hash its models (Modal's API) verified the blob
        raise
    if remote is not None and remote != sha:
        raise ShipFailed(f"{need.folder}/{need.name} on the remote hashes to {remote[:12]}…, "
                         f"not the local {sha[:12]}…", code="model_verify_failed",
                         details={"folder": need.folder, "name": need.name})
