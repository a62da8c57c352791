"""Acceptance: kill the local ComfyUI mid-job; after a restart the outputs land once."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.worker.comfy_process import ComfyProcess, ComfyProcessConfig

from ..conftest import TOKEN, WorkerHandle
from ..helpers import workflow
from .conftest import REPO, LocalClient, Message

pytestmark = pytest.mark.comfyui


def local_comfy(install: ComfyInstall, base: Path, worker: WorkerHandle) -> ComfyProcess:
    """A plain local ComfyUI with the extension, on the http backend to `worker`."""
    nodes = base / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    if not (nodes / "comfy-remote-exec").exists():
        (nodes / "comfy-remote-exec").symlink_to(REPO)
    return ComfyProcess(ComfyProcessConfig(
        install=install, base_dir=base, extra_args=["--cpu"], restart=False,
        env={"REMOTE_EXEC_BACKEND": "http", "REMOTE_EXEC_URL": worker.url,
             "REMOTE_EXEC_TOKEN": TOKEN, "REMOTE_EXEC_ENABLED": "1",
             "REMOTE_EXEC_STATE_DIR": str(base / "state")}))


async def test_outputs_land_once_after_local_restart(comfy_install: ComfyInstall,
                                                     worker: WorkerHandle,
                                                     tmp_path: Path) -> None:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=30, step_seconds=0.1, previews=False)
    flow["1"]["inputs"]["color"] = 31337
    flow["3"] = {"class_type": "SaveImage",
                 "inputs": {"images": ["2", 0], "filename_prefix": "survivor"}}
    first = local_comfy(comfy_install, tmp_path, worker)
    await first.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = LocalClient(first.url, session, client_id="same-browser-tab")
            await client.connect()
            prompt_id = (await client.post(flow))["prompt_id"]

            async def first_progress() -> None:
                while True:
                    msg: Message = await client.messages.get()
                    if msg.type == "progress":
                        return

            await asyncio.wait_for(first_progress(), 60)
            await client.close()
        # A hard kill: no shutdown hook runs, only the journal remains.
        os.killpg(first.pid, signal.SIGKILL)  # type: ignore[arg-type]
    finally:
        await first.stop()
    assert list((tmp_path / "state" / "journal").glob("*.json"))

    second = local_comfy(comfy_install, tmp_path, worker)
    await second.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = LocalClient(second.url, session, client_id="same-browser-tab")
            await client.connect()
            history = await client.get(f"/history/{prompt_id}")
            if prompt_id not in history:
                await client.until_end(prompt_id, timeout=60)
                history = await client.get(f"/history/{prompt_id}")
            await client.close()
    finally:
        await second.stop()
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success"
    [image] = entry["outputs"]["3"]["images"]
    landed = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert landed == [image["filename"]] and image["filename"].startswith("survivor_")
    assert not list((tmp_path / "state" / "journal").glob("*.json"))
