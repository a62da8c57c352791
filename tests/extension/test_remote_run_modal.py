"""Acceptance: Run with `--backend modal` passes the workflow tests the http backend passes.

The launcher starts the local ComfyUI with `--backend modal --url URL`, where URL is the
Modal app's API run here over its stand-ins (`python -m
comfy_remote_exec.platforms.modal.local`): the same aiohttp API, job service, Modal
store, executor and storage as deployed, a real ComfyUI as its GPU side, every event
through the queue stand-in and every file through the volume stand-in. Its streams end
every 2 s and any request is cut after 8 s, as Modal cuts them at 150 s, so the
extension's resumption is exercised too. The tests are test_remote_run.py's own; the
GPU side's ComfyUI base directory is the launched `worker` folder, where they look for
the files a remote run wrote. Cancel is checked here against the job API's record.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.jobapi.spawn import start_worker, stop_worker

from ..conftest import TOKEN, prepare_worker_base
from ..helpers import workflow
from .conftest import TOY_BACKEND, Launched, LocalClient, Message, launch, stop
from .test_remote_run import (  # noqa: F401  (collected here, against this module's `launched`)
    test_client_prompt_id_number_and_partial_targets,
    test_input_in_subfolder_is_shipped_once,
    test_load_image_from_outputs_ships_the_local_result,
    test_previews_follow_the_clients_feature_flags,
    test_queue_lists_remote_jobs_and_delete_reaches_them,
    test_what_the_remote_lacks_is_refused_before_it_runs,
    test_workflow_runs_remotely,
    types_of,
)

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def modal_api(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[str, str]]:
    """The Modal API layer, local: (its URL, the launch root whose `worker` is its GPU
    side's ComfyUI base directory)."""
    root = tmp_path_factory.mktemp("launched-modal")
    prepare_worker_base(root / "worker")
    cmd = [sys.executable, "-m", "comfy_remote_exec.platforms.modal.local",
           "--comfyui", str(comfy_install.root), "--python", str(comfy_install.python),
           "--base-dir", str(root / "worker"), "--state-dir", str(root / "modal"),
           "--port", "0", "--token-env", "REMOTE_EXEC_TEST_TOKEN",
           "--stream-limit", "2", "--cut-after", "8", "--", "--cpu"]
    proc, url = start_worker(cmd, env={**os.environ, "REMOTE_EXEC_TEST_TOKEN": TOKEN})
    yield url, str(root)
    stop_worker(proc)


@pytest.fixture(scope="module")
def launched(comfy_install: ComfyInstall, modal_api: tuple[str, str]) -> Iterator[Launched]:
    url, root = modal_api
    handle = launch(comfy_install, Path(root), "--backend", "modal",
                    "--url", url, env={**TOY_BACKEND, "REMOTE_EXEC_TOKEN": TOKEN})
    yield handle
    stop(handle)


async def test_the_extension_runs_on_the_modal_backend(launched: Launched,
                                                       client: LocalClient) -> None:
    status = await client.get("/remote_exec/status")
    assert status["config"]["backend"] == "modal" and status["config"]["token_configured"]
    health = await client.get("/remote_exec/health")
    assert health["remote"]["status"] == "ok", health


async def test_cancel_during_upscale_reaches_the_gpu_side(
        launched: Launched, client: LocalClient, modal_api: tuple[str, str]) -> None:
    flow = workflow("upscale_tiny")
    flow["1"]["inputs"].update(width=3072, height=3072)
    prompt_id = (await client.post(flow))["prompt_id"]
    interrupted = False

    async def on(msg: Message) -> None:
        nonlocal interrupted
        if msg.type == "progress" and not interrupted:
            interrupted = True
            async with client.session.post(f"{client.url}/api/interrupt",
                                           json={"prompt_id": prompt_id}) as resp:
                assert resp.status == 200

    messages = await client.until_end(prompt_id, on=on)
    kinds = types_of(messages, prompt_id)
    assert interrupted and "execution_interrupted" in kinds and "execution_success" not in kinds
    history = (await client.get(f"/history/{prompt_id}"))[prompt_id]
    assert history["status"]["status_str"] == "error"
    record = await client.get(f"/remote_exec/jobs/{prompt_id}")
    assert record["status"] == "cancelled"

    async with httpx.AsyncClient(base_url=modal_api[0], timeout=10.0,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        deadline = time.monotonic() + 15
        while True:  # the job API's record, as the GPU side's end reaches it
            view = (await api.get(f"/v1/jobs/{record['remote_id']}")).json()
            if view["status"] == "failed" and view["cancelled"]:
                break
            assert time.monotonic() < deadline, f"the Modal API has the job as {view}"
            await asyncio.sleep(0.05)
