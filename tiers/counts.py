"""Zone and line counts per camera and per node, counted in Redis where each event is written.

A line crossing or a zone event is counted in the same script that appends it to a tier's event stream
(tiers/contract.py EVENT_APPEND at the tier that raised it, _EVENT_FORWARD at each upper tier's intake), so
every tier holds the counts of its whole subtree in its own Redis, a duplicate or retried event is never
counted twice, and counts survive a gateway restart. Per Unix minute of the event's capture time:

- per camera: crossings by line, direction and label; zone events by zone, phase and label; each zone's
  occupancy (objects inside: enters less leaves, per track) after the minute's last change and its highest;
- per node, for the camera's node and each of its ancestors: crossings by direction and label, zone events
  by phase and label, so a node's figures are read from its own keys, never summed camera by camera.

Queries read one hash per minute of the window (pipelined) and sum them into buckets. Key names:
tiers/contract.py CountKeys.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from analytics.events import iso_ms
from tiers.contract import CountKeys
from tiers.nodes import NodeCodeError, normalize_node, parent_of

__all__ = ["COUNTS_TTL_S", "MAX_WINDOW_S", "MAX_BUCKETS", "BUCKET_MIN_S", "BUCKET_MAX_S", "MINUTE_S", "RULE_TYPES",
           "Window", "window", "count_spec", "camera_counts", "node_counts", "occupancy_now"]

RULE_TYPES = frozenset({"zone", "line"})
MINUTE_S = 60
MAX_WINDOW_S = 7 * 86400  # the longest window one query reads (7 x 1,440 hashes at most)
COUNTS_TTL_S = MAX_WINDOW_S + 86400  # each count key lives this long after its last write: a full window and a day
BUCKET_MIN_S = MINUTE_S  # counts are kept per minute: a bucket is a whole number of minutes
BUCKET_MAX_S = 86400
MAX_BUCKETS = 1440  # buckets in one answer: a day by the minute, a week by 7 minutes or more
OCCUPANT_STALE_S = 86400  # an occupant whose leave was lost (its gateway was killed) stops counting after a day
LABEL_MAX = 64  # labels and names are cut to this in keys (a child's events are schema-checked, not trusted)


def _f(*parts: str) -> str:
    """A count field: a JSON array, so that names with any character stay apart."""
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=False)


def _ancestors(node: str) -> list[str]:
    out: list[str] = []
    code: str | None = node
    while code is not None:
        out.append(code)
        code = parent_of(code)
    return out


def count_spec(e: Mapping[str, Any], prefix: str = "se", now: float | None = None) -> str:
    """The count argument of the append scripts for one event's wire form: '' when it counts nothing.

    Zone and line events are counted in the minute of their capture time; one older than the counts
    are kept, unparsable or outside the schema's shape is not counted.
    """
    type_ = e.get("type")
    if type_ not in RULE_TYPES:
        return ""
    try:
        node = normalize_node(str(e.get("node")))
        ts = datetime.fromisoformat(str(e.get("ts")).replace("Z", "+00:00")).timestamp()
    except (NodeCodeError, ValueError):
        return ""
    now = time.time() if now is None else now
    if ts < now - COUNTS_TTL_S:
        return ""
    camera, zone, label = str(e.get("camera_id")), str(e.get("zone") or "")[:LABEL_MAX], \
        str(e.get("label") or "")[:LABEL_MAX]
    minute = int(ts // MINUTE_S)
    k = CountKeys(prefix)
    if type_ == "line":
        direction = e.get("direction")
        if direction not in ("in", "out"):
            return ""
        incr = [[k.camera(camera, minute), _f("L", zone, direction, label)]]
        incr += [[k.node(n, minute), _f("L", direction, label)] for n in _ancestors(node)]
        return json.dumps({"ttl": COUNTS_TTL_S, "incr": incr}, separators=(",", ":"), ensure_ascii=False)
    phase = e.get("phase")
    if phase not in ("enter", "leave", "loiter"):
        return ""
    incr = [[k.camera(camera, minute), _f("Z", zone, phase, label)]]
    incr += [[k.node(n, minute), _f("Z", phase, label)] for n in _ancestors(node)]
    spec: dict[str, Any] = {"ttl": COUNTS_TTL_S, "incr": incr}
    origin = e.get("origin") if isinstance(e.get("origin"), Mapping) else {}
    if phase != "loiter" and e.get("track_id") is not None:
        ms = int(ts * 1000)
        spec["occ"] = {
            "key": k.occupants(camera, zone), "member": f"{origin.get('node', '')}|{origin.get('gateway', '')}|"
                                                         f"{e.get('track_id')}",
            "ms": str(ms), "stale": str(ms - OCCUPANT_STALE_S * 1000), "enter": 1 if phase == "enter" else 0,
            "hash": k.camera(camera, minute), "f_prev": _f("P", zone), "f_now": _f("O", zone),
            "f_max": _f("M", zone), "last": k.last_change(camera), "zone": zone, "minute": str(minute),
        }
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)


# ---- reading ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    """A query's window: whole minutes from `start` (inclusive) to `end` (exclusive), cut into buckets."""

    start: int  # Unix minute
    end: int  # Unix minute
    bucket_min: int  # minutes per bucket

    @property
    def buckets(self) -> list[int]:
        """The first minute of each bucket."""
        return list(range(self.start, self.end, self.bucket_min))

    def index(self, minute: int) -> int:
        return (minute - self.start) // self.bucket_min


def window(since: float, until: float, bucket_s: int) -> Window:
    """The minutes a window covers: since rounded down and until up to whole minutes (checked by the caller)."""
    start = int(since // MINUTE_S)
    end = -int(-until // MINUTE_S)
    return Window(start, max(end, start + 1), bucket_s // MINUTE_S)


def _nested() -> defaultdict:
    return defaultdict(lambda: defaultdict(int))


async def _minutes(redis: aioredis.Redis, keys: Iterable[str]) -> list[dict[Any, Any]]:
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        return await pipe.execute()


def _parse(raw: Mapping[Any, Any]) -> Iterable[tuple[list[str], int]]:
    for k, v in raw.items():
        try:
            field = json.loads(k)
            n = int(v)
        except (ValueError, TypeError):
            continue  # not one of ours: ignored rather than failing the answer
        if isinstance(field, list) and field and all(isinstance(x, str) for x in field):
            yield field, n


async def occupancy_now(redis: aioredis.Redis, camera_id: str, zones: Iterable[str], *, prefix: str = "se",
                        now: float | None = None) -> dict[str, int]:
    """Objects inside each zone now (occupants whose leave was lost drop out after OCCUPANT_STALE_S)."""
    k = CountKeys(prefix)
    zones = list(zones)
    low = int(((time.time() if now is None else now) - OCCUPANT_STALE_S) * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for z in zones:
            pipe.zcount(k.occupants(camera_id, z), low, "+inf")
        got = await pipe.execute()
    return {z: int(n) for z, n in zip(zones, got)}


async def camera_counts(redis: aioredis.Redis, camera_id: str, w: Window, *, lines: Iterable[str] = (),
                        zones: Iterable[str] = (), prefix: str = "se", now: float | None = None) -> dict[str, Any]:
    """Crossings per line, direction and label, zone events and occupancy (now, max) per zone, per bucket."""
    k = CountKeys(prefix)
    minutes = list(range(w.start, w.end))
    hashes = await _minutes(redis, (k.camera(camera_id, m) for m in minutes))
    n_buckets = len(w.buckets)
    line_b: list[defaultdict] = [defaultdict(_nested) for _ in range(n_buckets)]
    zone_b: list[defaultdict] = [defaultdict(_nested) for _ in range(n_buckets)]
    # zone -> minute -> {P: before its first change, O: after its last, M: highest}
    changes: dict[str, dict[int, dict[str, int]]] = defaultdict(dict)
    line_names, zone_names = set(lines), set(zones)
    for m, raw in zip(minutes, hashes):
        b = w.index(m)
        for field, n in _parse(raw):
            kind = field[0]
            if kind == "L" and len(field) == 4:
                line_b[b][field[1]][field[2]][field[3]] += n
                line_names.add(field[1])
            elif kind == "Z" and len(field) == 4:
                zone_b[b][field[1]][field[2]][field[3]] += n
                zone_names.add(field[1])
            elif kind in ("P", "O", "M") and len(field) == 2:
                changes[field[1]].setdefault(m, {})[kind] = n
                zone_names.add(field[1])
    level = await _levels_at_start(redis, camera_id, sorted(zone_names), changes, w, k)
    buckets = []
    for i, start in enumerate(w.buckets):
        entry: dict[str, Any] = {"start": iso_ms(start * MINUTE_S), "lines": {}, "zones": {}}
        for name in sorted(line_names):
            d = line_b[i].get(name, {})
            entry["lines"][name] = {dr: dict(sorted(d.get(dr, {}).items())) for dr in ("in", "out")}
        for name in sorted(zone_names):
            d = zone_b[i].get(name, {})
            cur = level[name]
            peak = cur
            for m in range(start, min(start + w.bucket_min, w.end)):
                c = changes.get(name, {}).get(m)
                if c is None:
                    continue
                peak = max(peak, c.get("M", 0), c.get("P", 0))
                cur = c.get("O", cur)
                peak = max(peak, cur)
            level[name] = cur
            entry["zones"][name] = {**{ph: dict(sorted(d.get(ph, {}).items())) for ph in ("enter", "leave", "loiter")},
                                    "now": cur, "max": peak}
        buckets.append(entry)
    occ = await occupancy_now(redis, camera_id, sorted(zone_names), prefix=prefix, now=now)
    return {"buckets": buckets, "totals": _totals(buckets), "occupancy": occ}


async def _levels_at_start(redis: aioredis.Redis, camera_id: str, zones: list[str],
                           changes: Mapping[str, Mapping[int, Mapping[str, int]]], w: Window,
                           k: CountKeys) -> dict[str, int]:
    """Each zone's occupancy when the window begins: before its first change in the window, else its last
    change before the window, else before its first change after it (read from the minutes after)."""
    out: dict[str, int] = {}
    last = await redis.hgetall(k.last_change(camera_id)) if zones else {}
    last = {(a.decode() if isinstance(a, bytes) else a): (b.decode() if isinstance(b, bytes) else b)
            for a, b in last.items()}
    for z in zones:
        inside = changes.get(z)
        if inside:
            first = inside[min(inside)]
            out[z] = first.get("P", 0)
            continue
        minute_s, _, n = last.get(z, "").partition("|")
        try:
            minute, after = int(minute_s), int(n)
        except ValueError:
            out[z] = 0  # never changed (within the counts kept)
            continue
        if minute < w.start:
            out[z] = after
            continue
        # Its last change lies after the window: the level before the first change after the window.
        field = _f("P", z)
        span = range(w.end, min(minute, w.end + COUNTS_TTL_S // MINUTE_S) + 1)
        async with redis.pipeline(transaction=False) as pipe:
            for m in span:
                pipe.hget(k.camera(camera_id, m), field)
            got = await pipe.execute()
        out[z] = next((int(v) for v in got if v is not None), after)
    return out


def _totals(buckets: list[dict[str, Any]]) -> dict[str, Any]:
    """The buckets summed: crossings per line, zone events per zone, and each zone's highest occupancy."""
    lines: dict[str, dict[str, dict[str, int]]] = {}
    zones: dict[str, dict[str, Any]] = {}
    for b in buckets:
        for name, d in b["lines"].items():
            t = lines.setdefault(name, {"in": {}, "out": {}})
            for dr, by in d.items():
                for label, n in by.items():
                    t[dr][label] = t[dr].get(label, 0) + n
        for name, d in b["zones"].items():
            t = zones.setdefault(name, {"enter": {}, "leave": {}, "loiter": {}, "max": 0})
            for ph in ("enter", "leave", "loiter"):
                for label, n in d[ph].items():
                    t[ph][label] = t[ph].get(label, 0) + n
            t["max"] = max(t["max"], d["max"])
    return {"lines": lines, "zones": zones}


async def node_counts(redis: aioredis.Redis, node: str, w: Window, *, prefix: str = "se") -> dict[str, Any]:
    """Crossings by direction and label and zone events by phase and label below `node`, per bucket."""
    k = CountKeys(prefix)
    minutes = list(range(w.start, w.end))
    hashes = await _minutes(redis, (k.node(node, m) for m in minutes))
    n_buckets = len(w.buckets)
    cross = [_nested() for _ in range(n_buckets)]
    zone = [_nested() for _ in range(n_buckets)]
    for m, raw in zip(minutes, hashes):
        b = w.index(m)
        for field, n in _parse(raw):
            if len(field) != 3:
                continue
            if field[0] == "L":
                cross[b][field[1]][field[2]] += n
            elif field[0] == "Z":
                zone[b][field[1]][field[2]] += n

    def shape(d: Mapping[str, Mapping[str, int]], keys: tuple[str, ...]) -> dict[str, dict[str, int]]:
        return {key: dict(sorted(d.get(key, {}).items())) for key in keys}

    buckets = [{"start": iso_ms(start * MINUTE_S), "crossings": shape(cross[i], ("in", "out")),
                "zones": shape(zone[i], ("enter", "leave", "loiter"))} for i, start in enumerate(w.buckets)]
    tc, tz = _nested(), _nested()
    for i in range(n_buckets):
        for src, dst in ((cross[i], tc), (zone[i], tz)):
            for key, by in src.items():
                for label, n in by.items():
                    dst[key][label] += n
    return {"buckets": buckets, "totals": {"crossings": shape(tc, ("in", "out")),
                                           "zones": shape(tz, ("enter", "leave", "loiter"))}}
