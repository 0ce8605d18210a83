"""The audit trail: an append-only Redis stream of who did what, to what, when and from where (DESIGN §6).

Stream ``{p}:audit``: one entry per action, field ``a`` = the entry's JSON. An entry's id is
``<tier node>-<stream entry id>`` (the tier that recorded it), so ids stay unique when the tier
bridge forwards entries up the tree; a forwarded entry carries its original ``id`` in its JSON and
keeps it. Recording never waits on Redis and never fails a request: entries go to a bounded
in-memory outbox that a named background task writes, idempotently, as EventLog does.
Key names and the append script: tiers/contract.py (AuditKeys, AUDIT_APPEND run as AUDIT_SCRIPTS).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from analytics.events import iso_ms
from gateway.outbox import Outbox
from gateway.streams import scan_newest
from registry.urls import scrub
from tiers.access import Principal
from tiers.contract import AUDIT_SCRIPTS, AuditKeys

log = logging.getLogger(__name__)

ACTIONS = (
    "camera.create", "camera.update", "camera.delete", "camera.bulk",
    "token.create", "token.revoke",
    "snapshot.view",  # an event's stored snapshot
    "camera.snapshot",  # a camera's latest frame
    "live.view",  # a live view opened
    "live.end",  # a live view closed, with how long it was watched
    "recording.view",  # a camera's recordings listed, or a window of them played back
    "clip.view",  # an event's clip played back
    "access.denied",  # a 403, or a 404 hiding what lies outside the caller's jurisdiction
)
_RAW_TOKEN = re.compile(r"se_[A-Za-z0-9_-]{20,}")
_SECRET_KEY = re.compile(r"pass|secret|credential|authorization|^(raw_?)?token$", re.I)
_MAX_STR = 512
_MAX_VIEW_KEYS = 50_000  # (token, action, camera) triples remembered for coalescing views; oldest forgotten
_MAX_ITEMS = 50


def _clean(value: Any, depth: int = 0) -> Any:
    """Detail values made safe to keep: credentials scrubbed, raw tokens masked, sizes bounded."""
    if isinstance(value, str):
        return _RAW_TOKEN.sub("se_***", scrub(value))[:_MAX_STR]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= 3:
        return "…"
    if isinstance(value, dict):
        return {str(k)[:64]: ("***" if _SECRET_KEY.search(str(k)) else _clean(v, depth + 1))
                for k, v in list(value.items())[:_MAX_ITEMS]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
    return _clean(str(value), depth)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action: who (token id, name, role, jurisdiction), what, on which target in which node, when, from where."""

    action: str
    target: str
    node: str  # the target's node: what jurisdiction filtering uses
    ts: str  # UTC ISO 8601 with ms
    actor_id: str
    actor_name: str
    actor_role: str
    actor_node: str
    remote: str | None  # "from" on the wire
    tier: str  # node of the tier that recorded it
    gateway: str
    detail: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Wire form."""
        out = {"id": self.id, "ts": self.ts, "action": self.action, "target": self.target, "node": self.node,
               "actor": {"id": self.actor_id, "name": self.actor_name, "role": self.actor_role,
                         "node": self.actor_node},
               "from": self.remote, "tier": self.tier, "gateway": self.gateway, "detail": self.detail}
        if self.id is None:
            del out["id"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AuditEntry":
        a = d.get("actor") or {}
        return cls(action=d["action"], target=d["target"], node=d["node"], ts=d["ts"], actor_id=a.get("id", ""),
                   actor_name=a.get("name", ""), actor_role=a.get("role", ""), actor_node=a.get("node", ""),
                   remote=d.get("from"), tier=d.get("tier", ""), gateway=d.get("gateway", ""),
                   detail=d.get("detail") or {}, id=d.get("id"))


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What an audit reader asks for; `node` is already narrowed to the reader's jurisdiction."""

    node: str
    actions: frozenset[str] | None = None  # exact names, or "camera.*" prefixes
    actor: str | None = None  # token id
    target: str | None = None

    def match(self, e: AuditEntry) -> bool:
        if not e.node.startswith(self.node):
            return False
        if self.actor and e.actor_id != self.actor:
            return False
        if self.target and e.target != self.target:
            return False
        if self.actions and e.action not in self.actions and not any(
                a.endswith(".*") and e.action.startswith(a[:-1]) for a in self.actions):
            return False
        return True


@dataclass(slots=True)
class _Pending:
    entry: AuditEntry
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


class AuditLog(Outbox[_Pending]):
    """Appends audit entries through a bounded outbox; reads them back newest first."""

    what = "audit entries"

    def __init__(self, redis: aioredis.Redis, node: str, gateway: str, *, prefix: str = "se",
                 retention: int = 1_000_000, buffer_size: int = 10_000, batch: int = 256,
                 trust_forwarded_for: bool = False, view_window_s: float = 60.0) -> None:
        super().__init__(buffer_size=buffer_size, batch=batch)
        self.redis = redis
        self.node = node
        self.gateway = gateway
        self.prefix = prefix
        self.keys = AuditKeys(prefix)
        self.stream = self.keys.stream
        self.retention = retention
        self.trust_forwarded_for = trust_forwarded_for
        self.view_window_s = view_window_s
        self.views_coalesced = 0  # views not recorded: the same token saw the same camera within the window
        self._views: collections.OrderedDict[tuple[str, str, str], float] = collections.OrderedDict()

    # ---- recording -----------------------------------------------------------------------------
    def record(self, principal: Principal, action: str, target: str, node: str, remote: str | None,
               detail: dict[str, Any] | None = None) -> None:
        """Queue one entry; never waits, never raises into the caller."""
        try:
            entry = AuditEntry(action=action, target=str(target)[:128], node=node, ts=iso_ms(time.time()),
                               actor_id=principal.token_id, actor_name=principal.name,
                               actor_role=principal.role.label, actor_node=principal.node, remote=remote,
                               tier=self.node, gateway=self.gateway, detail=_clean(detail or {}))
        except Exception:  # an audit call must never break the action it records
            log.exception("could not build audit entry for %s", action)
            return
        self._enqueue(_Pending(entry))

    def record_request(self, request: web.Request, action: str, target: str, node: str,
                       detail: dict[str, Any] | None = None) -> None:
        """Queue one entry for the caller of `request` (who and from where taken from the request)."""
        from gateway import keys  # here, not at the top: gateway.keys imports this module

        self.record(request[keys.PRINCIPAL], action, target, node, self.client_address(request), detail)

    def record_view(self, request: web.Request, action: str, target: str, node: str, camera_id: str,
                    detail: dict[str, Any] | None = None) -> None:
        """Like record_request, for a camera's picture fetched again and again (thumbnails): once per token,
        action and camera per window."""
        from gateway import keys

        key = (request[keys.PRINCIPAL].token_id, action, camera_id)
        now = time.monotonic()
        last = self._views.get(key)
        if last is not None and now - last < self.view_window_s:
            self.views_coalesced += 1
            return
        self._views[key] = now
        self._views.move_to_end(key)
        while len(self._views) > _MAX_VIEW_KEYS:
            self._views.popitem(last=False)
        self.record_request(request, action, target, node,
                            {**(detail or {}), "camera_id": camera_id, "window_s": self.view_window_s})

    def client_address(self, request: web.Request) -> str | None:
        """The socket peer; behind a trusted reverse proxy, the address it saw (last X-Forwarded-For hop)."""
        if self.trust_forwarded_for:
            hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
            if hops:
                # Only the hop our own proxy appended can be trusted; earlier ones are client-supplied.
                return hops[-1][:64]
        return request.remote

    async def _write(self, batch: list[_Pending]) -> None:
        def queue(pipe) -> None:
            for p in batch:
                AUDIT_SCRIPTS.call(pipe, "append", keys=[self.stream, self.keys.token(p.token)],
                                   args=[self.retention, p.entry.to_json()])
        await AUDIT_SCRIPTS.run(self.redis, queue)  # by SHA: no SCRIPT EXISTS round trip per batch

    # ---- reading -------------------------------------------------------------------------------
    def decode(self, entry_id: str | bytes, fields: dict) -> tuple[str, AuditEntry]:
        """(stream entry id, entry with its id): a forwarded entry keeps the id it was given at its origin."""
        if isinstance(entry_id, bytes):
            entry_id = entry_id.decode()
        raw = json.loads(fields[b"a"])
        e = AuditEntry.from_dict(raw)
        if e.id is None:
            e = replace(e, id=f"{e.tier}-{entry_id}")
        return entry_id, e

    async def query(self, q: AuditQuery, *, before: str | None = None, after: str | None = None,
                    before_inclusive: bool = False, after_inclusive: bool = False, limit: int = 100,
                    scan_cap: int = 20_000) -> tuple[list[AuditEntry], str | None]:
        """Newest first, between the given stream entry ids; returns (entries, cursor for the next page)."""
        upper = (before if before_inclusive else f"({before}") if before else "+"
        lower = (after if after_inclusive else f"({after}") if after else "-"
        return await scan_newest(self.redis, self.stream, self.decode, q.match, upper=upper, lower=lower,
                                 limit=limit, scan_cap=scan_cap)
