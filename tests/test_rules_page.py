"""The page's zone and line editor and its counts, in a real headless Chromium against a real gateway.

An administrator opens a camera showing the street clip, draws a line (two clicks) and a zone (its corners,
closed on the first), names them, drags an end of the line, and saves: the camera API then holds them. A
rule the API refuses (a name used twice) is not saved and the API's reason is shown. The counts of the
camera and of its node are shown as the API answers them; a viewer sees the rules drawn but no tools.
The editor's screenshot is docs/rules-editor.png (artifacts/screenshots/rules-editor.png).
"""

from __future__ import annotations

import time

import pytest

from gateway import keys
from tests.gateway_fixtures import TOKEN
from tests.test_access import new_token
from tests.test_counts import CAM, CAM_NODE, DOWN, UP, Walks, _publish
from tests.test_web import LIVE_PICTURE, WAIT_MS, _shot, _watched_page, browser  # noqa: F401  (browser: fixture)

pytestmark = [pytest.mark.browser]

TOL = 0.01  # a click lands within a pixel or two of where it was aimed: 1 % of the picture


async def _click_at(page, box: dict, x: float, y: float) -> None:
    await page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])


def _near(got: list[float], want: tuple[float, float]) -> bool:
    return abs(got[0] - want[0]) <= TOL and abs(got[1] - want[1]) <= TOL


async def test_an_admin_draws_edits_and_saves_a_line_and_a_zone_and_sees_the_counts(
        make_gateway, redis_url, street_clip, browser):  # noqa: F811
    async with make_gateway(redis_url, media_dirs=[street_clip.parent]) as gw:
        cam = await gw.add_camera(id=CAM, name="Minzu Ave bridge", node=CAM_NODE, url=f"file:{street_clip.name}",
                                  analytics={"fps": 5})
        # Counts to show: two walkers' rule hits in the last hour (tests/test_counts.py).
        m = int(time.time() // 60)
        w = Walks()
        await _publish(gw, w.walk(1, DOWN, (m - 30) * 60 + 1) + w.walk(2, DOWN + UP, (m - 20) * 60 + 1)
                       + w.end(1, (m - 10) * 60 + 1))
        ctx, page, errors = await _watched_page(browser)
        await page.goto(gw.url("/"))
        await page.fill("#token-input", TOKEN)
        await page.click("#login-button")
        await page.wait_for_selector("#app", state="visible")
        # The node's counts over the wall.
        await page.wait_for_selector("#node-counts[data-in='2'][data-out='1'][data-enter='2']", timeout=WAIT_MS)

        await page.goto(gw.url(f"/#/camera/{cam['id']}"))
        await page.wait_for_function(LIVE_PICTURE, timeout=WAIT_MS)
        assert await page.locator("#rules-list .rule").count() == 0

        # A line: A then B, left to right across the road; "in" is downwards.
        await page.click("#rules-add-line")
        layer = page.locator("#rules-layer")
        box = await layer.bounding_box()
        assert box and box["width"] > 400
        await _click_at(page, box, 0.1, 0.7)
        await _click_at(page, box, 0.9, 0.7)
        # attached, not "visible": a level line's box has no height
        await page.wait_for_selector("#rules-layer line.tripwire", state="attached")
        assert await page.text_content("#rules-layer .rule-dir") == "in"
        await page.fill("#rules-list .rule[data-kind='line'] .rule-name-input", "bridge")
        # A zone: four corners, closed by clicking the first again.
        await page.click("#rules-add-zone")
        await page.wait_for_selector("#rules-finish", state="visible")
        corners = [(0.3, 0.8), (0.7, 0.8), (0.7, 0.97), (0.3, 0.97)]
        for x, y in corners:
            await _click_at(page, box, x, y)
        await _click_at(page, box, *corners[0])
        await page.wait_for_selector("#rules-layer polygon.zone")
        await page.fill("#rules-list .rule[data-kind='zone'] .rule-name-input", "gate")
        await page.fill("#rules-list .rule[data-kind='zone'] .rule-loiter", "5")
        # Edit: drag the line's end B up.
        handle = await page.locator("#rules-layer .handle[data-kind='line'][data-pt='b']").bounding_box()
        await page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        await page.mouse.down()
        await page.mouse.move(box["x"] + 0.9 * box["width"], box["y"] + 0.6 * box["height"], steps=5)
        await page.mouse.up()
        await page.click("#rules-list .rule[data-kind='line']")
        await page.click("#rules-save")
        await page.wait_for_selector("#rules-message[data-kind='ok']", timeout=WAIT_MS)

        a = (await gw.camera(cam["id"]))["analytics"]
        assert [ln["name"] for ln in a["lines"]] == ["bridge"] and [z["name"] for z in a["zones"]] == ["gate"]
        line, zone = a["lines"][0], a["zones"][0]
        assert _near(line["a"], (0.1, 0.7)) and _near(line["b"], (0.9, 0.6)), line
        assert len(zone["polygon"]) == 4 and all(_near(p, c) for p, c in zip(zone["polygon"], corners)), zone
        assert zone["loiter_s"] == 5 and a["fps"] == 5  # the other settings kept
        # The running analysis took them (its rule engine is rebuilt on the change).
        assert [ln.name for ln in gw.app[keys.SUPERVISOR].workers[cam["id"]].camera.analytics.lines] == ["bridge"]

        # The counts of this camera's rules: the API's numbers, in the table.
        body = (await gw.request("GET", f"/api/v1/cameras/{cam['id']}/counts?bucket=300"))[1]
        assert body["totals"]["lines"]["bridge"]["in"] == {"person": 2}
        await page.wait_for_selector("#cam-counts tr[data-line='bridge'] td.in:text-is('2')", timeout=WAIT_MS)
        assert await page.inner_text("#cam-counts tr[data-line='bridge'] td.out") == "1"
        assert await page.inner_text("#cam-counts tr[data-zone='gate'] td.enter") == "2"
        assert await page.inner_text("#cam-counts tr[data-zone='gate'] td.max") == "2"
        assert await page.inner_text("#cam-counts tr[data-zone='gate'] td.now") == "0"
        await page.wait_for_timeout(300)  # let the live view paint a frame under the rules
        await _shot(page, "rules-editor.png")

        # A name used twice is refused by the API, which says why; nothing changes.
        await page.fill("#rules-list .rule[data-kind='zone'] .rule-name-input", "bridge")
        await page.click("#rules-save")
        await page.wait_for_selector("#rules-message[data-kind='error']", timeout=WAIT_MS)
        assert "unique" in await page.inner_text("#rules-message")
        assert [z["name"] for z in (await gw.camera(cam["id"]))["analytics"]["zones"]] == ["gate"]
        assert errors == []
        await ctx.close()

        # A viewer sees the rules over the picture, and no tools.
        viewer = (await new_token(gw, "viewer", "viewer", CAM_NODE))["token"]
        ctx, page, errors = await _watched_page(browser)
        await page.goto(gw.url("/"))
        await page.fill("#token-input", viewer)
        await page.click("#login-button")
        await page.wait_for_selector("#app", state="visible")
        await page.goto(gw.url(f"/#/camera/{cam['id']}"))
        await page.wait_for_selector("#rules-layer line.tripwire[data-name='bridge']", state="attached",
                                     timeout=WAIT_MS)
        await page.wait_for_selector("#rules-layer polygon.zone[data-name='gate']")
        assert await page.locator("#rules-tools").is_hidden()
        assert await page.locator("#rules-list .rule-name-input").count() == 0
        assert errors == []
        await ctx.close()
