"""Playwright helpers for the browser tests: headless Chromium on the stock frontend.

`open_ui` opens a launched ComfyUI as a returning user and waits for the app
and the extension's badge; `run_and_wait` presses Run and waits for the end;
`screenshot` writes under test-artifacts/browser/<test params>/ (gitignored).
The badge checks (`badge_geometry`) measure the page itself: which visible
controls the badge's box intersects, and whether it sits on top of any.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts" / "browser"
BADGE = "#remote-exec-status"
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="needs chromium (apt-get install chromium)")

RECORD_EVENTS = """() => {
  window.__events = [];
  for (const type of ["execution_start", "progress", "executed", "execution_success",
                      "execution_error", "execution_interrupted"]) {
    window.comfyAPI.api.api.addEventListener(type, (e) => window.__events.push([type, e.detail]));
  }
}"""

# Every visible control, and how the badge's box relates to it. A control counts
# as covered when the badge's box intersects it, or when the element on top at
# the control's centre belongs to the badge.
BADGE_GEOMETRY = """(selector) => {
  const badge = document.querySelector(selector);
  const box = (el) => { const r = el.getBoundingClientRect();
                        return {x: r.left, y: r.top, w: r.width, h: r.height}; };
  const name = (el) => (el.getAttribute("aria-label") || el.title || el.textContent || "")
    .trim().slice(0, 40) || el.outerHTML.slice(0, 80);
  const b = box(badge);
  const controls = [...document.querySelectorAll(
      "button, input, select, textarea, a[href], [role=button], [role=tab], [role=menuitem]")]
    .filter((el) => el !== badge && !badge.contains(el) && !el.contains(badge))
    .filter((el) => { const r = box(el); return r.w > 0 && r.h > 0 &&
                      el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}); });
  const overlapping = [], covered = [];
  for (const el of controls) {
    const r = box(el);
    const w = Math.min(r.x + r.w, b.x + b.w) - Math.max(r.x, b.x);
    const h = Math.min(r.y + r.h, b.y + b.h) - Math.max(r.y, b.y);
    if (w > 0.5 && h > 0.5) overlapping.push([name(el), r]);
    const top = document.elementFromPoint(r.x + r.w / 2, r.y + r.h / 2);
    if (top && badge.contains(top)) covered.push([name(el), r]);
  }
  const centre = document.elementFromPoint(b.x + b.w / 2, b.y + b.h / 2);
  const near = controls.filter((el) => { const r = box(el);
                                        return r.y < b.y + b.h + 40 && r.y + r.h > b.y - 40; });
  return {badge: b, text: badge.textContent.trim(), state: badge.dataset.state,
          enabled: badge.dataset.enabled, on_top: Boolean(centre && badge.contains(centre)),
          at_centre: centre ? centre.outerHTML.slice(0, 200) : null,
          controls: controls.length, neighbours: near.map(name), overlapping, covered};
}"""


# True once the badge is the topmost element at its centre (transient masks gone).
BADGE_ON_TOP = """(selector) => {
  const badge = document.querySelector(selector);
  const r = badge?.getBoundingClientRect();
  const top = r && document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return Boolean(top && badge.contains(top));
}"""


@contextlib.asynccontextmanager
async def open_ui(url: str, width: int = 1400, height: int = 900) -> AsyncIterator[Any]:
    """A page on `url` as a returning user (no template dialog), with the app loaded,
    the badge placed and `window.__events` recording execution events."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            await page.request.post(f"{url}/api/settings/Comfy.TutorialCompleted",
                                    data="true", headers={"Content-Type": "application/json"})
            await page.goto(url)
            # Newer frontends remove their splash screen once loading is done.
            await page.wait_for_function(
                f"() => window.app?.graph && document.querySelector('{BADGE}[data-state]') "
                f"&& !document.getElementById('splash-loader')", timeout=60_000)
            await page.evaluate(RECORD_EVENTS)
            yield page
        finally:
            await browser.close()


async def frontend_version(page: Any) -> tuple[int, ...]:
    version = await page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? '0'")
    return tuple(int(part) for part in str(version).split(".") if part.isdigit())


async def set_remote(page: Any, enabled: bool) -> None:
    """Flip RemoteExec.Enabled as the settings dialog does, and wait for the badge."""
    await page.evaluate(f"() => app.extensionManager.setting.set('RemoteExec.Enabled', "
                        f"{json.dumps(enabled)})")
    await page.wait_for_function(
        f"() => document.querySelector('{BADGE}')?.dataset.enabled === '{json.dumps(enabled)}'")


async def load_api_workflow(page: Any, flow: dict[str, Any], name: str) -> None:
    await page.evaluate("([flow, name]) => app.loadApiJson(flow, name)", [flow, name])


async def click_run(page: Any) -> None:
    await page.evaluate("() => { window.__events.length = 0 }")
    await page.get_by_role("button", name="Run", exact=True).first.click()


async def post_prompt(page: Any, flow: dict[str, Any]) -> str:
    """POST an API-format prompt on this page's own client id, as an API client sharing
    the page's connection would; the page gets its events. Answers the prompt_id."""
    await page.evaluate("() => { window.__events.length = 0 }")
    return str(await page.evaluate("""async (flow) => {
      const api = window.comfyAPI.api.api;
      const resp = await api.fetchApi("/prompt", {method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({prompt: flow, client_id: api.clientId})});
      const body = await resp.json();
      if (!resp.ok) throw new Error(`POST /prompt: ${resp.status} ${JSON.stringify(body)}`);
      return body.prompt_id;
    }""", flow))


async def started(page: Any, timeout: float = 60_000) -> str:
    """The prompt_id of the run that `click_run` started, once it started."""
    await page.wait_for_function(
        "() => window.__events.some(([t]) => t === 'execution_start')", timeout=timeout)
    return str(await page.evaluate(
        "() => window.__events.find(([t]) => t === 'execution_start')[1].prompt_id"))


async def run_and_wait(page: Any, timeout: float = 90_000) -> dict[str, Any]:
    """Press Run and wait for its end: `prompt_id`, event `kinds` and `executed` details."""
    await click_run(page)
    await page.wait_for_function(
        "() => window.__events.some(([t]) => t === 'execution_success' || "
        "t === 'execution_error')", timeout=timeout)
    events = await page.evaluate("() => window.__events")
    kinds = [kind for kind, _ in events]
    assert "execution_success" in kinds, events
    start = next(detail for kind, detail in events if kind == "execution_start")
    return {"prompt_id": start["prompt_id"], "kinds": kinds,
            "executed": [detail for kind, detail in events if kind == "executed"]}


def artifact_dir(request: pytest.FixtureRequest) -> Path:
    """test-artifacts/browser/<params of this test>, e.g. comfy0.26.0-1.58.1."""
    callspec = getattr(request.node, "callspec", None)
    folder = ARTIFACTS / (callspec.id if callspec else "default")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def screenshot(page: Any, request: pytest.FixtureRequest, name: str,
                     **options: Any) -> Path:
    path = artifact_dir(request) / f"{name}.png"
    await page.screenshot(path=str(path), **options)
    return path
