"""The status badge covers nothing, on every frontend under test.

Frontends 1.45 and later lay it out as an action-bar button (`actionBarButtons`),
1.27 in the top menu's legacy button slot. Measured in the page: its box meets no
other visible control, nothing it draws sits on top of one, it is itself on top
(so it can be clicked), and a click opens the settings. A narrower window is
checked too, where the top bar has the least room.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from .browser import (
    BADGE,
    BADGE_GEOMETRY,
    BADGE_ON_TOP,
    needs_chromium,
    open_ui,
    screenshot,
    set_remote,
)
from .conftest import Launched

pytestmark = [pytest.mark.comfyui, needs_chromium]
playwright_api = pytest.importorskip("playwright.async_api", reason="needs playwright")


def describe(geometry: dict[str, Any]) -> str:
    return (f"badge {geometry['text']!r} at {geometry['badge']}, near "
            f"{geometry['neighbours']}: overlaps {geometry['overlapping']}, "
            f"on top of {geometry['covered']}; at its centre: {geometry['at_centre']}")


async def test_badge_covers_no_control(ui: Launched, request: pytest.FixtureRequest) -> None:
    async with open_ui(ui.url) as page:
        await set_remote(page, True)
        await page.wait_for_function(f"() => document.querySelector('{BADGE}')"
                                     ".dataset.state === 'ok'", timeout=30_000)
        for width, height in [(1400, 900), (1024, 768)]:
            await page.set_viewport_size({"width": width, "height": height})
            await page.wait_for_function(
                f"(w) => window.innerWidth === w && "
                f"document.querySelector('{BADGE}').getBoundingClientRect().right <= w", arg=width)
            with contextlib.suppress(playwright_api.TimeoutError):  # then the asserts say why
                await page.wait_for_function(BADGE_ON_TOP, arg=BADGE, timeout=15_000)
            geometry = await page.evaluate(BADGE_GEOMETRY, BADGE)
            await screenshot(page, request, f"badge-{width}",
                             clip={"x": 0, "y": 0, "width": width, "height": 110})
            assert geometry["controls"] > 5, "the page shows too few controls to measure"
            assert geometry["text"] == "Remote: local", describe(geometry)
            assert (geometry["state"], geometry["enabled"]) == ("ok", "true")
            assert geometry["on_top"], "something covers the badge: " + describe(geometry)
            assert not geometry["overlapping"], describe(geometry)
            assert not geometry["covered"], describe(geometry)

        await set_remote(page, False)
        assert await page.locator(BADGE).text_content() == "Remote: off"
        assert await page.locator(BADGE).get_attribute("data-state") == "off"
        await set_remote(page, True)

        await page.locator(BADGE).click()
        await page.get_by_text("Remote Exec", exact=True).first.wait_for()
        await screenshot(page, request, "badge-click-settings")
