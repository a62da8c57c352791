"""A job through a front that cuts every request, as Modal's does at 150 s, on a real worker.

The real worker and its real ComfyUI on loopback, behind `CuttingProxy` (the
stand-in for Modal's cut, here after 1 s, at 8 MB/s), reached by the modal
backend with 12 MiB parts: a 24 MiB input goes up in parts that are cut
midway, the job's events span several cuts and arrive whole (no gap, no
duplicate: the same as the worker's own stream), and a 24 MiB output comes
down in `Range` parts that are cut midway, byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path

import pytest

from comfy_remote_exec.backends.modal import ModalBackend
from comfy_remote_exec.protocol import Event, Executed, JobSpec, JobStatus

from ..conftest import TOKEN, WorkerHandle
from ..modal_standin import CuttingProxy

pytestmark = pytest.mark.comfyui

MIB = 1024 * 1024
SIZE, PART = 24 * MIB, 12 * MIB  # a part takes 1.5 s at 8 MB/s: every one is cut at 1 s


def flow(subfolder: str) -> dict:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "RemoteExecTestSteps",
              "inputs": {"image": ["1", 0], "steps": 30, "step_seconds": 0.1,
                         "previews": True}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "RemoteExecTestFile",
              "inputs": {"name": "big.bin", "subfolder": subfolder, "size": SIZE}},
    }


async def test_a_job_through_cuts_arrives_whole(worker: WorkerHandle, tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "big_input.bin").write_bytes(data)
    subfolder = f"cuts-{uuid.uuid4().hex[:8]}"
    spec = JobSpec.parse({"workflow": flow(subfolder),
                          "media": [{"name": "big_input.bin", "sha256": sha}]})
    proxy = CuttingProxy(worker.url, cut_after=1.0, rate=8e6)
    backend = ModalBackend(await proxy.start(), TOKEN, part_size=PART)
    try:
        submitted = await backend.submit(spec, {sha: tmp_path / "big_input.bin"})
        assert submitted.uploaded == [sha]
        assert await backend.api.missing_blobs([sha]) == [], "verified by the worker"
        events: list[Event] = [e async for e in backend.events(submitted.job_id)]
        files = [f for e in events if isinstance(e.payload, Executed) for f in e.payload.files
                 if f.filename == "big.bin"]
        assert len(files) == 1
        buf = io.BytesIO()
        await backend.download(submitted.job_id, files[0], buf)
    finally:
        await backend.close()
        await proxy.close()

    cuts = {kind: sum(kind in path for path in proxy.cuts)
            for kind in ("/v1/blobs/", "/events", "/outputs/")}
    assert cuts["/v1/blobs/"] >= 2 and cuts["/outputs/"] >= 2, proxy.cuts
    assert cuts["/events"] >= 2, "the job's events spanned several cuts"

    direct = worker.events(submitted.job_id)
    assert [(e.seq, e.type) for e in events] == [(e["seq"], e["type"]) for e in direct]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1].payload, JobStatus) and events[-1].payload.status == "completed"

    on_disk = (worker.base / "output" / subfolder / "big.bin").read_bytes()
    assert len(buf.getvalue()) == SIZE and buf.getvalue() == on_disk
    assert hashlib.sha256(on_disk).hexdigest() == files[0].sha256
