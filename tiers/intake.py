"""The intake: what a child tier sends becomes this tier's truth only after it is checked here.

A child's bridge never writes this tier's tables. It pushes one request at a time onto its own inbox
(``se:child:<node>:in``, the only keys its Redis ACL user may touch: tiers/grants.py) and waits for the
reply. The intake, in every gateway of this tier, pops the inboxes of the children it knows
(``se:children``), checks each operation against the child's subtree, and applies what passes with the
scripts of tiers/contract.py in one pipelined round trip:

- every node (of a camera, event, status, name, audit entry) lies in the child's subtree;
- camera ids are well formed, their division digits in the subtree (the scripts check that again);
- a child writes status only for cameras it forwarded itself (``via`` = the child), and events only for
  cameras of its division that are not a sibling's or this tier's own; it cannot overwrite a sibling's
  camera;
- sizes are bounded: request, header, each JSON record, each snapshot.

The identity of the sender is the inbox the request came from, never what the request says. What is
refused is counted per child and reason (``GET /api/v1/tiers/children``) and logged once per reason.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from analytics.events import event_error
from registry.ids import CameraIdError, id_in_node_division, validate_camera_id
from tiers.catalog import EVCOUNT_TTL_S, FEED_MAXLEN, event_minute
from tiers.contract import (
    INTAKE_SCRIPTS, RCAT_REFUSED, EpochChanged, IntakeFormatError, TierKeys, decode_request, evcount_field, evcount_key,
)
from tiers.counts import count_spec
from tiers.grants import Grants
from tiers.names import MAX_NAME_LENGTH, NodeNames
from tiers.nodes import NodeCodeError, normalize_node

__all__ = ["ChildStats", "Intake", "IntakePolicy", "in_subtree"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 24 << 20  # the bridge sends at most 8 MiB of snapshots per request (tiers/bridge.py)
MAX_HEADER_BYTES = 8 << 20
MAX_OPS = 20_000  # a bridge batch is at most 256 entries per stream; a resync page 500 cameras
MAX_NAMES = 200_000  # node names one child may send (a county has a few thousand villages)
MAX_CAMERA_JSON = 64 << 10
MAX_STATUS_JSON = 16 << 10
MAX_EVENT_JSON = 64 << 10
MAX_AUDIT_JSON = 32 << 10
MAX_SNAPSHOT_BYTES = 4 << 20
REPLY_TTL_S = 30  # a reply nobody popped (the child gave up waiting) evaporates
CHILDREN_REFRESH_S = 1.0  # the set of children is read again this often
POP_TIMEOUT_S = 1  # a blocking pop returns this often, to notice new children and stopping
CONCURRENCY = 8  # requests handled at once (each child has at most one outstanding)
RECONNECTS = 2  # a batch is sent again this often on a dropped connection (a stale one after a restart)
GRANTS_RESTORE_S = 5.0  # granted ACL users missing from this Redis are made again this often
_EVENT_ID = re.compile(r"^([0-9]{2,20})-([0-9]{1,20})-([0-9]{1,20})$")
_AUDIT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,96}$")
_GATEWAY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def in_subtree(code: Any, root: str) -> bool:
    """Whether `code` is a node code at or below `root`."""
    if not isinstance(code, str):
        return False
    try:
        return normalize_node(code).startswith(root)
    except NodeCodeError:
        return False


class Refused(Exception):
    """One operation of a child that does not pass the checks; the message names the reason."""


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    """How long what children send is kept here (this tier's own event settings)."""

    retention: int = 100_000
    audit_retention: int = 1_000_000
    snapshot_ttl_s: int = 7 * 86400
    index_ttl_s: int = 7 * 86400

    def as_dict(self) -> dict[str, int]:
        return {"retention": self.retention, "audit_retention": self.audit_retention,
                "snapshot_ttl_s": self.snapshot_ttl_s, "index_ttl_s": self.index_ttl_s}


@dataclass(slots=True)
class ChildStats:
    """What one child sent this gateway's intake since it started."""

    requests: int = 0
    operations: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    last_request_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "operations": self.operations, "refused": dict(self.refused),
                "last_request_at": self.last_request_at}


def _json_dict(raw: Any, limit: int, what: str) -> dict[str, Any]:
    if not isinstance(raw, str) or len(raw) > limit:
        raise Refused(f"{what} missing or over {limit} bytes")
    try:
        d = json.loads(raw)
    except ValueError:
        raise Refused(f"{what} is not JSON") from None
    if not isinstance(d, dict):
        raise Refused(f"{what} is not a JSON object")
    return d


def _camera_id(value: Any) -> str:
    try:
        return validate_camera_id(value)
    except CameraIdError as e:
        raise Refused(f"bad camera id: {e}") from None


class Intake:
    """Pops children's requests, checks them against each child's subtree, applies what passes."""

    def __init__(self, redis: aioredis.Redis, blocking: aioredis.Redis, node: str, *,
                 policy: IntakePolicy = IntakePolicy(), grants: Grants | None = None, prefix: str = "se",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.blocking = blocking  # its own connections: a blocking pop holds one for up to a second
        self.node = node
        self.policy = policy
        self.keys = TierKeys(prefix)
        self.names = NodeNames(redis, prefix)
        self.clock = clock
        self.grants = grants
        self.children: list[str] = []
        self.stats: dict[str, ChildStats] = collections.defaultdict(ChildStats)
        self._logged: set[tuple[str, str]] = set()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self._children_at = float("-inf")
        self._restored_at = float("-inf")

    # ---- lifecycle ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to return after its current pop (at most POP_TIMEOUT_S)."""
        self._stopping.set()

    async def wait_handled(self, timeout: float = 5.0) -> None:
        """Let requests being handled finish (bounded)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def run(self) -> None:
        """Serve children's inboxes until stopped; Redis outages are waited out."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._refresh_children()
                if not self.children:
                    await self._sleep(CHILDREN_REFRESH_S)
                    continue
                inboxes = {self.keys.child_inbox(c): c for c in self.children}
                got = await self.blocking.blpop(list(inboxes), timeout=POP_TIMEOUT_S)
                delay = 0.5
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                log.warning("intake: this tier's Redis failed (%s: %s); retrying", type(e).__name__, e)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if got is None:
                continue
            key = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
            child = inboxes.get(key)
            if child is None:
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._serve(child, got[1]), name=f"intake:{child}")
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("intake: a request failed", exc_info=task.exception())

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _refresh_children(self) -> None:
        now = self.clock()
        if now - self._children_at < CHILDREN_REFRESH_S:
            return
        # The epoch children check their writes against: made here when this Redis is new or was wiped.
        await self.redis.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
        if self.grants is not None and now - self._restored_at >= GRANTS_RESTORE_S:
            # ACL users live in memory: a Redis restarted without an aclfile lost them; make them again.
            self._restored_at = now
            if n := await self.grants.restore():
                log.info("intake: made %d child tiers' ACL users again (this Redis had lost them)", n)
        raw = {_s(c) for c in await self.redis.smembers(self.keys.children)}
        if self.grants is not None:
            # Granted users count too: a FLUSHALL empties se:children and se:grants but not the ACL.
            raw |= set(await self.grants.acl_children())
        codes = sorted(raw)
        # Only nodes strictly below this tier's: anything else in the set is ignored.
        self.children = [c for c in codes if c != self.node and in_subtree(c, self.node) and normalize_node(c) == c]
        self._children_at = now

    # ---- one request --------------------------------------------------------------------------------
    async def _serve(self, child: str, raw: bytes) -> None:
        reply = await self.handle(child, raw)
        rid = reply.get("id")
        if not rid:
            return  # no id to answer to: the child times out and sends again
        key = self.keys.child_reply(child, rid)
        async with self.redis.pipeline(transaction=False) as p:
            p.rpush(key, json.dumps(reply, separators=(",", ":")))
            p.expire(key, REPLY_TTL_S)
            await p.execute()

    async def handle(self, child: str, raw: bytes) -> dict[str, Any]:
        """Check and apply one request of `child`; the reply to send back."""
        st = self.stats[child]
        st.requests += 1
        st.last_request_at = self.clock()
        if len(raw) > MAX_REQUEST_BYTES:
            self._refuse(child, "request over the size bound")
            return {"id": _peek_id(raw), "error": f"BAD request over {MAX_REQUEST_BYTES} bytes"}
        try:
            head, blobs = decode_request(raw, MAX_HEADER_BYTES)
        except IntakeFormatError as e:
            self._refuse(child, f"malformed request: {e}")
            return {"id": _peek_id(raw), "error": f"BAD {e}"}
        rid, epoch, ops = head["id"], head["epoch"], head["ops"]
        if len(ops) > MAX_OPS:
            self._refuse(child, "too many operations")
            return {"id": rid, "error": f"BAD more than {MAX_OPS} operations"}
        st.operations += len(ops)
        calls = _Calls()
        plan: list[tuple[str, int, Any]] = []  # (kind, calls it queued, result when refused)
        for op in ops:
            before = len(calls.calls)
            try:
                if not (isinstance(op, list) and len(op) == 2 and isinstance(op[0], str) and isinstance(op[1], dict)):
                    raise Refused("an operation is not [name, {args}]")
                plan.append((self._queue(calls, child, epoch, op[0], op[1], blobs), len(calls.calls) - before, None))
            except Refused as e:
                del calls.calls[before:]
                name = op[0] if isinstance(op, list) and op and isinstance(op[0], str) else "?"
                self._refuse(child, f"{name[:16]}: {e}")
                plan.append(("refused", 0, RCAT_REFUSED if name == "rcat" else ["", -1] if name in ("event", "audit")
                             else 0))
        try:
            # Every call is idempotent (the scripts skip what is there already): a batch may be sent again.
            results = await INTAKE_SCRIPTS.run(self.redis, calls.replay, reconnects=RECONNECTS) if calls.calls else []
        except EpochChanged as e:
            return {"id": rid, "error": str(e)}
        out: list[Any] = []
        at = 0
        for kind, n, refused in plan:
            mine, at = results[at:at + n], at + n
            if kind == "refused":
                out.append(refused)
            elif kind == "heartbeat":
                out.append({"epoch": _s(mine[1]), "policy": self.policy.as_dict()})
            elif kind == "sync":
                out.append(1)
            else:
                out.append(_plain(mine[0]))  # an rcat in a resync is followed by its sync set's EXPIRE
        return {"id": rid, "results": out}

    def _refuse(self, child: str, reason: str) -> None:
        self.stats[child].refused[reason.split(":")[0]] += 1
        if (child, reason) not in self._logged and len(self._logged) < 10_000:
            self._logged.add((child, reason))
            log.warning("intake: refused from child tier %s: %s", child, reason)

    # ---- the checks, one per operation --------------------------------------------------------------
    def _queue(self, p: "_Calls", child: str, epoch: str, name: str, a: dict[str, Any], blobs: list[bytes]) -> str:
        """Check one operation and queue its script call; Refused when it does not pass."""
        k = self.keys
        if name == "heartbeat":
            gateway = a.get("gateway")
            if not isinstance(gateway, str) or not _GATEWAY.match(gateway):
                raise Refused("bad gateway name")
            connected_at = a.get("connected_at")
            if not isinstance(connected_at, (int, float)):
                raise Refused("bad connected_at")
            body = json.dumps({"node": child, "gateway": gateway, "connected_at": float(connected_at),
                               "last_seen": self.clock()})
            INTAKE_SCRIPTS.call(p, "heartbeat", [k.epoch, k.tiers], [epoch, child, body])
            p.get(k.epoch)
            return "heartbeat"
        if name == "names":
            names = a.get("names")
            if not isinstance(names, dict) or len(names) > MAX_NAMES:
                raise Refused(f"names missing or more than {MAX_NAMES}")
            args: list[Any] = [epoch, child]
            for code, nm in names.items():
                if not in_subtree(code, child) or not isinstance(nm, str) or len(nm) > MAX_NAME_LENGTH:
                    raise Refused("a name outside the subtree or over the length bound")
                args += [code, nm]
            n = self.names
            INTAKE_SCRIPTS.call(p, "names_put", [k.epoch, n.below_key(child), n.version_key, n.children_key], args)
            return name
        if name == "sync":
            p.delete(k.rcat_sync(child))
            return name
        if name == "rcat":
            return self._queue_rcat(p, child, epoch, a)
        if name == "prune":
            sync = k.rcat_sync(child)
            INTAKE_SCRIPTS.call(p, "rcat_prune", [k.epoch, k.rcat, k.rcat_by_node, k.rcat_feed, k.status,
                                                  k.status_seq, k.status_changes, k.rcat_via_prefix + child, sync],
                                [epoch, "", "", "", child, "", "", FEED_MAXLEN, k.rcat_via_prefix])
            return name
        if name == "status":
            entries = a.get("entries")
            if not isinstance(entries, list) or len(entries) > MAX_OPS:
                raise Refused("status entries missing or too many")
            args = [epoch, child]
            for e in entries:
                if not (isinstance(e, list) and len(e) == 2):
                    raise Refused("a status entry is not [id, json]")
                cid = _camera_id(e[0])
                if e[1] != "":
                    d = _json_dict(e[1], MAX_STATUS_JSON, "status")
                    if d.get("camera_id") != cid or not in_subtree(d.get("node"), child):
                        raise Refused("a status of another camera, or outside the subtree")
                args += [cid, e[1]]
            INTAKE_SCRIPTS.call(p, "status_put_child", [k.epoch, k.status, k.status_seq, k.status_changes, k.rcat],
                                args)
            return name
        if name == "event":
            return self._queue_event(p, child, epoch, a, blobs)
        if name == "audit":
            d = _json_dict(a.get("entry"), MAX_AUDIT_JSON, "audit entry")
            aid = d.get("id")
            if not isinstance(aid, str) or not _AUDIT_ID.match(aid):
                raise Refused("bad audit id")
            if not in_subtree(d.get("tier"), child):
                raise Refused("an audit entry of a tier outside the subtree")
            INTAKE_SCRIPTS.call(p, "audit_forward", [k.epoch, k.audit, k.audit_index(aid)],
                                [epoch, self.policy.audit_retention, a["entry"], self.policy.index_ttl_s])
            return name
        raise Refused("unknown operation")

    def _queue_rcat(self, p: "_Calls", child: str, epoch: str, a: dict[str, Any]) -> str:
        k = self.keys
        op, cid = a.get("op"), _camera_id(a.get("id"))
        if op not in ("upsert", "delete"):
            raise Refused("rcat op is neither upsert nor delete")
        owner, node = a.get("owner"), a.get("node", "")
        if not in_subtree(owner, child):
            raise Refused("a camera whose owner lies outside the subtree")
        js = ""
        if op == "upsert":
            d = _json_dict(a.get("camera"), MAX_CAMERA_JSON, "camera")
            if not in_subtree(node, child) or d.get("node") != node or d.get("id") != cid:
                raise Refused("a camera outside the subtree, or not the one named")
            node = normalize_node(node)
            # Who sent it and who runs it are this intake's to say, not the child's.
            d["via"], d["owner"] = child, normalize_node(owner)
            js = json.dumps(d, separators=(",", ":"), ensure_ascii=False)
        elif node and not in_subtree(node, child):
            raise Refused("a delete outside the subtree")
        sync = k.rcat_sync(child) if a.get("sync") is True else ""
        INTAKE_SCRIPTS.call(p, "rcat_apply", [k.epoch, k.rcat, k.rcat_by_node, k.rcat_feed, k.status, k.status_seq,
                                              k.status_changes, k.cameras],
                            [epoch, op, cid, js, child, normalize_node(owner), node, FEED_MAXLEN,
                             k.rcat_via_prefix, sync])
        if sync:
            p.expire(sync, 3600)  # an interrupted resync leaves nothing behind for long
            return "rcat+expire"
        return "rcat"

    def _queue_event(self, p: "_Calls", child: str, epoch: str, a: dict[str, Any], blobs: list[bytes]) -> str:
        k = self.keys
        raw = a.get("event")
        d = _json_dict(raw, MAX_EVENT_JSON, "event")
        if (why := event_error(d)) is not None:
            raise Refused(f"not an event of the wire schema: {why}")  # read back by every consumer here
        eid = d.get("id")
        m = _EVENT_ID.match(eid) if isinstance(eid, str) else None
        if m is None or not in_subtree(m.group(1), child):
            raise Refused("bad event id, or one minted outside the subtree")
        if not in_subtree(d.get("node"), child):
            raise Refused("an event of a node outside the subtree")
        origin = d.get("origin")
        if isinstance(origin, dict) and "node" in origin and not in_subtree(origin["node"], child):
            raise Refused("an event whose origin lies outside the subtree")
        cid = _camera_id(d.get("camera_id"))
        try:
            id_in_node_division(cid, child)
        except CameraIdError:
            raise Refused("an event of a camera whose id lies outside the division") from None
        snap = b""
        blob = a.get("blob", -1)
        if not isinstance(blob, int) or blob >= len(blobs):
            raise Refused("bad snapshot reference")
        if blob >= 0:
            snap = blobs[blob]
            if len(snap) > MAX_SNAPSHOT_BYTES or (snap and snap[:2] != b"\xff\xd8"):
                # The event is kept; only the picture, which would be served as a JPEG, is not.
                self._refuse(child, "snapshot: over the size bound or not a JPEG")
                snap = b""
        minute = event_minute(d.get("ts") if isinstance(d.get("ts"), str) else None, self.clock())
        label = d.get("label") if isinstance(d.get("label"), str) else None
        cfield = evcount_field(normalize_node(d["node"]), str(d.get("type", ""))[:32], label) if minute else ""
        pol = self.policy
        INTAKE_SCRIPTS.call(p, "event_forward",
                            [k.epoch, k.events, k.event_index(eid), evcount_key(minute or 0, k.prefix), k.rcat,
                             k.cameras],
                            [epoch, pol.retention, raw, snap, pol.snapshot_ttl_s, k.snap_prefix, pol.index_ttl_s,
                             cfield, EVCOUNT_TTL_S, child, cid, count_spec(d, k.prefix, self.clock())])
        return "event"

    def report(self) -> dict[str, dict[str, Any]]:
        """Per child: requests, operations and refusals by reason, as this gateway's intake saw them."""
        return {c: s.as_dict() for c, s in sorted(self.stats.items())}


class _Calls:
    """Redis calls the checks queue, replayed onto a pipeline (twice when the scripts had to be loaded)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self.calls.append(args)

    def get(self, key: str) -> None:
        self.calls.append(("GET", key))

    def delete(self, key: str) -> None:
        self.calls.append(("DEL", key))

    def expire(self, key: str, seconds: int) -> None:
        self.calls.append(("EXPIRE", key, seconds))

    def replay(self, p: Any) -> None:
        for c in self.calls:
            p.execute_command(*c)


def _peek_id(raw: bytes) -> str | None:
    """The request id of a request refused as a whole, when it can be read (so the child hears why)."""
    m = re.match(rb'^\{"v":1,"id":"([A-Za-z0-9]{1,64})"', raw[:128])
    return m.group(1).decode() if m else None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _plain(v: Any) -> Any:
    """A script's reply as JSON can carry it (bytes decoded, lists kept)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
