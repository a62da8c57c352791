"""Acceptance in a real browser: headless Chromium drives the stock ComfyUI frontend.

Turn the setting on, load a workflow, click Run: progress arrives and the
output image shows on the SaveImage node. A remote failure shows as a toast in
plain text, and in ComfyUI's own error report. Turn the setting off: the run is
local. On every frontend under test (see `ui`); screenshots are kept under
test-artifacts/browser/ (and one of the settings for the README).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from ..helpers import workflow
from .browser import (
    BADGE,
    click_run,
    load_api_workflow,
    needs_chromium,
    open_ui,
    run_and_wait,
    screenshot,
    set_remote,
)
from .conftest import Launched

pytestmark = [pytest.mark.comfyui, needs_chromium]
playwright_api = pytest.importorskip("playwright.async_api", reason="needs playwright")

ESC = "\x1b"
# The innerText of the smallest element holding all the given strings (a toast,
# whatever component library the frontend draws it with).
SMALLEST_WITH = """(needles) => {
  const found = [...document.querySelectorAll("body *")]
    .filter((el) => needles.every((n) => el.innerText?.includes(n)))
    .sort((a, b) => a.innerText.length - b.innerText.length);
  return found[0]?.innerText ?? null;
}"""


async def show_error_report(page: playwright_api.Page, text: str) -> None:
    """Wait for ComfyUI's report of a failed run to show `text`. Frontend 1.27 opens a
    dialog and 1.45 an overlay that hold the message; 1.58's overlay only counts the
    issues, and its "see errors" button opens the details in the properties panel."""
    shown = page.get_by_text(text).first
    see_errors = page.get_by_test_id("error-overlay-see-errors")
    await shown.or_(see_errors).first.wait_for()
    if not await shown.is_visible():
        await see_errors.click()
    await shown.wait_for()


async def close_error_report(page: playwright_api.Page, text: str) -> None:
    """Close the report: Escape closes 1.27's dialog, but not the newer error overlay,
    which has a Dismiss button, nor 1.58's details, which live in the properties panel."""
    shown = page.get_by_text(text).first
    await page.keyboard.press("Escape")
    dismiss = page.get_by_test_id("error-overlay-dismiss")
    if await shown.is_visible() and await dismiss.is_visible():
        await dismiss.click()
    panel = page.get_by_role("button", name="Toggle properties panel")
    if await shown.is_visible() and await panel.is_visible():
        await panel.click()
    await shown.wait_for(state="hidden")


async def test_run_button_remote_then_local(ui: Launched,
                                            request: pytest.FixtureRequest) -> None:
    async with aiohttp.ClientSession() as session, open_ui(ui.url) as page:
        try:
            saved = await run_remote_then_local(ui, page, session, request)
        finally:
            # The launched ComfyUI is shared: give the next tests remote mode back.
            await session.post(f"{ui.url}/api/settings/RemoteExec.Enabled", json=True)
    assert saved["RemoteExec.Enabled"] is False
    assert not [k for k in json.dumps(saved).lower().split('"') if "token" in k]


async def run_remote_then_local(ui: Launched, page: playwright_api.Page,
                                session: aiohttp.ClientSession,
                                request: pytest.FixtureRequest) -> dict[str, Any]:
    """The test's steps; answers the settings as saved at the end."""
    await page.evaluate("() => app.extensionManager.command.execute("
                        "'Comfy.ShowSettingsDialog')")
    await page.get_by_text("Remote Exec", exact=True).first.click()
    await page.get_by_text("Run workflows on the remote GPU").wait_for()
    await screenshot(page, request, "settings")
    await page.keyboard.press("Escape")
    # The Backend combo lists the server's registry, the tests' toy backend included.
    options = await page.evaluate(
        "() => app.extensions.find((e) => e.name === 'RemoteExec').settings"
        ".find((s) => s.id === 'RemoteExec.Backend').options")
    assert options == ["local", "http", "runpod", "modal", "toy"], options

    await set_remote(page, True)
    flow = workflow("upscale_tiny")
    flow["1"]["inputs"].update(width=256, height=256, color=0x336699)
    await load_api_workflow(page, flow, "remote.json")
    remote = await run_and_wait(page)
    assert "progress" in remote["kinds"]
    await page.wait_for_function(
        "() => (app.graph.getNodeById(4)?.imgs?.length ?? 0) > 0", timeout=30_000)
    src = await page.evaluate("() => app.graph.getNodeById(4).imgs[0].src")
    assert "filename=upscaled_" in src and "type=output" in src
    await screenshot(page, request, "remote_run")
    async with session.get(f"{ui.url}/remote_exec/jobs/{remote['prompt_id']}") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "completed"

    # A model neither here nor on the remote: preflight refuses it before any GPU time
    # with ComfyUI's own 400, so the frontend shows its own validation error naming it.
    flow["2"]["inputs"]["model_name"] = "only-on-my-laptop.pth"
    await load_api_workflow(page, flow, "missing.json")
    await click_run(page)
    # The frontend keeps ComfyUI's node errors (and outlines the node); 1.27 lists them in
    # a dialog, later frontends on the node and in their errors panel.
    await page.wait_for_function(
        "(name) => JSON.stringify(app.lastNodeErrors ?? {}).includes(name)",
        arg="only-on-my-laptop.pth", timeout=60_000)
    await page.wait_for_timeout(500)  # let the frontend draw what it shows for it
    await screenshot(page, request, "remote_error")
    errors = await page.evaluate("() => app.lastNodeErrors")
    assert list(errors) == ["2"], errors
    assert "tiny_compact_x2.safetensors" in json.dumps(errors), "the remote's list is named"
    await page.keyboard.press("Escape")

    # The worker strips escape codes from the log tails it keeps; the page strips them
    # from whatever reaches it, here a report coloured as ComfyUI 0.26 colours its log.
    await page.evaluate("""(detail) => window.comfyAPI.api.api.dispatchEvent(
                             new CustomEvent("remote_exec.error", {detail}))""",
                        {"message": f"{ESC}[31mcoloured failure{ESC}[0m",
                         "log_tail": [f"{ESC}[36m[ComfyUI]{ESC}[0m coloured tail line"]})
    coloured = page.get_by_text("coloured tail line").first
    await coloured.wait_for()
    toast_text = await page.evaluate(SMALLEST_WITH, ["coloured failure", "coloured tail line"])
    assert "[ComfyUI] coloured tail line" in toast_text and ESC not in toast_text, toast_text
    await screenshot(page, request, "toast_plain_text")

    await set_remote(page, False)
    flow = workflow("invert")
    flow["1"]["inputs"]["color"] = 0x123123
    await load_api_workflow(page, flow, "local.json")
    local = await run_and_wait(page)
    async with session.get(f"{ui.url}/remote_exec/jobs/{local['prompt_id']}") as resp:
        assert resp.status == 404, "the run with the setting off went remote"
    await screenshot(page, request, "local_run")
    assert await page.locator(BADGE).get_attribute("data-enabled") == "false"

    return dict(await (await session.get(f"{ui.url}/api/settings")).json())
