"""What a tier knows about its subtree: remote cameras, camera status and event counts, kept in its Redis.

Key names and scripts are in tiers/contract.py. The remote ones are written by this tier's intake
(tiers/intake.py) from what its children's bridges send, after checking it against each child's subtree:

- ``{p}:status``            hash camera id -> status JSON, for every camera this tier knows (its own, written
                            by gateway/status_pub.py; its subtree's, from its children)
- ``{p}:status:seq``        counter; ``{p}:status:changes`` sorted set camera id -> seq of its last change
                            (a deletion keeps its member): what a bridge forwards is "seq above my checkpoint"
- ``{p}:rcat``              hash camera id -> JSON of a camera owned by a tier below: ``Camera.public_dict()``
                            (passwords masked) plus "owner" (the owning tier's node) and "via" (the direct child)
- ``{p}:rcat:by_node``      sorted set, score 0, member ``{node}/{id}``: subtree = lexical range (as the store)
- ``{p}:rcat:via:{child}``  set of the camera ids each direct child forwarded (to prune after a resync)
- ``{p}:rcat:feed``         stream of changes to ``{p}:rcat`` (op upsert|delete, id, node, owner, via, camera),
                            which this tier's own bridge forwards further up
- ``{p}:evcount:{minute}``  hash ``{node}|{type}|{label}`` -> events that minute (capture time), 2 h TTL
- ``{p}:tiers``             hash child node -> {"node","gateway","connected_at","last_seen"} (direct children)
- ``{p}:epoch``             random id of this Redis's contents: a child that remembers another one resyncs
- ``{p}:tier``              hash: this tier's node and retention policy (retention, audit_retention,
                            snapshot_ttl_s, index_ttl_s), for operators

Every write made here for a child runs as one Lua script that first checks ``{p}:epoch`` against the
epoch the child remembers, so nothing is written into a parent that was wiped until the child has resynced.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import redis.asyncio as aioredis

from analytics.events import iso_ms
from tiers.contract import TIER_SCRIPTS, TierKeys
from tiers.nodes import normalize_node

if TYPE_CHECKING:
    from registry.models import Camera
    from registry.store import CameraStore


class StatusSource(Protocol):
    """What runs this tier's cameras (the gateway's supervisor): tiers never import the gateway package."""

    def status(self, camera: "Camera") -> Any:
        """The camera's run-time status (CameraStatus's fields)."""
        ...

__all__ = [
    "CameraView", "EVCOUNT_TTL_S", "STALE_AFTER_S", "SubtreeCatalog", "event_minute", "put_status", "status_json",
]

EVCOUNT_TTL_S = 7200
STALE_AFTER_S = 90.0  # a remote status older than this: no news from that tier (its link is down)
FEED_MAXLEN = 100_000


def event_minute(ts: str | None, now: float | None = None) -> int | None:
    """Unix minute of an event's capture time, or None when unparsable or older than the counts are kept."""
    if not ts:
        return None
    try:
        epoch = datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None
    now = time.time() if now is None else now
    if epoch < now - EVCOUNT_TTL_S:
        return None  # nobody reads counts that old; don't create keys for them
    return int(epoch // 60)


# ---- status -------------------------------------------------------------------------------------------
def status_json(camera_id: str, node: str, owner: str, enabled: bool, status: Any, now: float | None = None) -> str:
    """The status entry of one camera (`status` is a CameraStatus or anything with its fields).

    `fps_asked`, `shed` and `skipped` let upper tiers see a lower tier's overload (asked vs analysed rate,
    frames skipped by reason); entries written before they existed read as asking nothing and not shed.
    """
    return json.dumps({
        "camera_id": camera_id, "node": node, "owner": owner, "state": status.state, "enabled": enabled,
        "quality": list(getattr(status, "quality", ()) or ()),
        "fps_in": status.fps_in, "fps_asked": getattr(status, "fps_asked", 0.0), "fps_analyzed": status.fps_analyzed,
        "shed": bool(getattr(status, "shed", False)), "skipped": dict(getattr(status, "skipped", None) or {}),
        "last_frame_at": status.last_frame_at,
        "reconnects": status.reconnects, "last_error": status.last_error,
        "gateway": getattr(status, "gateway", None),
        "updated_at": iso_ms(time.time() if now is None else now),
    }, separators=(",", ":"), ensure_ascii=False)


async def put_status(redis: aioredis.Redis, entries: list[tuple[str, str | None]], prefix: str = "se") -> None:
    """Write (camera id, status JSON or None to delete) entries into this tier's status table, one round trip."""
    if not entries:
        return
    k = TierKeys(prefix)
    args: list[Any] = [""]
    for cid, js in entries:
        args += [cid, js or ""]
    await TIER_SCRIPTS.run(redis, lambda p: TIER_SCRIPTS.call(
        p, "status_put", [k.epoch, k.status, k.status_seq, k.status_changes], args))


# ---- the subtree catalog ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CameraView:
    """One camera of this tier's subtree, its own or a remote one, with its status."""

    id: str
    name: str
    node: str
    enabled: bool
    owner: str  # node of the tier deployment that runs it
    local: bool
    state: str
    quality: tuple[str, ...]
    fps_in: float
    fps_analyzed: float
    last_frame_at: str | None
    public: dict[str, Any]  # the camera's public_dict (credentials masked)
    via: str | None = None  # remote: the direct child tier it came through
    updated_at: str | None = None  # remote: when its status was last written by its owner
    stale: bool = False  # remote: no status news for STALE_AFTER_S; state then reads "offline"
    reconnects: int = 0
    last_error: str | None = None
    fps_asked: float = 0.0  # the analysis rate asked (0 while the camera delivers no frames)
    shed: bool = False  # its gateway is overloaded and analyses fewer of its frames than asked
    skipped: dict[str, int] = field(default_factory=dict)  # sampled frames not analysed, by reason

    def status_dict(self) -> dict[str, Any]:
        """The status part as the API shows it for a remote camera."""
        return {"state": self.state, "quality": list(self.quality), "fps_in": self.fps_in,
                "fps_asked": self.fps_asked, "fps_analyzed": self.fps_analyzed, "shed": self.shed,
                "skipped": dict(self.skipped),
                "last_frame_at": self.last_frame_at,
                "reconnects": self.reconnects, "last_error": self.last_error, "updated_at": self.updated_at,
                "stale": self.stale}

    def api_dict(self) -> dict[str, Any]:
        """A remote camera as the cameras API lists it (read-only here: its owner changes it)."""
        out = dict(self.public)
        out.update(owner=self.owner, via=self.via, remote=not self.local, status=self.status_dict())
        return out


def _s(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def _iso_age(iso: str | None, now: float) -> float | None:
    if not iso:
        return None
    try:
        return now - datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def remote_view(raw: bytes | str, status_raw: bytes | str | None, now: float | None = None) -> CameraView | None:
    """A remote camera from its se:rcat and se:status entries; None when the record is unreadable."""
    try:
        pub = json.loads(raw)
        cid, node = str(pub["id"]), str(pub["node"])
    except (ValueError, KeyError, TypeError):
        return None
    st: dict[str, Any] = {}
    if status_raw:
        try:
            st = json.loads(status_raw)
        except ValueError:
            st = {}
    enabled = bool(pub.get("enabled", True))
    now = time.time() if now is None else now
    age = _iso_age(st.get("updated_at"), now)
    stale = bool(st) and age is not None and age > STALE_AFTER_S
    if not st:
        state = "connecting" if enabled else "disabled"  # not reported yet (as a camera not yet started)
    elif stale and st.get("state") not in ("disabled",):
        state = "offline"
    else:
        state = str(st.get("state") or "connecting")
    owner = str(pub.get("owner") or "")
    public = {k: v for k, v in pub.items() if k not in ("owner", "via")}
    return CameraView(
        id=cid, name=str(pub.get("name") or ""), node=node, enabled=enabled, owner=owner, local=False,
        state=state, quality=tuple(st.get("quality") or ()) if not stale else (),
        fps_in=float(st.get("fps_in") or 0.0) if not stale else 0.0,
        fps_analyzed=float(st.get("fps_analyzed") or 0.0) if not stale else 0.0,
        last_frame_at=st.get("last_frame_at"), public=public, via=pub.get("via"), updated_at=st.get("updated_at"),
        stale=stale, reconnects=int(st.get("reconnects") or 0), last_error=st.get("last_error"),
        fps_asked=float(st.get("fps_asked") or 0.0) if not stale else 0.0,
        shed=bool(st.get("shed")) and not stale, skipped=_counts(st.get("skipped")),
    )


def _counts(v: Any) -> dict[str, int]:
    """A {reason: n} map from a status entry, whatever a tier below wrote (anything else: empty)."""
    if not isinstance(v, dict):
        return {}
    out: dict[str, int] = {}
    for k, n in v.items():
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            out[str(k)] = int(n)
    return out


class SubtreeCatalog:
    """Every camera of a subtree: this tier's own (status from its workers) and those of tiers below."""

    def __init__(self, redis: aioredis.Redis, store: "CameraStore", supervisor: StatusSource, *,
                 node: str | None = None, prefix: str = "se") -> None:
        self.redis = redis
        self.store = store
        self.supervisor = supervisor
        self.node = node  # this tier's node: the owner of its own cameras
        self.keys = TierKeys(prefix)

    async def cameras(self, node_prefix: str | None = None) -> list[CameraView]:
        """Every camera whose node lies in `node_prefix`'s subtree (all when None), own first."""
        out = await self.local(node_prefix)
        cursor = None
        while True:
            page, cursor = await self.remote(node_prefix, page_size=1000, cursor=cursor)
            out.extend(page)
            if not cursor:
                return out

    async def local(self, node_prefix: str | None = None) -> list[CameraView]:
        """This tier's own cameras in the subtree."""
        out: list[CameraView] = []
        cursor = None
        while True:
            cams, cursor = await self.store.list(node=node_prefix, page_size=1000, cursor=cursor)
            for cam in cams:
                st = self.supervisor.status(cam)
                out.append(CameraView(
                    id=cam.id, name=cam.name, node=cam.node, enabled=cam.enabled, owner=self.node or "",
                    local=True, state=st.state, quality=tuple(getattr(st, "quality", ()) or ()),
                    fps_in=st.fps_in, fps_analyzed=st.fps_analyzed, last_frame_at=st.last_frame_at,
                    public=cam.public_dict(), reconnects=st.reconnects, last_error=st.last_error,
                    fps_asked=st.fps_asked, shed=st.shed, skipped=dict(st.skipped),
                ))
            if not cursor:
                return out

    async def remote(self, node_prefix: str | None = None, page_size: int = 100,
                     cursor: str | None = None) -> tuple[list[CameraView], str | None]:
        """One page of remote cameras in the subtree, ordered by node then id; the cursor is `{node}/{id}`
        like the store's, so the two listings merge."""
        members = await self.remote_members(node_prefix, page_size, cursor)
        more = len(members) > page_size
        members = members[:page_size]
        views = await self._views([m.rpartition("/")[2] for m in members])
        return [v for v in views if v is not None], (members[-1] if more and members else None)

    async def page(self, node_prefix: str | None, page_size: int,
                   cursor: str | None = None) -> tuple[list[Any], str | None]:
        """One page of own cameras (`Camera`) and remote ones (`CameraView`) merged in the store's order
        (node, then id), with the store's cursor form `{node}/{id}` (CursorError for a foreign cursor)."""
        own, own_next = await self.store.list(node=node_prefix, page_size=page_size, cursor=cursor)
        members = await self.remote_members(node_prefix, page_size, cursor)
        keyed: list[tuple[str, Any]] = [(f"{c.node}/{c.id}", c) for c in own] + [(m, None) for m in members]
        keyed.sort(key=lambda kv: kv[0])
        more = len(keyed) > page_size or own_next is not None
        keyed = keyed[:page_size]
        remote_ids = [m.rpartition("/")[2] for m, c in keyed if c is None]
        views = {v.id: v for v in await self._views(remote_ids) if v is not None}
        out = [c if c is not None else views.get(m.rpartition("/")[2]) for m, c in keyed]
        return [x for x in out if x is not None], (keyed[-1][0] if more and keyed else None)

    async def remote_members(self, node_prefix: str | None, limit: int, cursor: str | None = None) -> list[str]:
        """Up to limit + 1 index members `{node}/{id}` after `cursor` in the subtree."""
        if node_prefix:
            node_prefix = normalize_node(node_prefix)
            lo, hi = f"[{node_prefix}", f"({node_prefix}:"
        else:
            lo, hi = "-", "+"
        if cursor:
            lo = f"({cursor}"
        rows = await self.redis.zrangebylex(self.keys.rcat_by_node, lo, hi, start=0, num=limit + 1)
        return [_s(m) or "" for m in rows]

    async def _views(self, ids: list[str]) -> list[CameraView | None]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.rcat, ids)
            pipe.hmget(self.keys.status, ids)
            recs, stats = await pipe.execute()
        now = time.time()
        return [remote_view(r, s, now) if r else None for r, s in zip(recs, stats)]

    async def remote_get(self, camera_id: str) -> CameraView | None:
        """A remote camera by id, or None."""
        return (await self._views([camera_id]))[0]

    async def remote_count(self, node_prefix: str | None = None) -> int:
        """Number of remote cameras in the subtree."""
        if node_prefix:
            node_prefix = normalize_node(node_prefix)
            return int(await self.redis.zlexcount(self.keys.rcat_by_node, f"[{node_prefix}", f"({node_prefix}:"))
        return int(await self.redis.hlen(self.keys.rcat))
