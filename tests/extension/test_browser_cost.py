"""Acceptance in a real browser: a finished remote job shows its GPU seconds and cost.

The extension's config file prices the `local` backend's GPU seconds; a Run
ends with a toast naming them and the cost, the job's record
(`/remote_exec/jobs/{id}`) holds its timing and cost, and the session's total
(`/remote_exec/cost`, `/remote_exec/status`) adds it up. Without a price the
toast says so and gives the session's GPU seconds with no cost. One frontend is
enough (the one ComfyUI v0.26 pins, 1.45); the screenshots land in
test-artifacts/browser/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from comfy_remote_exec.discovery import ComfyInstall

from ..helpers import workflow
from .browser import load_api_workflow, needs_chromium, open_ui, run_and_wait, screenshot
from .conftest import TOY_BACKEND, Launched, launch, stop
from .frontends import pinned_version

pytestmark = [pytest.mark.comfyui, needs_chromium]
pytest.importorskip("playwright.async_api", reason="needs playwright")

# The toast holding `text` has finished fading in: it and its ancestors are opaque.
SETTLED = """(text) => {
  const el = [...document.querySelectorAll("body *")]
    .find((e) => e.childElementCount === 0 && e.textContent.trim() === text);
  for (let n = el; n; n = n.parentElement) {
    if (getComputedStyle(n).opacity !== "1" || n.getAnimations().length) return false;
  }
  return Boolean(el);
}"""
PRICE = 0.0005  # USD per GPU-second, the test's own


def needs_pinned_145(comfy_install: ComfyInstall) -> None:
    if not (pinned_version(comfy_install) or "").startswith("1.45."):
        pytest.skip("the cost toast is checked on frontend 1.45 (ComfyUI v0.26's)")


async def toast_text(page: Any, color: int) -> tuple[dict[str, Any], str]:
    """Run a tiny upscale from the page; its prompt and the cost toast's text."""
    flow = workflow("upscale_tiny")
    flow["1"]["inputs"].update(width=128, height=128, color=color)
    await load_api_workflow(page, flow, "cost.json")
    run = await run_and_wait(page)
    await page.get_by_text("Remote job done").first.wait_for(timeout=30_000)
    await page.wait_for_function(SETTLED, arg="Remote job done", timeout=10_000)
    return run, await page.get_by_text("GPU s (run").first.inner_text()


@pytest.fixture(scope="module")
def priced(comfy_install: ComfyInstall, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Launched]:
    needs_pinned_145(comfy_install)
    root = tmp_path_factory.mktemp("priced")
    config = Path(root) / "config.yaml"
    config.write_text(yaml.safe_dump({"prices": {"local": {
        "gpu_per_second": PRICE, "gpu": "test GPU"}}}), encoding="utf-8")
    config.chmod(0o600)
    handle = launch(comfy_install, root, env={**TOY_BACKEND,
                                              "REMOTE_EXEC_CONFIG": str(config)})
    yield handle
    stop(handle)


async def test_a_finished_job_shows_its_gpu_seconds_and_cost(
        priced: Launched, request: pytest.FixtureRequest) -> None:
    async with aiohttp.ClientSession() as session, open_ui(priced.url) as page:
        run, text = await toast_text(page, 0x993366)
        await screenshot(page, request, "cost_toast")
        async with session.get(f"{priced.url}/remote_exec/jobs/{run['prompt_id']}") as resp:
            job = await resp.json()
        async with session.get(f"{priced.url}/remote_exec/cost") as resp:
            total = await resp.json()
        async with session.get(f"{priced.url}/remote_exec/status") as resp:
            status = await resp.json()
    timing, cost = job["timing"], job["cost"]
    assert set(timing) == {"queue_wait_s", "cold_start_s", "execution_s"}
    assert timing["execution_s"] > 0
    assert cost["timing"] == timing and cost["gpu"] == "test GPU"
    assert cost["gpu_seconds"] == pytest.approx(sum(timing.values()), abs=0.002)
    assert cost["cost"] == pytest.approx(cost["gpu_seconds"] * PRICE, abs=1e-6)
    assert f"{cost['gpu_seconds']:.1f} GPU s" in text and "$" in text and "test GPU" in text
    assert total["jobs"] >= 1 and total["cost"] >= cost["cost"] - 1e-6
    assert status["cost"] == total


async def test_without_a_price_the_toast_says_so_and_totals_no_cost(
        comfy_install: ComfyInstall, launched: Launched, request: pytest.FixtureRequest
        ) -> None:
    """The session's ComfyUI has no price for its backend: the toast names the GPU
    seconds, says there is no price, and its session total carries no money."""
    needs_pinned_145(comfy_install)
    async with aiohttp.ClientSession() as session, open_ui(launched.url) as page:
        _, text = await toast_text(page, 0x336699)
        await screenshot(page, request, "cost_toast_unpriced")
        async with session.get(f"{launched.url}/remote_exec/cost") as resp:
            total = await resp.json()
    assert total["jobs"] >= 1 and total["unpriced"] == total["jobs"] and total["cost"] == 0
    assert "no price set for this backend" in text, text
    session = re.search(r"session: ([0-9.]+) GPU s$", text.strip())
    assert session is not None, text  # nothing after the GPU seconds: no money
    assert float(session.group(1)) == pytest.approx(total["gpu_seconds"], abs=0.051)
    assert "$" not in text, text
