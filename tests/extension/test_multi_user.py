"""ComfyUI's multi-user mode: each user's own RemoteExec settings decide for their runs."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from comfy_remote_exec.discovery import ComfyInstall

from ..conftest import TOKEN, WorkerHandle
from ..helpers import workflow
from .conftest import connected, local_comfy

pytestmark = pytest.mark.comfyui


async def test_each_user_has_their_own_remote_setting(comfy_install: ComfyInstall,
                                                      worker: WorkerHandle,
                                                      tmp_path: Path) -> None:
    env = {"REMOTE_EXEC_BACKEND": "http", "REMOTE_EXEC_URL": worker.url,
           "REMOTE_EXEC_TOKEN": TOKEN}  # remote mode off unless a user turns it on
    local = local_comfy(comfy_install, tmp_path, env, args=("--multi-user",))
    await local.start()
    try:
        async with aiohttp.ClientSession() as session:
            users = {}
            for name in ("alice", "bob"):
                async with session.post(f"{local.url}/api/users",
                                        json={"username": name}) as resp:
                    assert resp.status == 200, await resp.text()
                    users[name] = await resp.json()
            async with session.post(f"{local.url}/api/settings/RemoteExec.Enabled", json=True,
                                    headers={"comfy-user": users["alice"]}) as resp:
                assert resp.status == 200
            for name, remote in (("alice", True), ("bob", False)):
                headers = {"comfy-user": users[name]}
                async with session.get(f"{local.url}/remote_exec/status",
                                       headers=headers) as resp:
                    assert (await resp.json())["config"]["enabled"] is remote, name
                async with connected(local.url) as client:
                    flow = workflow("invert")
                    flow["1"]["inputs"]["color"] = 777 if remote else 778
                    async with session.post(
                            f"{local.url}/api/prompt", headers=headers,
                            json={"prompt": flow, "client_id": client.client_id}) as resp:
                        prompt_id = (await resp.json())["prompt_id"]
                    messages = await client.until_end(prompt_id)
                    assert "execution_success" in [m.type for m in messages]
                async with session.get(f"{local.url}/remote_exec/jobs/{prompt_id}") as resp:
                    assert (resp.status == 200) is remote, f"{name}'s run went the wrong way"
    finally:
        await local.stop()
