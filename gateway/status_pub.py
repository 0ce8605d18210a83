"""Publishes this tier's own cameras' status into `se:status`, where the bridge and the node rollups read it."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.supervisor import StreamSupervisor
from registry.store import CameraStore
from tiers.catalog import put_status, status_json
from tiers.contract import TierKeys

log = logging.getLogger(__name__)

# Fields whose change is news at once; the figures (fps, last frame) follow on the next full pass.
_SIGNAL = ("state", "enabled", "quality", "last_error")


class StatusPublisher:
    """Every `interval` s writes each own camera's status that changed (and each one at least every `refresh` s,
    so upper tiers can tell a silent tier from a quiet one); state changes go out within `tick` s.
    One pipelined round trip per pass; cameras deleted from the catalog are removed."""

    def __init__(self, redis: aioredis.Redis, store: CameraStore, supervisor: StreamSupervisor, node: str, *,
                 interval: float = 2.0, refresh: float = 30.0, tick: float = 0.5, prefix: str = "se",
                 info: dict[str, str | int] | None = None) -> None:
        self.redis = redis
        self.store = store
        self.supervisor = supervisor
        self.node = node
        self.interval = interval
        self.refresh = refresh
        self.tick = tick
        self.keys = TierKeys(prefix)
        self.prefix = prefix
        self._last: dict[str, tuple[str, float, tuple]] = {}  # id -> (json without updated_at, written at, signal)
        self._known: set[str] | None = None  # own ids in se:status, read once at start
        self._stopping = asyncio.Event()
        self.info = info or {}  # this tier's retention policy, read by its children's bridges (se:tier)
        self._info_at = 0.0
        self.passes = 0
        self.written = 0

    def stop(self) -> None:
        """Ask run() to return after its current pass."""
        self._stopping.set()

    async def run(self) -> None:
        """Publish until stopped; Redis outages are waited out (the next pass writes everything changed)."""
        next_full = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                await self.publish(full=now >= next_full)
                if now >= next_full:
                    next_full = now + self.interval
            except (RedisError, OSError) as e:
                log.debug("status not published: %s", type(e).__name__)
                next_full = 0.0
                self._known = None  # re-read what is there when Redis is back (it may have been wiped)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.tick)
            except asyncio.TimeoutError:
                pass

    async def _own_in_table(self) -> set[str]:
        """Ids of this tier's own cameras already in se:status (from an earlier run)."""
        out: set[str] = set()
        async for cid, raw in self.redis.hscan_iter(self.keys.status, count=1000):
            try:
                if json.loads(raw).get("owner") == self.node:
                    out.add(cid.decode() if isinstance(cid, bytes) else cid)
            except (ValueError, AttributeError):
                continue
        return out

    async def publish(self, *, full: bool = True) -> int:
        """One pass: write what changed (only state-like changes unless `full`); returns entries written."""
        now = time.time()
        if self.info and (self._known is None or now - self._info_at >= self.refresh):
            # Rewritten now and then: a wiped Redis gets it back without a restart.
            await self.redis.hset(self.keys.tier_info, mapping={"node": self.node, **self.info})
            self._info_at = now
        if self._known is None:
            self._known = await self._own_in_table()
            self._last.clear()
        entries: list[tuple[str, str | None]] = []
        seen: set[str] = set()
        cursor = None
        while True:
            cams, cursor = await self.store.list(page_size=1000, cursor=cursor)
            for cam in cams:
                seen.add(cam.id)
                if cam.enabled and cam.id not in self.supervisor.workers:
                    # Not running here: the gateway of the tier that runs it (holds its lease, gateway/placement.py)
                    # writes it; ours would be a stale copy. One that none runs yet keeps its last entry.
                    self._last.pop(cam.id, None)
                    continue
                st = self.supervisor.status(cam)
                signal = (st.state, cam.enabled, tuple(getattr(st, "quality", ()) or ()), st.last_error)
                prev = self._last.get(cam.id)
                if prev is not None and not full and prev[2] == signal:
                    continue
                js = status_json(cam.id, cam.node, self.node, cam.enabled, st, now)
                body = js.rsplit(',"updated_at"', 1)[0]
                if prev is not None and prev[0] == body and now - prev[1] < self.refresh:
                    continue
                entries.append((cam.id, js))
                self._last[cam.id] = (body, now, signal)
            if not cursor:
                break
        gone = (self._known | set(self._last)) - seen
        for cid in gone:
            entries.append((cid, None))
        await put_status(self.redis, entries, self.prefix)
        for cid in gone:
            self._last.pop(cid, None)
        self._known = seen
        self.passes += 1
        self.written += len(entries)
        return len(entries)
