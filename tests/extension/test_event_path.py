"""Acceptance: an event crosses at most 8 modules, with no back-and-forth.

The launcher starts a real local ComfyUI and a real worker (with its own
ComfyUI) with `tests/fixtures/tracepath` first on PYTHONPATH: its
`sitecustomize` records, in every process, each hand-off of one marked
`progress` event between modules (an argument passed into another module's
function, a value returned or yielded to another module's frame). Each
process is read on its own: the worker from the runner's WebSocket read to
its SSE write, the local ComfyUI from its SSE read to `send_sync`.

The protocol's `events` module is the vocabulary every side speaks (it
parses, builds and serializes the event's own types): it is on the path and
counted, but a call into it and back is not a hop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..helpers import eventually
from .conftest import REPO, TOY_BACKEND, connected, launch, stop

pytestmark = pytest.mark.comfyui

NODE = "4242"
PROTOCOL = "comfy_remote_exec.protocol.events"
WORKER_PATH = ["comfy_remote_exec.worker.comfy.comfy_client",
               "comfy_remote_exec.worker.comfy.runner",
               "comfy_remote_exec.worker.service.jobs",
               "comfy_remote_exec.worker.api.api"]
LOCAL_PATH = ["comfy_remote_exec.jobapi.client",
              "comfy_remote_exec.extension.jobrun",
              "comfy_remote_exec.extension.adapter",
              "server.send_sync"]


def hand_offs(trace: Path) -> dict[int, list[dict[str, str]]]:
    """Per process (pid): its recorded hand-offs, in order."""
    return {int(f.stem): [json.loads(line) for line in f.read_text().splitlines()]
            for f in trace.glob("*.jsonl")}


def path_of(steps: list[dict[str, str]], start: str, end: str) -> tuple[list[str], set[str]]:
    """The modules the first marked event went through, from `start` to `end`, and
    the modules it touched on the way (the protocol included)."""
    path: list[str] = []
    touched: set[str] = set()
    for step in steps:
        if not path and step["from"] != start:
            continue
        for module in (step["from"], step["to"]):
            if not module:
                continue
            touched.add(module)
            if module != PROTOCOL and (not path or module != path[-1]):
                path.append(module)
            if module == end:
                return path, touched
    return path, touched


async def test_an_event_crosses_at_most_eight_modules(comfy_install, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    pythonpath = os.pathsep.join(filter(None, [str(REPO / "tests" / "fixtures" / "tracepath"),
                                               os.environ.get("PYTHONPATH")]))
    handle = launch(comfy_install, tmp_path / "run", env={
        **TOY_BACKEND, "PYTHONPATH": pythonpath, "REMOTE_EXEC_TRACE": str(trace),
        "REMOTE_EXEC_TRACE_NODE": NODE})
    try:
        flow = {NODE: {"class_type": "RemoteExecBenchTicks",
                       "inputs": {"ticks": 3, "interval": 0.3, "seed": 1}}}
        async with connected(handle.url) as client:
            _, messages = await client.run(flow)
        ticks = [m for m in messages if m.type == "progress" and m.data.get("node") == NODE]
        assert len(ticks) == 3, "the marked events reached the local client"
        await eventually(lambda: any("server.send_sync" in f.read_text()
                                     for f in trace.glob("*.jsonl")), "the trace is written")
    finally:
        stop(handle)

    worker = local = None
    for steps in hand_offs(trace).values():
        modules = {m for step in steps for m in (step["from"], step["to"])}
        if "comfy_remote_exec.worker.comfy.runner" in modules:
            worker = path_of(steps, WORKER_PATH[0], WORKER_PATH[-1])
        if "comfy_remote_exec.extension.jobrun" in modules:
            local = path_of(steps, LOCAL_PATH[0], LOCAL_PATH[-1])
    assert worker is not None and local is not None, "both processes were traced"
    (worker_path, worker_touched), (local_path, local_touched) = worker, local
    # In order, each module once: no back-and-forth.
    assert worker_path == WORKER_PATH, worker_path
    assert local_path == LOCAL_PATH, local_path
    modules = {*worker_touched, *local_touched} - {"server.send_sync"}
    assert modules == {*WORKER_PATH, *LOCAL_PATH[:-1], PROTOCOL}, sorted(modules)
    assert len(modules) <= 8
