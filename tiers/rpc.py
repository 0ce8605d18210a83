"""Cross-tier fetch: an upper tier asks the tier that owns a camera for its newest frame, through the chain.

Links only go child -> parent (children dial out to their parent's Redis), so Redis carries the calls:
the asking tier RPUSHes a request onto ``se:child:<child>:rpc`` in its OWN Redis, where <child> is the
direct child the camera came through (its "via" in ``se:rcat``); that child's bridge BLPOPs the list over
its uplink, serves the request (its own camera's frame, or by asking its own child the same way), and
pushes the reply onto ``se:child:<child>:rpc:<request id>`` (expiring soon), which the asker BLPOPs with
a timeout. Both lie under the child's own key prefix, the only keys its uplink credential may touch.

Request: JSON {"id", "camera_id", "ttl" (seconds the asker waits), "sent_at", "width", "boxes", "v": 2}
(at most 1 KiB). The owning tier renders the picture at the width asked, detections drawn when "boxes",
so a thumbnail crosses each hop at thumbnail size.
Reply: b"<status>\\n" + JPEG (status 200) or an error message (404, 503, 504, 502), at most 4 MiB; to a
request with "v": 2 a picture's head is b"200 <captured_at> <detections>" ("-" where unknown).
A tier that predates "v" ignores the new fields and answers the bare form, which is still read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from analytics.snapshot import MAX_WIDTH, MIN_WIDTH
from analytics.types import Detection, Frame
from registry.ids import CameraIdError, validate_camera_id
from tiers.contract import GatewayKeys, TierKeys

if TYPE_CHECKING:
    from registry.store import CameraStore

__all__ = ["FetchError", "FrameFetcher", "NoFrame", "Picture", "TierTimeout", "UnknownCamera"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024
MAX_REPLY_BYTES = 4 << 20
QUEUE_BOUND = 100  # requests kept per child; older ones are dropped (their askers time out)
QUEUE_TTL_S = 30  # a child that is gone: its queue evaporates
REPLY_TTL_S = 10
HOP_MARGIN_S = 0.25  # each hop answers this much before its asker gives up
MAX_WAIT_S = 8.0  # below the app client's socket timeout, which a blocking pop must not outlast
PEER_POP_S = 2  # a gateway waits this long for its peers' requests per blocking pop
PEER_CONCURRENCY = 8  # requests from peers answered at once
PROTOCOL = 2


@dataclass(frozen=True, slots=True)
class Picture:
    """A camera's newest frame as JPEG, with what the owning tier knew of it."""

    jpeg: bytes
    captured_at: float | None = None  # the owning tier's wall clock when the frame was decoded
    detections: int | None = None  # boxes drawn on it (None: not asked for, or not told)
    fitted: bool = False  # rendered at the width asked (False: a tier from before widths were asked)


class Render(Protocol):
    """Frame -> JPEG at most `width` wide, `detections` drawn when `boxes` (the gateway's LiveFrames.jpeg)."""

    async def __call__(self, camera_id: str, frame: Frame, detections: tuple[Detection, ...], *, width: int,
                       boxes: bool) -> bytes: ...


class FetchError(web.HTTPException):
    """A frame could not be fetched; `status` says why (an aiohttp HTTP error: handlers may let it through)."""

    status_code = 502

    def __init__(self, message: str) -> None:
        super().__init__(reason=message.replace("\n", " ")[:200])
        self.message = self.reason


class UnknownCamera(FetchError):
    """No camera with this id in this tier's subtree (404)."""

    status_code = 404


class NoFrame(FetchError):
    """The camera is known but has no frame yet: starting, offline or disabled (503)."""

    status_code = 503


class TierTimeout(FetchError):
    """The tier that owns the camera did not answer in time (504)."""

    status_code = 504


_ERRORS: dict[int, type[FetchError]] = {404: UnknownCamera, 503: NoFrame, 504: TierTimeout}


class FrameFetcher:
    """Newest frame of any camera in this tier's subtree as JPEG: its own from the worker, others via the chain."""

    def __init__(self, redis: aioredis.Redis, node: str, store: "CameraStore", workers: Mapping[str, Any], *,
                 render: Render, prefix: str = "se", gateway_id: str | None = None,
                 holder: Callable[[str], str | None] | None = None) -> None:
        self.redis = redis
        # Another gateway of this tier may run one of its cameras (tiers/placement.py): `holder` names it, and
        # the request goes to that gateway's own queue in this tier's Redis.
        self.gateway_id = gateway_id
        self.holder = holder
        self.gw_keys = GatewayKeys(prefix)
        self.render = render  # shares the encode with this tier's own viewers of the camera
        self.node = node
        self.store = store
        self.workers = workers  # camera id -> CameraWorker (the supervisor's live dict)
        self.keys = TierKeys(prefix)
        self.asked = 0
        self.served = 0
        self.failed = 0

    async def fetch(self, camera_id: str, timeout: float = 5.0, *, width: int = MAX_WIDTH,
                    boxes: bool = False) -> Picture:
        """The camera's newest frame, at most `width` wide, with its detections drawn when `boxes`.

        Raises UnknownCamera, NoFrame, TierTimeout or FetchError.
        """
        width = max(MIN_WIDTH, min(MAX_WIDTH, int(width)))
        try:
            camera_id = validate_camera_id(camera_id)
        except CameraIdError:
            raise UnknownCamera(f"no camera {str(camera_id)[:32]}") from None
        cam = await self.store.get(camera_id)
        if cam is not None:
            peer = self.holder(camera_id) if self.holder is not None and camera_id not in self.workers else None
            if peer is not None and peer != self.gateway_id:
                rid = uuid.uuid4().hex
                return await self._ask(camera_id, self.gw_keys.rpc_queue(peer), self.gw_keys.rpc_reply(peer, rid), rid,
                                       timeout, width, boxes, f"gateway {peer} of this tier, which runs camera "
                                                              f"{camera_id},")
            return await self._local(camera_id, cam.enabled, width, boxes)
        raw = await self.redis.hget(self.keys.rcat, camera_id)
        if raw is None:
            raise UnknownCamera(f"no camera {camera_id} in this tier's subtree")
        try:
            rec = json.loads(raw)
            via = str(rec["via"])
            owner = str(rec.get("owner") or via)
        except (ValueError, KeyError, TypeError):
            raise UnknownCamera(f"no readable record of camera {camera_id}") from None
        return await self._remote(camera_id, via, owner, timeout, width, boxes)

    async def _local(self, camera_id: str, enabled: bool, width: int, boxes: bool) -> Picture:
        worker = self.workers.get(camera_id)
        frame = worker.latest if worker is not None else None
        if frame is None:
            why = "is disabled" if not enabled else "has no frame yet (starting or offline)"
            raise NoFrame(f"camera {camera_id} {why}")
        dets: tuple[Detection, ...] = tuple(worker.latest_detections) if boxes else ()
        jpeg = await self.render(camera_id, frame, dets, width=width, boxes=boxes)
        return Picture(jpeg, frame.captured_at, len(dets) if boxes else None, fitted=True)

    async def _remote(self, camera_id: str, via: str, owner: str, timeout: float, width: int,
                      boxes: bool) -> Picture:
        rid = uuid.uuid4().hex
        return await self._ask(camera_id, self.keys.rpc_queue(via), self.keys.rpc_reply(via, rid), rid, timeout,
                               width, boxes, f"tier {via} (towards {owner}, which runs camera {camera_id})")

    async def _ask(self, camera_id: str, queue: str, reply: str, rid: str, timeout: float, width: int, boxes: bool,
                   who: str) -> Picture:
        wait = max(0.1, min(timeout, MAX_WAIT_S))
        req = json.dumps({"id": rid, "camera_id": camera_id, "ttl": round(wait, 3), "sent_at": time.time(),
                          "width": width, "boxes": boxes, "v": PROTOCOL})
        self.asked += 1
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(queue, req)
            pipe.ltrim(queue, -QUEUE_BOUND, -1)
            pipe.expire(queue, QUEUE_TTL_S)
            await pipe.execute()
        got = await self.redis.blpop([reply], timeout=wait)
        if got is None:
            self.failed += 1
            raise TierTimeout(f"{who} did not answer within {wait:g} s")
        return parse_reply(got[1])

    async def serve_peers(self, blocking: aioredis.Redis, concurrency: int = PEER_CONCURRENCY) -> None:
        """Answer the frame requests other gateways of this tier queue for this one, until cancelled."""
        assert self.gateway_id is not None
        queue = self.gw_keys.rpc_queue(self.gateway_id)
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task] = set()
        delay = 0.5
        while True:
            try:
                got = await blocking.blpop([queue], timeout=PEER_POP_S)
                delay = 0.5
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if got is None:
                continue
            await slots.acquire()
            t = asyncio.create_task(self.serve(self.redis, got[1], reply_to=self._peer_reply), name="frames:peer")
            tasks.add(t)
            t.add_done_callback(lambda t: (tasks.discard(t), slots.release()))

    def _peer_reply(self, rid: str) -> str:
        assert self.gateway_id is not None
        return self.gw_keys.rpc_reply(self.gateway_id, rid)

    async def serve(self, uplink: aioredis.Redis, raw: bytes,
                    reply_to: Callable[[str], str] | None = None) -> None:
        """Answer one request popped from the parent's queue for this tier (called by the bridge), or from this
        gateway's own queue (`reply_to` names the reply key then)."""
        received = time.time()
        try:
            if len(raw) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            req = json.loads(raw)
            rid = str(req["id"])
            if not rid.isalnum() or len(rid) > 64:
                raise ValueError("bad request id")
            camera_id = str(req["camera_id"])
            ttl = float(req.get("ttl", 5.0))
            sent_at = float(req.get("sent_at", received))
            width = int(req.get("width", MAX_WIDTH))
            boxes = req.get("boxes") is True
            version = int(req.get("v", 1))
        except (ValueError, KeyError, TypeError) as e:
            log.debug("dropped a malformed frame request: %s", e)
            return
        if received - sent_at > QUEUE_TTL_S:
            return  # its asker gave up long ago (this tier was away)
        budget = min(ttl, MAX_WAIT_S) - HOP_MARGIN_S
        if budget <= 0:
            return
        try:
            pic = await asyncio.wait_for(self.fetch(camera_id, timeout=budget, width=width, boxes=boxes),
                                         budget + 0.5)
            payload = _picture_head(pic, version) + pic.jpeg
            self.served += 1
        except FetchError as e:
            payload = f"{e.status}\n{e.reason}".encode()
            self.failed += 1
        except asyncio.TimeoutError:
            payload = f"504\ntier {self.node} ran out of time".encode()
            self.failed += 1
        if len(payload) > MAX_REPLY_BYTES:
            payload = b"502\nframe larger than the reply bound"
        # Under this tier's own keys at the parent, or this gateway's in its own tier's Redis.
        reply = reply_to(rid) if reply_to is not None else self.keys.rpc_reply(self.node, rid)
        async with uplink.pipeline(transaction=False) as pipe:
            pipe.rpush(reply, payload)
            pipe.expire(reply, REPLY_TTL_S)
            await pipe.execute()


def _picture_head(pic: Picture, version: int) -> bytes:
    if version < 2:
        return b"200\n"
    taken = f"{pic.captured_at:.3f}" if pic.captured_at is not None else "-"
    dets = str(pic.detections) if pic.detections is not None else "-"
    return f"200 {taken} {dets}\n".encode()


def parse_reply(raw: bytes) -> Picture:
    """The picture in a reply, or the typed error it carries."""
    if len(raw) > MAX_REPLY_BYTES + 64:
        raise FetchError("reply larger than the bound")
    head, sep, body = raw.partition(b"\n")
    fields = head.split(b" ")
    if not sep or not fields[0].isdigit() or len(fields) not in (1, 3):
        raise FetchError("malformed reply from the tier below")
    status = int(fields[0])
    if status != 200:
        raise _ERRORS.get(status, FetchError)(body.decode("utf-8", "replace"))
    if body[:2] != b"\xff\xd8":
        raise FetchError("the tier below sent something that is not a JPEG")
    if len(fields) == 1:
        return Picture(body)  # a tier from before the picture's details were sent
    try:
        taken = None if fields[1] == b"-" else float(fields[1])
        dets = None if fields[2] == b"-" else int(fields[2])
    except ValueError:
        raise FetchError("malformed reply from the tier below") from None
    return Picture(body, taken, dets, fitted=True)
