"""This gateway's part in sharing the tier's cameras with the other gateways on its Redis (tiers/placement.py).

One pass every `heartbeat_s` (and at once when the catalog changes here or a peer says so on the
placement channel): beat, renew the leases held, start the cameras that fall to this gateway, hand over
the ones that should run elsewhere, and read the status of the cameras the peers run. A camera runs
here only while its lease is ours; its events carry the lease's token and Redis refuses them once the
lease has moved on (fencing, tiers/contract.py EVENT_APPEND).

Handing a camera over: its worker stops (each open track gets its `end`), the events are flushed
while the lease is still ours, then the lease is released and the peers told; one of them takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.camera import CameraStatus
from gateway.config import PlacementConfig
from gateway.events import NOT_HELD, EventLog
from gateway.supervisor import StreamSupervisor
from registry.models import Camera
from registry.store import CameraStore
from tiers.contract import GatewayKeys, TierKeys
from tiers.placement import CameraDemand, GatewayInfo, Leases, Membership, assign, excess

log = logging.getLogger(__name__)

FLUSH_S = 2.0  # a handed-over camera's last events get this long to reach Redis while the lease is still ours
LISTEN_RETRY_S = 1.0  # the placement channel's subscription is tried again after this long
DUPLICATE_SHOWN_S = 60.0  # /healthz says "duplicate_id" this long after another process beat under our id


@dataclass(frozen=True, slots=True)
class LocalLoad:
    """This gateway's analysis figures, for its record."""

    capacity_fps: float
    analyzed_fps: float


def _demand(cam: Camera) -> CameraDemand:
    return CameraDemand(cam.id, cam.analytics.fps, cam.gateway)


class Placement:
    """Runs here exactly the cameras whose lease this gateway holds, and keeps the tier balanced."""

    def __init__(self, redis: aioredis.Redis, store: CameraStore, supervisor: StreamSupervisor, events: EventLog,
                 config: PlacementConfig, *, gateway_id: str, node: str, version: str, address: str | None,
                 load: Callable[[], LocalLoad], prefix: str = "se") -> None:
        self.redis = redis
        self.store = store
        self.supervisor = supervisor
        self.events = events
        self.config = config
        self.gateway_id = gateway_id
        self.node = node
        self.version = version
        self.address = address
        self._load = load
        self.keys = GatewayKeys(prefix)
        self.tier_keys = TierKeys(prefix)
        self.membership = Membership(redis, gateway_id, ttl_s=config.member_ttl_s, prefix=prefix)
        self.leases = Leases(redis, gateway_id, ttl_s=config.lease_s, prefix=prefix)
        self.held: dict[str, str] = {}  # camera id -> lease token, for the cameras running here
        self._lost: set[str] = set()  # cameras whose lease another gateway took from this one (until taken back)
        self.holders: dict[str, str] = {}  # camera id -> gateway running it, as of the last pass
        self.peer_status: dict[str, dict[str, Any]] = {}  # camera id -> its status entry, for peers' cameras
        self.gateways: list[GatewayInfo] = []  # live ones, as of the last pass
        self.started_at = time.time()
        self.instance = uuid.uuid4().hex
        self.duplicate_seen: float | None = None  # when another process was last seen beating under our id
        self.draining = False
        self.passes = 0
        self.taken = 0
        self.handed_over = 0
        self.lost = 0  # leases found gone at renewal (this gateway was paused or cut off)
        self.last_pass_at: float | None = None
        self.unplaced = 0  # enabled cameras no gateway held at the last pass (a pinned one's gateway is away)
        self._wake = asyncio.Event()
        self._last_rebalance = time.monotonic()  # a gateway just started hands nothing over for a rebalance period
        self._lock = asyncio.Lock()  # one pass, handover or shutdown at a time
        self._notify_tasks: set[asyncio.Task] = set()

    # ---- what the rest of the gateway asks ------------------------------------------------------------
    def token_of(self, camera_id: str) -> str:
        """The lease token this camera's events are written under: its lease's while it runs here; NOT_HELD
        (refused) while another gateway holds it or since this one lost it; '' (unfenced) for a camera no
        gateway holds, whose events nobody else can be writing."""
        token = self.held.get(camera_id)
        if token is not None:
            return token
        if camera_id in self._lost or self.holders.get(camera_id) not in (None, self.gateway_id):
            return NOT_HELD
        return ""

    def holder(self, camera_id: str) -> str | None:
        """The gateway running a camera, as of the last pass (this one's id for its own)."""
        return self.gateway_id if camera_id in self.held else self.holders.get(camera_id)

    def status_of(self, camera: Camera) -> CameraStatus | None:
        """The status a peer publishes of a camera it runs (None: not run by a peer)."""
        gw = self.holders.get(camera.id)
        if gw is None or gw == self.gateway_id:
            return None
        entry = self.peer_status.get(camera.id)
        if entry is None or entry.get("gateway") != gw:
            # The holder has not reported yet (it just took the camera): what is there is the last holder's.
            return CameraStatus(state="connecting", source="substream" if camera.substream_url else "main",
                                gateway=gw)
        known = {k: entry[k] for k in ("state", "fps_in", "fps_asked", "fps_analyzed", "shed", "last_frame_at",
                                       "reconnects", "last_error") if k in entry}
        return CameraStatus(**{"state": "connecting", **known}, source="substream" if camera.substream_url else "main",
                            skipped=dict(entry.get("skipped") or {}), quality=tuple(entry.get("quality") or ()),
                            gateway=gw)

    async def refresh_status(self, camera_ids: list[str]) -> None:
        """Read afresh what the peers publish of these cameras (one round trip; the API calls it before a page)."""
        peers = [cid for cid in camera_ids if self.holders.get(cid) not in (None, self.gateway_id)]
        if not peers or self.draining:
            return
        raw = await self.redis.hmget(self.tier_keys.status, peers)
        for cid, r in zip(peers, raw):
            e = _loads(r) if r else None
            if isinstance(e, dict):
                self.peer_status[cid] = e

    def changed(self) -> None:
        """The catalog changed here: look again now, and tell the peers to."""
        self._wake.set()
        t = asyncio.create_task(self._notify(), name="placement:notify")
        self._notify_tasks.add(t)
        t.add_done_callback(self._notify_tasks.discard)

    async def _notify(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await asyncio.wait_for(self.redis.publish(self.keys.channel, self.gateway_id), 2.0)

    # ---- the loop --------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Pass after pass until cancelled; Redis outages are waited out (leases then lapse: fencing)."""
        delay = 0.5
        while True:
            self._wake.clear()
            try:
                async with self._lock:
                    if self.draining:
                        return
                    await self._pass()
                delay = 0.5
            except (RedisError, OSError) as e:
                log.warning("placement pass failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.heartbeat_s)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.heartbeat_s)

    async def listen(self) -> None:
        """Wake a pass whenever a peer publishes on the placement channel."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.channel)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.config.heartbeat_s)
                    if msg is not None and msg.get("data") != self.gateway_id.encode():
                        self._wake.set()
            except (RedisError, OSError):
                await asyncio.sleep(LISTEN_RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _info(self) -> GatewayInfo:
        load = self._load()
        asked = 0.0
        for cid in self.held:
            w = self.supervisor.workers.get(cid)
            if w is not None:
                asked += w.camera.analytics.fps
        cap = self.config.capacity_fps or load.capacity_fps
        return GatewayInfo(
            id=self.gateway_id, node=self.node, version=self.version, address=self.address,
            capacity_fps=round(cap, 1), asked_fps=round(asked, 2), analyzed_fps=round(load.analyzed_fps, 2),
            cameras=len(self.held), started_at=self.started_at, instance=self.instance, draining=self.draining,
            load=round(asked / cap, 2) if cap else None)

    async def _catalog(self) -> dict[str, Camera]:
        out: dict[str, Camera] = {}
        cursor = None
        while True:
            cams, cursor = await self.store.list(page_size=1000, cursor=cursor)
            out.update((c.id, c) for c in cams)
            if not cursor:
                return out

    async def _pass(self) -> None:
        view = await self.membership.beat(self._info())
        if self.passes > 0 and view.replaced not in ("", self.instance):
            # Our record was overwritten since our last beat: another process runs under this gateway_id, and
            # both would run the same cameras. Our own earlier life (a restart) shows only at the first beat.
            self.duplicate_seen = time.time()
            log.error("another gateway process beats as %r on this tier's Redis: gateway_id must be unique per "
                      "tier (both may run the same cameras)", self.gateway_id)
        self.gateways = view.gateways
        catalog = await self._catalog()
        me = self.gateway_id
        # Leases first: a camera whose lease lapsed (this gateway was paused) must stop before anything else.
        lost = await self.leases.renew(dict(self.held))
        for cid in lost:
            self.held.pop(cid, None)
            self._lost.add(cid)
            self.lost += 1
            log.warning("camera %s: lease lost (this gateway was paused or cut off from Redis); stopping it", cid)
            await self.supervisor.remove(cid)
        # Cameras here that were deleted, disabled or pinned elsewhere (possibly through another gateway's API).
        leave = [cid for cid in self.held
                 if (cam := catalog.get(cid)) is None or not cam.enabled or cam.gateway not in (None, me)]
        if leave:
            await self._handover(leave, "no longer runs here")
        for cid in self.held:
            w = self.supervisor.workers.get(cid)
            if w is None or w.camera != catalog[cid]:
                await self.supervisor.start(catalog[cid])  # changed through another gateway: apply it here
        enabled = [c for c in catalog.values() if c.enabled]
        holders = await self.leases.holders([c.id for c in enabled])
        unheld = [_demand(c) for c in enabled if c.id not in holders]
        self.unplaced = len(unheld)
        if unheld and not self.draining:
            mine = [cid for cid, gw in assign(unheld, view.gateways).items() if gw == me]
            got = await self.leases.take(mine)
            for cid, token in got.items():
                self.held[cid] = token
                self._lost.discard(cid)
                holders[cid] = me
                self.taken += 1
                self.unplaced -= 1
                await self.supervisor.start(catalog[cid])
            if got:
                log.info("took %d camera(s): %s", len(got), ", ".join(sorted(got)[:10]))
        now = time.monotonic()
        if now - self._last_rebalance >= self.config.rebalance_s and not self.draining:
            give = excess(me, [_demand(catalog[c]) for c in self.held], view.gateways)
            if give:
                self._last_rebalance = now
                log.info("rebalance: handing over %d camera(s) to gateways with more room", len(give))
                await self._handover(give, "rebalance")
        self.holders = {cid: gw for cid, gw in holders.items() if gw != me or cid in self.held}
        peers = [cid for cid, gw in self.holders.items() if gw != me]
        if peers:
            raw = await self.redis.hmget(self.tier_keys.status, peers)
            self.peer_status = {cid: e for cid, r in zip(peers, raw) if r and isinstance(e := _loads(r), dict)}
        else:
            self.peer_status = {}
        self.passes += 1
        self.last_pass_at = time.time()

    async def _handover(self, camera_ids: list[str], why: str) -> None:
        """Stop these cameras here, flush their last events while the leases are ours, release the leases."""
        ids = [cid for cid in camera_ids if cid in self.held]
        if not ids:
            return
        await asyncio.gather(*(self.supervisor.remove(cid) for cid in ids))
        if not await self.events.flush(timeout=FLUSH_S):
            log.warning("handover (%s): %d events not written yet; they go when Redis takes them, if the "
                        "leases still hold", why, self.events.pending)
        tokens = {cid: self.held.pop(cid) for cid in ids}
        await self.leases.release(tokens)
        self.handed_over += len(ids)
        self.changed()

    async def stop(self, timeout: float = 10.0) -> None:
        """Shutting down: leave the tier's members, hand every camera over (bounded), tell the peers."""
        async with self._lock:
            self.draining = True
            with contextlib.suppress(RedisError, OSError):
                await asyncio.wait_for(self.membership.beat(None), 2.0)
            ids = list(self.held)
            try:
                await asyncio.wait_for(self._handover(ids, "shutdown"), timeout)
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                log.warning("shutdown: cameras not handed over cleanly (%s); their leases lapse in %g s",
                            type(e).__name__, self.config.lease_s)
        for t in list(self._notify_tasks):
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(t, 2.0)

    def health(self) -> dict[str, Any]:
        """What /healthz shows of placement."""
        dup = self.duplicate_seen is not None and time.time() - self.duplicate_seen < DUPLICATE_SHOWN_S
        return {"gateway": self.gateway_id, "duplicate_id": dup, "cameras": len(self.held),
                "gateways": len(self.gateways),
                "taken": self.taken, "handed_over": self.handed_over, "leases_lost": self.lost,
                "events_fenced": self.events.fenced, "passes": self.passes}


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
