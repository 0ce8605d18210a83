"""The inter-tier contract: every Redis key name and every Lua script, in one place.

A tier's Redis is shared by its gateways and written into by its children's bridges (through the
parent's intake, tiers/intake.py); what lives under which name, and every script that changes it, is
defined here and nowhere else, so the layout that tiers of different versions rely on reads in one file.
The prefix (default "se") lets tests and several deployments share one Redis.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError, NoScriptError, ResponseError

@dataclass(frozen=True, slots=True)
class TierKeys:
    """Names of the tier keys under one prefix."""

    prefix: str = "se"

    @property
    def status(self) -> str:
        return f"{self.prefix}:status"

    @property
    def status_seq(self) -> str:
        return f"{self.prefix}:status:seq"

    @property
    def status_changes(self) -> str:
        return f"{self.prefix}:status:changes"

    @property
    def cameras(self) -> str:
        return f"{self.prefix}:cameras"  # registry/store.py: this tier's own cameras, id -> node

    @property
    def rcat(self) -> str:
        return f"{self.prefix}:rcat"

    @property
    def rcat_by_node(self) -> str:
        return f"{self.prefix}:rcat:by_node"

    @property
    def rcat_feed(self) -> str:
        return f"{self.prefix}:rcat:feed"

    @property
    def rcat_via_prefix(self) -> str:
        return f"{self.prefix}:rcat:via:"

    def rcat_sync(self, child: str) -> str:
        return f"{self.prefix}:rcat:sync:{child}"

    @property
    def tiers(self) -> str:
        return f"{self.prefix}:tiers"

    @property
    def tier_info(self) -> str:
        return f"{self.prefix}:tier"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    @property
    def catalog(self) -> str:
        return f"{self.prefix}:catalog"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}:bridge"

    @property
    def bridge_lease(self) -> str:
        return f"{self.prefix}:bridge:lease"

    def event_index(self, event_id: str) -> str:
        return f"{self.prefix}:ev:{event_id}"

    def audit_index(self, audit_id: str) -> str:
        return f"{self.prefix}:au:{audit_id}"

    @property
    def snap_prefix(self) -> str:
        return f"{self.prefix}:snap:"

    # A child tier's keys at its parent: the only ones its Redis ACL user may touch (tiers/grants.py).
    def child_prefix(self, child: str) -> str:
        """Every key of one child at its parent starts with this (the ACL user's key pattern + "*")."""
        return f"{self.prefix}:child:{child}:"

    def child_inbox(self, child: str) -> str:
        return f"{self.child_prefix(child)}in"  # list: the child's one outstanding intake request

    def child_reply(self, child: str, request_id: str) -> str:
        return f"{self.child_prefix(child)}out:{request_id}"  # list: the intake's reply to one request

    def rpc_queue(self, child: str) -> str:
        return f"{self.child_prefix(child)}rpc"  # list: frame requests for that child (tiers/rpc.py)

    def rpc_reply(self, child: str, request_id: str) -> str:
        return f"{self.child_prefix(child)}rpc:{request_id}"

    # Streams (tiers/relay.py): recordings, clips, live.mp4 asked of that child, chunk by chunk.
    def stream_queue(self, child: str) -> str:
        return f"{self.child_prefix(child)}st"  # list: stream requests for that child

    def stream_reply(self, child: str, request_id: str) -> str:
        return f"{self.child_prefix(child)}st:{request_id}"  # list: the reply's items (head, data, end)

    def stream_ack(self, child: str, request_id: str) -> str:
        return f"{self.child_prefix(child)}st:{request_id}:ack"  # list: the asker's newest ack, or "cancel"

    @property
    def children(self) -> str:
        return f"{self.prefix}:children"  # set: child nodes whose inboxes this tier's intake reads

    @property
    def grants(self) -> str:
        return f"{self.prefix}:grants"  # hash child node -> JSON {user, sha256, granted_at, by}


# ---- event counts ----------------------------------------------------------------------------------
def evcount_key(minute: int, prefix: str = "se") -> str:
    """Hash of event counts for one Unix minute."""
    return f"{prefix}:evcount:{minute}"


def evcount_field(node: str, type_: str, label: str | None) -> str:
    """Field of an event count: node, type and label ("" when none)."""
    return f"{node}|{type_}|{label or ''}"


# ---- rule counts (tiers/counts.py) --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CountKeys:
    """Keys of the zone and line counts (tiers/counts.py), under one prefix ``{p}`` ("se" by default).

    Written where a zone or line event is appended (EVENT_APPEND) and again at each upper tier's intake
    (_EVENT_FORWARD), in the same script as the event, so a retried or duplicate event is never counted twice:

    - ``{p}:rc:{camera}:{minute}``   hash, one camera's counts in one Unix minute; fields are JSON arrays:
                                     ``["L", line, direction, label]`` crossings, ``["Z", zone, phase, label]``
                                     zone events, ``["O", zone]`` occupancy after the minute's last change,
                                     ``["M", zone]`` its highest in the minute, ``["P", zone]`` before its first
    - ``{p}:rn:{node}:{minute}``     hash, the same summed over a node's subtree (one per ancestor of the
                                     camera's node): ``["L", direction, label]``, ``["Z", phase, label]``
    - ``{p}:occ:{camera}:{zone}``    sorted set, who is in a zone now: ``{origin node}|{gateway}|{track}`` scored
                                     by when it entered (ms); one whose leave was lost drops out after a while
    - ``{p}:occlast:{camera}``       hash zone -> ``{minute}|{occupancy}``: the zone's last change
    Every key expires COUNTS_TTL_S after its last write (tiers/counts.py).
    """

    prefix: str = "se"

    def camera(self, camera_id: str, minute: int) -> str:
        return f"{self.prefix}:rc:{camera_id}:{minute}"

    def node(self, node: str, minute: int) -> str:
        return f"{self.prefix}:rn:{node}:{minute}"

    def occupants(self, camera_id: str, zone: str) -> str:
        return f"{self.prefix}:occ:{camera_id}:{zone}"

    def last_change(self, camera_id: str) -> str:
        return f"{self.prefix}:occlast:{camera_id}"


# Counting a zone or line event, inside the script that writes it (only when it is written). The keys are
# computed by tiers/counts.py count_spec and passed in one JSON argument (derived keys, as CAMERA_LIST: fine
# on a standalone Redis, the deployment model). spec: {"ttl", "incr": [[key, field], ...], "occ": {"key",
# "member", "ms", "stale", "enter", "hash", "f_prev", "f_now", "f_max", "last", "zone", "minute"} or absent}
_RULE_COUNT = """
local function count_rule(spec)
  if spec == nil or spec == '' then return end
  local s = cjson.decode(spec)
  local ttl = s['ttl']
  for _, kf in ipairs(s['incr']) do
    redis.call('HINCRBY', kf[1], kf[2], 1)
    redis.call('EXPIRE', kf[1], ttl)
  end
  local o = s['occ']
  if type(o) ~= 'table' then return end
  redis.call('ZREMRANGEBYSCORE', o['key'], '-inf', '(' .. o['stale'])
  local before = redis.call('ZCARD', o['key'])
  if o['enter'] == 1 then
    redis.call('ZADD', o['key'], o['ms'], o['member'])
  else
    redis.call('ZREM', o['key'], o['member'])
  end
  local after = redis.call('ZCARD', o['key'])
  redis.call('EXPIRE', o['key'], ttl)
  local h = o['hash']
  redis.call('HSETNX', h, o['f_prev'], before)
  redis.call('HSET', h, o['f_now'], after)
  local mx = tonumber(redis.call('HGET', h, o['f_max']) or '0')
  redis.call('HSET', h, o['f_max'], math.max(mx, before, after))
  redis.call('EXPIRE', h, ttl)
  redis.call('HSET', o['last'], o['zone'], o['minute'] .. '|' .. after)
  redis.call('EXPIRE', o['last'], ttl)
end
"""


# ---- scripts -----------------------------------------------------------------------------------------
_EPOCH_CHECK = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('EPOCH the parent tier Redis was wiped or replaced')
end
"""

# KEYS: epoch, status, seq, changes   ARGV: epoch ('' = no check), then id, json ('' = delete) pairs
_STATUS_PUT = _EPOCH_CHECK + """
for i = 2, #ARGV, 2 do
  local seq = redis.call('INCR', KEYS[3])
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  redis.call('ZADD', KEYS[4], seq, ARGV[i])
end
return (#ARGV - 1) / 2
"""

# KEYS: changes, status   ARGV: after seq, limit   ->  flat [id, seq, json or '', ...]
_STATUS_CHANGES = """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], rows[i]) or ''
end
return out
"""

# Shared by apply and prune: forget a remote camera (record, indexes, status) and log it in the feed.
_FORGET = """
local function forget(id, cnode, owner, via)
  redis.call('HDEL', KEYS[2], id)
  if cnode then redis.call('ZREM', KEYS[3], cnode .. '/' .. id) end
  redis.call('SREM', ARGV[9] .. via, id)
  local seq = redis.call('INCR', KEYS[6])
  redis.call('HDEL', KEYS[5], id)
  redis.call('ZADD', KEYS[7], seq, id)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', 'op', 'delete', 'id', id, 'node', cnode or '',
    'owner', owner, 'via', via)
end
local function parse(cur)
  if not cur then return nil, nil, nil end
  local ok, c = pcall(cjson.decode, cur)
  if not ok or type(c) ~= 'table' then return nil, nil, nil end
  local function s(v) if type(v) == 'string' then return v end return nil end
  return s(c['node']), s(c['owner']), s(c['via'])
end
"""

# KEYS: epoch, rcat, by_node, feed, status, seq, changes, this tier's own cameras (se:cameras)
# ARGV: epoch, op, id, json, via, owner, node, maxlen, via-set prefix, sync set ('' = none)
# Returns 0 nothing to do, 1 applied, 2 applied over another tier's camera with the same id,
# -1 refused: this tier has its own camera with that id (ids must be unique network-wide),
# -2 refused: the camera's node, or its id's division digits (registry/ids.py id_in_node_division),
# lie outside the subtree of the child that sent it (a child speaks for its own subtree only),
# -3 refused: another child holds a camera with that id (a child cannot overwrite a sibling's camera).
_RCAT_APPLY = _EPOCH_CHECK + _FORGET + """
if ARGV[10] ~= '' then redis.call('SADD', ARGV[10], ARGV[3]) end
local cur = redis.call('HGET', KEYS[2], ARGV[3])
local cnode, cowner, cvia = parse(cur)
if ARGV[2] == 'upsert' then
  if cur == ARGV[4] then return 0 end
  if redis.call('HEXISTS', KEYS[8], ARGV[3]) == 1 then return -1 end
  if cvia and cvia ~= ARGV[5] then return -3 end
  local via, node, div = ARGV[5], ARGV[7], math.min(#ARGV[5], 6)
  if string.sub(node, 1, #via) ~= via or string.sub(ARGV[3], 1, div) ~= string.sub(via, 1, div) then
    return -2
  end
  local clash = (cowner and cowner ~= ARGV[6]) and 2 or 1
  if cnode and cnode ~= ARGV[7] then redis.call('ZREM', KEYS[3], cnode .. '/' .. ARGV[3]) end
  if cvia and cvia ~= ARGV[5] then redis.call('SREM', ARGV[9] .. cvia, ARGV[3]) end
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[3], 0, ARGV[7] .. '/' .. ARGV[3])
  redis.call('SADD', ARGV[9] .. ARGV[5], ARGV[3])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', 'op', 'upsert', 'id', ARGV[3], 'node', ARGV[7],
    'owner', ARGV[6], 'via', ARGV[5], 'camera', ARGV[4])
  return clash
end
-- A delete from a child that no longer holds the camera (it moved to another subtree) is stale.
if not cur or (cvia and cvia ~= ARGV[5]) then return 0 end
forget(ARGV[3], cnode, cowner or ARGV[6], ARGV[5])
return 1
"""

# KEYS: epoch, rcat, by_node, feed, status, seq, changes, via set, sync set
# ARGV: epoch, (unused), (unused), (unused), via, (unused), (unused), maxlen, via-set prefix
_RCAT_PRUNE = _EPOCH_CHECK + _FORGET + """
local stale = redis.call('SDIFF', KEYS[8], KEYS[9])
local n = 0
for _, id in ipairs(stale) do
  local cur = redis.call('HGET', KEYS[2], id)
  local cnode, cowner, cvia = parse(cur)
  if cur and (not cvia or cvia == ARGV[5]) then
    forget(id, cnode, cowner or '', ARGV[5])
    n = n + 1
  else
    redis.call('SREM', KEYS[8], id)
  end
end
redis.call('DEL', KEYS[9])
return n
"""

# KEYS: epoch, tiers   ARGV: epoch, node, json
_HEARTBEAT = _EPOCH_CHECK + """
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


# KEYS: epoch, below hash, names version, children set   ARGV: epoch, child, then code, name pairs
# A child names its own subtree only: codes outside it are not stored (and not counted).
_NAMES_PUT = _EPOCH_CHECK + """
redis.call('DEL', KEYS[2])
local n = 0
for i = 3, #ARGV, 2 do
  if string.sub(ARGV[i], 1, #ARGV[2]) == ARGV[2] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('INCR', KEYS[3])
return n
"""


class EpochChanged(Exception):
    """The parent's Redis is not the one this child last synchronised with."""


class Scripts:
    """Lua scripts called by SHA inside pipelines (one round trip), loaded again when the server lost them."""

    def __init__(self, **sources: str) -> None:
        self.sources = sources
        self.sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in sources.items()}

    def call(self, client: Any, name: str, keys: list[str], args: list[Any]) -> Any:
        """Queue (pipeline) or run (client) one script call."""
        return client.execute_command("EVALSHA", self.sha[name], len(keys), *keys, *args)

    async def load(self, client: aioredis.Redis) -> None:
        """Load every script into the server (after a restart or SCRIPT FLUSH)."""
        async with client.pipeline(transaction=False) as pipe:
            for src in self.sources.values():
                pipe.script_load(src)
            await pipe.execute()

    async def run(self, client: aioredis.Redis, queue, reconnects: int = 0) -> list[Any]:
        """Build a pipeline with `queue(pipe)`, execute it; on NOSCRIPT load the scripts and run it once more.

        Results come back in order, exceptions in place (raise_on_error=False); an EPOCH error raises
        EpochChanged. Every script here is idempotent, so running a batch again is safe: with `reconnects`,
        a batch whose connection dropped (a pooled one from before a Redis restart) is sent again that often.
        """
        loaded = False
        while True:
            try:
                async with client.pipeline(transaction=False) as pipe:
                    queue(pipe)
                    results = await pipe.execute(raise_on_error=False)
            except RedisConnectionError:
                if reconnects <= 0:
                    raise
                reconnects -= 1
                continue
            if not loaded and any(isinstance(r, NoScriptError) for r in results):
                await self.load(client)
                loaded = True
                continue
            break
        for r in results:
            if isinstance(r, ResponseError):
                if str(r).startswith("EPOCH"):
                    raise EpochChanged(str(r))
                raise r
            if isinstance(r, Exception):
                raise r
        return results


TIER_SCRIPTS = Scripts(status_put=_STATUS_PUT, status_changes=_STATUS_CHANGES, rcat_apply=_RCAT_APPLY,
                       rcat_prune=_RCAT_PRUNE, heartbeat=_HEARTBEAT, names_put=_NAMES_PUT)


# ---- the bridge: a child tier's forwarding ------------------------------------------------------------
# Run by the parent's intake for a child.  KEYS: epoch, stream, index, count hash, remote catalog, own cameras
# ARGV: epoch, maxlen, json, snapshot, snapshot ttl, snapshot prefix, index ttl, count field ('' none), count ttl,
#       the child, the event's camera, rule count spec ('' none: _RULE_COUNT)
# Returns {entry id, 1} written, {entry id, 0} already there, {'', -1} refused: the camera is this tier's own
# or another child's. (One the parent does not know is let through: its delete may have gone up before
# events it raised earlier; the intake has checked that its id lies in the child's division.)
_EVENT_FORWARD = _RULE_COUNT + """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('EPOCH the parent tier Redis was wiped or replaced')
end
if redis.call('HEXISTS', KEYS[6], ARGV[11]) == 1 then return {'', -1} end
local cur = redis.call('HGET', KEYS[5], ARGV[11])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if not ok or type(c) ~= 'table' or c['via'] ~= ARGV[10] then return {'', -1} end
end
local prev = redis.call('GET', KEYS[3])
if prev then return {prev, 0} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[3], 's', ARGV[4] ~= '' and '1' or '0')
redis.call('SET', KEYS[3], id, 'EX', ARGV[7])
if ARGV[4] ~= '' then redis.call('SET', ARGV[6] .. id, ARGV[4], 'EX', ARGV[5]) end
if ARGV[8] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[8], 1)
  redis.call('EXPIRE', KEYS[4], ARGV[9])
end
count_rule(ARGV[12])
return {id, 1}
"""

# KEYS: epoch, stream, index   ARGV: epoch, maxlen, json, index ttl
_AUDIT_FORWARD = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('EPOCH the parent tier Redis was wiped or replaced')
end
local prev = redis.call('GET', KEYS[3])
if prev then return {prev, 0} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'a', ARGV[3])
redis.call('SET', KEYS[3], id, 'EX', ARGV[4])
return {id, 1}
"""

# Local read of events with their snapshots, bounded in bytes.  KEYS: stream   ARGV: after, count, byte cap, snap prefix
_READ_EVENTS = """
local rows = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local out = {}
local bytes = 0
for _, r in ipairs(rows) do
  local f = r[2]
  local e, s = '', '0'
  for i = 1, #f, 2 do
    if f[i] == 'e' then e = f[i + 1] elseif f[i] == 's' then s = f[i + 1] end
  end
  local snap = ''
  if s == '1' then snap = redis.call('GET', ARGV[4] .. r[1]) or '' end
  if #out > 0 and bytes + #snap > tonumber(ARGV[3]) then break end
  bytes = bytes + #snap
  out[#out + 1] = r[1]
  out[#out + 1] = e
  out[#out + 1] = snap
end
return out
"""

# One bridge per tier, even with several gateways on its Redis.  KEYS: lease   ARGV: holder, ttl ms
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Status entries from a child, for the cameras it forwarded only.  KEYS: epoch, status, seq, changes, remote catalog
# ARGV: epoch, the child, then id, json ('' = delete) pairs.  Returns the entries applied.
_STATUS_PUT_CHILD = _EPOCH_CHECK + """
local n = 0
for i = 3, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[5], ARGV[i])
  local ok, c = pcall(cjson.decode, cur or '')
  if cur and ok and type(c) == 'table' and c['via'] == ARGV[2] then
    local seq = redis.call('INCR', KEYS[3])
    if ARGV[i + 1] == '' then
      redis.call('HDEL', KEYS[2], ARGV[i])
    else
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    end
    redis.call('ZADD', KEYS[4], seq, ARGV[i])
    n = n + 1
  end
end
return n
"""

INTAKE_SCRIPTS = Scripts(event_forward=_EVENT_FORWARD, audit_forward=_AUDIT_FORWARD,
                         status_put_child=_STATUS_PUT_CHILD, **TIER_SCRIPTS.sources)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

BRIDGE_SCRIPTS = Scripts(read_events=_READ_EVENTS, lease=_LEASE, release=_RELEASE, **TIER_SCRIPTS.sources)


# ---- the intake: what a child sends its parent ------------------------------------------------------------
# A child tier never writes the parent's tables itself: it RPUSHes one request at a time onto its inbox
# (TierKeys.child_inbox) and BLPOPs the reply (TierKeys.child_reply). The parent's intake (tiers/intake.py)
# validates every operation against the child's subtree before it runs the scripts above.
#
# Request: header JSON, b"\n", then the blobs (snapshots) back to back. Header:
#   {"v": 1, "id": hex, "epoch": the parent's epoch as the child knows it ('' = no check),
#    "ops": [[name, {args}], ...], "blobs": [byte length, ...]}
# Operations (name: args -> result):
#   heartbeat: {"gateway", "connected_at"}                    -> {"epoch", "policy": {retention, ...}}
#   names:     {"names": {code: name}}                        -> names stored
#   sync:      {}  (a catalog resync begins)                  -> 1
#   rcat:      {"op": upsert|delete, "id", "node", "owner", "camera": JSON, "sync": bool}
#                                                             -> _RCAT_APPLY's code (-4: refused by the intake)
#   prune:     {}  (a resync ended: forget what it did not send) -> cameras forgotten
#   status:    {"entries": [[camera id, JSON or ""], ...]}    -> entries applied
#   event:     {"event": JSON, "blob": index or -1}           -> [entry id, 1 new | 0 duplicate | -1 refused]
#   audit:     {"entry": JSON}                                -> [entry id, 1 new | 0 duplicate | -1 refused]
# Reply JSON: {"id", "results": [...]} or {"id", "error": "EPOCH ..." | "BAD ..."}.
INTAKE_VERSION = 1
RCAT_REFUSED = -4  # an rcat operation the intake refused before it reached Redis (malformed, outside the subtree)


class IntakeFormatError(ValueError):
    """A request that does not follow the intake wire format."""


def encode_request(request_id: str, epoch: str, ops: list[tuple[str, dict[str, Any]]],
                   blobs: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    """One intake request, as the child pushes it."""
    head = json.dumps({"v": INTAKE_VERSION, "id": request_id, "epoch": epoch, "ops": ops,
                       "blobs": [len(b) for b in blobs]}, separators=(",", ":"), ensure_ascii=False)
    return head.encode() + b"\n" + b"".join(blobs)


def decode_request(raw: bytes, max_header: int) -> tuple[dict[str, Any], list[bytes]]:
    """The header and blobs of a request; IntakeFormatError when it is not one."""
    head, sep, body = raw.partition(b"\n")
    if not sep or len(head) > max_header:
        raise IntakeFormatError("no header, or a header over the bound")
    try:
        h = json.loads(head)
    except ValueError:
        raise IntakeFormatError("header is not JSON") from None
    if not isinstance(h, dict) or h.get("v") != INTAKE_VERSION or not isinstance(h.get("ops"), list):
        raise IntakeFormatError("not an intake request of this version")
    rid, epoch, sizes = h.get("id"), h.get("epoch"), h.get("blobs")
    if not isinstance(rid, str) or not rid.isalnum() or len(rid) > 64 or not isinstance(epoch, str):
        raise IntakeFormatError("bad request id or epoch")
    if not isinstance(sizes, list) or not all(isinstance(n, int) and n >= 0 for n in sizes) or sum(sizes) != len(body):
        raise IntakeFormatError("blob sizes do not add up to the body")
    blobs, at = [], 0
    for n in sizes:
        blobs.append(body[at:at + n])
        at += n
    return h, blobs


# ---- the camera registry (registry/store.py) ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CameraKeys:
    """Keys of this tier's own cameras (registry/store.py), under one prefix ``{p}`` ("se" by default):

    - ``{p}:camera:{id}``       string, the camera's full JSON (credentials included; never returned as is)
    - ``{p}:cameras``           hash id -> node: existence, count, and the old node on a move
    - ``{p}:cameras:by_node``   sorted set, score 0, member ``{node}/{id}``: lexical range = subtree,
                                and "/" sorts before every digit, so a node's own cameras come before
                                its children's and the order is by node, then id
    - ``{p}:catalog``           stream, the replayable change feed (op, id, node, camera, ts)
    - ``{p}:serial:{centre}``   counter for generated ids per 8-digit centre code

    Read, not written: ``{p}:rcat`` (TierKeys.rcat), the cameras of the tiers below; a create checks it in
    its script, since camera ids are unique network-wide.

    Every write that changes a record runs as one Lua script (CAMERA_CREATE, CAMERA_UPDATE, CAMERA_DELETE),
    so the record, both indexes and the feed entry change together or not at all.
    """

    prefix: str = "se"

    def camera(self, camera_id: str) -> str:
        return f"{self.camera_prefix}{camera_id}"

    @property
    def camera_prefix(self) -> str:
        """The record keys less the id (CAMERA_LIST derives them from the index members)."""
        return f"{self.prefix}:camera:"

    @property
    def ids(self) -> str:
        return TierKeys(self.prefix).cameras

    @property
    def by_node(self) -> str:
        return f"{self.prefix}:cameras:by_node"

    @property
    def catalog(self) -> str:
        return TierKeys(self.prefix).catalog

    @property
    def rcat(self) -> str:
        return TierKeys(self.prefix).rcat

    def serial(self, centre: str) -> str:
        return f"{self.prefix}:serial:{centre}"


# KEYS: camera, ids, by_node, catalog, remote catalog (TierKeys.rcat)
# ARGV: id, node, json, ts, maxlen
# Returns the feed entry id; false when this tier has the id; {'remote', record} when a tier below owns it.
CAMERA_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return false
end
local remote = redis.call('HGET', KEYS[5], ARGV[1])
if remote then
  return {'remote', remote}
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2] .. '/' .. ARGV[1])
return redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
  'op', 'upsert', 'id', ARGV[1], 'node', ARGV[2], 'camera', ARGV[3], 'ts', ARGV[4])
"""

# KEYS: camera, ids, by_node, catalog   ARGV: id, node, json, ts, maxlen
CAMERA_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old and old ~= ARGV[2] then
  redis.call('ZREM', KEYS[3], old .. '/' .. ARGV[1])
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2] .. '/' .. ARGV[1])
return redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
  'op', 'upsert', 'id', ARGV[1], 'node', ARGV[2], 'camera', ARGV[3], 'ts', ARGV[4])
"""

# KEYS: camera, ids, by_node, catalog   ARGV: id, ts, maxlen
CAMERA_DELETE = """
local existed = redis.call('DEL', KEYS[1])
local node = redis.call('HGET', KEYS[2], ARGV[1])
if existed == 0 and not node then
  return false
end
redis.call('HDEL', KEYS[2], ARGV[1])
if node then
  redis.call('ZREM', KEYS[3], node .. '/' .. ARGV[1])
else
  node = ''
end
return redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*',
  'op', 'delete', 'id', ARGV[1], 'node', node, 'ts', ARGV[2])
"""

# KEYS: by_node   ARGV: min, max, limit, camera key prefix (CameraKeys.camera_prefix)
# Range and fetch in one round trip. The record keys are derived rather than declared,
# which is fine on a standalone Redis (the deployment model: one Redis per tier).
CAMERA_LIST = """
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i, m in ipairs(members) do
  local id = string.match(m, '/(%d+)$')
  local rec = false
  if id and i < tonumber(ARGV[3]) then
    rec = redis.call('GET', ARGV[4] .. id)
  end
  out[#out + 1] = m
  out[#out + 1] = rec or ''
end
return out
"""


# ---- access tokens (registry/tokens.py) -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenKeys:
    """Keys of the access tokens (registry/tokens.py), under one prefix ``{p}`` ("se" by default):

    - ``{p}:token:{id}``      string, the token's record as JSON (hash of the secret, never the secret)
    - ``{p}:tokh:{sha256}``   string, the principal (id, name, role, node) of an *active* token, and the
                              ``chain`` of hashes of the tokens that created it (creator, its creator, ...,
                              up to one made by the built-in admin token); deleted on revocation, so
                              verification is one GET (plus one EXISTS for a delegated token) and
                              revocation is immediate; a token made with a lifetime has it as this key's
                              TTL, so Redis itself ends it on time
    - ``{p}:tokens``          sorted set, score 0, member ``{node}/{id}``: lexical range = subtree
    """

    prefix: str = "se"

    def record(self, token_id: str) -> str:
        return f"{self.prefix}:token:{token_id}"

    def by_hash(self, digest: str) -> str:
        return f"{self.prefix}:tokh:{digest}"

    @property
    def index(self) -> str:
        return f"{self.prefix}:tokens"


# ---- node names (tiers/names.py) --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NameKeys:
    """Keys of the node names (tiers/names.py), under one prefix ``{p}`` ("se" by default):

    - ``{p}:nodes``                 hash code -> name: this tier's own names (from its node file or API)
    - ``{p}:nodes:ver``             counter bumped on every change, so each gateway re-reads only then
    - ``{p}:nodes:below:{child}``   hash code -> name of a child tier's whole subtree, written by that
                                    child's bridge (replaced whole on each change: _NAMES_PUT)
    - ``{p}:nodes:children``        set of the children that forwarded names
    """

    prefix: str = "se"

    @property
    def names(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def version(self) -> str:
        return f"{self.prefix}:nodes:ver"

    @property
    def children(self) -> str:
        return f"{self.prefix}:nodes:children"

    def below(self, child: str) -> str:
        return f"{self.prefix}:nodes:below:{child}"


# ---- the event log (gateway/events.py) ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EventKeys:
    """Keys of the event log (gateway/events.py), under one prefix ``{p}`` ("se" by default):

    - ``{p}:events``             stream, one entry per event: ``e`` = its JSON, ``s`` = "1" when a snapshot is kept
    - ``{p}:snap:{entry id}``    string, the JPEG of an event (expiring)
    - ``{p}:evtok:{token}``      string, the entry id a writer's batch token produced (1 day): retries are not doubled
    - ``{p}:ev:{event id}``      string, the local entry id of a forwarded event (TierKeys.event_index)
    - ``{p}:evcount:{minute}``   hash of event counts per minute (evcount_key)
    """

    prefix: str = "se"

    @property
    def stream(self) -> str:
        return TierKeys(self.prefix).events

    def token(self, token: str) -> str:
        return f"{self.prefix}:evtok:{token}"

    def index(self, event_id: str) -> str:
        return TierKeys(self.prefix).event_index(event_id)

    @property
    def snap_prefix(self) -> str:
        return TierKeys(self.prefix).snap_prefix

    def snapshot(self, entry_id: str) -> str:
        return f"{self.snap_prefix}{entry_id}"

    def count(self, minute: int) -> str:
        return evcount_key(minute, self.prefix)


# One atomic step per event: idempotent on the client's token (a retried batch whose reply was lost
# is not written twice), stream entry, snapshot and the per-minute count written together or not at all.
# (_EVENT_FORWARD is the bridge's variant, with the parent's epoch check and a forwarded event's index.)
# Fenced: an event of a camera is written only while the writer's lease of that camera (GatewayKeys.lease) still
# holds the token it was published under, or has lapsed with nobody taking it since (the camera's fencing number
# is still the token's: events buffered through a Redis outage are kept); a gateway whose lease another took
# (it was paused, or cut off) gets 0 back instead.
# KEYS: stream, token, count hash, camera lease, fences
# ARGV: maxlen, json, snapshot, snapshot ttl, snapshot prefix, count field, count ttl, lease token ('' = unfenced),
#       camera id, rule count spec ('' none: _RULE_COUNT)
EVENT_APPEND = _RULE_COUNT + """
local prev = redis.call('GET', KEYS[2])
if prev then return prev end
if ARGV[8] ~= '' then
  local cur = redis.call('GET', KEYS[4])
  if cur ~= ARGV[8] then
    local fence = string.match(ARGV[8], '|(%d+)$')
    if cur or not fence or redis.call('HGET', KEYS[5], ARGV[9]) ~= fence then return 0 end
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2], 's', ARGV[3] ~= '' and '1' or '0')
redis.call('SET', KEYS[2], id, 'EX', 86400)
if ARGV[3] ~= '' then redis.call('SET', ARGV[5] .. id, ARGV[3], 'EX', ARGV[4]) end
if ARGV[6] ~= '' then
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
count_rule(ARGV[10])
return id
"""
EVENT_SCRIPTS = Scripts(append=EVENT_APPEND)


# ---- the audit trail (gateway/audit.py) -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuditKeys:
    """Keys of the audit trail (gateway/audit.py), under one prefix ``{p}`` ("se" by default):

    - ``{p}:audit``            stream, one entry per action: ``a`` = the entry's JSON
    - ``{p}:autok:{token}``    string, the entry id a writer's batch token produced (1 day): retries are not doubled
    - ``{p}:au:{audit id}``    string, the local entry id of a forwarded entry (TierKeys.audit_index)
    """

    prefix: str = "se"

    @property
    def stream(self) -> str:
        return TierKeys(self.prefix).audit

    def token(self, token: str) -> str:
        return f"{self.prefix}:autok:{token}"

    def index(self, audit_id: str) -> str:
        return TierKeys(self.prefix).audit_index(audit_id)


# Idempotent on the writer's token: a retried batch whose reply was lost is not written twice.
# KEYS: stream, token   ARGV: maxlen, json
AUDIT_APPEND = """
local prev = redis.call('GET', KEYS[2])
if prev then return prev end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'a', ARGV[2])
redis.call('SET', KEYS[2], id, 'EX', 86400)
return id
"""
AUDIT_SCRIPTS = Scripts(append=AUDIT_APPEND)


# ---- video-quality baselines (gateway/quality_store.py) ------------------------------------------------
@dataclass(frozen=True, slots=True)
class QualityKeys:
    """Keys of the video-quality baselines (gateway/quality_store.py), under one prefix ``{p}`` ("se" by default):

    - ``{p}:qbase:{camera}``   string ``<source digest>|<baseline JSON>`` (analytics/quality.py Baseline), expiring:
                               what the camera's lens showed uncovered, kept across restarts and moves between the
                               tier's gateways; written by whichever gateway runs the camera, at most every few minutes
    """

    prefix: str = "se"

    def baseline(self, camera_id: str) -> str:
        return f"{self.prefix}:qbase:{camera_id}"


# ---- gateways of one tier sharing its cameras (tiers/placement.py) -------------------------------------
@dataclass(frozen=True, slots=True)
class GatewayKeys:
    """Keys of the gateways that share one tier's Redis, under one prefix ``{p}`` ("se" by default):

    - ``{p}:gateways``          sorted set: gateway id -> when its membership lapses (ms, Redis's own clock)
    - ``{p}:gwinfo``            hash: gateway id -> its record's JSON (tiers/placement.py GatewayInfo)
    - ``{p}:lease:{camera}``    string ``<gateway>|<fence>``, expiring: the one gateway that runs the camera
    - ``{p}:fences``            hash: camera id -> its last fencing number (only ever grows)
    - ``{p}:placement``         pub/sub channel: "a camera or a gateway changed, look again now"
    - ``{p}:gw:{gateway}:rpc``  list: frame requests for that gateway (tiers/rpc.py); replies ``...:rpc:{request}``
    - ``{p}:gw:{gateway}:st``   list: stream requests for that gateway (tiers/relay.py); reply items
                                ``...:st:{request}``, the asker's acks ``...:st:{request}:ack``
    """

    prefix: str = "se"

    @property
    def members(self) -> str:
        return f"{self.prefix}:gateways"

    @property
    def info(self) -> str:
        return f"{self.prefix}:gwinfo"

    def lease(self, camera_id: str) -> str:
        return f"{self.prefix}:lease:{camera_id}"

    @property
    def fences(self) -> str:
        return f"{self.prefix}:fences"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:placement"

    def rpc_queue(self, gateway: str) -> str:
        return f"{self.prefix}:gw:{gateway}:rpc"

    def rpc_reply(self, gateway: str, request_id: str) -> str:
        return f"{self.prefix}:gw:{gateway}:rpc:{request_id}"

    def stream_queue(self, gateway: str) -> str:
        return f"{self.prefix}:gw:{gateway}:st"

    def stream_reply(self, gateway: str, request_id: str) -> str:
        return f"{self.prefix}:gw:{gateway}:st:{request_id}"

    def stream_ack(self, gateway: str, request_id: str) -> str:
        return f"{self.prefix}:gw:{gateway}:st:{request_id}:ack"


# A gateway's heartbeat: its membership runs until now + ttl (Redis's clock, so machines' clocks may differ),
# its record is replaced (seen_ms set to that clock), members past their time are dropped (records of gateways
# unseen for a day too).
# KEYS: members, info   ARGV: gateway, ttl ms, record JSON ('' = leave now), forget ms
# Returns: flat list of live gateway ids and their records, then the instance of the record this one replaced
# ('' if none: another process beating under the same id shows as a different one), then Redis's clock (ms).
_GW_BEAT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local prev = ''
local ok_prev, old = pcall(cjson.decode, redis.call('HGET', KEYS[2], ARGV[1]) or '')
if ok_prev and type(old) == 'table' and type(old['instance']) == 'string' then prev = old['instance'] end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  local rec = cjson.decode(ARGV[3])
  rec['seen_ms'] = now
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(rec))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not redis.call('ZSCORE', KEYS[1], id) then
    local ok, rec = pcall(cjson.decode, redis.call('HGET', KEYS[2], id))
    if not ok or type(rec) ~= 'table' or tonumber(rec['seen_ms'] or 0) < now - tonumber(ARGV[4]) then
      redis.call('HDEL', KEYS[2], id)
    end
  end
end
out[#out + 1] = prev
out[#out + 1] = tostring(now)
return out
"""

# Take a camera's lease: free -> a new fencing number; already ours -> renewed, same number; else refused.
# KEYS: lease, fences   ARGV: camera, gateway, ttl ms   Returns: fencing number, or 0 and the holder's value
_LEASE_TAKE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, fence = string.match(cur, '^(.*)|(%d+)$')
  if holder == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {tonumber(fence), cur}
  end
  return {0, cur}
end
local fence = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. fence, 'PX', ARGV[3])
return {fence, ARGV[2] .. '|' .. fence}
"""

# Renew leases still held under the given tokens; a lease that lapsed with nobody taking it since (its camera's
# fencing number is still the token's, or gone with a wiped Redis) is taken again under the same token, so a
# Redis outage alone does not stop cameras or refuse their buffered events.
# KEYS: fences, then the leases   ARGV: ttl ms, then (camera id, token) per lease
# Returns 1 per lease renewed, 0 per lease lost.
_LEASE_RENEW = """
local out = {}
for i = 2, #KEYS do
  local cam, token = ARGV[2 * i - 2], ARGV[2 * i - 1]
  local cur = redis.call('GET', KEYS[i])
  local ok = 0
  if cur == token then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    ok = 1
  elseif not cur then
    local fence = string.match(token, '|(%d+)$')
    local last = redis.call('HGET', KEYS[1], cam)
    if fence and (last == fence or not last) then
      if not last then redis.call('HSET', KEYS[1], cam, fence) end
      redis.call('SET', KEYS[i], token, 'PX', ARGV[1])
      ok = 1
    end
  end
  out[i - 1] = ok
end
return out
"""

PLACEMENT_SCRIPTS = Scripts(gw_beat=_GW_BEAT, lease_take=_LEASE_TAKE, lease_renew=_LEASE_RENEW, lease_release=_RELEASE)
