"""Five tier deployments chained by their bridges, each with its own redis-server (issue 3, tests 1-3)."""

from __future__ import annotations

import asyncio
import shutil

import cv2
import numpy as np
import pytest

from gateway import keys
from sample_streams.generate import make_clip
from tests.gateway_fixtures import until
from tests.tier_fixtures import FIVE_TIERS
from gateway.api.live import fetch_latest_jpeg
from tiers.rpc import UnknownCamera

REGION, CITY, COUNTY, TOWNSHIP, VILLAGE = FIVE_TIERS


def _cid(serial: int) -> str:
    """A camera id under the county's centre code."""
    return f"45010200001320{serial:06d}"


def _entry_ms(entry: str) -> int:
    return int(entry.split("-")[0])


async def _ids(tier) -> list[str]:
    """Event ids in a tier's own stream, oldest first."""
    out, after = [], "0-0"
    while True:
        rows = await tier.app[keys.EVENTS].range_after(after, 500)
        out += [se.event.id for se in rows]
        if len(rows) < 500:
            return out
        after = rows[-1].entry_id


@pytest.mark.model
async def test_a_village_event_reaches_the_region_through_every_tier(tier_chain, model_path, street_clip,
                                                                     record_property):
    async with tier_chain(FIVE_TIERS, models={VILLAGE: model_path}, media_dirs=[street_clip.parent]) as chain:
        region, village = chain[REGION], chain[VILLAGE]
        async with region.gw.subscribe(type="detection") as sub:
            cam = await village.gw.add_camera(name="village gate", node=VILLAGE, url=f"file:{street_clip.name}",
                                              analytics={"fps": 2})
            await sub.wait_for(lambda evs: any(e["camera_id"] == cam["id"] for e in evs), timeout=120,
                               what="a village detection at the region")
        ev = next(e for e in sub.events if e["camera_id"] == cam["id"])
        assert ev["origin"] == {"node": VILLAGE, "gateway": f"gw-{VILLAGE}"}
        assert ev["node"] == VILLAGE and ev["id"].startswith(f"{VILLAGE}-")

        # Every tier holds it, under the same id, with the same origin; the snapshot came along.
        for node in FIVE_TIERS:
            code, got = await chain[node].gw.request("GET", f"/api/v1/events/{ev['id']}")
            assert code == 200, (node, got)
            assert got["id"] == ev["id"] and got["origin"] == ev["origin"] and got["label"] == ev["label"]
        code, jpeg = await region.gw.request("GET", ev["snapshot"])
        assert code == 200 and jpeg[:2] == b"\xff\xd8"

        # Hop latency: from the entry written at each tier to the entry written at its parent.
        entries = {VILLAGE: ev["id"].split("-", 1)[1]}
        for node in FIVE_TIERS[:-1]:
            local = await chain[node].redis().get(f"se:ev:{ev['id']}")
            entries[node] = local.decode()
        hops = {f"{child}->{parent}": _entry_ms(entries[parent]) - _entry_ms(entries[child])
                for parent, child in zip(FIVE_TIERS, FIVE_TIERS[1:])}
        end_to_end = _entry_ms(entries[REGION]) - _entry_ms(entries[VILLAGE])
        print(f"\nhop latency (ms): {hops}; village -> region {end_to_end} ms")
        record_property("hop_latency_ms", hops)
        record_property("village_to_region_ms", end_to_end)
        assert all(ms >= 0 for ms in hops.values())
        code, rep = await village.gw.request("GET", "/api/v1/bridge")
        assert code == 200 and rep["bridge"]["connected"] and rep["bridge"]["hop_latency_ms"]["samples"] >= 1

        # The camera and its status are visible at the region, read-only.
        seen = await until(lambda: _state(region, cam["id"], "online"), 30, "the village camera online at the region")
        assert seen["owner"] == VILLAGE and seen["via"] == CITY and seen["remote"] is True
        code, body = await region.gw.request("PATCH", f"/api/v1/cameras/{cam['id']}", json={"name": "x"})
        assert code == 409 and VILLAGE in body["error"]["message"]

        # Its newest frame, fetched at the region from the village through the chain of bridges.
        jpeg = await fetch_latest_jpeg(region.app, cam["id"], timeout=10)
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        status = (await village.gw.camera(cam["id"]))["status"]
        assert img is not None and (img.shape[1], img.shape[0]) == (status["width"], status["height"])
        with pytest.raises(UnknownCamera):
            await fetch_latest_jpeg(region.app, "45010200001320000999")


async def _state(tier, cid: str, state: str) -> dict | None:
    code, cam = await tier.gw.request("GET", f"/api/v1/cameras/{cid}")
    return cam if code == 200 and cam["status"]["state"] == state else None


async def _rcat_ids(tier) -> set[str]:
    return {k.decode() for k in await tier.redis().hkeys("se:rcat")}


async def test_catalog_changes_flow_up_and_a_wiped_tier_is_rebuilt(tier_chain):
    # Children with full-rights uplinks: the city's Redis is lost entirely below, and with it the credentials
    # it had granted the county (a lost parent grants again; tests/test_tier_trust.py covers grants).
    async with tier_chain(FIVE_TIERS, granted=False) as chain:
        region, city, village = chain[REGION], chain[CITY], chain[VILLAGE]
        # Disabled cameras: catalog only, nothing to decode.
        # Explicit ids: townships and villages share their county's centre code, and each tier deployment
        # counts generated serials on its own.
        a = await village.gw.add_camera(id=_cid(101), name="well", node=VILLAGE,
                                        url="rtsp://admin:s3cret@127.0.0.1/ch1", enabled=False)
        b = await village.gw.add_camera(id=_cid(102), name="school", node=VILLAGE, url="rtsp://127.0.0.1/ch1",
                                        enabled=False)
        t = await chain[TOWNSHIP].gw.add_camera(id=_cid(201), name="market", node=TOWNSHIP,
                                                url="rtsp://127.0.0.1/ch1", enabled=False)

        async def listed(ids: set[str], absent: set[str] = frozenset()) -> bool:
            code, body = await region.gw.request("GET", f"/api/v1/cameras?node={COUNTY}")
            got = {c["id"] for c in body["cameras"]}
            return code == 200 and ids <= got and not (absent & got)

        # The village names itself; the name goes up with the catalog.
        code, _ = await village.gw.request("PUT", "/api/v1/nodes/names", json={VILLAGE: "示范村"})
        assert code == 200
        await until(lambda: listed({a["id"], b["id"], t["id"]}), 20, "the new cameras at the region")
        await until(lambda: _named(region, VILLAGE, "示范村"), 20, "the village's name at the region")
        code, got = await region.gw.request("GET", f"/api/v1/cameras/{a['id']}")
        assert code == 200 and got["owner"] == VILLAGE and got["name"] == "well"
        assert got["url"] == "rtsp://admin:***@127.0.0.1/ch1"
        raw = b"".join((await region.redis().hgetall("se:rcat")).values())
        assert b"s3cret" not in raw  # no password ever leaves the tier that owns the camera

        # Changed at the village: changed at the region.
        code, _ = await village.gw.request("PATCH", f"/api/v1/cameras/{a['id']}", json={"name": "old well"})
        assert code == 200

        async def renamed() -> bool:
            code, got = await region.gw.request("GET", f"/api/v1/cameras/{a['id']}")
            return code == 200 and got["name"] == "old well"

        await until(renamed, 20, "the new name at the region")

        # Removed at the village: gone at the region, with its status.
        code, _ = await village.gw.request("DELETE", f"/api/v1/cameras/{b['id']}")
        assert code == 200
        await until(lambda: listed({a["id"], t["id"]}, {b["id"]}), 20, "the removed camera gone at the region")
        assert (await region.gw.request("GET", f"/api/v1/cameras/{b['id']}"))[0] == 404
        assert await region.redis().hget("se:status", b["id"]) is None
        code, _ = await region.gw.request("DELETE", f"/api/v1/cameras/{a['id']}")
        assert code == 409

        # The region's Redis wiped: the city notices the new epoch and resends the subtree.
        await region.redis().flushall()
        await until(lambda: _has(region, {a["id"], t["id"]}, {b["id"]}), 30, "the region's catalog rebuilt")
        await until(lambda: region.redis().hget("se:status", a["id"]), 20, "statuses rebuilt at the region")
        await until(lambda: _named(region, VILLAGE, "示范村"), 20, "the village's name back at the region")

        # The city's redis-server stopped and started empty: rebuilt from the county, region unchanged.
        await chain.stop_redis(CITY)
        shutil.rmtree(city.server.workdir)
        await chain.start_redis(CITY)
        await until(lambda: _has(city, {a["id"], t["id"]}, {b["id"]}), 30, "the city's catalog rebuilt")
        assert await _rcat_ids(region) == {a["id"], t["id"]}

        # A camera added after all that still flows up.
        c = await village.gw.add_camera(id=_cid(103), name="bridge", node=VILLAGE, url="rtsp://127.0.0.1/ch1",
                                        enabled=False)
        await until(lambda: _has(region, {a["id"], t["id"], c["id"]}), 20, "a later camera at the region")


async def _named(tier, code: str, name: str) -> bool:
    _, body = await tier.gw.request("GET", "/api/v1/nodes/names")
    return body["names"].get(code) == name


async def _has(tier, ids: set[str], absent: set[str] = frozenset()) -> bool:
    try:
        got = await _rcat_ids(tier)
    except Exception:  # noqa: BLE001 - the tier's Redis is coming back
        return False
    return ids <= got and not (absent & got)


def _blinking_clip(path) -> None:
    """5 s, looped by the file camera: a block crosses the picture for 1 s, then 4 s of stillness.
    Each loop raises a motion start and (3 s after the motion) its end: steady real events."""
    def frames():
        for i in range(50):
            img = np.full((120, 160, 3), 60, np.uint8)
            if i < 10:
                x = 10 + i * 12
                img[30:90, x:x + 30] = 230
            yield img
    make_clip(path, frames(), fps=10, width=160, height=120)


async def test_cut_uplink_loses_and_duplicates_nothing(tier_chain, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    _blinking_clip(media / "blink.mp4")
    async with tier_chain((REGION, CITY, COUNTY), media_dirs=[media]) as chain:
        region, city, county = chain[REGION], chain[CITY], chain[COUNTY]
        cams = [await county.gw.add_camera(name=f"crossing {i}", node=COUNTY, url="file:blink.mp4",
                                           analytics={"fps": 5}) for i in range(3)]

        async def produced(n: int) -> list[str] | None:
            ids = await _ids(county)
            return ids if len(ids) >= n else None

        async def arrived(tier, n: int) -> bool:
            return len(await _ids(tier)) >= n

        before = len(await until(lambda: produced(6), 60, "steady events at the county"))
        await until(lambda: arrived(region, before), 30, "the first events at the region")

        await chain.stop_redis(CITY)  # the county's uplink is cut
        cut = len(await _ids(county))
        await until(lambda: produced(cut + 6), 60, "events while the uplink is cut")

        async def lagging() -> dict | None:
            code, rep = await county.gw.request("GET", "/api/v1/bridge")
            ev = rep["bridge"]["streams"]["events"]
            return rep if not rep["bridge"]["connected"] and ev["behind"] >= 6 and ev["seconds_behind"] > 0 else None

        rep = await until(lagging, 20, "the lag visible in the county's API")
        assert rep["bridge"]["last_error"].startswith("uplink:")
        code, health = await county.gw.request("GET", "/healthz")
        assert health["bridge"]["connected"] is False and health["bridge"]["events_behind"] >= 6

        await chain.start_redis(CITY)  # restored
        await until(lambda: produced(cut + 10), 60, "more events after the link is back")
        for cam in cams:  # quiet the county so the lists can settle
            assert (await county.gw.request("DELETE", f"/api/v1/cameras/{cam['id']}"))[0] == 200
        final = await _settled(county)

        async def caught_up(tier) -> bool:
            return await _ids(tier) == final

        await until(lambda: caught_up(city), 60, "the city holding exactly the county's events")
        await until(lambda: caught_up(region), 60, "the region holding exactly the county's events")
        assert len(final) == len(set(final)) and len(final) >= cut + 10
        code, rep = await county.gw.request("GET", "/api/v1/bridge")
        ev = rep["bridge"]["streams"]["events"]
        assert rep["bridge"]["connected"] and ev["behind"] == 0 and ev["gap"] == 0


async def _settled(tier, quiet: float = 2.0) -> list[str]:
    """The tier's event ids once no new one has come for `quiet` seconds."""
    last = await _ids(tier)
    while True:
        await asyncio.sleep(quiet)
        now = await _ids(tier)
        if now == last:
            return now
        last = now
