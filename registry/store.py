"""Camera records in Redis: the record, the node index and the catalog change feed, written together.

Keys: tiers/contract.py CameraKeys (the record, ``{p}:cameras``, ``{p}:cameras:by_node``, the
``{p}:catalog`` feed, ``{p}:serial:{centre}``); its Lua scripts are there too. Read, not written:
``{p}:rcat``, the cameras of the tiers below; a create checks it in its script, since camera ids are
unique network-wide.

Every write that changes a record runs as one Lua script, so the record, both indexes and the
feed entry change together or not at all, and a reader never sees a half-written camera.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from registry.ids import MAX_SERIAL, CameraIdError, centre_code, generate_camera_id, validate_camera_id
from registry.models import Camera, CameraCreate
from tiers.contract import CAMERA_CREATE, CAMERA_DELETE, CAMERA_LIST, CAMERA_UPDATE, CameraKeys
from tiers.nodes import normalize_node

__all__ = [
    "CameraExists", "CameraNotFound", "CameraOwnedBelow", "CameraStore", "Change", "CursorError", "StoreConflict",
]

FEED_MAXLEN = 100_000
MAX_PAGE_SIZE = 1000

_CURSOR = re.compile(r"^[0-9]{2,12}/[0-9]{20}$")
_STREAM_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")

class CameraExists(Exception):
    """A camera with this id is already registered."""

    def __init__(self, camera_id: str) -> None:
        super().__init__(f"camera {camera_id} already exists")
        self.camera_id = camera_id


class CameraOwnedBelow(CameraExists):
    """The id belongs to a camera of a tier below (in this tier's remote catalog): ids are unique network-wide."""

    def __init__(self, camera_id: str, owner: str = "", via: str = "") -> None:
        super().__init__(camera_id)
        self.args = (f"camera {camera_id} already exists at tier {owner or 'below'}",)
        self.owner = owner
        self.via = via


def _create_result(camera: Camera, entry: Any) -> Camera | CameraExists:
    if entry is None:
        return CameraExists(camera.id)
    if isinstance(entry, list):  # ['remote', record of the tier below]
        owner = via = ""
        try:
            rec = json.loads(_s(entry[1]) or "")
            owner, via = str(rec.get("owner") or ""), str(rec.get("via") or "")
        except (ValueError, TypeError, AttributeError, IndexError):
            pass
        return CameraOwnedBelow(camera.id, owner, via)
    return camera


class CameraNotFound(LookupError):
    """No camera with this id."""

    def __init__(self, camera_id: str) -> None:
        super().__init__(f"camera {camera_id} not found")
        self.camera_id = camera_id


class CursorError(ValueError):
    """A pagination cursor or feed position that this listing did not hand out."""


class StoreConflict(RuntimeError):
    """A read-modify-write kept losing to concurrent writers."""


@dataclass(frozen=True)
class Change:
    """One entry of the catalog change feed."""

    entry_id: str
    op: Literal["upsert", "delete"]
    camera_id: str
    node: str
    ts: float
    camera: Camera | None  # full record (credentials included) for upserts, None for deletes


def _s(value: bytes | str | None) -> str | None:
    # The caller chooses decode_responses; accept both.
    if isinstance(value, bytes):
        return value.decode()
    return value


class CameraStore:
    """Camera records, node index and change feed in one Redis."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "se", *, feed_maxlen: int = FEED_MAXLEN,
                 base_unit: str = "00") -> None:
        if not re.match(r"^[A-Za-z0-9_.\-:{}]{1,64}$", prefix):
            raise ValueError("prefix must be 1..64 characters of [A-Za-z0-9_.-:{}]")
        centre_code("45", base_unit)  # validates it
        self.base_unit = base_unit  # of generated ids (centre code digits 7-8)
        self._redis = redis
        self.prefix = prefix
        self.feed_maxlen = feed_maxlen
        self.keys = CameraKeys(prefix)
        self._k_ids = self.keys.ids
        self._k_by_node = self.keys.by_node
        self._k_catalog = self.keys.catalog
        self._k_rcat = self.keys.rcat  # cameras of the tiers below (tiers/catalog.py)
        self._create = redis.register_script(CAMERA_CREATE)
        self._update = redis.register_script(CAMERA_UPDATE)
        self._delete = redis.register_script(CAMERA_DELETE)
        self._list = redis.register_script(CAMERA_LIST)

    # ------------------------------------------------------------------ keys

    def camera_key(self, camera_id: str) -> str:
        """Redis key of a camera record."""
        return self.keys.camera(camera_id)

    @property
    def catalog_key(self) -> str:
        """Redis key of the catalog change feed (a stream)."""
        return self._k_catalog

    def _write_keys(self, camera_id: str) -> list[str]:
        return [self.camera_key(camera_id), self._k_ids, self._k_by_node, self._k_catalog]

    def _create_keys(self, camera_id: str) -> list[str]:
        # The remote catalog is read in the same script: a camera forwarded up by a child between a
        # check and the write cannot slip by.
        return [*self._write_keys(camera_id), self._k_rcat]

    def _upsert_args(self, camera: Camera) -> list[str | int]:
        return [camera.id, camera.node, camera.to_json(), repr(camera.updated_at), self.feed_maxlen]

    # ------------------------------------------------------------------ writes

    async def create(self, camera: Camera) -> Camera:
        """Store a new camera; raise CameraExists if the id is taken here, CameraOwnedBelow if by a tier below."""
        entry = await self._create(keys=self._create_keys(camera.id), args=self._upsert_args(camera))
        result = _create_result(camera, entry)
        if isinstance(result, CameraExists):
            raise result
        return result

    async def create_many(self, cameras: Iterable[Camera]) -> list[Camera | CameraExists]:
        """Store many new cameras in one pipeline; each is atomic, the batch is not."""
        cams = list(cameras)
        if not cams:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for cam in cams:
                await self._create(keys=self._create_keys(cam.id), args=self._upsert_args(cam), client=pipe)
            results = await pipe.execute()
        return [_create_result(cam, entry) for cam, entry in zip(cams, results)]

    async def add(self, data: CameraCreate, *, now: float | None = None) -> Camera:
        """Register a camera from a create body, generating its id from the node when absent."""
        if data.id is not None:
            return await self.create(Camera.from_create(data, now=now))
        # An administrator may have used an id the counter has not reached yet: skip past it.
        for _ in range(100):
            serial = await self.next_serial(data.node)
            if serial > MAX_SERIAL:
                raise CameraIdError(f"no free camera serials left under centre code "
                                    f"{centre_code(data.node, self.base_unit)}")
            cid = generate_camera_id(data.node, serial, base_unit=self.base_unit)
            camera = Camera.from_create(data, camera_id=cid, now=now)
            try:
                return await self.create(camera)
            except CameraExists:
                continue
        raise StoreConflict(f"could not allocate a free camera id under node {data.node}")

    async def update(self, camera: Camera) -> Camera:
        """Replace an existing camera's record; raise CameraNotFound if it does not exist."""
        entry = await self._update(keys=self._write_keys(camera.id), args=self._upsert_args(camera))
        if entry is None:
            raise CameraNotFound(camera.id)
        return camera

    async def modify(self, camera_id: str, change: Callable[[Camera], Camera], *, retries: int = 20) -> Camera | None:
        """Atomic read-modify-write: apply `change` to the current record and store the result.

        Returns None when the camera does not exist. `change` may raise (e.g. SourceError) to
        abort without writing; it may be called more than once when writers race.
        """
        validate_camera_id(camera_id)
        key = self.camera_key(camera_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(retries):
                try:
                    # The record key alone: every write to this camera's index entries also
                    # rewrites it, and watching the shared indexes would make unrelated
                    # creates abort us.
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return None
                    old = Camera.from_json(raw)
                    new = change(old)
                    if new.id != old.id:
                        raise ValueError("a change may not alter the camera id")
                    old_node = _s(await pipe.hget(self._k_ids, camera_id)) or old.node
                    record = new.to_json()
                    pipe.multi()
                    if old_node != new.node:
                        pipe.zrem(self._k_by_node, f"{old_node}/{camera_id}")
                    pipe.set(key, record)
                    pipe.hset(self._k_ids, camera_id, new.node)
                    pipe.zadd(self._k_by_node, {f"{new.node}/{camera_id}": 0})
                    pipe.xadd(
                        self._k_catalog,
                        {"op": "upsert", "id": camera_id, "node": new.node, "camera": record,
                         "ts": repr(new.updated_at)},
                        maxlen=self.feed_maxlen,
                        approximate=True,
                    )
                    await pipe.execute()
                    return new
                except WatchError:
                    continue
        raise StoreConflict(f"camera {camera_id} kept changing; gave up after {retries} tries")

    async def delete(self, camera_id: str) -> bool:
        """Remove a camera; False if it did not exist."""
        validate_camera_id(camera_id)
        entry = await self._delete(keys=self._write_keys(camera_id), args=[camera_id, repr(time.time()), self.feed_maxlen])
        return entry is not None

    async def next_serial(self, node: str) -> int:
        """Next serial for generated ids under the node's centre code (starts at 1)."""
        return int(await self._redis.incr(self.keys.serial(centre_code(node, self.base_unit))))

    # ------------------------------------------------------------------ reads

    async def get(self, camera_id: str) -> Camera | None:
        """The camera with this id, or None; raise CameraIdError for a malformed id."""
        raw = await self._redis.get(self.camera_key(validate_camera_id(camera_id)))
        return None if raw is None else Camera.from_json(raw)

    async def get_many(self, camera_ids: Iterable[str]) -> list[Camera | None]:
        """Cameras for the ids, in order, None where missing (one MGET)."""
        ids = [validate_camera_id(i) for i in camera_ids]
        if not ids:
            return []
        raws = await self._redis.mget([self.camera_key(i) for i in ids])
        return [None if raw is None else Camera.from_json(raw) for raw in raws]

    async def exists(self, camera_id: str) -> bool:
        """Whether a camera with this id is registered."""
        return bool(await self._redis.hexists(self._k_ids, validate_camera_id(camera_id)))

    async def list(
        self, node: str | None = None, page_size: int = 100, cursor: str | None = None
    ) -> tuple[list[Camera], str | None]:
        """One page of cameras in node's subtree (all when None), ordered by node then id.

        Returns the page and the cursor for the next one (None on the last page).
        Raises CursorError for a cursor not from this listing, NodeCodeError for a bad node.
        """
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be an integer in 1..{MAX_PAGE_SIZE}")
        if node is None:
            lo, hi = "-", "+"
        else:
            node = normalize_node(node)
            # Members of the subtree are "{node}" followed by "/" or a digit, all below ":".
            lo, hi = f"[{node}", f"({node}:"
        if cursor is not None:
            if not isinstance(cursor, str) or not _CURSOR.match(cursor):
                raise CursorError("malformed cursor")
            if node is not None and not cursor.startswith(node):
                raise CursorError("cursor does not belong to this listing")
            lo = f"({cursor}"
        flat = await self._list(
            keys=[self._k_by_node], args=[lo, hi, page_size + 1, self.keys.camera_prefix]
        )
        members = [_s(m) for m in flat[0::2]]
        records = flat[1::2]
        page: list[Camera] = []
        for raw in records[:page_size]:
            if raw:  # an index entry without a record cannot happen via this store; skip it
                page.append(Camera.from_json(raw))
        next_cursor = members[page_size - 1] if len(members) > page_size else None
        return page, next_cursor

    async def count(self, node: str | None = None) -> int:
        """Number of cameras in node's subtree (all when None)."""
        if node is None:
            return int(await self._redis.hlen(self._k_ids))
        node = normalize_node(node)
        return int(await self._redis.zlexcount(self._k_by_node, f"[{node}", f"({node}:"))

    async def changes(self, after: str = "0-0", count: int = 100, *, block_ms: int | None = None) -> list[Change]:
        """Feed entries after the given entry id, oldest first; block up to block_ms for new ones."""
        if not isinstance(after, str) or not _STREAM_ID.match(after):
            raise CursorError("malformed feed position; expected a stream entry id like 1700000000000-0")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
            raise ValueError("count must be an integer in 1..10000")
        if block_ms is None:
            entries = await self._redis.xrange(self._k_catalog, min=f"({after}", max="+", count=count)
        else:
            reply = await self._redis.xread({self._k_catalog: after}, count=count, block=block_ms)
            entries = reply[0][1] if reply else []
        return [self._change(entry_id, fields) for entry_id, fields in entries]

    @staticmethod
    def _change(entry_id: bytes | str, fields: dict) -> Change:
        f = {_s(k): _s(v) for k, v in fields.items()}
        raw = f.get("camera")
        return Change(
            entry_id=_s(entry_id) or "",
            op="delete" if f.get("op") == "delete" else "upsert",
            camera_id=f.get("id") or "",
            node=f.get("node") or "",
            ts=float(f.get("ts") or 0),
            camera=Camera.from_json(raw) if raw else None,
        )
