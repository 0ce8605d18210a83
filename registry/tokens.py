"""Access tokens stored hashed in Redis, each with a role and a jurisdiction (DESIGN §6).

Keys: tiers/contract.py TokenKeys: the record ``{p}:token:{id}``, the lookup by hash of an *active*
token ``{p}:tokh:{sha256}`` (deleted on revocation; a token made with a lifetime has it as its TTL)
and the index ``{p}:tokens``.

Raw tokens are ``se_`` + 43 random URL-safe characters (256 bits from `secrets`). Storing their
plain SHA-256 is enough: a slow salted hash (bcrypt, scrypt) protects guessable passwords, but
nobody can brute-force a 256-bit random secret from its hash, and a fast hash keeps the lookup
by hash (one GET per request) possible.

Verification reads Redis on every request, with no process-local cache, so a revocation made
through any gateway process sharing this Redis takes effect at the next request everywhere.
Open streams are re-checked by `RevocationWatch`, one pipelined round trip for all of them.

A token never outlives, out-ranks or out-reaches the token that created it: its role and node are
checked by the API, its lifetime is capped here at the creator's remaining lifetime (the TTL of the
creator's lookup key), and a token authenticates only while every token in its chain still does,
so revoking (or the expiry of) a token ends everything made with it at once, including tokens
made before the revocation by processes that did not see it. Revocation also marks the descendants'
records revoked (`revoke_descendants`), so listings tell the truth.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError, TimeoutError as RedisTimeoutError, WatchError

from analytics.events import iso_ms
from tiers.access import Principal, Role
from tiers.contract import TokenKeys
from tiers.nodes import normalize_node

log = logging.getLogger(__name__)

PREFIX = "se_"
_RAW = re.compile(r"^se_[A-Za-z0-9_-]{43}$")
TOKEN_ID_PATTERN = r"^[0-9a-f]{16}$"
_ID = re.compile(TOKEN_ID_PATTERN)
NAME_MAX = 64
MAX_LIFETIME_S = 10 * 365 * 86400  # a token's lifetime, when it has one, is at most about ten years
MAX_CHAIN = 16  # tokens made by tokens made by tokens...: at most this many creators above a token


class CreatorGone(Exception):
    """The token creating another was revoked or expired meanwhile (a 401 to the caller)."""


def token_hash(raw: str) -> str:
    """Hex SHA-256 of a raw token: what is stored and looked up."""
    return hashlib.sha256(raw.encode()).hexdigest()


def valid_token_id(value: str) -> bool:
    """True for the shape of a token id (16 lower-case hex digits)."""
    return bool(_ID.match(value))


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as stored: who it is for, what it may do, where, and its life cycle (no secret)."""

    id: str
    name: str
    role: Role
    node: str
    hash: str
    created_at: str
    created_by: str  # token id of the creator ("bootstrap" for SHARP_EYES_ADMIN_TOKEN)
    created_by_name: str
    revoked_at: str | None = None
    revoked_by: str | None = None
    expires_at: str | None = None  # None: until revoked

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and _parse_ts(self.expires_at) <= time.time()

    @property
    def active(self) -> bool:
        return not self.revoked and not self.expired

    def principal(self) -> Principal:
        """The caller this token authenticates."""
        return Principal(self.id, self.name, self.role, self.node)

    def public_dict(self) -> dict:
        """Wire form: the record without its hash."""
        d = asdict(self)
        d.pop("hash")
        d["role"] = self.role.label
        d["active"] = self.active
        d["expired"] = self.expired
        return d

    def to_json(self) -> str:
        d = asdict(self)
        d["role"] = self.role.label
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "TokenRecord":
        d = json.loads(raw)
        d["role"] = Role.parse(d["role"])
        return cls(**d)


def _parse_ts(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _principal_json(rec: TokenRecord, chain: list[str]) -> str:
    d = {"id": rec.id, "name": rec.name, "role": rec.role.label, "node": rec.node}
    if chain:
        d["chain"] = chain  # hashes of the creator, its creator, ...: all must still authenticate
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def _chain_of(value: bytes | str) -> list[str]:
    chain = json.loads(value).get("chain") or []
    return [str(h) for h in chain]


class TokenStore:
    """Creates, lists, verifies and revokes tokens; only SHA-256 hashes of the secrets are stored."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "se", *, verify_timeout_s: float = 3.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.verify_timeout_s = verify_timeout_s
        self.keys = TokenKeys(prefix)
        self._k_index = self.keys.index

    def _k_record(self, token_id: str) -> str:
        return self.keys.record(token_id)

    def _k_hash(self, digest: str) -> str:
        return self.keys.by_hash(digest)

    # ---- writes --------------------------------------------------------------------------------
    async def create(self, name: str, role: Role, node: str, created_by: Principal, *,
                     lifetime_s: float | None = None) -> tuple[TokenRecord, str]:
        """A new token, valid until revoked or for `lifetime_s`; returns its record and the raw token (shown once).

        A token made by another (not by the built-in admin token) ends no later than its creator: the
        lifetime is capped at the creator's remaining one (and a creator with a lifetime cannot make a
        token without one), and it stops authenticating as soon as any token in its chain of creators
        is revoked or expires. The caller checks role and node (`Principal.can`, `Principal.covers`).
        Raises CreatorGone when the creator no longer authenticates, ValueError for a bad lifetime or
        a chain deeper than MAX_CHAIN.
        """
        node = normalize_node(node)
        if lifetime_s is not None and not 1 <= lifetime_s <= MAX_LIFETIME_S:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME_S} seconds")
        ttl_ms = round(lifetime_s * 1000) if lifetime_s is not None else None
        chain: list[str] = []
        ends_by: str | None = None  # the creator's own end, as recorded
        if valid_token_id(created_by.token_id):  # not the built-in admin token: a token of ours
            creator = await self.get(created_by.token_id)
            if creator is None or creator.revoked:
                raise CreatorGone(f"token {created_by.token_id} is revoked or expired")
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self._k_hash(creator.hash))
                pipe.pttl(self._k_hash(creator.hash))
                value, left_ms = await pipe.execute()
            if value is None or left_ms == -2:
                raise CreatorGone(f"token {creator.id} is revoked or expired")
            chain = _chain_of(value) + [creator.hash]
            if len(chain) > MAX_CHAIN:
                raise ValueError(f"tokens may be made by tokens at most {MAX_CHAIN} deep; make this one with a "
                                 "token nearer the built-in admin token")
            if left_ms >= 0:  # the creator ends by itself: so does what it makes, at the latest then
                if left_ms < 1:
                    raise CreatorGone(f"token {creator.id} is expired")
                ttl_ms = left_ms if ttl_ms is None else min(ttl_ms, left_ms)
                # (The key may outlast the creator's by the milliseconds this took; the chain check does not.)
                ends_by = creator.expires_at
        raw = PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        rec = TokenRecord(id=secrets.token_hex(8), name=name, role=role, node=node, hash=token_hash(raw),
                          created_at=iso_ms(now), created_by=created_by.token_id,
                          created_by_name=created_by.name,
                          expires_at=iso_ms(now + ttl_ms / 1000) if ttl_ms is not None else None)
        if ends_by is not None and rec.expires_at is not None and _parse_ts(ends_by) < _parse_ts(rec.expires_at):
            rec = replace(rec, expires_at=ends_by)
        async with self.redis.pipeline(transaction=True) as pipe:
            # Record, lookup and index together or not at all.
            pipe.set(self._k_record(rec.id), rec.to_json())
            # The lookup key expires with the token: verification and open streams need no clock of ours.
            pipe.set(self._k_hash(rec.hash), _principal_json(rec, chain), px=ttl_ms)
            pipe.zadd(self._k_index, {f"{node}/{rec.id}": 0})
            await pipe.execute()
        return rec, raw

    async def revoke(self, token_id: str, by: Principal, *, retries: int = 20) -> TokenRecord | None:
        """Revoke a token at once (idempotent); None when there is no such token."""
        if not valid_token_id(token_id):
            return None
        key = self._k_record(token_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(retries):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return None
                    rec = TokenRecord.from_json(raw)
                    if rec.revoked:
                        return rec
                    new = replace(rec, revoked_at=iso_ms(time.time()), revoked_by=by.token_id)
                    pipe.multi()
                    pipe.delete(self._k_hash(rec.hash))
                    pipe.set(key, new.to_json())
                    await pipe.execute()
                    return new
                except WatchError:
                    continue
        raise RedisError(f"token {token_id} kept changing; gave up after {retries} tries")

    async def revoke_descendants(self, rec: TokenRecord, by: Principal) -> list[TokenRecord]:
        """Mark revoked every token made with `rec`, its tokens' tokens and so on; returns those revoked now.

        They stopped authenticating already with `rec` (their chain holds its hash); this also deletes
        their lookup keys and tells listings. Tokens made before chains were stored are found here too,
        by `created_by`. A token's node lies in its creator's subtree, so the search stays in `rec.node`'s.
        """
        children: dict[str, list[TokenRecord]] = {}
        for r in await self.list(rec.node):
            children.setdefault(r.created_by, []).append(r)
        done: list[TokenRecord] = []
        seen = {rec.id}
        todo = [rec.id]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child.id in seen:
                    continue
                seen.add(child.id)
                todo.append(child.id)
                if child.active:  # an expired one no longer authenticates: nothing to mark
                    new = await self.revoke(child.id, by)
                    if new is not None and new.revoked_at != child.revoked_at:
                        done.append(new)
        return done

    # ---- reads ---------------------------------------------------------------------------------
    async def get(self, token_id: str) -> TokenRecord | None:
        """A token's record, or None."""
        if not valid_token_id(token_id):
            return None
        raw = await self.redis.get(self._k_record(token_id))
        return None if raw is None else TokenRecord.from_json(raw)

    async def list(self, node: str) -> list[TokenRecord]:
        """Every token whose jurisdiction lies in `node`'s subtree, ordered by node then id."""
        node = normalize_node(node)
        members = await self.redis.zrangebylex(self._k_index, f"[{node}", f"({node}:")
        ids = [(m.decode() if isinstance(m, bytes) else m).rpartition("/")[2] for m in members]
        if not ids:
            return []
        raws = await self.redis.mget([self._k_record(i) for i in ids])
        return [TokenRecord.from_json(r) for r in raws if r is not None]

    async def verify(self, raw: str) -> Principal | None:
        """The principal for a raw token, or None when unknown, revoked or expired.

        Raises RedisError (a 503 to the caller, not a 401) when Redis cannot answer in time.
        """
        if not _RAW.match(raw):
            return None  # not one of ours: no need to ask Redis
        try:
            async with asyncio.timeout(self.verify_timeout_s):
                value = await self.redis.get(self._k_hash(token_hash(raw)))
                if value is None:
                    return None
                d = json.loads(value)
                chain = d.get("chain")
                # Made by another token: valid only while every token above it still authenticates.
                if chain and await self.redis.exists(*[self._k_hash(h) for h in chain]) != len(chain):
                    return None
        except TimeoutError:
            raise RedisTimeoutError("token lookup timed out") from None
        return Principal(d["id"], d["name"], Role.parse(d["role"]), d["node"])

    async def active(self, digests: Iterable[str]) -> dict[str, bool]:
        """For each token hash, whether it still authenticates (one round trip; two when some were made by tokens)."""
        digests = list(digests)
        if not digests:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in digests:
                pipe.get(self._k_hash(d))
            values = await pipe.execute()
        chains = {d: _chain_of(v) for d, v in zip(digests, values) if v is not None}
        ancestors = sorted({h for chain in chains.values() for h in chain})
        alive: set[str] = set()
        if ancestors:  # tokens made by tokens: a second round trip, for all of them at once
            async with self.redis.pipeline(transaction=False) as pipe:
                for h in ancestors:
                    pipe.exists(self._k_hash(h))
                alive = {h for h, n in zip(ancestors, await pipe.execute()) if n}
        return {d: d in chains and all(h in alive for h in chains[d]) for d in digests}


class RevocationWatch:
    """Notices revocations for open streams: every `interval_s`, one pipelined check of every watched token.

    Streams (WebSocket, SSE, MJPEG) authenticate once at the start; `until_revoked` lets them end
    within about one interval of a revocation, at a cost independent of how many are open.
    While Redis cannot be read, open streams are left running (a revocation needs Redis too).
    """

    def __init__(self, store: TokenStore, interval_s: float = 2.0) -> None:
        self.store = store
        self.interval_s = interval_s
        self._watched: dict[str, set[asyncio.Event]] = {}

    @property
    def watched(self) -> int:
        return sum(len(v) for v in self._watched.values())

    async def until_revoked(self, raw: str) -> None:
        """Return once the raw token no longer authenticates (revoked, expired or gone)."""
        digest = token_hash(raw)
        gone = asyncio.Event()
        self._watched.setdefault(digest, set()).add(gone)
        try:
            await gone.wait()
        finally:
            waiters = self._watched.get(digest)
            if waiters is not None:
                waiters.discard(gone)
                if not waiters:
                    del self._watched[digest]

    async def check(self) -> int:
        """One round of checks; returns how many waiters were released."""
        if not self._watched:
            return 0
        state = await self.store.active(list(self._watched))
        released = 0
        for digest, ok in state.items():
            if not ok:
                for ev in self._watched.get(digest, ()):
                    ev.set()
                    released += 1
        return released

    async def run(self) -> None:
        """Check every interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                async with asyncio.timeout(max(self.interval_s, 2.0)):
                    n = await self.check()
                if n:
                    log.info("closing %d stream(s) of revoked tokens", n)
            except (RedisError, OSError, TimeoutError) as e:
                log.debug("revocation check failed: %s", e)
