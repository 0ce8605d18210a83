"""Zone and line rules end to end: a real person walking a known path, the real model, a real gateway and Redis.

The walker (tests/media_rules.py) comes down across a line at y = 0.7 (1.5 s into each 8 s pass), into a
zone over the lower middle of the picture (2.5 s), stands there (loiters after 1 s), and walks back up out
of the zone (6.75 s) and across the line (7.25 s). The file camera loops the clip, so every pass repeats it.
"""

from __future__ import annotations

import pytest

from tests.gateway_fixtures import until
from tests.media_rules import CROSS_DOWN_S, CROSS_UP_S, LINE_Y, SECONDS, ZONE_TOP, write_walker_clip

pytestmark = [pytest.mark.model]

NODE = "450102"
LINE = {"name": "bridge", "a": [0.1, LINE_Y], "b": [0.9, LINE_Y]}  # left to right: walking down across it is "in"
ZONE = {"name": "gate", "polygon": [[0.3, ZONE_TOP], [0.7, ZONE_TOP], [0.7, 1.0], [0.3, 1.0]], "loiter_s": 1,
        "labels": ["person"]}
SAMPLING_S = 0.6  # a crossing is seen on the first analysed frame (5 fps) past the line's margin: 0.2-0.4 s on


def _what(e: dict) -> tuple[str, str, str]:
    return (e["type"], e["zone"], e.get("direction") or e["phase"])


async def test_a_walker_crosses_once_each_way_and_enters_loiters_in_and_leaves_a_zone(
        redis_url, make_gateway, model_path, street_clip, tmp_path):
    clip = write_walker_clip(tmp_path / "walker.mp4", street_clip)
    async with make_gateway(redis_url, node=NODE, model=model_path, media_dirs=[tmp_path]) as gw:
        cam = await gw.add_camera(name="gate", node=f"{NODE}001", url=f"file:{clip.name}",
                                  analytics={"fps": 5, "lines": [LINE], "zones": [ZONE]})
        cid = cam["id"]

        async def first_pass():
            _, body = await gw.request("GET", f"/api/v1/events?camera={cid}&type=line,zone&limit=200")
            events = sorted(body["events"], key=lambda e: e["ts"])
            outs = [i for i, e in enumerate(events) if e.get("direction") == "out"]
            return events[:outs[0] + 1] if outs else None
        events = await until(first_pass, 3 * SECONDS + 30, "the walker's first pass: a line crossing back out")

        # One pass, in order, each once: jitter of the detector's boxes on the line or the zone's edge
        # raised nothing more.
        assert [_what(e) for e in events] == [
            ("line", "bridge", "in"), ("zone", "gate", "enter"), ("zone", "gate", "loiter"),
            ("zone", "gate", "leave"), ("line", "bridge", "out")], [_what(e) for e in events]
        assert len({e["track_id"] for e in events}) == 1  # one walker, one track
        for e in events:
            assert e["label"] == "person" and 0 < e["score"] <= 1 and len(e["box"]) == 4, e
            # who crossed or entered is shown; a leave carries no new picture
            assert bool(e.get("snapshot")) == (e.get("phase") != "leave"), e
        by_media = {_what(e)[2]: e["media_ts"] % SECONDS for e in events}
        for direction, at in (("in", CROSS_DOWN_S), ("out", CROSS_UP_S)):  # when the path crosses the line
            off = min((by_media[direction] - at) % SECONDS, (at - by_media[direction]) % SECONDS)
            assert off <= SAMPLING_S, by_media

        # Filters: by rule name, and by type.
        _, body = await gw.request("GET", f"/api/v1/events?camera={cid}&zone=bridge&limit=200")
        assert body["events"] and {(e["type"], e["zone"]) for e in body["events"]} == {("line", "bridge")}
        status, body = await gw.request("GET", f"/api/v1/events?camera={cid}&type=tripwire")
        assert status == 400, body


async def test_rules_are_validated_with_the_field_named(redis_url, make_gateway, tmp_path):
    async with make_gateway(redis_url, node=NODE) as gw:
        base = {"name": "c", "node": f"{NODE}001", "url": "rtsp://127.0.0.1:9/x", "enabled": False}
        bad = [
            ("analytics.zones.0.polygon", {"zones": [{"name": "z", "polygon": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1],
                                                                               [0.1, 0.9]]}]}),  # a bow tie
            ("analytics.zones.0.polygon", {"zones": [{"name": "z", "polygon": [[0.1, 0.1], [0.2, 0.1]]}]}),
            ("analytics.zones.0.polygon.1.0", {"zones": [{"name": "z", "polygon": [[0.1, 0.1], [1.5, 0.1],
                                                                                   [0.5, 0.5]]}]}),
            ("analytics.lines", {"lines": [LINE, {**LINE, "a": [0.2, 0.2]}]}),  # one name twice
            ("analytics.lines.0", {"lines": [{"name": "l", "a": [0.5, 0.5], "b": [0.5, 0.5]}]}),
        ]
        for loc, analytics in bad:
            status, body = await gw.request("POST", "/api/v1/cameras", json={**base, "analytics": analytics})
            assert status == 422, (analytics, body)
            assert loc in {f["field"] for f in body["error"]["fields"]}, (loc, body)
        too_many = {"lines": [{**LINE, "name": f"l{i}"} for i in range(10)],
                    "zones": [{**ZONE, "name": f"z{i}"} for i in range(7)]}
        status, body = await gw.request("POST", "/api/v1/cameras", json={**base, "analytics": too_many})
        assert status == 422 and "at most 16" in str(body), body
        polygon_of_33 = [[0.5 + 0.4 * (i % 2), i / 40] for i in range(33)]
        status, body = await gw.request("POST", "/api/v1/cameras",
                                        json={**base, "analytics": {"zones": [{"name": "z", "polygon": polygon_of_33}]}})
        assert status == 422 and "analytics.zones.0.polygon" in str(body), body
