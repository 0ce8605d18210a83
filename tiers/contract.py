"""The inter-tier contract: every Redis key name and every Lua script, in one place.

A tier's Redis is shared by its gateways and written into by its children's bridges (through the
parent's intake, tiers/intake.py); what lives under which name, and every script that changes it, is
defined here and nowhere else, so the layout that tiers of different versions rely on reads in one file.
The prefix (default "se") lets tests and several deployments share one Redis.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

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

    def rpc_queue(self, child: str) -> str:
        return f"{self.prefix}:rpc:{child}"

    def rpc_reply(self, request_id: str) -> str:
        return f"{self.prefix}:rpc:reply:{request_id}"


# ---- event counts ----------------------------------------------------------------------------------
def evcount_key(minute: int, prefix: str = "se") -> str:
    """Hash of event counts for one Unix minute."""
    return f"{prefix}:evcount:{minute}"


def evcount_field(node: str, type_: str, label: str | None) -> str:
    """Field of an event count: node, type and label ("" when none)."""
    return f"{node}|{type_}|{label or ''}"


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
# lie outside the subtree of the child that sent it (a child speaks for its own subtree only).
_RCAT_APPLY = _EPOCH_CHECK + _FORGET + """
if ARGV[10] ~= '' then redis.call('SADD', ARGV[10], ARGV[3]) end
local cur = redis.call('HGET', KEYS[2], ARGV[3])
local cnode, cowner, cvia = parse(cur)
if ARGV[2] == 'upsert' then
  if cur == ARGV[4] then return 0 end
  if redis.call('HEXISTS', KEYS[8], ARGV[3]) == 1 then return -1 end
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

    async def run(self, client: aioredis.Redis, queue) -> list[Any]:
        """Build a pipeline with `queue(pipe)`, execute it; on NOSCRIPT load the scripts and run it once more.

        Results come back in order, exceptions in place (raise_on_error=False); an EPOCH error raises
        EpochChanged. Every script here is idempotent, so running a batch again is safe.
        """
        for attempt in range(2):
            async with client.pipeline(transaction=False) as pipe:
                queue(pipe)
                results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self.load(client)
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
# KEYS: epoch, stream, index, count hash
# ARGV: epoch, maxlen, json, snapshot, snapshot ttl, snapshot prefix, index ttl, count field ('' none), count ttl
_EVENT_FORWARD = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('EPOCH the parent tier Redis was wiped or replaced')
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

INTAKE_SCRIPTS = Scripts(event_forward=_EVENT_FORWARD, audit_forward=_AUDIT_FORWARD, **TIER_SCRIPTS.sources)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

BRIDGE_SCRIPTS = Scripts(read_events=_READ_EVENTS, lease=_LEASE, release=_RELEASE, **TIER_SCRIPTS.sources)
