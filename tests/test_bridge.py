"""The tier bridge on two or three real tiers: policy, retention gaps, feed resync, restarts, audit, frame fetch."""

from __future__ import annotations

import asyncio
import json
import time

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from redis.exceptions import RedisError

from analytics.events import Event, Origin, iso_ms
from gateway import keys
from gateway.app import build_app
from gateway.cli import _settings_from, build_parser
from gateway.config import ConfigError, load_settings
from sample_streams.generate import make_clip
from tests.gateway_fixtures import until
from tests.tier_fixtures import TOKEN
from gateway.api.live import fetch_latest_jpeg
from tiers.rpc import FetchError, NoFrame, Picture, TierTimeout, UnknownCamera, parse_reply

REGION, CITY, COUNTY = "45", "4501", "450102"
CAM = "45010200001320000001"


def _event(node: str, n: int, type_: str = "detection", label: str = "person", score: float = 0.8) -> Event:
    extra = {"n": n}
    if type_ == "detection":
        return Event(type="detection", camera_id=CAM, node=node, ts=iso_ms(time.time()), origin=Origin(node, "t"),
                     label=label, score=score, box=(0.1, 0.1, 0.2, 0.2), track_id=n + 1, phase="start", extra=extra)
    return Event(type=type_, camera_id=CAM, node=node, ts=iso_ms(time.time()), origin=Origin(node, "t"),
                 phase="start" if type_ == "motion" else None, state="online" if type_ == "status" else None,
                 extra=extra)


async def _camera(child) -> None:
    """Register the camera the synthetic events name: a parent takes a child's events only for its cameras."""
    await child.gw.add_camera(id=CAM, name="gate", node=child.node, url="rtsp://127.0.0.1:9/closed", enabled=False)


async def _ids(tier) -> list[str]:
    """Event ids in the tier's stream, oldest first (a tier whose Redis just restarted answers on a retry)."""
    for attempt in range(3):
        out, after = [], "0-0"
        try:
            while True:
                rows = await tier.app[keys.EVENTS].range_after(after, 500)
                out += [se.event.id for se in rows]
                if len(rows) < 500:
                    return out
                after = rows[-1].entry_id
        except RedisError:  # a pooled connection from before the restart
            if attempt == 2:
                raise
    return []


async def _report(tier) -> dict:
    code, body = await tier.gw.request("GET", "/api/v1/bridge")
    assert code == 200, body
    return body["bridge"]


async def test_the_tier_policy_picks_events_but_status_always_goes_up(tier_chain):
    policy = {"types": ["detection", "status"], "labels": ["car"], "min_score": 0.5}
    async with tier_chain((REGION, CITY), per_tier={CITY: {"bridge": {"heartbeat_s": 1.0, **policy}}}) as chain:
        city, region = chain[CITY], chain[REGION]
        await _camera(city)
        log = city.app[keys.EVENTS]
        wanted = [_event(CITY, 0, label="car", score=0.9), _event(CITY, 1, "status")]
        for e in [_event(CITY, 2, label="person"), _event(CITY, 3, label="car", score=0.3),
                  _event(CITY, 4, "motion")] + wanted:
            log.publish(e)
        await until(lambda: _n(region, 2), 20, "the matching events at the region")
        await asyncio.sleep(1.5)  # nothing else may follow
        got = [e.extra["n"] for e in (se.event for se in await region.app[keys.EVENTS].range_after("0-0"))]
        assert got == [0, 1]
        rep = await _report(city)
        assert rep["streams"]["events"]["filtered"] == 3 and rep["streams"]["events"]["behind"] == 0
        # The per-minute counts that node rollups read were incremented on both tiers.
        minute = int(time.time() // 60)
        counts = {}
        for m in (minute - 1, minute):
            counts.update(await region.redis().hgetall(f"se:evcount:{m}"))
        assert counts.get(f"{CITY}|detection|car".encode()) == b"1"


async def test_forwarded_event_ids_resolve_at_the_parent(tier_chain):
    async with tier_chain((REGION, CITY)) as chain:
        city, region = chain[CITY], chain[REGION]
        await _camera(city)
        jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
        for i in range(3):
            city.app[keys.EVENTS].publish(_event(CITY, i), jpeg if i == 0 else None)
        await until(lambda: _n(region, 3), 20, "the events at the region")
        first, *rest = await _ids(city)
        code, ev = await region.gw.request("GET", f"/api/v1/events/{first}")
        assert code == 200 and ev["id"] == first and ev["snapshot"] == f"/api/v1/events/{first}/snapshot.jpg"
        code, body = await region.gw.request("GET", ev["snapshot"])
        assert code == 200 and body == jpeg
        code, page = await region.gw.request("GET", "/api/v1/events", params={"since": first})
        assert code == 200 and [e["id"] for e in page["events"]] == rest[::-1]
        async with region.gw.subscribe(since=first) as sub:
            await sub.wait_for(lambda evs: len(evs) >= 2, 10, "the events after the first")
        assert [e["id"] for e in sub.events] == rest
        code, _ = await region.gw.request("GET", f"/api/v1/events/{CITY}-1-0")
        assert code == 404


async def _n(tier, n: int) -> bool:
    return len(await _ids(tier)) >= n


async def test_events_trimmed_during_an_outage_are_counted_not_fatal(tier_chain):
    async with tier_chain((REGION, CITY), per_tier={CITY: {"events": {"retention": 100}}}) as chain:
        city, region = chain[CITY], chain[REGION]
        await _camera(city)
        log = city.app[keys.EVENTS]
        for i in range(5):
            log.publish(_event(CITY, i))
        await until(lambda: _n(region, 5), 20, "the first events at the region")
        first = await _ids(region)
        await chain.stop_redis(REGION)
        for i in range(5, 1005):
            log.publish(_event(CITY, i))
        assert await log.flush(20)
        await until(lambda: _gone(city), 10, "retention trimming the child's stream")
        await chain.start_redis(REGION)

        async def settled() -> dict | None:
            rep = await _report(city)
            ev = rep["streams"]["events"]
            return rep if rep["connected"] and ev["behind"] == 0 and ev["last_forwarded_at"] else None

        rep = await until(settled, 30, "the bridge caught up")
        kept = await _ids(city)
        at_region = await _ids(region)
        ev = rep["streams"]["events"]
        # What survived retention arrived in order, once; what did not is reported as the gap.
        assert at_region == first + kept and len(kept) < 1000
        assert ev["gap"] == 1000 - len(kept)
        assert len(at_region) == len(set(at_region)) == 5 + len(kept)


async def _gone(tier) -> bool:
    return await tier.redis().xlen("se:events") < 1000


async def test_a_restarted_child_resumes_from_its_checkpoint(tier_chain):
    async with tier_chain((REGION, CITY)) as chain:
        city, region = chain[CITY], chain[REGION]
        await _camera(city)
        for i in range(50):
            city.app[keys.EVENTS].publish(_event(CITY, i))
        await until(lambda: _n(region, 50), 20, "50 events at the region")
        await chain.stop_redis(REGION)
        for i in range(50, 80):  # written while the uplink is down, forwarded by the next process
            city.app[keys.EVENTS].publish(_event(CITY, i))
        assert await city.app[keys.EVENTS].flush(10)
        await chain.restart_gateway(CITY)
        await chain.start_redis(REGION)
        await until(lambda: _n(region, 80), 30, "the backlog at the region")
        await asyncio.sleep(1)
        assert await _ids(region) == await _ids(city)
        rep = await _report(city)
        assert rep["streams"]["events"]["duplicates"] == 0 and rep["streams"]["events"]["forwarded"] == 30


async def test_two_gateways_of_one_tier_forward_through_one_bridge(tier_chain):
    async with tier_chain((REGION, CITY)) as chain:
        city, region = chain[CITY], chain[REGION]
        await _camera(city)
        # A second gateway process of the city, on the same Redis.
        settings = load_settings(None, **{**city.settings, "gateway_id": "gw-4501-b"})
        second = TestServer(build_app(settings, TOKEN), host="127.0.0.1")
        await second.start_server()
        try:
            bridges = [city.app[keys.BRIDGE], second.app[keys.BRIDGE]]
            await until(lambda: _one_leader(bridges), 10, "one of the two bridges forwarding")
            for i in range(40):
                (city.app if i % 2 else second.app)[keys.EVENTS].publish(_event(CITY, i))
            await until(lambda: _n(region, 40), 20, "the events of both gateways at the region")
            # The forwarding gateway stops: the other takes over at once.
            leader = next(b for b in bridges if b.leader)
            if leader is bridges[1]:
                await second.close()
                standby = bridges[0]
            else:
                await chain.stop_gateway(CITY)
                standby = bridges[1]
            await until(lambda: _leads(standby), 10, "the other gateway forwarding")
            (second.app if standby is bridges[1] else city.app)[keys.EVENTS].publish(_event(CITY, 99))
            await until(lambda: _n(region, 41), 20, "an event after the takeover at the region")
            assert len(set(await _ids(region))) == 41
        finally:
            await second.close()


async def _one_leader(bridges) -> bool:
    return sum(b.leader for b in bridges) == 1


async def _leads(bridge) -> bool:
    return bridge.leader


async def test_a_catalog_feed_trimmed_past_the_checkpoint_triggers_a_resync(tier_chain):
    async with tier_chain((REGION, CITY)) as chain:
        city, region = chain[CITY], chain[REGION]
        a = await city.gw.add_camera(name="a", node=CITY, url="rtsp://127.0.0.1/a", enabled=False)
        await until(lambda: region.redis().hexists("se:rcat", a["id"]), 20, "camera a at the region")
        await chain.stop_redis(REGION)
        b = await city.gw.add_camera(name="b", node=CITY, url="rtsp://127.0.0.1/b", enabled=False)
        assert (await city.gw.request("DELETE", f"/api/v1/cameras/{a['id']}"))[0] == 200
        # The capped feed lost the changes made while the parent was away.
        await city.redis().xtrim("se:catalog", maxlen=0, approximate=False)
        await chain.start_redis(REGION)

        async def converged() -> bool:
            return {k.decode() for k in await region.redis().hkeys("se:rcat")} == {b["id"]}

        await until(converged, 30, "the region's catalog resynchronised")
        assert (await _report(city))["resyncs"] >= 2  # the first sync, and the one after the trim


async def test_a_camera_id_used_by_two_tiers_is_refused_and_reported(tier_chain):
    async with tier_chain((REGION, CITY)) as chain:
        city, region = chain[CITY], chain[REGION]
        cid = "45010000001320000042"
        await region.gw.add_camera(id=cid, name="region's own", node=CITY, url="rtsp://127.0.0.1/a", enabled=False)
        await city.gw.add_camera(id=cid, name="city's", node=CITY, url="rtsp://127.0.0.1/a", enabled=False)

        async def reported() -> bool:
            return (await _report(city))["id_conflicts"] >= 1

        await until(reported, 20, "the id clash reported by the city's bridge")
        assert not await region.redis().hexists("se:rcat", cid)
        code, cam = await region.gw.request("GET", f"/api/v1/cameras/{cid}")
        assert code == 200 and cam["name"] == "region's own"


async def test_audit_entries_are_forwarded_with_their_ids(tier_chain):
    async with tier_chain((REGION, CITY)) as chain:
        city, region = chain[CITY], chain[REGION]
        await city.gw.add_camera(name="audited", node=CITY, url="rtsp://127.0.0.1/x", enabled=False)

        async def audit_ids(tier) -> list[str]:
            rows = await tier.redis().xrange("se:audit")
            out = []
            for entry, f in rows:
                d = json.loads(f[b"a"])
                out.append(d.get("id") or f"{d['tier']}-{entry.decode()}")
            return out

        child = await until(lambda: audit_ids(city), 10, "an audit entry at the city")
        await until(lambda: _contains(audit_ids(region), child), 20, "the audit entry at the region")
        assert await region.redis().exists(f"se:au:{child[0]}")


async def _contains(aw, wanted: list[str]) -> bool:
    return set(wanted) <= set(await aw)


def _still_clip(path) -> None:
    frames = (np.full((120, 160, 3), (i * 9) % 200, np.uint8) for i in range(30))
    make_clip(path, frames, fps=10, width=160, height=120)


async def test_frames_are_fetched_locally_and_through_the_chain_with_clear_errors(tier_chain, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    _still_clip(media / "still.mp4")
    async with tier_chain((REGION, CITY, COUNTY), media_dirs=[media]) as chain:
        region, county = chain[REGION], chain[COUNTY]
        own = await region.gw.add_camera(name="own", node=REGION, url="file:still.mp4", analytics={"fps": 2})
        below = await county.gw.add_camera(name="below", node=COUNTY, url="file:still.mp4", analytics={"fps": 2})
        off = await county.gw.add_camera(name="off", node=COUNTY, url="file:still.mp4", enabled=False)
        await region.gw.wait_state(own["id"], "online")
        await county.gw.wait_state(below["id"], "online")
        await until(lambda: region.redis().hexists("se:rcat", off["id"]), 20, "the county's cameras at the region")

        # A top tier's own camera: no bridge involved.
        jpeg = await fetch_latest_jpeg(region.app, own["id"])
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
        # Two hops down and back.
        jpeg = await fetch_latest_jpeg(region.app, below["id"], 10)
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
        with pytest.raises(NoFrame) as e:
            await fetch_latest_jpeg(region.app, off["id"], 10)
        assert e.value.status == 503 and "disabled" in e.value.reason
        with pytest.raises(UnknownCamera) as e:
            await fetch_latest_jpeg(region.app, "45010200001320009999")
        assert e.value.status == 404
        # The county's gateway gone: the region's request times out with a 504 naming the tier.
        await chain.stop_gateway(COUNTY)
        t0 = time.monotonic()
        with pytest.raises(TierTimeout) as e:
            await fetch_latest_jpeg(region.app, below["id"], 1.5)
        assert e.value.status == 504 and CITY in e.value.reason and time.monotonic() - t0 < 5


def test_uplink_setting_flag_and_environment(monkeypatch, tmp_path):
    s = load_settings(None, uplink="redis://127.0.0.1:6379/0", bridge={"types": ["detection"], "min_score": 0.6})
    assert s.uplink == "redis://127.0.0.1:6379/0" and s.bridge.types == ["detection"]
    with pytest.raises(ConfigError, match="uplink"):
        load_settings(None, uplink="http://127.0.0.1")
    with pytest.raises(ConfigError, match="parent tier"):
        load_settings(None, redis="redis://127.0.0.1:1/0", uplink="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="bridge.types"):
        load_settings(None, bridge={"types": ["nonsense"]})
    args = build_parser().parse_args(["serve", "--node", "4501", "--uplink", "redis://127.0.0.1:6379/0"])
    assert _settings_from(args).uplink == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("SHARP_EYES_UPLINK", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SHARP_EYES_BRIDGE__LABELS", '["car"]')
    s = load_settings(None)
    assert s.uplink == "redis://127.0.0.1:6379/0" and s.bridge.labels == ["car"]


def test_frame_replies_from_tiers_old_and_new_are_read_and_bad_ones_refused():
    jpeg = b"\xff\xd8" + b"\x00" * 64
    # A tier from before the picture's details (the bare form), and the current form.
    assert parse_reply(b"200\n" + jpeg) == Picture(jpeg)
    assert parse_reply(b"200 1700000000.250 3\n" + jpeg) == Picture(jpeg, 1700000000.25, 3, fitted=True)
    assert parse_reply(b"200 - -\n" + jpeg) == Picture(jpeg, fitted=True)
    with pytest.raises(NoFrame, match="offline"):
        parse_reply(b"503\ncamera 45010200001320000001 has no frame yet (starting or offline)")
    for bad in (b"200 x 3\n" + jpeg, b"200 1.0\n" + jpeg, b"OK\n" + jpeg, b"200\nnot a jpeg", b"no newline"):
        with pytest.raises(FetchError):
            parse_reply(bad)
