"""Acceptance in a real browser: headless Chromium drives the stock ComfyUI frontend.

Turn the setting on, load a workflow, click Run: progress arrives and the
output image shows on the SaveImage node. Turn it off: the run is local.
Screenshots are kept under test-artifacts/ (and one of the settings for the
README).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..helpers import workflow
from .conftest import REPO, Launched

pytestmark = pytest.mark.comfyui
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"

playwright_api = pytest.importorskip("playwright.async_api", reason="needs playwright")

RECORD_EVENTS = """() => {
  window.__events = [];
  for (const type of ["execution_start", "progress", "executed", "execution_success",
                      "execution_error"]) {
    window.comfyAPI.api.api.addEventListener(type, (e) => window.__events.push([type, e.detail]));
  }
}"""


async def run_and_wait(page: Any) -> dict[str, Any]:
    await page.evaluate("() => { window.__events.length = 0 }")
    await page.get_by_role("button", name="Run", exact=True).first.click()
    await page.wait_for_function(
        "() => window.__events.some(([t]) => t === 'execution_success' || "
        "t === 'execution_error')", timeout=90_000)
    events = await page.evaluate("() => window.__events")
    kinds = [kind for kind, _ in events]
    assert "execution_success" in kinds, events
    start = next(detail for kind, detail in events if kind == "execution_start")
    return {"prompt_id": start["prompt_id"], "kinds": kinds}


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
async def test_run_button_remote_then_local(launched: Launched) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with aiohttp.ClientSession() as session:
        # A returning user: no first-run template dialog in the way.
        await session.post(f"{launched.url}/api/settings/Comfy.TutorialCompleted", json=True)
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                await page.goto(launched.url)
                await page.wait_for_function(
                    "() => window.app?.graph && document.querySelector('#remote-exec-status')",
                    timeout=60_000)
                await page.evaluate(RECORD_EVENTS)

                await page.evaluate("() => app.extensionManager.command.execute("
                                    "'Comfy.ShowSettingsDialog')")
                await page.get_by_text("Remote Exec", exact=True).first.click()
                await page.get_by_text("Run workflows on the remote GPU").wait_for()
                await page.screenshot(path=str(ARTIFACTS / "settings.png"))
                await page.keyboard.press("Escape")

                await page.evaluate("() => app.extensionManager.setting.set("
                                    "'RemoteExec.Enabled', true)")
                await page.wait_for_function(
                    "() => document.querySelector('#remote-exec-status')"
                    ".dataset.enabled === 'true'")
                flow = workflow("upscale_tiny")
                flow["1"]["inputs"].update(width=256, height=256, color=0x336699)
                await page.evaluate("(flow) => app.loadApiJson(flow, 'remote.json')", flow)
                remote = await run_and_wait(page)
                assert "progress" in remote["kinds"]
                await page.wait_for_function(
                    "() => (app.graph.getNodeById(4)?.imgs?.length ?? 0) > 0", timeout=30_000)
                src = await page.evaluate("() => app.graph.getNodeById(4).imgs[0].src")
                assert "filename=upscaled_" in src and "type=output" in src
                await page.screenshot(path=str(ARTIFACTS / "remote_run.png"))
                async with session.get(
                        f"{launched.url}/remote_exec/jobs/{remote['prompt_id']}") as resp:
                    assert resp.status == 200
                    assert (await resp.json())["status"] == "completed"

                # A model that exists only here, not on the remote: the toast says so.
                flow["2"]["inputs"]["model_name"] = "only-on-my-laptop.pth"
                await page.evaluate("(flow) => app.loadApiJson(flow, 'missing.json')", flow)
                await page.evaluate("() => { window.__events.length = 0 }")
                await page.get_by_role("button", name="Run", exact=True).first.click()
                toast = page.get_by_text("Remote run failed").first
                await toast.wait_for(timeout=60_000)
                # ComfyUI's own error dialog shows the remote's message too.
                await page.get_by_text("[remote] missing model").first.wait_for()
                await page.screenshot(path=str(ARTIFACTS / "remote_error.png"))
                await page.keyboard.press("Escape")
                await page.get_by_text("[remote] missing model").first.wait_for(
                    state="hidden")

                await page.evaluate("() => app.extensionManager.setting.set("
                                    "'RemoteExec.Enabled', false)")
                flow = workflow("invert")
                flow["1"]["inputs"]["color"] = 0x123123
                await page.evaluate("(flow) => app.loadApiJson(flow, 'local.json')", flow)
                local = await run_and_wait(page)
                async with session.get(
                        f"{launched.url}/remote_exec/jobs/{local['prompt_id']}") as resp:
                    assert resp.status == 404, "the run with the setting off went remote"
                await page.screenshot(path=str(ARTIFACTS / "local_run.png"))
            finally:
                await browser.close()
        saved = await (await session.get(f"{launched.url}/api/settings")).json()
        # The launched ComfyUI is shared: give the next tests remote mode back.
        await session.post(f"{launched.url}/api/settings/RemoteExec.Enabled", json=True)
    assert saved["RemoteExec.Enabled"] is False
    assert not [k for k in json.dumps(saved).lower().split('"') if "token" in k]
    assert Path(ARTIFACTS / "remote_run.png").stat().st_size > 0
