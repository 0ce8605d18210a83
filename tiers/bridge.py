"""The tier bridge: store-and-forward of this tier's catalog, status, events and audit to its parent tier.

Runs in a gateway started with ``--uplink REDIS_URL`` (the parent tier's Redis, with the credential the
parent granted this tier: tiers/grants.py). One loop reads what is new in this tier's Redis past the
checkpoints, sends it to the parent as one request through this tier's inbox there, waits for the
parent's intake (tiers/intake.py) to check and apply it, and only then moves the checkpoints (kept in
this tier's Redis, ``se:bridge``). The uplink may touch this tier's own inbox keys at the parent and
nothing else. What it forwards:

- catalog: this tier's own change feed (``se:catalog``) and the remote table's feed (``se:rcat:feed``)
  into the parent's ``se:rcat`` + ``se:rcat:feed`` (passwords never leave: ``public_dict``), so the
  parent's own bridge forwards them further, hop by hop;
- status: ``se:status`` entries changed since the last one forwarded (own and subtree's);
- events (``se:events``, all or those matching the tier's policy; status events always) with their
  snapshots, keeping id and origin; one idempotent Lua step per event on the parent;
- the audit stream (``se:audit``), the same way.

The parent holds an epoch (``se:epoch``); every write checks it, so a parent that was wiped or replaced
is noticed before anything is written into it, and the child resends what the parent must know:
a full catalog snapshot (feed position recorded first), then the feed; every status; its retained
events and audit entries (deduplicated on the parent by id). A feed trimmed past the checkpoint causes
the same catalog resync; events trimmed by retention during an outage are counted as a gap.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError

from registry.models import Camera
from registry.urls import redact_url, scrub
from tiers.connect import blocking_client, is_sentinel_url, redis_client
from tiers.contract import BRIDGE_SCRIPTS, RCAT_REFUSED, EpochChanged, TierKeys, encode_request
from tiers.names import NodeNames

if TYPE_CHECKING:
    from registry.store import CameraStore
    from tiers.relay import Relay
    from tiers.rpc import FrameFetcher

__all__ = ["Bridge", "EventPolicy", "StreamState"]

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 8 << 20  # snapshots per round trip
LATENCY_SAMPLES = 2048
INBOX_TTL_S = 60  # a request the parent never took (its gateways are down) does not outlive this

LEASE_S = 15.0


@dataclass(frozen=True, slots=True)
class EventPolicy:
    """Which events this tier forwards up; status events always go (upper tiers watch camera health)."""

    types: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    min_score: float | None = None

    def match(self, ev: dict[str, Any]) -> bool:
        """True when the event (wire form) is to be forwarded."""
        if ev.get("type") == "status":
            return True
        if self.types and ev.get("type") not in self.types:
            return False
        if self.labels and ev.get("type") == "detection" and ev.get("label") not in self.labels:
            return False
        score = ev.get("score")
        if self.min_score is not None and isinstance(score, (int, float)) and score < self.min_score:
            return False
        return True


class UplinkError(Exception):
    """The parent tier's intake did not answer, or refused a request as a whole."""


class LeaseLost(Exception):
    """Another gateway of this tier took over the bridge."""


class LocalUnavailable(Exception):
    """This tier's own Redis failed (not the uplink): the message says so in the lag report."""


async def _local(aw: Any) -> Any:
    """Await a call on this tier's Redis, telling its failures apart from the uplink's."""
    try:
        return await aw
    except (RedisError, OSError, asyncio.TimeoutError) as e:
        raise LocalUnavailable(f"{type(e).__name__}: {e}") from e


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(slots=True)
class StreamState:
    """Progress of one forwarded stream (owned by the bridge's loop)."""

    name: str
    key: str
    ck: str = "0-0"  # last entry forwarded (or passed: filtered out, or lost to retention)
    seen: int | None = None  # entries at or before ck, counted as the stream's entries-added
    gap: int = 0  # entries trimmed by retention before they could be forwarded
    forwarded: int = 0  # written at the parent (since this process started)
    duplicates: int = 0  # the parent already had them (a retried batch)
    refused: int = 0  # the parent's intake refused them (not a camera of this subtree)
    filtered: int = 0  # not matching the tier's policy
    last_forwarded_at: float | None = None


@dataclass(slots=True)
class _Batch:
    events: list[tuple[str, str, bytes, dict]] = field(default_factory=list)  # entry, json, snapshot, event
    events_last: str | None = None
    audit: list[tuple[str, str, str]] = field(default_factory=list)  # entry, json, audit id
    audit_last: str | None = None
    catalog: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # entry, op, id, node, json
    rcat: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)  # + owner
    status: list[tuple[str, str]] = field(default_factory=list)  # id, json or ''
    status_last: int | None = None
    passed: dict[str, int] = field(default_factory=dict)  # entries read per stream

    def empty(self) -> bool:
        return not (self.events_last or self.audit_last or self.catalog or self.rcat) and self.status_last is None


class Bridge:
    """Forwards this tier's catalog, status, events and audit to its parent's Redis; serves frame requests."""

    def __init__(self, local: aioredis.Redis, uplink_url: str, node: str, gateway_id: str, *,
                 store: "CameraStore", fetcher: "FrameFetcher | None" = None, policy: EventPolicy = EventPolicy(),
                 batch: int = 256, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 timeout_s: float = 10.0, heartbeat_s: float = 5.0, rpc_concurrency: int = 8,
                 ca_file: str | None = None, prefix: str = "se", relay: "Relay | None" = None) -> None:
        self.local = local
        self.relay = relay  # serves the recordings, clips and live.mp4 the parent asks for (tiers/relay.py)
        self.uplink_url = uplink_url
        self.node = node
        self.gateway_id = gateway_id
        self.store = store
        self.fetcher = fetcher
        self.policy = policy
        self.batch = batch
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.parent_policy: dict[str, int] = {}  # how long the parent keeps what it is sent (its intake says)
        self.keys = TierKeys(prefix)
        k = self.keys
        self.streams = {
            "events": StreamState("events", k.events),
            "audit": StreamState("audit", k.audit),
            "catalog": StreamState("catalog", k.catalog),
            "rcat": StreamState("rcat", k.rcat_feed),
        }
        self.status_ck = 0
        self.status_forwarded = 0
        self.epoch: str | None = None
        self.resync_pending = False
        self.resyncs = 0
        self.connected = False
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_ok_at: float | None = None
        self.hop_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.age_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.rpc_served = 0
        self.rpc_dropped = 0
        self.conflicts = 0  # camera ids that clashed with another tier's at the parent
        self._conflict_ids: set[str] = set()
        self._state_loaded = False
        self._ready = False
        self.leader = False  # holds se:bridge:lease: the one gateway of this tier that forwards
        self._holder = f"{gateway_id}:{uuid.uuid4().hex[:12]}"
        self._lease_until = 0.0
        self._next_heartbeat = 0.0
        self.names = NodeNames(local, prefix)  # this tier's names (its own and its subtree's); key names too
        self.names_forwarded = 0
        self._names_sent: tuple[str | None, bytes | None] | None = None  # (parent epoch, names version) sent
        self._next_names = 0.0
        self._stopping = asyncio.Event()
        self._delay = backoff_initial_s
        self._rpc_slots = asyncio.Semaphore(rpc_concurrency)
        self._rpc_tasks: set[asyncio.Task] = set()
        # rediss:// (and rediss+sentinel://, or sentinels with sentinel_tls) is checked against the parent's CA
        # when one is given (else the system's); a sentinel URL follows the parent's failovers (tiers/connect.py).
        tls = {"ssl_ca_certs": ca_file, "ssl_cert_reqs": "required"} if ca_file and (
            uplink_url.startswith("rediss://") or is_sentinel_url(uplink_url)) else {}
        self.up = redis_client(uplink_url, socket_timeout=timeout_s, socket_connect_timeout=min(5, timeout_s),
                               health_check_interval=15, retry_on_timeout=False, **tls)
        # Blocking pops get their own connection pool: they hold a connection while they wait for a reply.
        self.up_block = blocking_client(self.up, timeout_s + 5)

    @property
    def uplink_display(self) -> str:
        """The uplink URL with any password masked."""
        return redact_url(self.uplink_url)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loops to return after their current step (blocking reads last at most a second)."""
        self._stopping.set()

    async def close(self) -> None:
        """Drop the uplink connections (after the loops ended)."""
        for t in list(self._rpc_tasks):
            t.cancel()
        if self._rpc_tasks:
            await asyncio.wait(self._rpc_tasks, timeout=2)
        if self.leader:  # another gateway of this tier takes over at once, not when the lease runs out
            try:
                await BRIDGE_SCRIPTS.run(self.local, lambda p: BRIDGE_SCRIPTS.call(
                    p, "release", [self.keys.bridge_lease], [self._holder]))
            except (RedisError, OSError):
                pass
            self.leader = False
        await self.up.aclose()
        await self.up_block.aclose()

    async def _sleep(self, seconds: float) -> None:
        """Wait, but return at once when stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _failed(self, side: str, e: BaseException) -> float:
        """Record a failure; return how long to wait before the next try (growing, jittered)."""
        if side == "uplink":
            self.connected = False
            self._ready = False  # introduce this tier again first: the parent may have been wiped or replaced
        detail = str(e) if isinstance(e, LocalUnavailable) else f"{type(e).__name__}: {e}"
        msg = scrub(f"{side}: {detail}", [self.uplink_url])[:300]
        if msg != self.last_error:  # once per kind of failure, not once per retry
            log.warning("bridge to %s: %s; retrying with backoff", self.uplink_display, msg)
        self.last_error = msg
        self.last_error_at = time.time()
        wait = self._delay * (0.5 + random.random() / 2)
        self._delay = min(self._delay * 2, self.backoff_max_s)
        return wait

    def _ok(self) -> None:
        now = time.time()
        if not self.connected:
            log.info("bridge to %s: connected (epoch %s)", self.uplink_display, self.epoch)
            self.connected = True
            self.connected_since = now
        self.last_ok_at = now
        if now - (self.connected_since or now) >= 5:
            self._delay = self.backoff_initial_s  # healthy for a while: the next outage starts small again

    # ---- the forwarding loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Forward until stopped; outages of either Redis are waited out with backoff, nothing skipped."""
        while not self._stopping.is_set():
            try:
                if not await self._lease():
                    await self._sleep(1.0)  # standby: another gateway of this tier forwards
                    continue
                if not self._state_loaded:
                    await self._load_state()
                if not self._ready:
                    await self._handshake()
                moved = await self._cycle()
                self._ok()
                if not moved:
                    await self._idle()
            except EpochChanged as e:
                log.warning("bridge: %s; resynchronising", e)
                self._ready = False
            except LeaseLost:
                continue
            except LocalUnavailable as e:
                await self._sleep(self._failed("local", e))
            except (RedisError, OSError, asyncio.TimeoutError, UplinkError) as e:
                await self._sleep(self._failed("uplink", e))
            except Exception as e:  # a bug must not stop forwarding for good
                log.exception("bridge: unexpected failure")
                await self._sleep(self._failed("bridge", e))

    async def _lease(self) -> bool:
        """Take or keep the tier's bridge lease (renewed every few seconds); False: stand by."""
        now = time.monotonic()
        if self.leader and now < self._lease_until - LEASE_S * 2 / 3:
            return True
        got = await _local(BRIDGE_SCRIPTS.run(self.local, lambda p: BRIDGE_SCRIPTS.call(
            p, "lease", [self.keys.bridge_lease], [self._holder, int(LEASE_S * 1000)])))
        was = self.leader
        self.leader = got[0] == 1
        if self.leader:
            self._lease_until = now + LEASE_S
            if not was:
                # Another gateway may have moved the checkpoints meanwhile: start from what is stored.
                self._state_loaded = self._ready = False
        elif was:
            log.warning("bridge: another gateway of tier %s took over forwarding", self.node)
        return self.leader

    async def _renew(self) -> None:
        """Keep the lease during a long step; LeaseLost when another gateway has it now."""
        if not await self._lease():
            raise LeaseLost()

    async def _load_state(self) -> None:
        raw = await _local(self.local.hgetall(self.keys.bridge))
        st = {_s(k): _s(v) for k, v in raw.items()}
        self.epoch = st.get("epoch") or None
        self.resync_pending = st.get("resync") == "1" or self.epoch is None
        for s in self.streams.values():
            s.ck = st.get(f"ck:{s.name}", "0-0")
            seen = st.get(f"seen:{s.name}")
            s.seen = int(seen) if seen not in (None, "") else None
            s.gap = int(st.get(f"gap:{s.name}", "0") or 0)
        self.status_ck = int(st.get("ck:status", "0") or 0)
        self._state_loaded = True

    def _state_fields(self) -> dict[str, str]:
        out = {"epoch": self.epoch or "", "resync": "1" if self.resync_pending else "0",
               "ck:status": str(self.status_ck)}
        for s in self.streams.values():
            out[f"ck:{s.name}"] = s.ck
            out[f"seen:{s.name}"] = "" if s.seen is None else str(s.seen)
            out[f"gap:{s.name}"] = str(s.gap)
        return out

    async def _save_state(self) -> None:
        await _local(self.local.hset(self.keys.bridge, mapping=self._state_fields()))

    async def _handshake(self) -> None:
        """Introduce this tier to the parent's intake and learn its epoch; a new one means: resend everything."""
        try:
            # A parent reached with full rights learns of this child here; a granted child is known already.
            await self.up.sadd(self.keys.children, self.node)
        except NoPermissionError:
            pass
        epoch = (await self._call([("heartbeat", self._heartbeat_args())], epoch=""))[0]["epoch"]
        if epoch != self.epoch:
            if self.epoch is not None:
                log.warning("bridge: parent %s has new contents (epoch %s, was %s): resending this subtree",
                            self.uplink_display, epoch, self.epoch)
            self.epoch = epoch
            for name in ("events", "audit"):
                s = self.streams[name]
                s.ck, s.seen = "0-0", None  # the parent lost (or never had) them: resend what is retained
            self.status_ck = 0
            self.resync_pending = True
            await self._save_state()
        self._ready = True
        await self._heartbeat()

    def _heartbeat_args(self) -> dict[str, Any]:
        return {"gateway": self.gateway_id, "connected_at": self.connected_since or time.time()}

    def _heard(self, reply: dict[str, Any]) -> None:
        self.parent_policy = dict(reply.get("policy") or {})
        self._next_heartbeat = time.monotonic() + self.heartbeat_s

    async def _heartbeat(self) -> None:
        """Register this tier at the parent (se:tiers); also the periodic epoch probe."""
        self._heard((await self._call([("heartbeat", self._heartbeat_args())]))[0])

    async def _call(self, ops: list[tuple[str, dict[str, Any]]], blobs: list[bytes] | None = None,
                    epoch: str | None = None) -> list[Any]:
        """Send one request to the parent's intake and wait for its results (one per operation, in order)."""
        rid = uuid.uuid4().hex
        raw = encode_request(rid, (self.epoch or "") if epoch is None else epoch, ops, blobs or [])
        k = self.keys
        inbox = k.child_inbox(self.node)
        async with self.up_block.pipeline(transaction=False) as p:
            # An earlier request the parent never took is dropped: this one carries the same and more.
            p.delete(inbox)
            p.rpush(inbox, raw)
            p.expire(inbox, INBOX_TTL_S)
            p.blpop([k.child_reply(self.node, rid)], timeout=self.timeout_s)
            res = await p.execute(raise_on_error=False)
        for r in res:
            if isinstance(r, Exception):
                raise r
        if res[3] is None:
            raise UplinkError(f"the parent tier's intake did not answer within {self.timeout_s:g} s (is a gateway "
                              f"of the parent tier running, and this tier granted there?)")
        try:
            reply = json.loads(res[3][1])
            results = reply.get("results")
            error = reply.get("error")
        except (ValueError, AttributeError):
            raise UplinkError("the parent tier's intake sent a malformed reply") from None
        if error:
            if str(error).startswith("EPOCH"):
                raise EpochChanged(str(error))
            raise UplinkError(f"the parent tier refused the request: {str(error)[:200]}")
        if not isinstance(results, list) or len(results) != len(ops):
            raise UplinkError("the parent tier's intake sent a malformed reply")
        return results

    async def _idle(self) -> None:
        """Block on this tier's streams until something new arrives (at most a second, or the next heartbeat)."""
        wait_ms = int(max(50, min(1000, (self._next_heartbeat - time.monotonic()) * 1000)))
        if self._stopping.is_set():
            return
        streams = {s.key: s.ck for s in self.streams.values()}
        await _local(self.local.xread(streams, count=1, block=wait_ms))

    async def _cycle(self) -> bool:
        """One step: read past the checkpoints, send in one round trip, then move the checkpoints."""
        if self.resync_pending:
            await self._resync()
            return True
        if time.monotonic() >= self._next_names:
            await self._push_names()
        batch = await _local(self._read())
        if self.resync_pending:
            return True
        if batch.empty():
            if time.monotonic() >= self._next_heartbeat:
                await self._heartbeat()
            return False
        if batch.events or batch.audit or batch.catalog or batch.rcat or batch.status:  # else: all filtered
            await self._send(batch)
        self._advance(batch)
        await self._save_state()
        return True

    async def _push_names(self) -> None:
        """Keep this subtree's node names at the parent, so upper tiers' pages show them; sent when they change."""
        self._next_names = time.monotonic() + self.heartbeat_s
        version = await _local(self.names.redis.get(self.names.version_key))
        if self._names_sent == (self.epoch, version):
            return  # also after a parent wipe: the epoch is part of what was sent
        names = await _local(self.names.subtree(self.node))
        await self._call([("names", {"names": dict(sorted(names.items()))})])
        self._names_sent = (self.epoch, version)
        self.names_forwarded = len(names)

    # ---- reading this tier ---------------------------------------------------------------------------
    async def _read(self) -> _Batch:
        ev, au, ca, rc = (self.streams[n] for n in ("events", "audit", "catalog", "rcat"))
        k = self.keys
        n = self.batch

        def queue(p: Any) -> None:
            for s in (ev, au, ca, rc):
                p.xinfo_stream(s.key)
            BRIDGE_SCRIPTS.call(p, "read_events", [ev.key], [ev.ck, n, MAX_BATCH_BYTES, k.snap_prefix])
            p.xrange(au.key, min=f"({au.ck}", max="+", count=n)
            p.xrange(ca.key, min=f"({ca.ck}", max="+", count=n)
            p.xrange(rc.key, min=f"({rc.ck}", max="+", count=n)
            BRIDGE_SCRIPTS.call(p, "status_changes", [k.status_changes, k.status], [self.status_ck, n])

        res = await self._run_local(queue)
        infos = dict(zip(("events", "audit", "catalog", "rcat"), res[:4]))
        ev_rows, au_rows, ca_rows, rc_rows, st_rows = res[4:]
        for name, info in infos.items():
            self._check_trim(self.streams[name], info if isinstance(info, dict) else None)
        b = _Batch()
        if self.resync_pending:
            return b
        # events
        for i in range(0, len(ev_rows), 3):
            entry, raw, snap = _s(ev_rows[i]), ev_rows[i + 1], ev_rows[i + 2]
            b.events_last = entry
            b.passed["events"] = b.passed.get("events", 0) + 1
            try:
                d = json.loads(raw)
            except (ValueError, TypeError):
                log.warning("bridge: skipping unreadable event entry %s", entry)
                continue
            if not self.policy.match(d):
                ev.filtered += 1
                continue
            if d.get("id") and "snapshot" not in d:
                js = _s(raw)  # forwarded from below: passed on byte for byte
            else:
                if not d.get("id"):
                    d["id"] = f"{(d.get('origin') or {}).get('node', self.node)}-{entry}"
                d.pop("snapshot", None)  # a URL of this tier's; the parent makes its own from the id
                js = json.dumps(d, separators=(",", ":"), ensure_ascii=False)
            b.events.append((entry, js, snap if isinstance(snap, bytes) else _s(snap).encode(), d))
        # audit
        for entry_b, fields in au_rows:
            entry = _s(entry_b)
            b.audit_last = entry
            b.passed["audit"] = b.passed.get("audit", 0) + 1
            raw = fields.get(b"a")
            try:
                d = json.loads(raw)
                if not isinstance(d, dict):
                    raise ValueError
            except (ValueError, TypeError):
                continue
            if not d.get("id"):
                d["id"] = f"{d.get('tier') or self.node}-{entry}"
            b.audit.append((entry, json.dumps(d, separators=(",", ":"), ensure_ascii=False), str(d["id"])))
        # own catalog
        for entry_b, fields in ca_rows:
            entry = _s(entry_b)
            f = {_s(a): _s(v) for a, v in fields.items()}
            b.passed["catalog"] = b.passed.get("catalog", 0) + 1
            cid = f.get("id", "")
            if f.get("op") == "delete":
                b.catalog.append((entry, "delete", cid, f.get("node", ""), ""))
                continue
            try:
                cam = Camera.from_json(f["camera"])
            except Exception:  # noqa: BLE001 - an unreadable record is skipped, not forwarded
                log.warning("bridge: skipping unreadable catalog entry %s", entry)
                b.catalog.append((entry, "skip", cid, "", ""))
                continue
            b.catalog.append((entry, "upsert", cam.id, cam.node, self._own_json(cam)))
        # the subtree's catalog
        for entry_b, fields in rc_rows:
            entry = _s(entry_b)
            f = {_s(a): _s(v) for a, v in fields.items()}
            b.passed["rcat"] = b.passed.get("rcat", 0) + 1
            op, cid, node, owner = f.get("op", ""), f.get("id", ""), f.get("node", ""), f.get("owner", "")
            js = self._via_json(f.get("camera", "")) if op == "upsert" else ""
            if op == "upsert" and js is None:
                op = "skip"
            b.rcat.append((entry, op, cid, node, js or "", owner))
        # status
        for i in range(0, len(st_rows), 3):
            b.status.append((_s(st_rows[i]), _s(st_rows[i + 2])))
            b.status_last = int(float(_s(st_rows[i + 1])))
        return b

    async def _run_local(self, queue) -> list[Any]:
        for attempt in range(2):
            async with self.local.pipeline(transaction=False) as p:
                queue(p)
                res = await p.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in res):
                await BRIDGE_SCRIPTS.load(self.local)
                continue
            break
        # XINFO of a stream that does not exist yet is an error we expect (None below); others are not.
        for i, r in enumerate(res):
            if isinstance(r, Exception):
                if i < 4 and isinstance(r, ResponseError):
                    res[i] = None
                    continue
                raise r
        return res

    def _own_json(self, cam: Camera) -> str:
        d = cam.public_dict()
        d["owner"] = self.node
        d["via"] = self.node
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False)

    def _via_json(self, raw: str) -> str | None:
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or "id" not in d:
                return None
        except ValueError:
            return None
        d["via"] = self.node
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False)

    def _check_trim(self, s: StreamState, info: dict | None) -> None:
        """Notice entries trimmed before they were forwarded: a gap for events/audit, a resync for catalogs."""
        if info is None:
            return
        added = info.get("entries-added")
        length = info.get("length")
        if added is None or length is None:  # Redis < 7: no counters; gaps cannot be told apart
            return
        # Retention trims from the head, so entries removed beyond those already passed were never
        # forwarded. (max-deleted-entry-id would say so directly, but Redis 7.0 leaves it at 0-0 on MAXLEN trims.)
        removed = int(added) - int(length)
        if s.seen is None:
            s.seen = removed  # history trimmed before this bridge ever started is not an outage gap
        lost = removed - s.seen
        if lost <= 0:
            return
        if s.name in ("catalog", "rcat"):
            if not self.resync_pending:
                log.warning("bridge: the %s feed was trimmed past the checkpoint: full catalog resync", s.name)
            self.resync_pending = True
            return
        s.gap += lost
        s.seen += lost
        log.warning("bridge: %d %s entries were trimmed by retention before they could be forwarded "
                    "(%d in all); raise events.retention or shorten outages", lost, s.name, s.gap)

    # ---- writing to the parent -----------------------------------------------------------------------
    @staticmethod
    def _catalog_ops(entries: list[tuple[str, str, str, str, str, str]], sync: bool = False,
                     ) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
        """Catalog changes as intake operations, and the (id, owner) of each, in order, to read the replies."""
        ops, queued = [], []
        for _entry, op, cid, node, js, owner in entries:
            if op not in ("upsert", "delete") or not cid:
                continue
            queued.append((cid, owner))
            ops.append(("rcat", {"op": op, "id": cid, "node": node, "owner": owner, "camera": js, "sync": sync}))
        return ops, queued

    def _conflicts(self, queued: list[tuple[str, str]], results: list[Any]) -> None:
        """Count and report camera ids that clash with another tier's (they must be unique network-wide)."""
        for (cid, owner), r in zip(queued, results):
            if r in (-1, -2, -3, RCAT_REFUSED, 2):
                self.conflicts += 1
                if cid not in self._conflict_ids:
                    self._conflict_ids.add(cid)
                    if r in (-2, RCAT_REFUSED):
                        log.warning("bridge: camera %s (owned by %s) was refused at %s: its node or id lies "
                                    "outside this tier's subtree (%s), or its record is malformed", cid, owner,
                                    self.uplink_display, self.node)
                        continue
                    what = ("the parent's own camera" if r == -1 else "a camera of a sibling tier" if r == -3
                            else "a camera of another tier")
                    log.warning("bridge: camera id %s (owned by %s) clashes with %s at %s; give cameras "
                                "network-wide unique ids", cid, owner, what, self.uplink_display)

    async def _send(self, b: _Batch) -> None:
        heartbeat = time.monotonic() >= self._next_heartbeat
        ops: list[tuple[str, dict[str, Any]]] = []
        blobs: list[bytes] = []
        if heartbeat:
            ops.append(("heartbeat", self._heartbeat_args()))
        own_ops, queued = self._catalog_ops([(e, op, cid, node, js, self.node) for e, op, cid, node, js in b.catalog])
        sub_ops, sub_queued = self._catalog_ops(b.rcat)
        ops += own_ops + sub_ops
        queued += sub_queued  # catalog changes, in the order their replies come
        if b.status:
            ops.append(("status", {"entries": [[cid, js] for cid, js in b.status]}))
        for _entry, js, snap, _d in b.events:
            blob = -1
            if snap:
                blob = len(blobs)
                blobs.append(snap)
            ops.append(("event", {"event": js, "blob": blob}))
        for _entry, js, _aid in b.audit:
            ops.append(("audit", {"entry": js}))
        results = await self._call(ops, blobs)
        acked = time.time()
        if heartbeat:
            self._heard(results[0])
        first = 1 if heartbeat else 0
        self._conflicts(queued, results[first:first + len(queued)])
        tail = results[len(results) - len(b.events) - len(b.audit):]
        ev, au = self.streams["events"], self.streams["audit"]
        for (entry, _js, _snap, d), r in zip(b.events, tail[:len(b.events)]):
            if int(r[1]) == -1:
                ev.refused += 1
            elif int(r[1]) == 1:
                ev.forwarded += 1
                self.hop_ms.append(max(0.0, acked * 1000 - _key(entry)[0]))
                age = _age_ms(d.get("ts"), acked)
                if age is not None:
                    self.age_ms.append(age)
            else:
                ev.duplicates += 1
        for _a, r in zip(b.audit, tail[len(b.events):]):
            if int(r[1]) == -1:
                au.refused += 1
            elif int(r[1]) == 1:
                au.forwarded += 1
            else:
                au.duplicates += 1
        ca, rc = self.streams["catalog"], self.streams["rcat"]
        ca.forwarded += sum(1 for c in b.catalog if c[1] in ("upsert", "delete"))
        rc.forwarded += sum(1 for c in b.rcat if c[1] in ("upsert", "delete"))
        self.status_forwarded += len(b.status)
        for s, n in ((ev, len(b.events)), (au, len(b.audit)), (ca, len(b.catalog)), (rc, len(b.rcat))):
            if n:
                s.last_forwarded_at = acked

    def _advance(self, b: _Batch) -> None:
        """Move the checkpoints past everything read (forwarded, filtered or unreadable)."""
        for name, last in (("events", b.events_last), ("audit", b.audit_last),
                           ("catalog", b.catalog[-1][0] if b.catalog else None),
                           ("rcat", b.rcat[-1][0] if b.rcat else None)):
            if last is None:
                continue
            s = self.streams[name]
            s.ck = last
            if s.seen is not None:
                s.seen += b.passed.get(name, 0)
        if b.status_last is not None:
            self.status_ck = b.status_last

    # ---- full resync -----------------------------------------------------------------------------------
    async def _send_snapshot(self, entries: list[tuple[str, str, str, str, str, str]]) -> None:
        """One page of the catalog snapshot, in one request; the parent notes the ids for the prune."""
        ops, queued = self._catalog_ops(entries, sync=True)
        if ops:
            self._conflicts(queued, await self._call(ops))

    async def _resync(self) -> None:
        """Rebuild the parent's view of this subtree: feed positions first, then everything, then prune."""
        k = self.keys
        ca, rc = self.streams["catalog"], self.streams["rcat"]
        positions = {}
        async with self.local.pipeline(transaction=True) as p:
            p.xinfo_stream(ca.key)
            p.xinfo_stream(rc.key)
            # last-generated-id and entries-added come from one reply: the position and its count agree.
            infos = await _local(p.execute(raise_on_error=False))
        for s, info in zip((ca, rc), infos):
            if isinstance(info, dict):
                positions[s.name] = (_s(info.get("last-generated-id", "0-0")), info.get("entries-added"))
            else:
                positions[s.name] = ("0-0", 0)
        await self._call([("sync", {})])
        sent = 0
        cursor = None
        while True:  # this tier's own cameras
            await self._renew()
            cams, cursor = await _local(self.store.list(page_size=500, cursor=cursor))
            entries = [("", "upsert", c.id, c.node, self._own_json(c), self.node) for c in cams]
            await self._send_snapshot(entries)
            sent += len(entries)
            if not cursor:
                break
        hcur = 0
        while True:  # cameras of the tiers below
            await self._renew()
            hcur, rows = await _local(self.local.hscan(k.rcat, hcur, count=500))
            entries = []
            for cid, raw in rows.items():
                js = self._via_json(_s(raw))
                if js is None:
                    continue
                d = json.loads(js)
                entries.append(("", "upsert", _s(cid), str(d.get("node", "")), js, str(d.get("owner", ""))))
            if entries:
                await self._send_snapshot(entries)
                sent += len(entries)
            if not hcur:
                break
        pruned = (await self._call([("prune", {})]))[0]
        for s in (ca, rc):
            s.ck, added = positions[s.name]
            s.seen = int(added) if added is not None else None
        self.status_ck = 0  # every status again: the parent may hold none
        self.resync_pending = False
        self.resyncs += 1
        await self._save_state()
        log.info("bridge: catalog resynchronised with %s: %d cameras sent, %d stale pruned",
                 self.uplink_display, sent, int(pruned))

    # ---- frame requests from above ---------------------------------------------------------------------
    async def serve_rpc(self) -> None:
        """Pop frame requests for this tier from the parent's Redis and answer them (bounded concurrency)."""
        if self.fetcher is None:
            return
        queue = self.keys.rpc_queue(self.node)
        delay = self.backoff_initial_s
        while not self._stopping.is_set():
            try:
                got = await self.up_block.blpop([queue], timeout=1)
                delay = self.backoff_initial_s
            except (RedisError, OSError) as e:
                log.debug("bridge rpc: %s", e)
                await self._sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            if got is None:
                continue
            if self._rpc_slots.locked():
                self.rpc_dropped += 1  # the asker times out; a flood must not pile up tasks here
                continue
            task = asyncio.create_task(self._serve_one(got[1]), name="bridge:rpc:serve")
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)

    async def serve_streams(self) -> None:
        """Serve the streams (recordings, clips, live.mp4) the parent asks of this tier, until stopped: requests
        popped from this tier's queue at the parent, items pushed under this tier's keys there (tiers/relay.py)."""
        if self.relay is None:
            return
        k, node = self.keys, self.node
        await self.relay.serve_queue(self.up_block, self.up, k.stream_queue(node),
                                     lambda rid: k.stream_reply(node, rid), lambda rid: k.stream_ack(node, rid),
                                     self._stopping)

    async def _serve_one(self, raw: bytes) -> None:
        assert self.fetcher is not None
        async with self._rpc_slots:
            try:
                await self.fetcher.serve(self.up, raw)
                self.rpc_served += 1
            except (RedisError, OSError) as e:
                log.debug("bridge rpc: reply not sent: %s", e)
            except Exception:  # noqa: BLE001 - one bad request must not end the server
                log.exception("bridge rpc: request failed")

    # ---- lag, for the API ------------------------------------------------------------------------------
    async def report(self) -> dict[str, Any]:
        """Per stream: entries and seconds behind, last forwarded id, counts; link state; hop latencies."""
        k = self.keys
        streams = list(self.streams.values())
        async with self.local.pipeline(transaction=False) as p:
            for s in streams:
                p.xinfo_stream(s.key)
                p.xrange(s.key, min=f"({s.ck}", max="+", count=1)
            p.zcount(k.status_changes, f"({self.status_ck}", "+inf")
            res = await p.execute(raise_on_error=False)
        now = time.time()
        out: dict[str, Any] = {}
        for i, s in enumerate(streams):
            info, first = res[2 * i], res[2 * i + 1]
            behind: int | None = 0
            if isinstance(info, dict):
                added = info.get("entries-added")
                if added is not None and s.seen is not None:
                    behind = max(0, int(added) - s.seen)
                elif isinstance(first, list):
                    behind = None if first else 0
            oldest = None
            if isinstance(first, list) and first:
                oldest = _key(_s(first[0][0]))[0] / 1000
            out[s.name] = {
                "behind": behind, "seconds_behind": round(max(0.0, now - oldest), 3) if oldest else 0.0,
                "last_forwarded": None if s.ck == "0-0" else s.ck, "forwarded": s.forwarded,
                "duplicates": s.duplicates, "refused": s.refused, "filtered": s.filtered, "gap": s.gap,
                "last_forwarded_at": s.last_forwarded_at,
            }
        st_behind = res[-1]
        out["status"] = {"behind": int(st_behind) if isinstance(st_behind, int) else None, "seconds_behind": None,
                         "last_forwarded": self.status_ck, "forwarded": self.status_forwarded}
        return {
            "uplink": self.uplink_display, "node": self.node, "connected": self.connected,
            "connected_since": self.connected_since, "epoch": self.epoch, "resyncing": self.resync_pending,
            "resyncs": self.resyncs, "last_error": self.last_error, "last_error_at": self.last_error_at,
            "forwarding": self.leader, "gateway": self.gateway_id,
            "id_conflicts": self.conflicts, "parent_policy": self.parent_policy,
            "streams": out,
            "hop_latency_ms": _percentiles(self.hop_ms), "event_age_ms": _percentiles(self.age_ms),
            "rpc": {"served": self.rpc_served, "dropped": self.rpc_dropped},
            "relay": self.relay.report() if self.relay is not None else None,
            "node_names_forwarded": self.names_forwarded,
            "policy": {"types": sorted(self.policy.types) if self.policy.types else None,
                       "labels": sorted(self.policy.labels) if self.policy.labels else None,
                       "min_score": self.policy.min_score},
        }


def _age_ms(ts: Any, now: float) -> float | None:
    from datetime import datetime

    try:
        return max(0.0, (now - datetime.fromisoformat(str(ts)).timestamp()) * 1000)
    except ValueError:
        return None


def _percentiles(samples: collections.deque[float]) -> dict[str, Any]:
    if not samples:
        return {"samples": 0, "p50": None, "p95": None, "max": None}
    xs = sorted(samples)
    n = len(xs)
    return {"samples": n, "p50": round(xs[n // 2], 1), "p95": round(xs[min(n - 1, int(n * 0.95))], 1),
            "max": round(xs[-1], 1)}
