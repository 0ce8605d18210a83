"""Event log in a Redis stream: a buffered, idempotent writer, history queries and a live fan-out hub.

Key names and the append script: tiers/contract.py (EventKeys, EVENT_APPEND run as EVENT_SCRIPTS).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import re
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from analytics.events import Event
from gateway.outbox import Outbox
from gateway.streams import MAX_ENTRY_ID, StreamIdError, parse_entry_id, scan_newest
from tiers.catalog import EVCOUNT_TTL_S, event_minute
from tiers.connect import replica_wait
from tiers.contract import EVENT_SCRIPTS, EventKeys, GatewayKeys, evcount_field
from tiers.counts import RULE_TYPES, count_spec

log = logging.getLogger(__name__)

TOKEN_TTL_S = 86400  # how long EVENT_APPEND keeps a batch token (its SET ... EX)
MAX_RULE_SERIES = 10_000  # (camera, rule, direction or phase, label) series /metrics keeps; past it only counted


class EventIdError(ValueError):
    """An event id that is not '<node>-<ms>-<seq>'."""


_EVENT_ID = re.compile(r"([0-9]{2,12})-([0-9]{1,20}-[0-9]{1,20})")  # ASCII digits only, never str.isdigit()


def parse_event_id(event_id: str) -> tuple[str, str]:
    """Split an event id into (origin node, stream entry id); EventIdError when malformed.

    The entry id is two unsigned 64-bit integers in ASCII digits, checked here so that a malformed id
    is the caller's 400, never a Redis error (which would answer 503 as if Redis were down).
    """
    m = _EVENT_ID.fullmatch(event_id) if len(event_id) <= 64 else None
    if m is None:
        raise EventIdError(f"event id {event_id[:64]!r} is not of the form <node>-<ms>-<seq> (ASCII digits)")
    try:
        return m[1], parse_entry_id(m[2])
    except StreamIdError as e:
        raise EventIdError(f"event id {event_id!r} {e}") from None


def entry_key(entry_id: str) -> tuple[int, int]:
    """Order of a stream entry id."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What a subscriber or a history query wants."""

    node: str | None = None
    camera: str | None = None
    types: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    zones: frozenset[str] | None = None  # zone and line events of these rules
    min_score: float | None = None

    def match(self, e: Event) -> bool:
        """True when the event passes every given criterion."""
        if self.node and not e.node.startswith(self.node):
            return False
        if self.camera and e.camera_id != self.camera:
            return False
        if self.types and e.type not in self.types:
            return False
        if self.labels and e.label not in self.labels:
            return False
        if self.zones and e.zone not in self.zones:
            return False
        # Scoreless events (status, motion) are not filtered out by a score threshold.
        if self.min_score is not None and e.score is not None and e.score < self.min_score:
            return False
        return True


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event read back from the stream, with its entry id."""

    entry_id: str
    event: Event


NOT_HELD = "-"  # the lease token of an event whose camera does not run here: Redis refuses it (no lease matches)


# A write token per event (EVENT_APPEND keeps it a day, so that a retried batch is not written twice): unique
# across gateways and restarts by a random prefix drawn at start, then a counter. uuid4 per event read the
# kernel's random source each time, the event loop's largest single cost per event (py-spy, 24 cameras).
_TOKEN_PREFIX = secrets.token_hex(8)
_TOKEN_SEQ = itertools.count()


@dataclass(slots=True)
class _Pending:
    event: Event
    snapshot: bytes | None
    lease: str = ""  # the camera's lease token when it was published ('' = unfenced)
    token: str = field(default_factory=lambda: f"{_TOKEN_PREFIX}{next(_TOKEN_SEQ)}")


class EventLog(Outbox[_Pending]):
    """Writes events to this tier's Redis stream; reads history and snapshots."""

    what = "events"

    def __init__(self, redis: aioredis.Redis, node: str, *, prefix: str = "se", retention: int = 100_000,
                 snapshot_ttl_s: int = 7 * 86400, buffer_size: int = 10_000, batch: int = 256) -> None:
        super().__init__(buffer_size=buffer_size, batch=batch)
        self.redis = redis
        self.node = node
        self.keys = EventKeys(prefix)
        self.stream = self.keys.stream
        self.prefix = prefix
        self.retention = retention
        self.snapshot_ttl_s = snapshot_ttl_s
        # (node, type, label or "") -> events written: /metrics reports them within the scraper's jurisdiction.
        self.written_by: collections.Counter[tuple[str, str, str]] = collections.Counter()
        # (node, camera, type, rule, direction or phase, label) -> zone and line events written, for /metrics;
        # at most MAX_RULE_SERIES series (labels are the model's classes, rules 16 a camera: bounded already).
        self.rule_written: collections.Counter[tuple[str, str, str, str, str, str]] = collections.Counter()
        self.rule_series_dropped = 0  # zone and line events not kept in rule_written: the series bound was reached
        # Camera id -> the lease token its events go under ('' unfenced, NOT_HELD refused; gateway/placement.py).
        self.lease_of: Callable[[str], str] | None = None
        self.gateways = GatewayKeys(prefix)
        self.fenced = 0  # events Redis refused: their camera's lease had moved to another gateway
        # Sentinel (replicas exist): a batch counts as written once a replica acknowledged it too (WAIT), so that
        # a failover cannot lose it (replication is asynchronous); tiers/connect.py. None: no waiting.
        self._replica_wait = replica_wait(redis)
        self._unconfirmed = False  # the last write attempt failed: the next batch may be partly written already

    # ---- writing -------------------------------------------------------------------------------
    def publish(self, event: Event, snapshot: bytes | None = None) -> None:
        """Queue an event for writing; never waits, never raises."""
        # Taken now, not at write time: an event raised while the camera ran here goes under that lease.
        lease = self.lease_of(event.camera_id) if self.lease_of is not None else ""
        self._enqueue(_Pending(event, snapshot, lease))

    async def _write(self, batch: list[_Pending]) -> None:
        wait = self._replica_wait
        retry = self._unconfirmed

        def queue(pipe) -> None:
            for p in batch:
                e = p.event
                minute = event_minute(e.ts)
                EVENT_SCRIPTS.call(pipe, "append", keys=[self.stream, self.keys.token(p.token),
                                                         self.keys.count(minute or 0),
                                                         self.gateways.lease(e.camera_id), self.gateways.fences],
                                   args=[self.retention, e.to_json(), p.snapshot or b"", self.snapshot_ttl_s,
                                         self.keys.snap_prefix,
                                         evcount_field(e.node, e.type, e.label) if minute else "",
                                         EVCOUNT_TTL_S, p.lease, e.camera_id,
                                         count_spec(e.to_dict(), self.prefix) if e.type in RULE_TYPES else ""])
            if wait is not None:
                if retry:
                    # A retry: its scripts may find their tokens and write nothing, and WAIT counts only what
                    # this connection wrote. Touching the tokens is a write that makes the WAIT cover whatever
                    # an earlier attempt (maybe on another connection) wrote of this batch.
                    for p in batch:
                        pipe.expire(self.keys.token(p.token), TOKEN_TTL_S)
                wait.queue(pipe)

        self._unconfirmed = True
        # By SHA, loaded again only on NOSCRIPT: redis-py's own script objects ask SCRIPT EXISTS before every
        # pipeline, a second round trip per batch (a sixth of the event loop's time at 24 cameras, py-spy).
        results = await EVENT_SCRIPTS.run(self.redis, queue)
        if wait is not None:
            wait.check(results[-1])  # NotReplicated (a RedisError): kept, and written again
        self._unconfirmed = False
        for p, r in zip(batch, results):
            if r == 0:
                p.lease = NOT_HELD  # refused for good: not counted as written
                self.fenced += 1
                if self.fenced == 1 or self.fenced % 100 == 0:
                    log.warning("camera %s: event refused, its lease is held by another gateway now "
                                "(%d refused so far)", p.event.camera_id, self.fenced)

    def _on_written(self, batch: list[_Pending]) -> None:
        for p in batch:
            if p.lease == NOT_HELD:
                self.written -= 1  # refused (fenced), not written
            else:
                e = p.event
                self.written_by[(e.node, e.type, e.label or "")] += 1
                if e.type in RULE_TYPES:
                    series = (e.node, e.camera_id, e.type, e.zone or "", e.direction or e.phase or "", e.label or "")
                    if series in self.rule_written or len(self.rule_written) < MAX_RULE_SERIES:
                        self.rule_written[series] += 1
                    else:
                        self.rule_series_dropped += 1

    # ---- reading -------------------------------------------------------------------------------
    def decode(self, entry_id: str | bytes, fields: dict) -> StoredEvent:
        """Turn a stream entry into a StoredEvent with its id and snapshot URL."""
        if isinstance(entry_id, bytes):
            entry_id = entry_id.decode()
        raw = json.loads(fields[b"e"])
        ev = Event.from_dict(raw)
        # A forwarded event keeps the id it got where it was first written; an own one gets it here.
        event_id = ev.id or f"{ev.origin.node}-{entry_id}"
        snap = f"/api/v1/events/{event_id}/snapshot.jpg" if fields.get(b"s") == b"1" else None
        return StoredEvent(entry_id, ev.with_id(event_id, snap))

    async def range_after(self, after: str, count: int = 500) -> list[StoredEvent]:
        """Entries strictly after `after`, oldest first."""
        if after == MAX_ENTRY_ID:
            return []  # nothing can follow it, and Redis refuses "(" + the largest id as a start
        rows = await self.redis.xrange(self.stream, min=f"({after}", max="+", count=count)
        return [self.decode(i, f) for i, f in rows]

    async def history(self, flt: EventFilter, *, before: str | None = None, after: str | None = None,
                      limit: int = 100, scan_cap: int = 20_000) -> tuple[list[Event], str | None]:
        """Newest first, strictly between `after` and `before` (entry ids) when given;
        returns (events, cursor for the next page or None)."""
        def decode(raw_id: bytes, fields: dict) -> tuple[str, Event]:
            se = self.decode(raw_id, fields)
            return se.entry_id, se.event

        return await scan_newest(self.redis, self.stream, decode, flt.match, upper=f"({before}" if before else "+",
                                 lower=f"({after}" if after else "-", limit=limit, scan_cap=scan_cap)

    async def resolve(self, event_id: str) -> str | None:
        """The local stream entry id of any event id (own or forwarded), or None when unknown here.

        Raises EventIdError for a malformed id."""
        node, entry = parse_event_id(event_id)
        if node == self.node:
            return entry
        raw = await self.redis.get(self.keys.index(event_id))
        return raw.decode() if isinstance(raw, bytes) else raw

    async def get(self, entry_id: str) -> StoredEvent | None:
        """One event by stream entry id."""
        rows = await self.redis.xrange(self.stream, min=entry_id, max=entry_id, count=1)
        return self.decode(*rows[0]) if rows else None

    async def snapshot(self, entry_id: str) -> bytes | None:
        """The JPEG stored with an event, if still kept."""
        return await self.redis.get(self.keys.snapshot(entry_id))

    async def last_entry_id(self) -> str:
        """Id of the newest entry, or 0-0."""
        rows = await self.redis.xrevrange(self.stream, count=1)
        return rows[0][0].decode() if rows else "0-0"


_OVERFLOW = object()  # queued in place of what a too-slow subscriber had not read yet


class Subscription:
    """A live subscriber's bounded queue; on overflow it is emptied and marked, never waited on."""

    def __init__(self, flt: EventFilter, maxsize: int) -> None:
        self.filter = flt
        # One slot more than the bound, for the overflow marker.
        self.queue: asyncio.Queue[StoredEvent | object] = asyncio.Queue(maxsize + 1)
        self.maxsize = maxsize
        self.overflowed = False
        self.overflows = 0

    def offer(self, se: StoredEvent) -> None:
        """Called by the hub for every entry; O(1), never blocks."""
        if self.overflowed or not self.filter.match(se.event):
            return
        if self.queue.qsize() < self.maxsize:
            self.queue.put_nowait(se)
            return
        # Too slow: drop what is queued; the subscriber re-reads it from the stream.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_OVERFLOW)
        self.overflowed = True
        self.overflows += 1


class EventHub:
    """One reader of the stream that fans entries out to every live subscriber."""

    def __init__(self, log_: EventLog, *, queue_size: int = 1000, block_ms: int = 1000) -> None:
        self.log = log_
        self.queue_size = queue_size
        self.block_ms = block_ms
        self.subs: set[Subscription] = set()
        self.last_id = "$"
        self.delivered = 0
        self._stopping = False

    def stop(self) -> None:
        """Ask run() to return once its current XREAD (at most block_ms) comes back."""
        # Letting the blocking command finish, rather than cancelling it mid-read, keeps the
        # connection sound (CVE-2023-28858/9) and was seen to make shutdown reliable.
        self._stopping = True

    async def run(self) -> None:
        """XREAD the stream until stopped, reconnecting with backoff when Redis goes away."""
        delay = 0.2
        while not self._stopping:
            try:
                if self.last_id == "$":
                    self.last_id = await self.log.last_entry_id()
                resp = await self.log.redis.xread({self.log.stream: self.last_id}, count=500, block=self.block_ms)
                delay = 0.2
            except (RedisError, OSError) as e:
                log.debug("hub read failed: %s", e)
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, 5.0)
                continue
            for _stream, rows in resp or ():
                for i, f in rows:
                    se = self.log.decode(i, f)
                    self.last_id = se.entry_id
                    for sub in tuple(self.subs):
                        sub.offer(se)
                    self.delivered += 1

    def register(self, flt: EventFilter) -> Subscription:
        sub = Subscription(flt, self.queue_size)
        self.subs.add(sub)
        return sub

    def unregister(self, sub: Subscription) -> None:
        self.subs.discard(sub)

    async def follow(self, flt: EventFilter, since: str | None) -> AsyncIterator[StoredEvent]:
        """History after `since` (entry id), then live, with nothing lost or repeated in between."""
        sub = self.register(flt)  # buffer live entries before reading history, so none fall between
        try:
            last = since if since is not None else await self.log.last_entry_id()
            while True:
                async for se in self._catch_up(last):
                    # Advance past every entry read, matching or not, so a re-read after an
                    # overflow does not scan the same non-matching entries again.
                    last = se.entry_id
                    if flt.match(se.event):
                        yield se
                while True:
                    item = await sub.queue.get()
                    if item is _OVERFLOW:
                        sub.overflowed = False
                        break  # read what was dropped from Redis, then back to live
                    item = cast(StoredEvent, item)
                    if entry_key(item.entry_id) <= entry_key(last):
                        continue  # already sent by the catch-up
                    last = item.entry_id
                    yield item
        finally:
            self.unregister(sub)

    async def _catch_up(self, after: str) -> AsyncIterator[StoredEvent]:
        """Every entry after `after`, oldest first, waiting out Redis outages."""
        delay = 0.2
        while True:
            try:
                rows = await self.log.range_after(after, 500)
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for se in rows:
                after = se.entry_id
                yield se
            if len(rows) < 500:
                return


def parse_csv_set(values: Iterable[str]) -> frozenset[str] | None:
    """'a,b' query values → {'a','b'}; empty → None."""
    out = {v.strip() for raw in values for v in raw.split(",") if v.strip()}
    return frozenset(out) or None
