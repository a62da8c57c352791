"""A bad token or a dead remote: a clear error in the UI, and nothing lost locally."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfy_remote_exec.discovery import ComfyInstall
from comfy_remote_exec.worker.comfy.comfy_process import free_port

from ..conftest import TOKEN, WorkerHandle
from ..helpers import workflow, write_secrets
from .conftest import connected, http_env, local_comfy

pytestmark = pytest.mark.comfyui


async def test_bad_token_and_dead_remote(comfy_install: ComfyInstall, worker: WorkerHandle,
                                         tmp_path: Path) -> None:
    local = local_comfy(comfy_install, tmp_path, {
        **http_env(worker), "REMOTE_EXEC_TOKEN": "not-the-token"})
    await local.start()
    try:
        async with connected(local.url) as client:
            dead = f"http://127.0.0.1:{free_port()}"
            for extra, expected in (
                    ({}, "bearer token"),
                    ({"extra_data": {"remote_exec": {"url": dead}}}, "cannot reach the worker")):
                prompt_id, messages = await client.run(workflow("invert"), **extra)
                errors = [m.data for m in messages if m.type == "execution_error"]
                toasts = [m.data for m in messages if m.type == "remote_exec.error"]
                assert errors and expected in errors[0]["exception_message"], errors
                assert toasts and expected in toasts[0]["message"]
                assert "not-the-token" not in str(errors) + str(toasts)
                history = (await client.get(f"/history/{prompt_id}"))[prompt_id]
                assert history["status"]["status_str"] == "error"
    finally:
        await local.stop()
    assert not list((tmp_path / "output").glob("*"))
    assert not [line for line in local.log_tail if "not-the-token" in line]


async def test_a_token_fixed_in_the_secrets_file_serves_the_next_run(
        comfy_install: ComfyInstall, worker: WorkerHandle, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets" / "config.yaml"
    write_secrets(secrets, {"http": {"token": "a-typo"}})
    env = {**http_env(worker), "REMOTE_EXEC_TOKEN": "", "REMOTE_EXEC_CONFIG": str(secrets)}
    local = local_comfy(comfy_install, tmp_path, env)
    await local.start()
    try:
        async with connected(local.url) as client:
            _, messages = await client.run(workflow("invert"))
            errors = [m.data for m in messages if m.type == "execution_error"]
            assert errors and "bearer token" in errors[0]["exception_message"]
            write_secrets(secrets, {"http": {"token": TOKEN}})
            _, messages = await client.run(workflow("invert"))
            assert "execution_success" in [m.type for m in messages]
    finally:
        await local.stop()
