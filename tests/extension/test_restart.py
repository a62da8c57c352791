"""Acceptance: kill the local ComfyUI mid-job; after a restart the outputs land once."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from comfy_remote_exec.discovery import ComfyInstall

from ..conftest import WorkerHandle
from ..helpers import workflow
from .conftest import Message, connected, http_env, local_comfy

pytestmark = pytest.mark.comfyui


async def test_outputs_land_once_after_local_restart(comfy_install: ComfyInstall,
                                                     worker: WorkerHandle,
                                                     tmp_path: Path) -> None:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=30, step_seconds=0.1, previews=False)
    flow["1"]["inputs"]["color"] = 31337
    flow["3"] = {"class_type": "SaveImage",
                 "inputs": {"images": ["2", 0], "filename_prefix": "survivor"}}
    first = local_comfy(comfy_install, tmp_path, http_env(worker))
    await first.start()
    try:
        async with connected(first.url, client_id="same-browser-tab") as client:
            prompt_id = (await client.post(flow))["prompt_id"]

            async def first_progress() -> None:
                while True:
                    msg: Message = await client.messages.get()
                    if msg.type == "progress":
                        return

            await asyncio.wait_for(first_progress(), 60)
        # A hard kill: no shutdown hook runs, only the journal remains.
        os.killpg(first.pid, signal.SIGKILL)  # type: ignore[arg-type]
    finally:
        await first.stop()
    assert list((tmp_path / "state" / "journal").glob("*.json"))

    second = local_comfy(comfy_install, tmp_path, http_env(worker))
    await second.start()
    try:
        async with connected(second.url, client_id="same-browser-tab") as client:
            history = await client.get(f"/history/{prompt_id}")
            if prompt_id not in history:
                await client.until_end(prompt_id, timeout=60)
                history = await client.get(f"/history/{prompt_id}")
    finally:
        await second.stop()
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success"
    [image] = entry["outputs"]["3"]["images"]
    landed = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert landed == [image["filename"]] and image["filename"].startswith("survivor_")
    assert not list((tmp_path / "state" / "journal").glob("*.json"))
