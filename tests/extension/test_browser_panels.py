"""Remote jobs in the frontend's own panels, exactly as local jobs are.

Frontends 1.45 and later read `/api/jobs` for the Job Queue (the action bar's
"N active") and for Media Assets → Generated; 1.27 has neither panel, and those
tests skip there with the reason. A remote output dropped back into ComfyUI
restores the graph that made it, as a local output does, on every frontend.
Screenshots go to test-artifacts/browser/<params>/.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ..helpers import eventually, workflow
from .browser import (
    load_api_workflow,
    needs_chromium,
    open_ui,
    post_prompt,
    run_and_wait,
    screenshot,
    set_remote,
    started,
)
from .conftest import Launched

pytestmark = [pytest.mark.comfyui, needs_chromium]
playwright_api = pytest.importorskip("playwright.async_api", reason="needs playwright")

QUEUE_TOGGLE = "queue-overlay-toggle"
# The action bar's job count reads "N active" (then the button's hidden label).
ACTIVE_JOBS = r"""(n) => {
  const text = document.querySelector('[data-testid="queue-overlay-toggle"]')?.textContent;
  const found = (text ?? "").match(/^\s*(\d+)\s+active/);
  return Boolean(found) && Number(found[1]) === n;
}"""

# The graph as the user sees it: nodes (type, place, widget values, wiring) and links.
GRAPH_SHAPE = """() => {
  const g = app.graph.serialize();
  return {
    nodes: g.nodes.map((n) => ({
      id: n.id, type: n.type, title: n.title ?? null, mode: n.mode ?? 0,
      pos: Array.from(n.pos ?? []).map(Math.round),
      // A node without widgets serializes [] or nothing, depending on how it was made.
      widgets_values: [].concat(n.widgets_values ?? []).length ? n.widgets_values : null,
      inputs: (n.inputs ?? []).map((i) => [i.name, i.link ?? null]),
      outputs: (n.outputs ?? []).map((o) => [o.name, o.links ?? []]),
    })).sort((a, b) => a.id - b.id),
    links: (g.links ?? []).map((l) => Array.isArray(l) ? l.slice(0, 5) :
      [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot]),
  };
}"""

# What only the workflow chunk of a PNG can bring back (its prompt chunk, the API
# graph, cannot): a Note node, a node's own title and a place the user chose.
EDIT_GRAPH = """() => {
  const note = window.LiteGraph.createNode("Note");
  note.pos = [40, 420];
  app.graph.add(note);
  note.widgets[0].value = "kept only in the workflow chunk";
  const node = app.graph.getNodeById(2);
  node.title = "Inverted on purpose";
  node.pos = [520, 330];
  app.graph.setDirtyCanvas(true, true);
}"""

# Fetch an output the way a user saves it, and drop it on ComfyUI (app.handleFile is
# what the canvas's drop handler and the Load button's file input both call).
DROP_OUTPUT = """async (image) => {
  const query = new URLSearchParams({filename: image.filename, subfolder: image.subfolder ?? "",
                                     type: image.type ?? "output"});
  const resp = await fetch(`/view?${query}`);
  if (!resp.ok) throw new Error(`GET /view answered ${resp.status}`);
  const file = new File([await resp.blob()], image.filename, {type: "image/png"});
  app.graph.clear();
  await app.handleFile(file);
  return app.graph.serialize().nodes.length;
}"""


@pytest.fixture
async def page(ui: Launched) -> AsyncIterator[Any]:
    """A page on `ui`; remote mode is given back to the shared ComfyUI afterwards."""
    async with open_ui(ui.url) as opened:
        try:
            yield opened
        finally:
            await opened.request.post(f"{ui.url}/api/settings/RemoteExec.Enabled",
                                      data="true", headers={"Content-Type": "application/json"})


async def needs_job_panels(page: Any) -> None:
    if not await page.get_by_test_id(QUEUE_TOGGLE).count():
        version = await page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
        pytest.skip(f"frontend {version} has no Job Queue panel (it reads /api/jobs from 1.45)")


async def remote_record(page: Any, url: str, prompt_id: str) -> tuple[int, dict[str, Any]]:
    resp = await page.request.get(f"{url}/remote_exec/jobs/{prompt_id}")
    return resp.status, (await resp.json() if resp.status == 200 else {})


def saved_image(run: dict[str, Any]) -> dict[str, Any]:
    images = [image for detail in run["executed"]
              for image in (detail.get("output") or {}).get("images", [])]
    assert images, f"no image in the run's executed events: {run['executed']}"
    return dict(images[0])


def invert(prefix: str, color: int) -> dict[str, Any]:
    flow = workflow("invert")
    flow["1"]["inputs"].update(width=64, height=64, color=color)
    flow["3"]["inputs"]["filename_prefix"] = prefix
    return flow


async def test_panels_list_remote_and_local_jobs(ui: Launched, page: Any,
                                                 request: pytest.FixtureRequest) -> None:
    await needs_job_panels(page)
    tag = uuid.uuid4().hex[:6]
    await set_remote(page, True)
    await load_api_workflow(page, invert(f"panel_remote_{tag}", 0x204080), "remote.json")
    remote = (await run_and_wait(page))["prompt_id"]
    status, record = await remote_record(page, ui.url, remote)
    assert status == 200 and record["status"] == "completed", "remote mode on ran locally"
    await set_remote(page, False)
    await load_api_workflow(page, invert(f"panel_local_{tag}", 0x408020), "local.json")
    local = (await run_and_wait(page))["prompt_id"]
    assert (await remote_record(page, ui.url, local))[0] == 404, "the local run went remote"

    await page.get_by_test_id(QUEUE_TOGGLE).click()
    for prompt_id in (remote, local):
        await page.locator(f'[data-job-id="{prompt_id}"]').wait_for(timeout=20_000)
    await screenshot(page, request, "job_queue")
    await page.get_by_test_id(QUEUE_TOGGLE).click()

    await page.get_by_role("button", name=re.compile(r"^Assets")).first.click()
    for name in (f"panel_remote_{tag}", f"panel_local_{tag}"):
        await page.get_by_text(name).first.wait_for(timeout=20_000)
    await screenshot(page, request, "media_assets")


async def test_slow_remote_job_is_active_and_the_panel_cancels_it(
        ui: Launched, page: Any, request: pytest.FixtureRequest) -> None:
    """The slow node (tests/fixtures/custom_nodes) exists only on the worker, and the
    frontend builds no graph with a node type it does not know until the remote's node
    list reaches the UI (#9), so the job is posted on the page's own connection."""
    await needs_job_panels(page)
    await set_remote(page, True)
    flow = workflow("steps")
    flow["2"]["inputs"].update(steps=600, step_seconds=0.1)  # a minute unless cancelled
    begun = time.monotonic()
    prompt_id = await post_prompt(page, flow)
    assert await started(page) == prompt_id
    await page.wait_for_function("() => window.__events.some(([t]) => t === 'progress')",
                                 timeout=60_000)
    toggle = page.get_by_test_id(QUEUE_TOGGLE)
    await page.wait_for_function(ACTIVE_JOBS, arg=1, timeout=20_000)
    status, record = await remote_record(page, ui.url, prompt_id)
    assert status == 200 and record["status"] == "running", record

    await toggle.click()
    row = page.locator(f'[data-job-id="{prompt_id}"]')
    await row.wait_for(timeout=20_000)
    await screenshot(page, request, "slow_job_active")
    await row.hover()
    await row.get_by_role("button", name="Cancel").click()

    await page.wait_for_function(
        "() => window.__events.some(([t]) => t === 'execution_interrupted' || "
        "t === 'execution_error')", timeout=30_000)
    kinds = await page.evaluate("() => window.__events.map(([t]) => t)")
    assert "execution_interrupted" in kinds and "execution_success" not in kinds, kinds
    record = await eventually_record(page, ui.url, prompt_id, "cancelled")
    job_file = next(ui.worker.glob(f"remote_exec/jobs/{record['remote_id']}/job.json"))
    await eventually(lambda: json.loads(job_file.read_text())["status"] == "cancelled",
                     "the worker records the job as cancelled")
    assert time.monotonic() - begun < 55, "the job ran to its end: the cancel did not reach it"
    await page.wait_for_function(ACTIVE_JOBS, arg=0, timeout=20_000)
    await screenshot(page, request, "slow_job_cancelled")


async def eventually_record(page: Any, url: str, prompt_id: str, status: str,
                            timeout: float = 15.0) -> dict[str, Any]:
    """The extension's record of a remote job, once it has `status`."""
    deadline = time.monotonic() + timeout
    while True:
        code, record = await remote_record(page, url, prompt_id)
        if code == 200 and record.get("status") == status:
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"remote job {prompt_id}: {code} {record}, not {status!r}")
        await page.wait_for_timeout(100)


async def test_dropped_remote_output_restores_the_graph(
        ui: Launched, page: Any, request: pytest.FixtureRequest) -> None:
    tag = uuid.uuid4().hex[:6]
    await load_api_workflow(page, invert(f"drop_{tag}", 0x336699), "drop.json")
    await page.evaluate(EDIT_GRAPH)
    original = await page.evaluate(GRAPH_SHAPE)
    assert any(node["type"] == "Note" for node in original["nodes"]), original
    outputs = {}
    for remote in (True, False):
        await set_remote(page, remote)
        run = await run_and_wait(page)
        status, _ = await remote_record(page, ui.url, run["prompt_id"])
        assert status == (200 if remote else 404), f"remote={remote} ran the other way"
        outputs[remote] = saved_image(run)

    restored = {}
    for remote, image in outputs.items():
        assert await page.evaluate(DROP_OUTPUT, image) > 0, f"nothing restored from {image}"
        restored[remote] = await page.evaluate(GRAPH_SHAPE)
        await screenshot(page, request, f"dropped_{'remote' if remote else 'local'}")
    assert restored[False] == original, (
        f"the local output does not restore the graph: {graph_diff(restored[False], original)}")
    assert restored[True] == restored[False], (
        "a remote output restores another graph than a local output: "
        f"{graph_diff(restored[True], restored[False])}")


def graph_diff(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """What differs between two GRAPH_SHAPE results, node by node."""
    out = []
    got_nodes = {node["id"]: node for node in got["nodes"]}
    for node in want["nodes"]:
        other = got_nodes.pop(node["id"], None)
        if other is None:
            out.append(f"node {node['id']} ({node['type']}) missing")
            continue
        out += [f"node {node['id']} {key}: {other[key]!r} != {node[key]!r}"
                for key in node if other.get(key) != node[key]]
    out += [f"extra node {node_id}" for node_id in got_nodes]
    if got["links"] != want["links"]:
        out.append(f"links {got['links']} != {want['links']}")
    return out
