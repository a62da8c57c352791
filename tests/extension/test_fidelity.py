"""A remote run against a direct run of the same graph, on the same local ComfyUI.

Each test runs a graph twice: once locally (`extra_data.remote_exec: false`)
and once remotely, then compares what a client sees: the answer of
`POST /prompt` (400s included), the WebSocket messages, the history entry,
the queue entry, and the metadata inside the saved files.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ..helpers import png_bytes, workflow
from .conftest import Launched, LocalClient, Message

pytestmark = pytest.mark.comfyui

EXTRA_PNGINFO = {"workflow": {"id": "8e3a6f0c-0000-4000-8000-000000000001", "nodes": [],
                              "links": [], "version": 0.4, "extra": {"note": "from the test"}}}


async def post(client: LocalClient, prompt: dict[str, Any], remote: bool,
               **body: Any) -> tuple[int, dict[str, Any]]:
    extra = {"remote_exec": remote, "extra_pnginfo": EXTRA_PNGINFO}
    payload = {"prompt": prompt, "client_id": client.client_id, "extra_data": extra, **body}
    async with client.session.post(f"{client.url}/api/prompt", json=payload) as resp:
        return resp.status, await resp.json()


async def run(client: LocalClient, prompt: dict[str, Any], remote: bool
              ) -> tuple[str, list[Message], dict[str, Any]]:
    status, answer = await post(client, prompt, remote)
    assert status == 200, answer
    prompt_id = answer["prompt_id"]
    messages = await client.until_end(prompt_id)
    found = await client.get(f"/remote_exec/jobs/{prompt_id}")
    assert ("remote_id" in found) == remote, f"ran {'locally' if remote else 'remotely'}"
    history = (await client.get(f"/history/{prompt_id}"))[prompt_id]
    return prompt_id, messages, history


def shape(value: Any) -> Any:
    """The keys and types of a JSON value (lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def sequence(messages: list[Message], prompt_id: str) -> list[str]:
    """Message types a client sees for one prompt (the queue's `status` included)."""
    out = []
    for m in messages:
        if m.type == "binary":
            continue
        data = m.data if isinstance(m.data, dict) else {}
        if m.type == "status" or data.get("prompt_id") == prompt_id:
            out.append(m.type)
    return out


def saved_files(launched: Launched, history: dict[str, Any]) -> list[Path]:
    return [launched.local / item["type"] / item["subfolder"] / item["filename"]
            for output in history["outputs"].values() for item in output.get("images", [])]


async def test_bad_graphs_are_refused_as_comfyui_refuses_them(client: LocalClient) -> None:
    flow = workflow("invert")
    bad_value = copy.deepcopy(flow)
    bad_value["1"]["inputs"]["width"] = 0  # below EmptyImage's minimum
    bad_type = copy.deepcopy(flow)
    bad_type["1"]["inputs"]["width"] = "wide"
    no_output = {"1": flow["1"]}
    cycle = copy.deepcopy(flow)
    cycle["2"]["inputs"]["image"] = ["3", 0]
    cycle["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}}
    cycle["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0],
                                                      "filename_prefix": "cycle"}}
    cases = [bad_value, bad_type, no_output, cycle, {"1": {"inputs": {}}}]
    for prompt in cases:
        direct = await post(client, prompt, remote=False)
        remote = await post(client, prompt, remote=True)
        assert direct[0] == 400, direct
        assert remote == direct
    # An empty target list is not "no targets": ComfyUI refuses it.
    direct = await post(client, flow, remote=False, partial_execution_targets=[])
    assert direct[0] == 400 and direct[1]["error"]["type"] == "prompt_no_outputs"
    assert await post(client, flow, remote=True, partial_execution_targets=[]) == direct


async def test_a_model_only_the_remote_has_is_not_refused_here(launched: Launched,
                                                               client: LocalClient) -> None:
    flow = workflow("upscale_tiny")  # the worker holds tiny_compact_x2; this machine not
    assert not (launched.local / "models" / "upscale_models").exists() or not any(
        (launched.local / "models" / "upscale_models").iterdir())
    status, answer = await post(client, flow, remote=True)
    assert status == 200 and answer["node_errors"] == {}, answer
    messages = await client.until_end(answer["prompt_id"])
    assert "execution_success" in sequence(messages, answer["prompt_id"])


async def test_messages_history_and_metadata_match_a_local_run(launched: Launched,
                                                               client: LocalClient) -> None:
    image = launched.local / "input" / "fidelity.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(png_bytes(size=(40, 30), color=(1, 2, 3)))
    flow = {"1": {"class_type": "LoadImage", "inputs": {"image": "fidelity.png"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                      "filename_prefix": "fidelity"}}}
    first = await asyncio.wait_for(client.messages.get(), 10)
    assert first.type == "status"  # the one a client gets on connecting
    runs = {}
    for remote in (False, True):
        flow["2"]["_meta"] = {"title": f"Invert {uuid.uuid4()}"}  # defeat the cache
        runs[remote] = await run(client, flow, remote)
    (d_id, d_msgs, d_hist), (r_id, r_msgs, r_hist) = runs[False], runs[True]
    assert sequence(r_msgs, r_id) == sequence(d_msgs, d_id), "\n".join(map(str, (
        sequence(r_msgs, r_id), sequence(d_msgs, d_id))))
    assert shape(r_hist) == shape(d_hist)
    assert r_hist["prompt"][4] == d_hist["prompt"][4] == ["3"]  # outputs_to_execute
    mine = ("create_time", "remote_exec")  # a time, and the test's own switch
    assert {k: v for k, v in r_hist["prompt"][3].items() if k not in mine} == \
        {k: v for k, v in d_hist["prompt"][3].items() if k not in mine}
    assert r_hist["meta"] == d_hist["meta"]
    assert [m[0] for m in r_hist["status"]["messages"]] == \
        [m[0] for m in d_hist["status"]["messages"]]
    direct_png, remote_png = saved_files(launched, d_hist), saved_files(launched, r_hist)
    with Image.open(direct_png[0]) as d, Image.open(remote_png[0]) as r:
        assert set(r.info) == set(d.info) == {"prompt", "workflow"}
        assert json.loads(r.info["workflow"]) == EXTRA_PNGINFO["workflow"]
        d_prompt, r_prompt = json.loads(d.info["prompt"]), json.loads(r.info["prompt"])
    for saved in (r_prompt, d_prompt):
        del saved["2"]["_meta"]  # each run had its own title
    assert r_prompt == d_prompt, "the user's own input name, and ComfyUI's is_changed"
    assert r_prompt["1"]["inputs"] == flow["1"]["inputs"]


async def test_identical_images_land_as_separate_files(launched: Launched,
                                                       client: LocalClient) -> None:
    flow = workflow("invert")
    flow["1"]["inputs"].update(batch_size=3, color=0x010203)
    flow["3"]["inputs"]["filename_prefix"] = "same_bytes"
    counts = {}
    for remote in (False, True):
        flow["1"]["inputs"]["width"] = 33 + remote  # not a cache hit
        _, _, history = await run(client, flow, remote)
        files = saved_files(launched, history)
        assert all(f.is_file() for f in files)
        counts[remote] = len(set(files))
    assert counts[True] == counts[False] == 3


async def test_a_cached_remote_output_points_at_the_file_it_landed(
        launched: Launched, client: LocalClient) -> None:
    flow = workflow("invert")
    flow["1"]["inputs"].update(width=21, height=22, color=0x0A0B0C)
    flow["3"]["inputs"]["filename_prefix"] = "cached_twice"
    _, _, first = await run(client, flow, remote=True)
    _, _, second = await run(client, flow, remote=True)
    assert saved_files(launched, first) == saved_files(launched, second)


async def test_remote_jobs_are_in_the_jobs_api(launched: Launched, client: LocalClient
                                               ) -> None:
    async with client.session.get(f"{launched.url}/api/jobs") as resp:
        if resp.status == 404:
            pytest.skip("this ComfyUI has no /api/jobs (before v0.26)")
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=40, step_seconds=0.05)
    flow["1"]["inputs"]["color"] = int(uuid.uuid4()) % 0xFFFFFF
    status, answer = await post(client, flow, remote=True)
    assert status == 200, answer
    prompt_id = answer["prompt_id"]

    async def running() -> None:
        while True:
            msg = await client.messages.get()
            if msg.type == "progress" and msg.data.get("prompt_id") == prompt_id:
                return

    await asyncio.wait_for(running(), 60)
    job = await client.get(f"/api/jobs/{prompt_id}")
    assert job["status"] == "in_progress" and isinstance(job["create_time"], int), job
    listing = await client.get("/api/jobs?status=in_progress,pending")
    seen = {j["id"] for j in listing["jobs"]}
    assert prompt_id in seen
    async with client.session.post(f"{client.url}/api/jobs/{prompt_id}/cancel") as resp:
        assert (await resp.json()) == {"cancelled": True}
    await client.until_end(prompt_id)
    job = await client.get(f"/api/jobs/{prompt_id}")
    assert job["status"] == "cancelled", job
    done = await client.get("/api/jobs?status=completed,failed,cancelled")
    assert all(isinstance(j["create_time"], int) for j in done["jobs"])
    assert prompt_id in {j["id"] for j in done["jobs"]}
