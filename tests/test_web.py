"""The control-room page in a real headless Chromium against a gateway with a real RTSP camera and the real model.

A person at the control room signs in with a token, sees the camera online in the node tree and
the camera wall, sees a `car` arrive in the live feed with its snapshot, opens the camera and
watches its live view move, changes a setting (and sees the API's refusal of a bad one), keeps
every event across a dropped WebSocket, and switches the page to Chinese. Each step leaves a
screenshot in artifacts/screenshots/ (CI keeps the folder).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from gateway import keys
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN
from tests.servers import free_port, missing

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# DESIGN §8: Debian's chromium driven by PyPI's playwright; `playwright install` is never run.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# The camera page's live picture is on: the camera's own stream in the <video>, or its MJPEG fallback.
LIVE_PICTURE = """() => { const v = document.querySelector('#live-video'), i = document.querySelector('#live-view');
  return (!v.hidden && v.videoWidth > 0 && v.currentTime > 0) || (!i.hidden && i.naturalWidth > 0); }"""
WAIT_MS = 90_000  # generous: a loaded 2-core machine runs the model, the RTSP server and the browser at once


@pytest.fixture
async def browser():
    """Headless Debian chromium through Playwright; skipped with the reason (failed in CI) when either is missing."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        missing(f"no browser at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def _png(data: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img.astype(int)


async def _shot(page, name: str, **kw) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    await page.screenshot(path=str(path), animations="disabled", **kw)
    return path


async def _natural_width(page, selector: str) -> int:
    return await page.eval_on_selector(selector, "el => el.naturalWidth")


# The clip is 16 s long: the RTSP server hangs up at its end and the gateway reconnects, so a camera
# is sometimes briefly offline; a badge must name whichever state it shows.
STATE_WORDS = {"en": {"online": "Online", "offline": "Offline", "connecting": "Connecting"},
               "zh": {"online": "在线", "offline": "离线", "connecting": "连接中"}}


async def _says_its_state(page, selector: str, lang: str) -> None:
    state, text = await page.eval_on_selector(selector, "el => [el.dataset.state, el.textContent]")
    assert text == STATE_WORDS[lang][state], (selector, state, text)


async def until_dom(page, predicate: str, arg) -> None:
    """Wait for a page predicate (function form: the page's CSP forbids evaluating strings)."""
    await page.wait_for_function(predicate, arg=arg, timeout=WAIT_MS)


async def _ids(page, selector: str) -> list[str]:
    return await page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.eventId)")


async def _watched_page(browser):
    """A new English page whose script errors and CSP violations are collected in the list returned with it."""
    ctx = await browser.new_context(viewport={"width": 1600, "height": 1000}, locale="en-US")
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}")
            if m.type == "error" and "Content Security Policy" in m.text else None)
    return ctx, page, errors


@pytest.mark.rtsp
@pytest.mark.model
async def test_control_room_page(make_gateway, redis_url, rtsp_street, model_path, browser):
    async with make_gateway(redis_url, model=model_path) as gw:
        cam = await gw.add_camera(name="Minzu Ave east gate", node="450102001", url=rtsp_street.url("street"),
                                  analytics={"fps": 5, "min_score": 0.45})
        cid = cam["id"]
        # Two more, for a wall that looks like one: the same street from a second connection, and a
        # village camera whose address answers nothing (offline).
        other = await gw.add_camera(name="Xiuling Rd crossing", node="450102002", url=rtsp_street.url("street"),
                                    analytics={"fps": 2, "min_score": 0.45})
        dead = await gw.add_camera(name="Village gate", node="450102002001",
                                   url=f"rtsp://127.0.0.1:{free_port()}/gate")
        ctx, page, errors = await _watched_page(browser)
        # Every events WebSocket the page opens goes through here, so the test can cut one and see what
        # each carried.
        sockets: list = []  # (page side, server side, event ids forwarded to the page)

        def route_ws(ws) -> None:
            server = ws.connect_to_server()
            ids: list[str] = []

            def forward(msg) -> None:
                ids.append(json.loads(msg)["id"])
                ws.send(msg)

            server.on_message(forward)
            sockets.append((ws, server, ids))

        await page.route_web_socket(re.compile(r"/api/v1/events/ws"), route_ws)

        # 1. Sign in.
        await page.goto(gw.url("/"))
        await page.wait_for_selector("#login-form", state="visible")
        assert await page.inner_text("#login-button") == "Sign in"
        await _shot(page, "01-sign-in.png")
        await page.fill("#token-input", "not-the-token")
        await page.click("#login-button")
        await page.wait_for_selector("#login-error:has-text('not valid')")
        await page.fill("#token-input", TOKEN)
        await page.click("#login-button")
        await page.wait_for_selector("#app", state="visible")
        assert await page.evaluate("sessionStorage.getItem('se.token')") == TOKEN

        # 2. The camera online in the wall and in the node tree, with a thumbnail of its latest frame.
        card = f"#camera-grid .card[data-camera-id='{cid}']"
        await page.wait_for_selector(f"{card}[data-state='online']", timeout=WAIT_MS)
        # Function form: the page's Content-Security-Policy forbids evaluating strings.
        await page.wait_for_function("s => document.querySelector(s).naturalWidth > 0", arg=f"{card} .thumb-img",
                                     timeout=WAIT_MS)
        assert await page.inner_text(f"{card} .name") == "Minzu Ave east gate"
        await page.wait_for_selector("#node-tree .node[data-node='450102001'] .node-count:has-text('1/1 online')",
                                     timeout=WAIT_MS)
        await page.wait_for_selector("#node-tree .node[data-node='450102'] .node-count:has-text('2/3 online')",
                                     timeout=WAIT_MS)
        await page.wait_for_selector("#node-tree .node[data-node='450102002001']")
        await page.wait_for_selector("#node-tree .node[data-node='450102'] .node-rates:has-text('66.7%')",
                                     timeout=WAIT_MS)
        await page.wait_for_selector(f"#camera-grid .card[data-camera-id='{dead['id']}'][data-state='offline']",
                                     timeout=WAIT_MS)
        # Filter by state, search by name or id, pick a node.
        await page.select_option("#camera-filter-state", "offline")
        await page.wait_for_function("id => [...document.querySelectorAll('#camera-grid .card')]"
                                     ".map(c => c.dataset.cameraId).join() === id", arg=dead["id"])
        await page.select_option("#camera-filter-state", "")
        await page.fill("#camera-search", "crossing")
        await page.wait_for_function("id => [...document.querySelectorAll('#camera-grid .card')]"
                                     ".map(c => c.dataset.cameraId).join() === id", arg=other["id"])
        await page.fill("#camera-search", cid[-6:])
        await page.wait_for_function("id => [...document.querySelectorAll('#camera-grid .card')]"
                                     ".map(c => c.dataset.cameraId).join() === id", arg=cid)
        await page.fill("#camera-search", "")
        await page.click("#node-tree .node[data-node='450102002']")
        await page.wait_for_function("ids => [...document.querySelectorAll('#camera-grid .card')]"
                                     ".map(c => c.dataset.cameraId).sort().join() === ids",
                                     arg=",".join(sorted([other["id"], dead["id"]])))
        await page.click("#node-tree .node[data-node='450102']")
        await page.wait_for_selector(card)
        await page.wait_for_selector("#ws-status[data-state='live']", timeout=WAIT_MS)
        await _shot(page, "02-camera-online.png")

        # 3. A car arrives in the live feed with its snapshot.
        car = f"#event-feed .event[data-type='detection'][data-label='car'][data-camera-id='{cid}']"
        await page.wait_for_selector(car, timeout=WAIT_MS)
        await until_dom(page, "s => [...document.querySelectorAll(s)].some(i => i.complete && i.naturalWidth > 0)",
                        f"{car} img.event-thumb")
        assert "car" in await page.inner_text(f"{car} .event-label")
        assert await page.inner_text(f"{car} .cam-link") == "Minzu Ave east gate"
        score = float(await page.inner_text(f"{car} .score"))
        assert 0.45 <= score <= 1
        await _shot(page, "03-car-event.png")

        # 4. The feed filter shows only what is asked for.
        await page.select_option("#feed-filter-type", "status")
        await page.wait_for_function("() => [...document.querySelectorAll('#event-feed .event')]"
                                     ".every(e => e.dataset.type === 'status')")
        assert await page.locator("#event-feed .event[data-type='status']").count() >= 1
        await page.select_option("#feed-filter-type", "")

        # 5. A dropped WebSocket resumes after the last event seen: no gap, no repeat.
        await page.wait_for_function("() => document.querySelectorAll('#event-feed .event').length >= 3",
                                     timeout=WAIT_MS)
        opened = len(sockets)
        _, server, delivered = sockets[-1]
        deadline = time.monotonic() + 60
        while len(delivered) < 2:  # events have come over this socket (not only from the history)
            assert time.monotonic() < deadline, "no live events over the WebSocket"
            await asyncio.sleep(0.2)
        await server.close(code=4000, reason="test: connection dropped")  # the page's socket closes with it
        deadline = time.monotonic() + 60
        while len(sockets) == opened:
            assert time.monotonic() < deadline, "the page did not reconnect"
            await asyncio.sleep(0.2)
        resumed_from = re.search(r"since=([^&]+)", sockets[-1][0].url).group(1)
        assert resumed_from == delivered[-1]  # the page asks for what follows the last event it got
        await page.wait_for_selector("#ws-status[data-state='live']", timeout=WAIT_MS)
        await until_dom(page, "n => document.querySelectorAll('#event-feed .event').length >= n",
                        len(await _ids(page, "#event-feed .event")) + 3)
        resent = sockets[-1][2]
        assert resent and not set(resent) & set(delivered), "the server sent an event again after the resume"
        shown = await _ids(page, "#event-feed .event")
        assert len(shown) == len(set(shown)), "an event shown twice"
        assert resumed_from in shown
        status, hist = await gw.request("GET", "/api/v1/events?limit=1000")
        assert status == 200
        stored = [e["id"] for e in hist["events"]]  # newest first, like the feed
        top = stored.index(shown[0])
        # Contiguous with the store across the drop: nothing missed, nothing out of order.
        assert shown == stored[top:top + len(shown)], "the feed misses or reorders stored events"

        # 6. The camera page: live view moving, recent events, health history, settings.
        await page.click(f"{card} .thumb")
        await page.wait_for_selector("#camera-page", state="visible")
        assert page.url.endswith(f"#/camera/{cid}")
        await page.wait_for_function(LIVE_PICTURE, timeout=WAIT_MS)
        assert gw.app[keys.LIVE].viewers == 1
        assert await page.is_visible(".live-tag")
        first = _png(await page.locator("#live-frame").screenshot())
        moved = 0.0
        deadline = time.monotonic() + 30
        while moved < 1.0:
            assert time.monotonic() < deadline, f"live view not moving (mean difference {moved:.2f})"
            await asyncio.sleep(1.0)
            moved = float(np.abs(_png(await page.locator("#live-frame").screenshot()) - first).mean())
        await page.wait_for_selector("#camera-events .event[data-label='car']", timeout=WAIT_MS)
        await page.wait_for_selector("#camera-health .event[data-type='status'] .badge[data-state='online']",
                                     timeout=WAIT_MS)
        await _says_its_state(page, "#cam-state", "en")
        await page.wait_for_selector("#fact-fps")
        assert await page.inner_text("#fact-gateway") == "test-gw"  # the gateway of the tier that runs it
        await _shot(page, "04-camera-live.png")
        await _shot(page, "control-room.png")  # the README's picture: tree, live view with boxes, feed

        await page.fill("#set-name", "Minzu Ave east gate (north)")
        await page.fill("#set-min-score", "0.5")
        await page.click("#settings-save")
        await page.wait_for_selector("#settings-message[data-kind='ok']")
        stored_cam = await gw.camera(cid)
        assert stored_cam["name"] == "Minzu Ave east gate (north)" and stored_cam["analytics"]["min_score"] == 0.5
        assert await page.inner_text("#cam-name") == "Minzu Ave east gate (north)"
        await page.fill("#set-fps", "500")
        await page.click("#settings-save")
        await page.wait_for_selector("#settings-message[data-kind='error']")
        message = await page.inner_text("#settings-message")
        assert "analytics.fps" in message and "30" in message, message  # the API's own words
        assert (await gw.camera(cid))["analytics"]["fps"] == 5
        await _shot(page, "05-settings-refused.png")

        # 7. Chinese, everywhere the page speaks.
        await page.click("#lang-switch")
        await page.wait_for_selector("#feed-title:has-text('实时事件')")
        await _says_its_state(page, "#cam-state", "zh")
        assert await page.inner_text("#back-button") == "← 全部摄像机"
        assert "汽车" in await page.inner_text("#camera-events")
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        await _shot(page, "06-camera-zh.png")
        await page.click("#back-button")
        await page.wait_for_selector("#overview", state="visible")
        # Leaving the camera page closes its live view on the gateway too.
        deadline = time.monotonic() + 20
        while gw.app[keys.LIVE].viewers:
            assert time.monotonic() < deadline, "the live view stayed open after leaving the camera page"
            await asyncio.sleep(0.2)
        await _says_its_state(page, f"{card} .badge", "zh")
        assert await page.inner_text("#tree-title") == "辖区"
        await _shot(page, "07-overview-zh.png")
        # The choice outlives a reload; the session's token too.
        await page.reload()
        await page.wait_for_selector("#app", state="visible")
        await page.wait_for_selector("#feed-title:has-text('实时事件')")

        assert not errors, errors
        await ctx.close()


async def test_page_follows_the_browser_language_and_refuses_a_bad_token(make_gateway, redis_url, browser):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        ctx = await browser.new_context(locale="zh-CN")
        page = await ctx.new_page()
        await page.goto(gw.url("/"))
        await page.wait_for_selector("#login-form", state="visible")
        assert await page.inner_text("#login-button") == "登录"
        await page.fill("#token-input", "wrong")
        await page.click("#login-button")
        await page.wait_for_selector("#login-error:has-text('令牌无效')")
        await page.fill("#token-input", TOKEN)
        await page.click("#login-button")
        await page.wait_for_selector("#app", state="visible")
        # No cameras yet: the tree still shows the tier's node, the wall says so.
        await page.wait_for_selector("#node-tree .node[data-node='450102']")
        await page.wait_for_selector("#camera-grid:has-text('此处没有摄像机')")
        await page.click("#logout-button")
        await page.wait_for_selector("#login-form", state="visible")
        assert await page.evaluate("sessionStorage.getItem('se.token')") is None

        # An operator watches but cannot change settings; the page says so instead of failing on save.
        cam = await gw.add_camera(name="北门", node="450102001", url="file:moving_objects.mp4")
        status, op = await gw.request("POST", "/api/v1/tokens", json={"name": "值班员 1", "role": "operator",
                                                                       "node": "450102"})
        assert status == 201, op
        await page.fill("#token-input", op["token"])
        await page.click("#login-button")
        await page.wait_for_selector(f"#camera-grid .card[data-camera-id='{cam['id']}'][data-state='online']",
                                     timeout=WAIT_MS)
        assert "值班员" in await page.inner_text("#whoami")
        await page.click(f"#camera-grid .card[data-camera-id='{cam['id']}'] .thumb")
        await until_dom(page, LIVE_PICTURE, None)
        assert await page.is_disabled("#set-name")
        assert await page.is_visible("#settings-readonly")
        assert "仅管理员" in await page.inner_text("#settings-readonly")
        await _shot(page, "08-operator-zh.png")

        # A viewer sees the catalog only. The page says what its role cannot see, and asks for none of
        # it: each refused request would be an access.denied entry in the audit trail.
        await page.click("#logout-button")
        await page.goto(gw.url("/"))  # the wall, not the camera page the operator left open
        await page.wait_for_selector("#login-form", state="visible")
        status, viewer = await gw.request("POST", "/api/v1/tokens", json={"name": "观察员", "role": "viewer",
                                                                           "node": "450102"})
        assert status == 201, viewer
        refused: list[str] = []
        page.on("response", lambda r: refused.append(r.url.split("?")[0]) if r.status == 403 else None)
        await page.fill("#token-input", viewer["token"])
        await page.click("#login-button")
        await page.wait_for_selector(f"#camera-grid .card[data-camera-id='{cam['id']}'][data-state='online']",
                                     timeout=WAIT_MS)
        await page.wait_for_selector("#feed-error:has-text('无权查看')")
        assert await page.get_attribute("#ws-status", "data-state") == "denied"
        await page.click(f"#camera-grid .card[data-camera-id='{cam['id']}'] .thumb")
        await page.wait_for_selector("#live-overlay:has-text('无权查看')")
        assert not await page.is_visible(".live-tag")  # no picture: the LIVE tag is not shown
        await page.wait_for_selector("#camera-events:has-text('无权查看')")
        await page.wait_for_selector("#camera-health:has-text('无权查看')")
        await page.click("#lang-switch")
        await page.wait_for_selector("#camera-health:has-text('cannot see this')")
        await page.wait_for_selector("#live-overlay:has-text('cannot see this')")
        await page.wait_for_selector("#feed-error:has-text('cannot see this')")
        assert await page.inner_text("#event-feed") == ""  # not "no events yet": it was never asked
        await asyncio.sleep(6)  # longer than the live view's retry and the thumbnails' refresh
        assert refused == []
        _, trail = await gw.request("GET", "/api/v1/audit?action=access.denied")
        assert trail["entries"] == []
        await _shot(page, "09-viewer.png")
        await ctx.close()


@pytest.mark.model
async def test_overload_is_shown_on_the_wall_the_camera_page_and_the_header(make_gateway, redis_url, model_path,
                                                                            street_clip, browser):
    # Real overload, as in tests/test_overload.py: four cameras asking 25 frames a second each of one
    # detector session (about 60 a second), so every camera is shed.
    async with make_gateway(redis_url, model=model_path, media_dirs=[street_clip.parent],
                            detector={"workers": 1}) as gw:
        ids = []
        for i in range(4):
            cam = await gw.add_camera(name=f"Street {i + 1}", node="450102001", url=f"file:{street_clip.name}",
                                      analytics={"fps": 25})
            ids.append(cam["id"])

        async def overloaded() -> bool:
            # In the steady state: each camera analysed a while (the model's first, slow runs are behind).
            for cid in ids:
                if (await gw.camera(cid))["status"]["frames_analyzed"] < 20:
                    return False
            _, health = await gw.request("GET", "/healthz")
            return health["analysis"]["overloaded"] and health["analysis"]["asked_fps"] == 100

        deadline = time.monotonic() + 60
        while not await overloaded():
            assert time.monotonic() < deadline, "the gateway never became overloaded"
            await asyncio.sleep(0.5)

        ctx, page, errors = await _watched_page(browser)
        await page.goto(gw.url("/"))
        await page.fill("#token-input", TOKEN)
        await page.click("#login-button")
        await page.wait_for_selector("#app", state="visible")

        # The header: asked vs capacity, while /healthz says overloaded.
        await page.wait_for_selector("#overload:not([hidden])", timeout=WAIT_MS)
        banner = await page.inner_text("#overload")
        assert re.fullmatch(r"Overloaded: asked 100 / capacity [\d.]+ fps", banner), banner
        assert "Skipped frames: overload" in await page.get_attribute("#overload", "title")

        # Each camera on the wall: analysed vs asked rate, and the shed badge naming why frames were skipped.
        for cid in ids:
            card = f"#camera-grid .card[data-camera-id='{cid}']"
            await page.wait_for_selector(f"{card}[data-shed='true'] .badge.shed:not([hidden])", timeout=WAIT_MS)
            assert await page.inner_text(f"{card} .badge.shed") == "shed"
            title = await page.get_attribute(f"{card} .badge.shed", "title")
            assert "of the 25 frames a second" in title and re.search(r"overload \d+", title), title
            assert re.search(r"\b\d+\.\d / 25 fps analysed\b", await page.inner_text(f"{card} .card-meta"))
            await _says_its_state(page, f"{card} .badge", "en")  # the state badge is still the first
        await _shot(page, "10-overload.png")

        # The camera page: the same badge beside its state, analysed vs asked, skipped frames by reason.
        await page.click(f"#camera-grid .card[data-camera-id='{ids[0]}'] .thumb")
        await page.wait_for_selector("#cam-shed:not([hidden])", timeout=WAIT_MS)
        assert re.fullmatch(r"\d+\.\d / 25 fps", await page.inner_text("#fact-analysis"))
        assert re.match(r"overload \d+", await page.inner_text("#fact-skipped"))

        # In Chinese too.
        await page.click("#lang-switch")
        await page.wait_for_selector("#cam-shed:has-text('降帧')")
        assert (await page.inner_text("#overload")).startswith("分析过载：需求 100 / 能力 ")
        assert "分析过载" in await page.inner_text("#fact-skipped")
        await _shot(page, "11-overload-camera-zh.png")
        assert not errors, errors
        await ctx.close()


_OTHER_ORIGIN_SOCKET = """(url) => new Promise((resolve) => {
  document.addEventListener("securitypolicyviolation",
    (e) => resolve(`blocked ${e.effectiveDirective} ${e.blockedURI}`), { once: true });
  let ws;
  try { ws = new WebSocket(url); } catch (err) { resolve(`thrown ${err.name}`); return; }
  ws.onopen = () => { ws.close(); resolve("opened"); };
  ws.onerror = () => setTimeout(() => resolve("error"), 1000);
})"""


async def test_page_sockets_go_to_its_own_origin_only(make_gateway, redis_url, browser):
    """connect-src 'self': the page's live WebSocket works, a script's socket to another origin is refused."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def listener(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    # Another origin that would take the token (same host, another port), were the page allowed to reach it.
    other_app = web.Application()
    other_app.router.add_get("/collect", listener)
    other = TestServer(other_app, host="127.0.0.1")
    await other.start_server()
    try:
        async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
            ctx = await browser.new_context(locale="en-US")
            page = await ctx.new_page()
            csp: list[str] = []
            page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
            await page.goto(gw.url("/"))
            await page.wait_for_selector("#login-form", state="visible")
            await page.fill("#token-input", TOKEN)
            await page.click("#login-button")
            # The page's own events socket (ws://<its host>/api/v1/events/ws, not routed by the test) is live
            # and carries an event that happens now.
            await page.wait_for_selector("#ws-status[data-state='live']", timeout=WAIT_MS)
            cam = await gw.add_camera(name="North gate", node="450102001", url="file:moving_objects.mp4")
            await page.wait_for_selector(f"#event-feed .event[data-type='status'][data-camera-id='{cam['id']}']",
                                         timeout=WAIT_MS)
            assert await page.get_attribute("#ws-status", "data-state") == "live"
            assert csp == [], csp
            # A script's socket to another origin, with the token, is refused by the browser.
            url = f"ws://127.0.0.1:{other.port}/collect?token={TOKEN}"
            result = await page.evaluate(_OTHER_ORIGIN_SOCKET, url)
            assert result.startswith(("blocked connect-src", "error", "thrown")), result
            assert any(f"127.0.0.1:{other.port}" in m for m in csp), csp
            await ctx.close()
    finally:
        await other.close()
