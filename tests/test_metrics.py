"""`GET /metrics` against a real gateway, real Redis and real streams, read with Prometheus' own parser.

What an operator's Prometheus depends on: the text parses, names follow the conventions, and the
figures are the cameras' real state: an online file camera reports `online` and the frame rate the
API shows, a camera whose RTSP port is dead reports `offline` with its reconnects counting up, and
the node rates are what /api/v1/nodes says.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import av
from prometheus_client.parser import text_string_to_metric_families

from gateway import keys
from sample_streams import CLIPS_DIR, clip_path
from tests.gateway_fixtures import TOKEN, until
from tests.servers import free_port
from tiers.access import Principal, Role

CLIP = "file:moving_objects.mp4"
NAME = re.compile(r"^sharp_eyes_[a-z0-9_]+$")


def clip_fps() -> float:
    with av.open(str(clip_path("moving_objects"))) as c:
        return float(c.streams.video[0].average_rate)


class Scraped:
    """One scrape, parsed: families by name, and sample look-up by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, sample: str, **labels: str) -> list:
        family = next(f for f in self.families.values() if any(s.name == sample for s in f.samples)) \
            if any(s.name == sample for f in self.families.values() for s in f.samples) else None
        if family is None:
            return []
        return [s for s in family.samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, sample: str, **labels: str) -> float:
        found = self.samples(sample, **labels)
        assert len(found) == 1, f"{sample}{labels}: {len(found)} samples"
        return found[0].value

    def has(self, sample: str, **labels: str) -> bool:
        return bool(self.samples(sample, **labels))


async def scrape(gw, token: str = TOKEN) -> Scraped:
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url("/metrics"), headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return Scraped(await r.text())


async def test_metrics_parse_follow_conventions_and_match_the_cameras_state(redis_url, make_gateway):
    async with make_gateway(redis_url, node="450102", media_dirs=[CLIPS_DIR]) as gw:
        online = (await gw.add_camera(name="gate", node="450102", url=CLIP, analytics={"fps": 4}))["id"]
        dead = (await gw.add_camera(name="bridge", node="450102001",
                                    url=f"rtsp://admin:M3tric-S3cret@127.0.0.1:{free_port()}/live"))["id"]
        off = (await gw.add_camera(name="store", node="450102", url=CLIP, enabled=False))["id"]
        await gw.wait_state(online, "online")
        await gw.wait_state(dead, "offline")

        # Let the rate window fill, then read the API and the metrics back to back.
        await asyncio.sleep(6)
        before = (await gw.camera(online))["status"]
        m = await scrape(gw)
        after = (await gw.camera(online))["status"]

        assert "M3tric-S3cret" not in m.text
        for fam in m.families.values():
            assert NAME.match(fam.name), fam.name
            if fam.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
            if "seconds" in fam.name:
                assert fam.name.endswith(("_seconds", "_seconds_total")) or fam.type in ("counter", "summary")

        # State: a state-set per camera, exactly one state at 1.
        for cid, want in ((online, "online"), (dead, "offline"), (off, "disabled")):
            states = {s.labels["state"]: s.value for s in m.samples("sharp_eyes_camera_state", camera=cid)}
            assert states == {st: float(st == want) for st in ("connecting", "online", "offline", "disabled")}, cid
        assert m.samples("sharp_eyes_camera_state", camera=dead)[0].labels["node"] == "450102001"

        # Frame rates: what the API shows, and the clip's own rate (it is paced like a live camera).
        fps = m.value("sharp_eyes_camera_fps_in", camera=online, node="450102")
        lo, hi = sorted((before["fps_in"], after["fps_in"]))
        assert lo - 2 <= fps <= hi + 2, (fps, before["fps_in"], after["fps_in"])
        assert 0.5 * clip_fps() <= fps <= 1.5 * clip_fps(), (fps, clip_fps())
        an = m.value("sharp_eyes_camera_fps_analyzed", camera=online)
        assert 1 <= an <= 6, an
        assert m.value("sharp_eyes_camera_frames_in_total", camera=online) > 0
        assert m.value("sharp_eyes_camera_frames_analyzed_total", camera=online) >= before["frames_analyzed"]
        assert m.value("sharp_eyes_camera_frames_dropped_total", camera=online) >= 0
        # Overload figures (tests/test_overload.py overloads a gateway): asked rate, shed, skipped by reason.
        assert m.value("sharp_eyes_camera_fps_asked", camera=online) == 4
        assert m.value("sharp_eyes_camera_shed", camera=online) in (0, 1)
        skipped = {s.labels["reason"]: s.value
                   for s in m.samples("sharp_eyes_camera_frames_skipped_total", camera=online)}
        assert {"overload", "decode_behind"} <= skipped.keys(), skipped
        assert sum(skipped.values()) == m.value("sharp_eyes_camera_frames_dropped_total", camera=online)
        assert m.value("sharp_eyes_camera_fps_asked", camera=dead) == 0
        assert m.value("sharp_eyes_analysis_asked_fps") == 4 and m.value("sharp_eyes_analysis_slots") >= 1
        assert m.value("sharp_eyes_analysis_overloaded") in (0, 1)
        assert m.value("sharp_eyes_camera_decode_errors_total", camera=online) == 0
        assert m.value("sharp_eyes_camera_decode_cpu_seconds_total", camera=online) > 0
        assert m.value("sharp_eyes_camera_inference_seconds_count", camera=online) == 0  # no model: motion only
        last = m.value("sharp_eyes_camera_last_frame_timestamp_seconds", camera=online)
        assert last > 1.7e9
        # No run figures for a camera nothing runs.
        assert not m.has("sharp_eyes_camera_fps_in", camera=off)

        # The dead camera keeps trying: its reconnects counter rises between scrapes.
        r0 = m.value("sharp_eyes_camera_reconnects_total", camera=dead)

        async def more_reconnects():
            return (await scrape(gw)).value("sharp_eyes_camera_reconnects_total", camera=dead) > r0
        await until(more_reconnects, 30, "reconnects to rise")
        assert m.value("sharp_eyes_camera_fps_in", camera=dead) == 0

        # Node figures: the same as /api/v1/nodes.
        _, tree = await gw.request("GET", "/api/v1/nodes")
        assert m.value("sharp_eyes_node_online_ratio", node="450102") == tree["online_rate"] == 0.5
        assert m.value("sharp_eyes_node_intact_ratio", node="450102") == tree["intact_rate"]
        assert m.value("sharp_eyes_node_cameras", node="450102", state="online") == 1
        assert m.value("sharp_eyes_node_cameras", node="450102", state="disabled") == 1
        assert m.value("sharp_eyes_node_cameras_enabled", node="450102") == 2
        assert m.value("sharp_eyes_node_cameras", node="450102001", state="offline") == 1
        assert m.value("sharp_eyes_node_online_ratio", node="450102001") == 0
        info = m.samples("sharp_eyes_node_info", node="450102")[0]
        assert info.labels["name"] == "兴宁区" and info.labels["tier"] == "county"

        # Gateway figures.
        assert m.value("sharp_eyes_redis_up") == 1
        # Events written, by type and label: the cameras' changes of state, and motion.
        assert m.value("sharp_eyes_events_written_total", type="status", label="") >= 2
        assert m.value("sharp_eyes_events_written_total", type="motion", label="") >= 1
        written = gw.app[keys.EVENTS].written
        assert sum(s.value for s in m.samples("sharp_eyes_events_written_total")) <= written
        # The tier's audit writer: the three cameras' creation at least; no bridge on a tier without an uplink.
        audit_log = gw.app[keys.AUDIT]
        assert await audit_log.flush()
        m2 = await scrape(gw)
        assert m2.value("sharp_eyes_audit_entries_written_total") == audit_log.written >= 3
        assert m2.value("sharp_eyes_audit_entries_dropped_total") == 0
        assert m2.value("sharp_eyes_audit_entries_buffered") == 0
        assert not m2.has("sharp_eyes_bridge_connected")
        assert m.value("sharp_eyes_events_dropped_total") == 0
        assert m.value("sharp_eyes_gateway_info", node="450102", gateway="test-gw") == 1
        subs = m.value("sharp_eyes_event_subscribers")
        async with gw.subscribe():
            hub = gw.app[keys.HUB]
            await until(lambda: asyncio.sleep(0, result=len(hub.subs) > 0), 10, "the subscriber")
            assert (await scrape(gw)).value("sharp_eyes_event_subscribers") == subs + 1


async def test_metrics_need_a_token_and_show_its_jurisdiction_only(redis_url, make_gateway):
    async with make_gateway(redis_url, node="4501", media_dirs=[CLIPS_DIR]) as gw:
        a = (await gw.add_camera(name="a", node="450102", url=CLIP, enabled=False))["id"]
        b = (await gw.add_camera(name="b", node="450103", url=CLIP, enabled=False))["id"]
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url("/metrics")) as r:
                assert r.status == 401 and "token" in (await r.json())["error"]["message"]
            async with s.get(gw.url("/metrics"), headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with s.get(gw.url(f"/metrics?token={TOKEN}")) as r:
                assert r.status == 401  # never in the query: it would sit in scrapers' logs
        boot = Principal("bootstrap", "test", Role.ADMIN, "4501")
        _, viewer = await gw.app[keys.TOKENS].create("qingxiu", Role.VIEWER, "450103", boot)
        m = await scrape(gw, viewer)
        assert m.has("sharp_eyes_camera_state", camera=b) and not m.has("sharp_eyes_camera_state", camera=a)
        nodes = {s.labels["node"] for s in m.samples("sharp_eyes_node_cameras_enabled")}
        assert nodes and all(n.startswith("450103") for n in nodes), nodes
        # The tier's own machinery (audit writer, bridge) is for tokens over the tier's node.
        assert not m.has("sharp_eyes_audit_entries_written_total")
        assert not m.has("sharp_eyes_analysis_overloaded") and not m.has("sharp_eyes_analysis_asked_fps")
        whole = await scrape(gw)
        assert whole.has("sharp_eyes_camera_state", camera=a) and whole.has("sharp_eyes_node_info", node="4501")
        assert whole.value("sharp_eyes_analysis_overloaded") == 0
        # Events written are counted within the jurisdiction too: switched on, each camera goes online.
        for cid in (a, b):
            status, _ = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"enabled": True})
            assert status == 200
            await gw.wait_state(cid, "online")
        await gw.request("PATCH", f"/api/v1/cameras/{a}", json={"enabled": False})
        await gw.request("PATCH", f"/api/v1/cameras/{b}", json={"enabled": False})
        assert await gw.app[keys.EVENTS].flush()
        _, hist = await gw.request("GET", "/api/v1/events?type=status&limit=100")
        per_camera = {cid: sum(e["camera_id"] == cid for e in hist["events"]) for cid in (a, b)}
        assert per_camera[a] >= 2 and per_camera[b] >= 2, per_camera  # online, then disabled
        status_written = "sharp_eyes_events_written_total"
        assert (await scrape(gw, viewer)).value(status_written, type="status", label="") == per_camera[b]
        assert (await scrape(gw)).value(status_written, type="status", label="") == per_camera[a] + per_camera[b]


async def test_metrics_keep_answering_while_redis_is_away(redis_server, make_gateway):
    async with make_gateway(redis_server.url, node="450102", media_dirs=[CLIPS_DIR]) as gw:
        cid = (await gw.add_camera(name="gate", node="450102", url=CLIP, analytics={"fps": 4}))["id"]
        await gw.wait_state(cid, "online")

        async def receiving():
            return (await gw.camera(cid))["status"]["fps_in"] > 0

        # Online comes with the first frame; the input rate needs a few packets more.
        await until(receiving, 30, "an input rate")
        redis_server.stop()
        try:
            m = await scrape(gw)
            assert m.value("sharp_eyes_redis_up") == 0
            # What the gateway knows without Redis is still there: its cameras, from their workers.
            assert m.value("sharp_eyes_camera_state", camera=cid, state="online") == 1
            assert m.value("sharp_eyes_camera_fps_in", camera=cid) > 0
            assert not m.has("sharp_eyes_node_online_ratio")
        finally:
            redis_server.start()

        async def back():
            return (await scrape(gw)).value("sharp_eyes_redis_up") == 1
        await until(back, 30, "redis_up back to 1")


async def test_inference_time_and_events_by_label_with_the_real_model(redis_url, make_gateway, model_path,
                                                                     street_clip):
    async with make_gateway(redis_url, node="450102", media_dirs=[street_clip.parent], model=model_path,
                            detector={"workers": 1}) as gw:
        cid = (await gw.add_camera(name="street", node="450102001", url=f"file:{street_clip.name}",
                                   analytics={"fps": 2, "labels": ["car"]}))["id"]
        await gw.wait_state(cid, "online", timeout=60)

        async def cars():
            m = await scrape(gw)
            ok = m.value("sharp_eyes_camera_inference_seconds_count", camera=cid) >= 3 and \
                m.has("sharp_eyes_events_last_hour", type="detection", label="car")
            return m if ok else None
        m = await until(cars, 90, "three inferences and a car event counted")
        n = m.value("sharp_eyes_camera_inference_seconds_count", camera=cid)
        total = m.value("sharp_eyes_camera_inference_seconds_sum", camera=cid)
        assert 0 < total / n < 5
        status = (await gw.camera(cid))["status"]
        assert status["inference_ms"] is not None and status["inferences"] >= n
        assert m.samples("sharp_eyes_gateway_info")[0].labels["detector"]

        # Events by label: the metric and the node tree count the same car events as the history holds.
        cars_counted = m.value("sharp_eyes_events_last_hour", type="detection", label="car")
        _, history = await gw.request("GET", f"/api/v1/events?camera={cid}&type=detection&limit=1000")
        assert 1 <= cars_counted <= len([e for e in history["events"] if e.get("label") == "car"])
        _, tree = await gw.request("GET", "/api/v1/nodes/450102001")
        assert tree["events_last_hour"]["by_label"]["car"] >= cars_counted
