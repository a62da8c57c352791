"""Acceptance: Run in a local ComfyUI executes on the worker and looks local.

The launcher starts the local ComfyUI (its own --base-directory) and a local
worker (its own base directory); an API client talks only to the local one.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ..helpers import eventually, png_bytes, workflow
from .conftest import Launched, LocalClient, Message, connected

pytestmark = pytest.mark.comfyui


def types_of(messages: list[Message], prompt_id: str) -> list[str]:
    return [m.type for m in messages
            if m.type == "binary" or not isinstance(m.data, dict)
            or m.data.get("prompt_id") in (prompt_id, None)]


def executed(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.data for m in messages if m.type == "executed"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_landed(launched: Launched, messages: list[Message], history: dict) -> list[Path]:
    """Every executed file exists locally with the worker's bytes and is in history."""
    paths = []
    for data in executed(messages):
        for key, items in data["output"].items():
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                folder = launched.local / item["type"] / item["subfolder"]
                local = folder / item["filename"]
                assert local.is_file(), local
                remote_folder = launched.worker / item["type"] / item["subfolder"]
                assert sha(local) in {sha(p) for p in remote_folder.iterdir() if p.is_file()}
                paths.append(local)
                assert item in history["outputs"][data["node"]][key]
    return paths


@pytest.mark.parametrize("name", ["invert", "upscale_tiny", "animated", "video", "preview_any"])
async def test_workflow_runs_remotely(launched: Launched, client: LocalClient,
                                      name: str) -> None:
    flow = workflow(name)
    local_prompts = launched.prompts_logged()
    prompt_id, messages = await client.run(flow)
    kinds = types_of(messages, prompt_id)
    assert "execution_start" in kinds and "execution_success" in kinds, kinds
    ran = {m.data["node"] for m in messages if m.type == "executing" and m.data.get("node")}
    cached = {n for m in messages if m.type == "execution_cached" for n in m.data["nodes"]}
    assert ran | cached == set(flow)
    if name == "upscale_tiny":
        progress = [m.data for m in messages if m.type == "progress"]
        assert progress and progress[-1]["value"] == progress[-1]["max"]
        assert all(p["prompt_id"] == prompt_id for p in progress)
    history = (await client.get(f"/history/{prompt_id}"))[prompt_id]
    assert history["status"]["status_str"] == "success"
    record = await client.get(f"/remote_exec/jobs/{prompt_id}")
    assert record["remote_id"] and record["status"] == "completed"
    paths = assert_landed(launched, messages, history)
    if name == "preview_any":
        assert executed(messages)[0]["output"]["text"] == ["hello remote"]
    else:
        assert paths and all(p.is_relative_to(launched.local / "output") for p in paths)
    # ComfyUI's own /prompt handler logs "got prompt" first thing; it never ran.
    assert launched.prompts_logged() == local_prompts


async def test_input_in_subfolder_is_shipped_once(launched: Launched,
                                                  client: LocalClient) -> None:
    image = launched.local / "input" / "photos" / "example.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(png_bytes(size=(80, 60), color=(200, 10, 10)))
    flow = workflow("load_scale")
    flow["1"]["inputs"]["image"] = "photos/example.png"
    jobs = []
    for width in (64, 32):
        flow["2"]["inputs"]["width"] = width
        prompt_id, messages = await client.run(flow)
        assert "execution_success" in types_of(messages, prompt_id)
        jobs.append(await client.get(f"/remote_exec/jobs/{prompt_id}"))
    digest = sha(image)
    assert jobs[0]["uploaded"] == [digest] or jobs[0]["reused"] == [digest]
    assert jobs[1]["uploaded"] == [] and jobs[1]["reused"] == [digest]


@pytest.mark.parametrize("metadata", [True, False])
async def test_previews_follow_the_clients_feature_flags(launched: Launched,
                                                         metadata: bool) -> None:
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=3, step_seconds=0.01)
    flow["1"]["inputs"]["color"] = 77 + metadata
    async with connected(launched.url, preview_metadata=metadata) as client:
        prompt_id, messages = await client.run(flow)
    frames = [m.binary for m in messages if m.type == "binary"]
    assert len(frames) == 3
    assert frames[0] is not None
    if metadata:
        event, length = struct.unpack(">II", frames[0][:8])
        meta = json.loads(frames[0][8:8 + length])
        assert event == 4 and meta["prompt_id"] == prompt_id and meta["node_id"] == "2"
        assert frames[0][8 + length:8 + length + 2] == b"\xff\xd8"
    else:
        assert struct.unpack(">II", frames[0][:8]) == (1, 1)  # legacy preview, JPEG
        assert frames[0][8:10] == b"\xff\xd8"


async def test_load_image_from_outputs_ships_the_local_result(launched: Launched,
                                                              client: LocalClient) -> None:
    """Iterating on an earlier result: `x.png [output]` is this machine's file."""
    earlier = launched.local / "output" / "earlier_result.png"
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_bytes(png_bytes(size=(40, 30), color=(255, 0, 0)))
    assert not (launched.worker / "output" / earlier.name).exists()
    flow = {"1": {"class_type": "LoadImageOutput",
                  "inputs": {"image": "earlier_result.png [output]"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage",
                  "inputs": {"images": ["2", 0], "filename_prefix": "iterated"}}}
    prompt_id, messages = await client.run(flow)
    assert "execution_success" in types_of(messages, prompt_id), messages
    [image] = executed(messages)[0]["output"]["images"]
    with Image.open(launched.local / "output" / image["filename"]) as landed:
        assert landed.size == (40, 30) and landed.convert("RGB").getpixel((0, 0)) == (0, 255, 255)
    record = await client.get(f"/remote_exec/jobs/{prompt_id}")
    assert sha(earlier) in record["uploaded"] + record["reused"]


async def test_client_prompt_id_number_and_partial_targets(launched: Launched,
                                                           client: LocalClient) -> None:
    flow = workflow("invert")
    flow["1"]["inputs"]["color"] = 0x0F0F0F
    flow["4"] = {"class_type": "SaveImage",
                 "inputs": {"images": ["1", 0], "filename_prefix": "untargeted"}}
    own_id = str(uuid.uuid4())  # ComfyUI v0.26 takes only canonical UUIDs
    answer = await client.post(flow, prompt_id=own_id, number=7,
                               partial_execution_targets=["3"])
    assert answer == {"prompt_id": own_id, "number": 7.0, "node_errors": {}}
    messages = await client.until_end(own_id)
    assert [m.data["node"] for m in messages if m.type == "executed"] == ["3"]
    history = (await client.get(f"/history/{own_id}"))[own_id]
    assert history["prompt"][0] == 7.0 and list(history["outputs"]) == ["3"]


async def test_cancel_during_upscale(launched: Launched, client: LocalClient) -> None:
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
    job_file = next(launched.worker.glob(f"remote_exec/jobs/{record['remote_id']}/job.json"))
    await eventually(lambda: json.loads(job_file.read_text())["status"] == "cancelled",
                     "the worker records the job as cancelled")


@pytest.mark.parametrize("case", ["unknown_node", "missing_model"])
async def test_what_the_remote_lacks_is_refused_before_it_runs(launched: Launched,
                                                                client: LocalClient,
                                                                case: str) -> None:
    """With the remote's catalog cached, preflight refuses a node type or a model the
    remote lacks (and this machine cannot ship) with ComfyUI's own 400, before any job
    reaches the worker (issue 11; the remote's own refusal was the answer before)."""
    if case == "unknown_node":
        flow, expected = workflow("unknown_node"), "NodeThatDoesNotExist"
    else:
        flow = workflow("upscale_tiny")
        flow["2"]["inputs"]["model_name"] = "only-on-my-laptop.pth"
        expected = "only-on-my-laptop.pth"
    async with client.session.post(f"{client.url}/remote_exec/catalog/refresh") as resp:
        assert (await resp.json())["ok"]
    jobs_before = len(list(launched.worker.glob("remote_exec/jobs/*/job.json")))
    async with client.session.post(f"{client.url}/api/prompt",
                                   json={"prompt": flow, "client_id": client.client_id}) as resp:
        status, body = resp.status, await resp.json()
    assert status == 400, body
    assert set(body) == {"error", "node_errors"}
    if case == "unknown_node":
        assert body["error"]["type"] == "missing_node_type" and body["node_errors"] == {}
        assert expected in body["error"]["message"]
    else:
        error = body["node_errors"]["2"]["errors"][0]
        assert error["type"] == "value_not_in_list" and expected in error["details"]
        assert "tiny_compact_x2.safetensors" in error["details"]
    assert len(list(launched.worker.glob("remote_exec/jobs/*/job.json"))) == jobs_before


async def test_queue_lists_remote_jobs_and_delete_reaches_them(
        launched: Launched, client: LocalClient) -> None:
    blocker = workflow("steps")
    blocker["2"]["inputs"].update(steps=40, step_seconds=0.05, previews=False)
    blocker["1"]["inputs"]["color"] = 4242
    running = (await client.post(blocker))["prompt_id"]
    waiting = (await client.post(workflow("animated")))["prompt_id"]
    queue = await client.get("/api/queue")
    assert running in [item[1] for item in queue["queue_running"]]
    assert waiting in [item[1] for item in queue["queue_pending"]]
    async with client.session.post(f"{client.url}/api/queue",
                                   json={"delete": [waiting]}) as resp:
        assert resp.status == 200
    queue = await client.get("/api/queue")
    assert waiting not in [item[1] for item in queue["queue_pending"]]
    async with client.session.post(f"{client.url}/api/interrupt", json={}) as resp:
        assert resp.status == 200
    messages = await client.until_end(running)
    assert "execution_interrupted" in types_of(messages, running)
    assert (await client.get("/api/queue")) == {"queue_running": [], "queue_pending": []}
    remaining = [m.data["status"]["exec_info"]["queue_remaining"]
                 for m in messages if m.type == "status"]
    assert max(remaining) == 2, "the queue counter includes remote jobs"


async def test_remote_off_runs_locally_with_the_same_output(
        launched: Launched, client: LocalClient) -> None:
    flow = workflow("invert")
    flow["1"]["inputs"]["color"] = 123456
    _, remote_msgs = await client.run(flow)
    local_prompts = launched.prompts_logged()
    local_id, local_msgs = await client.run(flow, remote=False,
                                            extra_data={"remote_exec": False})
    # Its "got prompt" line comes through the launcher's output pipe, maybe after the run.
    await eventually(lambda: launched.prompts_logged() > local_prompts,
                     "the local ComfyUI's own /prompt handler ran the mode-off run", timeout=10)
    [remote_out] = executed(remote_msgs)[0]["output"]["images"]
    [local_out] = executed(local_msgs)[0]["output"]["images"]
    remote_file = launched.local / "output" / remote_out["filename"]
    local_file = launched.local / "output" / local_out["filename"]
    assert remote_file != local_file
    assert remote_file.read_bytes() == local_file.read_bytes()
    async with client.session.get(f"{client.url}/remote_exec/jobs/{local_id}") as resp:
        assert resp.status == 404, "the mode-off run went remote"


async def test_secrets_never_leave_in_get_responses(launched: Launched,
                                                    client: LocalClient) -> None:
    token_lines = [line for line in launched.lines if "REMOTE_EXEC_TOKEN" in line]
    assert not token_lines, "the token was logged"
    status = await client.get("/remote_exec/status")
    assert status["config"]["backend"] == "local" and status["config"]["token_configured"]
    for path in ("/remote_exec/status", "/remote_exec/health", "/api/settings",
                 "/api/system_stats", "/api/queue", "/api/history"):
        async with client.session.get(f"{client.url}{path}") as resp:
            body = await resp.text()
        assert "token\":\"" not in body.replace(" ", "") or "token_configured" in body
        assert "Bearer" not in body


async def test_parallel_jobs_setting(launched: Launched, client: LocalClient) -> None:
    async def set_parallel(n: int) -> None:
        async with client.session.post(f"{client.url}/api/settings/RemoteExec.ParallelJobs",
                                       json=n) as resp:
            assert resp.status == 200

    await set_parallel(2)
    try:
        ids = []
        for color in (1001, 1002, 1003):
            flow = workflow("steps")
            flow["2"]["inputs"].update(steps=20, step_seconds=0.05, previews=False)
            flow["1"]["inputs"]["color"] = color
            ids.append((await client.post(flow))["prompt_id"])
        queue = await client.get("/api/queue")
        assert [item[1] for item in queue["queue_running"]] == ids[:2]
        assert [item[1] for item in queue["queue_pending"]] == ids[2:]
        for prompt_id in ids:
            assert "execution_success" in types_of(await client.until_end(prompt_id), prompt_id)
    finally:
        await set_parallel(1)
