"""Several gateways on one tier's Redis: which gateway runs which camera.

Every enabled camera runs on exactly one gateway of the tier, the holder of its lease in Redis
(``se:lease:<camera>`` = ``<gateway>|<fence>``, expiring, renewed by its holder). Taking a free lease
draws a new fencing number from ``se:fences`` (it only grows), and each event of the camera is written
only while the lease still carries the number it was published under (contract.EVENT_APPEND): a gateway
that lost the lease while paused or cut off cannot write for the camera any more, whatever it buffered.

Gateways are members for as long as they beat (``se:gateways``, scored by Redis's own clock, so the
machines' clocks do not matter) and advertise a record (GatewayInfo): capacity, asked and analysed rates,
cameras. Placement is sticky: a camera stays with its holder while the holder lives. A camera without a
holder (new, or its holder gone) goes to the gateway with the most room: the least (asked + its rate) /
capacity, worked out by every gateway from the same records, each taking the leases that fall to it
(the lease decides any race). A gateway holding clearly more than its capacity's share of what the tier
asks hands the excess over, and only where another gateway has room for it, so a camera moves at most
once per rebalance and nothing flaps. A camera pinned to a gateway (its ``gateway`` field) runs only there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from tiers.contract import PLACEMENT_SCRIPTS, GatewayKeys

log = logging.getLogger(__name__)

__all__ = ["CameraDemand", "GatewayInfo", "Leases", "Membership", "assign", "excess"]

FORGET_MS = 24 * 3600 * 1000  # a gateway's record stays listed (as gone) this long after its last beat
ROOM_MARGIN = 0.05  # a camera moves only when the receiver's load after it stays this share below the giver's


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What a gateway advertises to the others of its tier (and GET /api/v1/gateways shows)."""

    id: str
    node: str
    version: str
    address: str | None  # its HTTP base URL, when it advertises one
    capacity_fps: float  # analysed frames per second it can do (the analysis scheduler's estimate, or set)
    asked_fps: float  # what the cameras it runs ask
    analyzed_fps: float
    cameras: int
    started_at: float  # Unix seconds
    instance: str = ""  # this process (a gateway id beaten by two processes at once is a misconfiguration)
    draining: bool = False  # shutting down: takes nothing more
    seen_ms: int = 0  # Redis's clock at its last beat (set by the beat)
    load: float | None = None  # asked / capacity

    def to_json(self) -> str:
        """The record as stored (the beat sets seen_ms from Redis's clock)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "GatewayInfo | None":
        """The record, or None when it is unreadable (a gateway of another version may add fields)."""
        try:
            d = json.loads(raw)
            known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
            return cls(**known)
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class CameraDemand:
    """What placement needs to know of one enabled camera."""

    id: str
    fps: float  # analysis rate it asks
    pinned: str | None = None  # the gateway it must run on


@dataclass(slots=True)
class _Room:
    capacity: float
    asked: float

    def after(self, fps: float) -> float:
        return (self.asked + fps) / self.capacity


def assign(unheld: Iterable[CameraDemand], gateways: Sequence[GatewayInfo]) -> dict[str, str]:
    """Camera id -> gateway id for cameras that have no holder: each to the live gateway with the most room.

    Deterministic for a given view (cameras in id order, ties to the smaller gateway id), so gateways that
    read the same records agree; a camera pinned to a gateway that is not live is left out.
    """
    live = {g.id: _Room(max(g.capacity_fps, 1e-3), g.asked_fps) for g in gateways if not g.draining}
    pinned_ok = {g.id for g in gateways}
    out: dict[str, str] = {}
    for cam in sorted(unheld, key=lambda c: c.id):
        if cam.pinned is not None:
            if cam.pinned in pinned_ok:
                out[cam.id] = cam.pinned
                if cam.pinned in live:
                    live[cam.pinned].asked += cam.fps
            continue
        if not live:
            break
        gid = min(live, key=lambda g: (live[g].after(cam.fps), g))
        live[gid].asked += cam.fps
        out[cam.id] = gid
    return out


def excess(me: str, mine: Sequence[CameraDemand], gateways: Sequence[GatewayInfo]) -> list[str]:
    """Cameras `me` should hand over so the tier's asked rate is shared by capacity: [] when balanced.

    Only unpinned cameras, only while another gateway would still have less load after taking one than
    `me` keeps (by ROOM_MARGIN), so what is handed over does not come back.
    """
    rooms = {g.id: _Room(max(g.capacity_fps, 1e-3), g.asked_fps) for g in gateways if not g.draining}
    if me not in rooms or len(rooms) < 2:
        return []
    rooms[me].asked = sum(c.fps for c in mine)
    out: list[str] = []
    # Largest first: fewest moves. Then by id, so the choice is stable from one pass to the next.
    for cam in sorted((c for c in mine if c.pinned is None), key=lambda c: (-c.fps, c.id)):
        other = min((g for g in rooms if g != me), key=lambda g: (rooms[g].after(cam.fps), g))
        # The receiver, with the camera, stays below what the giver has now: the reverse move can never
        # pass the same test, so cameras do not bounce between two gateways.
        if rooms[other].after(cam.fps) * (1 + ROOM_MARGIN) >= rooms[me].asked / rooms[me].capacity:
            continue
        rooms[me].asked -= cam.fps
        rooms[other].asked += cam.fps
        out.append(cam.id)
    return out


@dataclass(slots=True)
class View:
    """One beat's answer: the live gateways' records and Redis's clock."""

    gateways: list[GatewayInfo] = field(default_factory=list)
    now_ms: int = 0
    replaced: str = ""  # the instance of the record this beat replaced


class Membership:
    """This gateway's beat in ``se:gateways``: being a member, and reading the others."""

    def __init__(self, redis: aioredis.Redis, gateway_id: str, *, ttl_s: float, prefix: str = "se") -> None:
        self.redis = redis
        self.gateway_id = gateway_id
        self.ttl_ms = int(ttl_s * 1000)
        self.keys = GatewayKeys(prefix)

    async def beat(self, info: GatewayInfo | None) -> View:
        """Renew membership with this record (None: leave now); the live gateways' records."""
        record = "" if info is None else info.to_json()
        res = (await PLACEMENT_SCRIPTS.run(self.redis, lambda p: PLACEMENT_SCRIPTS.call(
            p, "gw_beat", [self.keys.members, self.keys.info], [self.gateway_id, self.ttl_ms, record, FORGET_MS])))[0]
        now_ms = int(res[-1])
        replaced = res[-2].decode() if isinstance(res[-2], bytes) else str(res[-2])
        view = View(now_ms=now_ms, replaced=replaced)
        pairs = res[:-2]
        for gid, raw in zip(pairs[::2], pairs[1::2]):
            g = GatewayInfo.from_json(raw) if raw else None
            if g is not None:
                view.gateways.append(g)
        return view

    async def records(self) -> tuple[list[GatewayInfo], set[str]]:
        """Every record (gone ones too, for a day) and the ids of the live members."""
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(self.keys.info)
            p.execute_command("TIME")
            p.zrangebyscore(self.keys.members, "-inf", "+inf", withscores=True)
            raw, t, members = await p.execute()
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        live = {(m.decode() if isinstance(m, bytes) else m) for m, score in members if score > now_ms}
        out = [g for v in raw.values() if (g := GatewayInfo.from_json(v)) is not None]
        return sorted(out, key=lambda g: g.id), live


class Leases:
    """This gateway's camera leases: take, renew, release, and who holds what."""

    def __init__(self, redis: aioredis.Redis, gateway_id: str, *, ttl_s: float, prefix: str = "se") -> None:
        self.redis = redis
        self.gateway_id = gateway_id
        self.ttl_ms = int(ttl_s * 1000)
        self.keys = GatewayKeys(prefix)

    async def take(self, camera_ids: Sequence[str]) -> dict[str, str]:
        """Try to take these leases; camera id -> lease token (``<gateway>|<fence>``) for those now ours."""
        if not camera_ids:
            return {}

        def queue(p: Any) -> None:
            for cid in camera_ids:
                PLACEMENT_SCRIPTS.call(p, "lease_take", [self.keys.lease(cid), self.keys.fences],
                                       [cid, self.gateway_id, self.ttl_ms])
        res = await PLACEMENT_SCRIPTS.run(self.redis, queue)
        out = {}
        for cid, (fence, token) in zip(camera_ids, res):
            if int(fence) > 0:
                out[cid] = token.decode() if isinstance(token, bytes) else str(token)
        return out

    async def renew(self, held: dict[str, str]) -> set[str]:
        """Renew the leases held under these tokens; the camera ids whose lease is lost."""
        if not held:
            return set()
        ids = list(held)
        args: list[Any] = [self.ttl_ms]
        for c in ids:
            args += [c, held[c]]
        res = (await PLACEMENT_SCRIPTS.run(self.redis, lambda p: PLACEMENT_SCRIPTS.call(
            p, "lease_renew", [self.keys.fences, *(self.keys.lease(c) for c in ids)], args)))[0]
        return {cid for cid, ok in zip(ids, res) if not int(ok)}

    async def release(self, held: dict[str, str]) -> None:
        """Give these leases up (only where still ours), so another gateway takes them at once."""
        if not held:
            return

        def queue(p: Any) -> None:
            for cid, token in held.items():
                PLACEMENT_SCRIPTS.call(p, "lease_release", [self.keys.lease(cid)], [token])
        await PLACEMENT_SCRIPTS.run(self.redis, queue)

    async def holders(self, camera_ids: Sequence[str]) -> dict[str, str]:
        """Camera id -> the gateway holding its lease, for those held."""
        if not camera_ids:
            return {}
        raw = await self.redis.mget([self.keys.lease(c) for c in camera_ids])
        out = {}
        for cid, v in zip(camera_ids, raw):
            if v:
                holder = (v.decode() if isinstance(v, bytes) else v).rpartition("|")[0]
                out[cid] = holder
        return out
