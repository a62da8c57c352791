"""The GPU class's code on its own (`gpu.GpuWorker`), with a real ComfyUI: started the
memory-snapshot way (prepare before, resume after), it runs a job whose messages land in
the job's queue partition; once its ComfyUI dies and does not come back, it stops taking
jobs (the app's `modal.experimental.stop_fetching_inputs()`)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.errors import RemoteUnavailable
from comfy_remote_exec.platforms.modal import messages
from comfy_remote_exec.platforms.modal.gpu import GpuConfig, GpuWorker
from comfy_remote_exec.platforms.modal.standins import DictStandIn, QueueStandIn, VolumeStandIn
from comfy_remote_exec.platforms.modal.storage import VolumeStorage
from comfy_remote_exec.platforms.modal.store import INFO_KEY

from ...conftest import prepare_worker_base
from ...helpers import workflow

pytestmark = pytest.mark.comfyui


async def scenario(install: ComfyInstall, root: Path) -> None:
    base = root / "base"
    prepare_worker_base(base)
    volume = VolumeStandIn(root / "remote")
    view = volume.mount(root / "gpu-view")
    events, store = QueueStandIn(), DictStandIn()
    stopped = asyncio.Event()

    async def stop_fetching_inputs() -> None:
        stopped.set()

    gpu = GpuWorker(GpuConfig(install=install, base_dir=base, state_dir=root / "state",
                              comfy_args=["--cpu"], snapshot=True, require_gpu=False,
                              restart=False, restart_grace=1.0, health_interval=0.2),
                    VolumeStorage(view, view.path), events, store,
                    on_unhealthy=stop_fetching_inputs)
    try:
        await gpu.prepare()  # @modal.enter(snap=True)
        await gpu.resume()  # @modal.enter(snap=False)
        info = await store.get.aio(INFO_KEY)
        assert "SaveImage" in info["object_info"] and info["models"]["upscale_models"]

        result = await gpu.run({"job_id": "job-1", "prompt_id": None,
                                "workflow": workflow("invert"), "media": {},
                                "url_prefix": "/v1/jobs/job-1/outputs"})
        assert result == {"status": "completed", "error": None}
        items = [messages.parse(i) for i in
                 await events.get_many.aio(1000, block=False, partition="job-1")]
        assert items[0].kind == messages.START and items[-1].kind == messages.END
        assert items[-1].status == "completed"
        executed = [m.payload for m in items if getattr(m.payload, "TYPE", "") == "executed"]
        [out] = executed[0].files  # type: ignore[union-attr]
        assert (volume.remote / "jobs" / "job-1" / "output" / out.filename).is_file(), \
            "published and committed before the event left"

        assert gpu.process.pid is not None
        os.killpg(gpu.process.pid, signal.SIGKILL)
        await asyncio.wait_for(stopped.wait(), 30)
        with pytest.raises(RemoteUnavailable, match="unhealthy"):
            await gpu.run({"job_id": "job-2", "workflow": workflow("invert"), "media": {}})
        assert await events.len.aio(partition="job-2") == 0, "a refused job sends nothing"
    finally:
        await gpu.stop()


def test_gpu_worker_runs_a_job_and_gives_up_on_a_dead_comfyui(
        comfy_install: ComfyInstall, tmp_path: Path) -> None:
    asyncio.run(scenario(comfy_install, tmp_path))
