"""Zone and line counts: per camera and per node, per bucket, across tiers and restarts, within jurisdictions.

The counts are made from rule hits: the real rule engine (analytics/rules.py) fed a known walk turns into
events written through the gateway's event log into a real Redis (the same path the analysis publishes on),
and once end to end from the walker clip through the real model.
"""

from __future__ import annotations

import re
import time

import pytest

from analytics.events import Event, Origin, iso_ms
from analytics.rules import Line, RuleEngine, TrackPoint, Zone
from gateway import keys
from tests.gateway_fixtures import until
from tests.media_rules import LINE_Y, SECONDS, ZONE_TOP, write_walker_clip
from tests.test_access import auth, new_token

NODE = "450102"
CAM_NODE = "450102001"
CAM = "45010200001320000001"
LINE = {"name": "bridge", "a": [0.1, LINE_Y], "b": [0.9, LINE_Y]}  # left to right: walking down across it is "in"
ZONE = {"name": "gate", "polygon": [[0.3, ZONE_TOP], [0.7, ZONE_TOP], [0.7, 1.0], [0.3, 1.0]]}
RULES = {"lines": [LINE], "zones": [ZONE]}
DOWN = [0.55 + 0.02 * i for i in range(21)]  # the foot from above the line into the zone (0.55 .. 0.95)
UP = DOWN[::-1]


class Walks:
    """Rule hits of tracks walking the camera's line and zone, as the events the analysis would publish."""

    def __init__(self, camera: str = CAM, node: str = CAM_NODE) -> None:
        self.camera, self.node = camera, node
        self.engine = RuleEngine([Zone(ZONE["name"], tuple(map(tuple, ZONE["polygon"])))],
                                 [Line(LINE["name"], tuple(LINE["a"]), tuple(LINE["b"]))])

    def _events(self, hits, t: float) -> list[Event]:
        return [Event(type=h.kind, camera_id=self.camera, node=self.node, ts=iso_ms(t), origin=Origin(NODE, "t"),
                      label=h.track.label, score=h.track.score, box=h.track.box, track_id=h.track.track_id,
                      zone=h.rule, phase=h.phase, direction=h.direction) for h in hits]

    def walk(self, track: int, ys: list[float], t0: float, label: str = "person") -> list[Event]:
        """One track's foot down (or up) the picture, one analysed frame every half second from t0."""
        out: list[Event] = []
        for i, y in enumerate(ys):
            t = t0 + i * 0.5
            box = (0.45, y - 0.2, 0.55, y)
            out += self._events(self.engine.update(t, [TrackPoint(track, label, 0.9, box)]), t)
        return out

    def end(self, track: int, t: float) -> list[Event]:
        """The track ends (out of view): a leave for each zone it was in."""
        return self._events(self.engine.update(t, [], [track]), t)


def _what(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.type, e.direction or e.phase or "") for e in events]


async def _publish(gw, events: list[Event]) -> None:
    log = gw.app[keys.EVENTS]
    before = log.written
    for e in events:
        log.publish(e)

    async def written():
        return log.written >= before + len(events)
    await until(written, 10, "the events written")


async def _counts(gw, path: str, token: str | None = None, **params) -> dict:
    status, body = await gw.request("GET", path, params={k: str(v) for k, v in params.items()},
                                    **({"headers": auth(token)} if token else {}))
    assert status == 200, body
    return body


def _scenario(now: float) -> tuple[int, list[Event]]:
    """Three walks at known minutes before `now`: returns the minute of the first and the events in order.

    m-30: track 1 walks down across the line into the zone and stays;   (in, enter)
    m-20: track 2 walks down into the zone and back up out of it;       (in, enter, leave, out)
    m-10: track 1 leaves the picture (its track ends inside the zone).  (leave)
    """
    m = int(now // 60)
    w = Walks()
    a = w.walk(1, DOWN, (m - 30) * 60 + 1)
    b = w.walk(2, DOWN + UP, (m - 20) * 60 + 1)
    c = w.end(1, (m - 10) * 60 + 1)
    assert _what(a) == [("line", "in"), ("zone", "enter")], _what(a)
    assert _what(b) == [("line", "in"), ("zone", "enter"), ("zone", "leave"), ("line", "out")], _what(b)
    assert _what(c) == [("zone", "leave")], _what(c)
    return m, a + b + c


def _bucket(body: dict, minute: int) -> dict:
    start = iso_ms(minute * 60)
    return next(b for b in body["buckets"] if b["start"] == start)


async def test_counts_per_bucket_from_rule_hits_with_occupancy_and_node_sums(redis_url, make_gateway):
    async with make_gateway(redis_url, node=NODE) as gw:
        await gw.add_camera(id=CAM, name="gate", node=CAM_NODE, url="rtsp://127.0.0.1:9/x", enabled=False,
                            analytics={**RULES, "zones": [ZONE, {**ZONE, "name": "empty"}]})
        m, events = _scenario(time.time())
        await _publish(gw, events)
        path = f"/api/v1/cameras/{CAM}/counts"
        body = await _counts(gw, path, since=iso_ms((m - 35) * 60), until=iso_ms((m - 5) * 60), bucket=60)
        assert body["camera_id"] == CAM and body["node"] == CAM_NODE and body["bucket"] == 60
        assert len(body["buckets"]) == 30 and body["buckets"][0]["start"] == iso_ms((m - 35) * 60)
        assert body["since"] == iso_ms((m - 35) * 60) and body["until"] == iso_ms((m - 5) * 60)
        p = {"person": 1}
        b = _bucket(body, m - 30)
        assert b["lines"] == {"bridge": {"in": p, "out": {}}}
        assert b["zones"]["gate"] == {"enter": p, "leave": {}, "loiter": {}, "now": 1, "max": 1}
        # A configured zone nothing happened in is listed, empty.
        assert b["zones"]["empty"] == {"enter": {}, "leave": {}, "loiter": {}, "now": 0, "max": 0}
        b = _bucket(body, m - 20)
        assert b["lines"]["bridge"] == {"in": p, "out": p}
        assert b["zones"]["gate"] == {"enter": p, "leave": p, "loiter": {}, "now": 1, "max": 2}
        assert _bucket(body, m - 10)["zones"]["gate"] == {"enter": {}, "leave": p, "loiter": {}, "now": 0, "max": 1}
        # Between the changes the occupancy carries over; before the first it is 0.
        assert [_bucket(body, x)["zones"]["gate"]["now"] for x in (m - 31, m - 25, m - 15, m - 6)] == [0, 1, 1, 0]
        assert _bucket(body, m - 25)["lines"]["bridge"] == {"in": {}, "out": {}}
        assert body["totals"]["lines"] == {"bridge": {"in": {"person": 2}, "out": p}}
        assert body["totals"]["zones"]["gate"] == {"enter": {"person": 2}, "leave": {"person": 2}, "loiter": {},
                                                   "max": 2}
        assert body["occupancy"] == {"gate": 0, "empty": 0}

        # A window that opens while track 1 is inside starts at occupancy 1; one that ends before the
        # last walk does not count it.
        body = await _counts(gw, path, since=iso_ms((m - 25) * 60), until=iso_ms((m - 15) * 60))
        assert len(body["buckets"]) == 10
        assert body["buckets"][0]["zones"]["gate"]["now"] == 1 and body["buckets"][0]["zones"]["gate"]["max"] == 1
        assert body["totals"]["lines"] == {"bridge": {"in": p, "out": p}}
        # A window wholly before any change, and one wholly between changes.
        body = await _counts(gw, path, since=iso_ms((m - 40) * 60), until=iso_ms((m - 35) * 60))
        assert {b["zones"]["gate"]["max"] for b in body["buckets"]} == {0}
        body = await _counts(gw, path, since=iso_ms((m - 28) * 60), until=iso_ms((m - 22) * 60))
        assert {(b["zones"]["gate"]["now"], b["zones"]["gate"]["max"]) for b in body["buckets"]} == {(1, 1)}

        # Larger buckets sum the minutes: 5-minute buckets from m-35.
        body = await _counts(gw, path, since=iso_ms((m - 35) * 60), until=iso_ms((m - 5) * 60), bucket=300)
        assert len(body["buckets"]) == 6
        assert [b["lines"]["bridge"]["in"] for b in body["buckets"]] == [{}, p, {}, p, {}, {}]
        assert [b["zones"]["gate"]["max"] for b in body["buckets"]] == [0, 1, 1, 2, 1, 1]
        assert body["totals"]["lines"] == {"bridge": {"in": {"person": 2}, "out": p}}

        # The node and its ancestors in the tree sum the camera's counts; a sibling node has none.
        window = {"since": iso_ms((m - 35) * 60), "until": iso_ms((m - 5) * 60), "bucket": 600}
        for node in (CAM_NODE, NODE):
            nb = await _counts(gw, f"/api/v1/nodes/{node}/counts", **window)
            assert nb["node"] == node and len(nb["buckets"]) == 3
            assert nb["totals"] == {"crossings": {"in": {"person": 2}, "out": p},
                                    "zones": {"enter": {"person": 2}, "leave": {"person": 2}, "loiter": {}}}
            assert [b["crossings"]["in"] for b in nb["buckets"]] == [p, p, {}]
        nb = await _counts(gw, f"/api/v1/nodes/{NODE}002/counts", **window)
        assert nb["totals"]["crossings"] == {"in": {}, "out": {}}

        # Prometheus: crossings and zone events by camera, rule, direction or phase, and label.
        status, text = await gw.request("GET", "/metrics")
        text = text.decode()
        assert status == 200
        assert (f'sharp_eyes_line_crossings_total{{camera="{CAM}",direction="in",label="person",line="bridge",'
                f'node="{CAM_NODE}"}} 2.0') in text, text
        assert (f'sharp_eyes_zone_events_total{{camera="{CAM}",label="person",node="{CAM_NODE}",phase="leave",'
                f'zone="gate"}} 2.0') in text

    # A gateway started again on the same Redis answers the same counts.
    async with make_gateway(redis_url, node=NODE) as gw:
        again = await _counts(gw, path, since=iso_ms((m - 35) * 60), until=iso_ms((m - 5) * 60), bucket=300)
        assert again["totals"]["lines"] == {"bridge": {"in": {"person": 2}, "out": p}}
        assert [b["zones"]["gate"]["max"] for b in again["buckets"]] == [0, 1, 1, 2, 1, 1]


async def test_bad_windows_and_buckets_are_refused_with_the_reason(redis_url, make_gateway):
    async with make_gateway(redis_url, node=NODE) as gw:
        await gw.add_camera(id=CAM, name="gate", node=CAM_NODE, url="rtsp://127.0.0.1:9/x", enabled=False)
        now = time.time()
        for path in (f"/api/v1/cameras/{CAM}/counts", f"/api/v1/nodes/{NODE}/counts"):
            for params, status, words in [
                ({"bucket": "ninety"}, 400, "bucket must be an integer"),
                ({"bucket": "30"}, 400, "bucket must be between 60 and 86400"),
                ({"bucket": "90"}, 422, "multiple of 60"),
                ({"since": "yesterday"}, 400, "since must be an ISO 8601 time"),
                ({"until": "2026-13-01T00:00:00Z"}, 400, "until must be an ISO 8601 time"),
                ({"since": iso_ms(now), "until": iso_ms(now - 60)}, 422, "since must be before until"),
                ({"since": iso_ms(now - 8 * 86400)}, 422, "at most 7 days"),
                ({"since": iso_ms(now - 10 * 86400), "until": iso_ms(now - 9 * 86400)}, 422, "kept 8 days"),
                ({"since": iso_ms(now - 2 * 86400)}, 422, "at most 1440 buckets"),
            ]:
                code, body = await gw.request("GET", path, params=params)
                assert code == status and words in body["error"]["message"], (path, params, body)
        # A day by the minute and a week by the 10 minutes are fine.
        for params in ({"since": iso_ms(now - 86400 + 60)}, {"since": iso_ms(now - 7 * 86400 + 600), "bucket": 600}):
            code, body = await gw.request("GET", f"/api/v1/nodes/{NODE}/counts", params=params)
            assert code == 200, body
        assert (await gw.request("GET", "/api/v1/cameras/1234/counts"))[0] == 400
        assert (await gw.request("GET", f"/api/v1/cameras/{CAM[:-1]}9/counts"))[0] == 404
        assert (await gw.request("GET", "/api/v1/nodes/46/counts"))[0] == 404  # not in this tier's tree


async def test_counts_are_scoped_to_the_jurisdiction(redis_url, make_gateway):
    home, other = CAM, "45010300001320000002"
    async with make_gateway(redis_url, node="45") as gw:
        await gw.add_camera(id=home, name="home", node=CAM_NODE, url="rtsp://127.0.0.1:9/x", enabled=False,
                            analytics=RULES)
        await gw.add_camera(id=other, name="other", node="450103", url="rtsp://127.0.0.1:9/x", enabled=False,
                            analytics=RULES)
        now = time.time()
        m = int(now // 60)
        await _publish(gw, Walks(home).walk(1, DOWN, (m - 3) * 60 + 1)
                       + Walks(other, "450103").walk(1, DOWN, (m - 3) * 60 + 1))
        viewer = (await new_token(gw, "county viewer", "viewer", NODE))["token"]
        body = await _counts(gw, f"/api/v1/cameras/{home}/counts", viewer)
        assert body["totals"]["lines"]["bridge"]["in"] == {"person": 1}
        body = await _counts(gw, f"/api/v1/nodes/{NODE}/counts", viewer)
        assert body["totals"]["crossings"]["in"] == {"person": 1}
        # The other county's camera and node, and the region above, answer as if they did not exist.
        for path in (f"/api/v1/cameras/{other}/counts", "/api/v1/nodes/450103/counts", "/api/v1/nodes/45/counts"):
            code, body = await gw.request("GET", path, headers=auth(viewer))
            assert code == 404, (path, body)
        # The region's admin sees both counties summed.
        body = await _counts(gw, "/api/v1/nodes/45/counts")
        assert body["totals"]["crossings"]["in"] == {"person": 2}
        # /metrics breaks crossings down only for the token's cameras.
        status, text = await gw.request("GET", "/metrics", headers=auth(viewer))
        assert status == 200
        assert re.findall(r'sharp_eyes_line_crossings_total\{camera="(\d+)"', text.decode()) == [home]


async def test_counts_roll_up_to_the_parent_tier(tier_chain):
    async with tier_chain(("45", NODE)) as chain:
        county, region = chain[NODE], chain["45"]
        await county.gw.add_camera(id=CAM, name="gate", node=CAM_NODE, url="rtsp://127.0.0.1:9/x", enabled=False,
                                   analytics=RULES)
        m, events = _scenario(time.time())
        await _publish(county.gw, events)
        window = {"since": iso_ms((m - 35) * 60), "until": iso_ms((m - 5) * 60), "bucket": 300}
        path = f"/api/v1/cameras/{CAM}/counts"
        here = await _counts(county.gw, path, **window)

        async def forwarded():
            code, body = await region.gw.request("GET", path, params=window)
            return body if code == 200 and body["totals"] == here["totals"] else None
        # The region answers for the county's camera from its own Redis: what the intake counted.
        up = await until(forwarded, 30, "the county's counts at the region")
        assert up["buckets"] == here["buckets"] and up["node"] == CAM_NODE
        node_here = await _counts(county.gw, f"/api/v1/nodes/{NODE}/counts", **window)
        for node in ("45", NODE, CAM_NODE):
            assert (await _counts(region.gw, f"/api/v1/nodes/{node}/counts", **window))["totals"] == \
                node_here["totals"], node
        assert node_here["totals"]["crossings"] == {"in": {"person": 2}, "out": {"person": 1}}
        # The county's gateway restarts and its bridge resumes from its checkpoint (delivery is at least once):
        # what the region had is not counted again, and what comes after is.
        await chain.restart_gateway(NODE)
        await _publish(chain[NODE].gw, Walks().walk(3, DOWN, (m - 8) * 60 + 1))

        async def third():
            body = await _counts(region.gw, f"/api/v1/nodes/{NODE}/counts", **window)
            return body if body["totals"]["crossings"]["in"] == {"person": 3} else None
        body = await until(third, 30, "the third walk at the region")
        assert body["totals"] == (await _counts(chain[NODE].gw, f"/api/v1/nodes/{NODE}/counts", **window))["totals"]
        assert body["totals"]["crossings"]["out"] == {"person": 1}


@pytest.mark.model
async def test_a_real_walker_is_counted_and_the_counts_survive_a_restart(
        redis_url, make_gateway, model_path, street_clip, tmp_path):
    clip = write_walker_clip(tmp_path / "walker.mp4", street_clip)
    since = iso_ms(time.time() - 60)
    async with make_gateway(redis_url, node=NODE, model=model_path, media_dirs=[tmp_path]) as gw:
        cam = await gw.add_camera(name="gate", node=CAM_NODE, url=f"file:{clip.name}",
                                  analytics={"fps": 5, **RULES, "zones": [{**ZONE, "labels": ["person"]}]})
        cid = cam["id"]

        async def crossed_back():
            _, body = await gw.request("GET", f"/api/v1/events?camera={cid}&type=line&limit=200")
            return any(e["direction"] == "out" for e in body["events"])
        await until(crossed_back, 3 * SECONDS + 30, "the walker crossing the line back out")
        # Stopped: whoever is in the zone leaves it, and no more events come.
        status, _ = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"enabled": False})
        assert status == 200
        await gw.wait_state(cid, "disabled")
        path = f"/api/v1/cameras/{cid}/counts"

        async def settled():
            _, page = await gw.request("GET", f"/api/v1/events?camera={cid}&type=line,zone&limit=500")
            tally: dict = {}
            for e in page["events"]:
                key = ("lines", e["zone"], e["direction"]) if e["type"] == "line" else ("zones", e["zone"], e["phase"])
                tally[key] = tally.get(key, 0) + 1
            body = await _counts(gw, path, since=since)
            got = {(kind, name, what): sum(by.values())
                   for kind in ("lines", "zones") for name, d in body["totals"][kind].items()
                   for what, by in d.items() if isinstance(by, dict) and by}
            return body if got == tally and body["occupancy"] == {"gate": 0} else None
        # The counts are exactly the events written: each crossing and zone event once.
        body = await until(settled, 20, "the counts to match the events")
        t = body["totals"]
        assert t["lines"]["bridge"]["in"]["person"] >= 1 and t["lines"]["bridge"]["out"]["person"] >= 1
        assert t["zones"]["gate"]["enter"]["person"] >= 1 and t["zones"]["gate"]["max"] == 1
        assert set(t["lines"]["bridge"]["in"]) == {"person"}
    async with make_gateway(redis_url, node=NODE, model=model_path, media_dirs=[tmp_path]) as gw:
        again = await _counts(gw, path, since=since, until=body["until"])
        assert again["totals"] == body["totals"] and again["buckets"] == body["buckets"]
