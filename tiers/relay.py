"""Cross-tier streams: a camera's recordings, an event's clip and live.mp4, played by an upper tier (or by another
gateway of this tier) from the gateway that runs the camera, chunk by chunk, with back-pressure.

Links only go child -> parent, so Redis carries the stream, as it carries pictures (tiers/rpc.py), but as a
stream of bounded items instead of one blob:

1. The asker RPUSHes a request (JSON, at most MAX_REQUEST_BYTES) onto ``se:child:<child>:st`` in its OWN Redis,
   <child> being the direct child the camera came through (its "via" in ``se:rcat``); for a camera another
   gateway of this tier runs, onto that gateway's ``se:gw:<gateway>:st`` (tiers/placement.py holder).
2. The child's bridge BLPOPs it over its uplink (a peer gateway: from its own Redis) and answers by RPUSHing
   items onto ``...:st:<request id>`` (TierKeys.stream_reply / GatewayKeys.stream_reply), each refreshing the
   list's expiry (REPLY_TTL_S). An item is one tag byte and its payload:

   - ``H`` + JSON head ``{"status", "type", "headers", "detail", "message", "hops"}``: first, always. status 200
     (content type, whitelisted HTTP headers such as X-Recording-Start/End, audit detail such as bytes) or an
     error (404 unknown camera or nothing recorded, 422 bad window, 503 busy or not running, 504 a tier below
     did not answer) with its message, and nothing after it;
   - ``D`` + at most CHUNK_BYTES of the body;
   - ``K``: keepalive, sent when the server has had nothing to send for KEEPALIVE_S (an export being written,
     a camera between fragments), so the asker tells "slow" from "gone";
   - ``E`` + JSON ``{"bytes"}``: the body is complete;  ``X`` + JSON ``{"status", "message"}``: it failed midway.
3. Back-pressure: the server never has more than WINDOW items unacknowledged. The asker acknowledges what its
   own reader consumed by RPUSHing the cumulative count onto ``...:st:<request id>:ack`` (trimmed to the newest,
   so the list holds one item); the server reads that list in a task of its own (BLPOP, ACK_POP_S) and, with a
   full window, waits for credit. No credit for ACK_TIMEOUT_S: the asker is gone, the server gives up. An asker
   whose viewer leaves (or that gives up) pushes ``cancel`` there: the server stops reading its source (live:
   unsubscribes from the camera's muxer) at once.
4. A middle tier (the camera lies below its child) is both: it asks its child the same way and pipes the
   child's items to its parent item by item, acknowledging a child's item only once it has pushed it up, so
   the window holds on both hops and a middle tier holds at most one item in memory per stream.
5. Live streams are shared: a gateway given a `LiveShare` opens live.mp4 of a camera it does not run through it,
   so however many viewers it has (its own clients and the live requests it serves up) it asks ONE relayed live
   stream of the next hop per camera; the share cuts it into boxes and fans it out (gateway/live_share.py). A
   share's stream served up is counted ``relayed``, its stream from below ``received`` (so on a middle tier
   ``received`` is the hop below and ``relayed`` the hop above). Without a share, live streams are piped as in 4.

Every key lies under the child's own prefix at the parent (the only keys its uplink credential may touch:
tiers/grants.py; the child only RPUSHes, EXPIREs and BLPOPs there) and expires; every wait is bounded; a
request that is malformed, oversized, of an unknown kind or with bad ids is dropped (no usable id) or answered
400, and counted. Bytes are counted per role and kind: ``served`` (this tier owns the camera and sent it up),
``relayed`` (piped from a tier below to the one above), ``received`` (arrived here for a viewer of this tier).
The difference of ``relayed``/``served`` figures between tiers is the bytes per hop (the body; framing adds one
byte per item of at most CHUNK_BYTES).

tiers/ does not know the gateway: what it needs from it is `OpenLocal` (open a stream of a camera run here) and
optionally `LiveShare`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from registry.ids import CameraIdError, validate_camera_id
from tiers.contract import GatewayKeys, TierKeys

if TYPE_CHECKING:
    from registry.store import CameraStore

__all__ = ["KINDS", "LiveShare", "OpenLocal", "Relay", "RelayStats", "Stream", "StreamBroken", "StreamError", "StreamHead", "StreamRequest"]

log = logging.getLogger(__name__)

KINDS = ("recordings", "recording", "clip", "live")
ROLES = ("served", "relayed", "received")
CHUNK_BYTES = 256 * 1024  # one list item: a recording is read in these; a larger live fragment is split
WINDOW = 8  # items pushed and not acknowledged: with CHUNK_BYTES, at most 2 MiB waits in one reply list per hop
ACK_EVERY = WINDOW // 2  # the asker acknowledges every this many items (one round trip per half window)
MAX_REQUEST_BYTES = 2048
MAX_HEAD_BYTES = 16 * 1024  # a head is JSON of a few fields and headers; more is a broken or hostile tier
QUEUE_BOUND = 64  # requests kept per queue; older ones are dropped (their askers time out)
QUEUE_TTL_S = 30  # a child that is gone: its queue evaporates; a request older than this is not served
REPLY_TTL_S = 30  # reply and ack lists: refreshed on every push, so a side that died leaves nothing for long
MAX_WAIT_S = 8.0  # no blocking pop lasts longer: the blocking clients' socket timeouts are above it
HEAD_WAIT_S = 6.0  # the asker waits this long for the first item (keepalives restart it)
ITEM_WAIT_S = 6.0  # mid-stream: nothing (not even a keepalive) for this long and the stream is broken
KEEPALIVE_S = 2.0  # well under ITEM_WAIT_S: a server with nothing to send says so this often
HOP_MARGIN_S = 0.5  # each hop answers (504) this much before its asker gives up on it
ACK_TIMEOUT_S = 10.0  # a server whose window stays full this long hears nobody: it gives up
ACK_POP_S = 1.0  # the server's ack reader pops this long at a time (a cancel arrives at once anyway)
OPEN_LIMIT_S = 120.0  # an export (an hour of video) may take this long to write before the stream is refused
MAX_STREAMS = 16  # streams served at once by one gateway (each holds an ack reader's connection); more: 503
SERVE_POP_S = 1.0  # the serving loops pop requests this long at a time (so they notice being stopped)
CANCEL = b"cancel"
PROTOCOL = 1
# Headers a tier below may set on the asker's HTTP response (anything else it sends is ignored).
HEADERS = frozenset({"Content-Length", "Content-Disposition", "X-Recording-Start", "X-Recording-End", "X-Codecs",
                     "X-Live-Wall-Offset", "X-Live-Clock"})


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What an asker wants of a camera: a listing (since/until), a window (start/end), an event's clip, or live."""

    kind: str
    camera_id: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    event_id: str | None = None
    start: float | None = None  # window (recording) or listing (recordings: since) bounds, UTC seconds
    end: float | None = None
    ttl: float = HEAD_WAIT_S  # how long the asker waits for the head
    sent_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        d: dict[str, Any] = {"v": PROTOCOL, "id": self.id, "kind": self.kind, "camera_id": self.camera_id,
                             "ttl": round(self.ttl, 3), "sent_at": self.sent_at}
        for k in ("event_id", "start", "end"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return json.dumps(d)

    @classmethod
    def parse(cls, raw: bytes) -> "StreamRequest":
        """A request popped from a queue; ValueError (with `.request_id` when one was readable) when bad."""
        if len(raw) > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("request is not an object")
        rid = d.get("id")
        if not isinstance(rid, str) or not rid.isalnum() or not rid.isascii() or len(rid) > 64:
            raise ValueError("bad request id")
        try:
            kind = d.get("kind")
            if kind not in KINDS:
                raise ValueError(f"unknown kind {str(kind)[:20]!r}")
            cid = validate_camera_id(str(d.get("camera_id")))
            ev = d.get("event_id")
            if ev is not None and (not isinstance(ev, str) or len(ev) > 64):
                raise ValueError("bad event id")
            if kind == "clip" and ev is None:
                raise ValueError("a clip needs an event id")
            start, end = _num(d.get("start")), _num(d.get("end"))
            if kind == "recording" and (start is None or end is None):
                raise ValueError("a window needs start and end")
            ttl, sent_at = _num(d.get("ttl")), _num(d.get("sent_at"))
            return cls(kind, cid, rid, ev, start, end, HEAD_WAIT_S if ttl is None else ttl,
                       time.time() if sent_at is None else sent_at)
        except (ValueError, CameraIdError) as e:
            err = ValueError(str(e))
            err.request_id = rid  # type: ignore[attr-defined]
            raise err from None


def _num(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ValueError("a number is not one")
    return float(v)


@dataclass(frozen=True, slots=True)
class StreamHead:
    """The first item of a reply: an HTTP-like status, and for 200 the body's type, headers and audit detail."""

    status: int
    content_type: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    detail: tuple[tuple[str, Any], ...] = ()  # small figures for the asker's audit entry (bytes, seconds)
    message: str = ""
    hops: int = 0  # tiers (and peer gateways) the stream crossed to reach here

    def encode(self) -> bytes:
        return b"H" + json.dumps({"status": self.status, "type": self.content_type, "headers": dict(self.headers),
                                  "detail": dict(self.detail), "message": self.message[:300],
                                  "hops": self.hops}).encode()

    @classmethod
    def decode(cls, payload: bytes) -> "StreamHead":
        if len(payload) > MAX_HEAD_BYTES:
            raise ValueError("head too large")
        d = json.loads(payload)
        status = d["status"]
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError("bad status")
        headers = tuple((str(k), str(v).replace("\r", " ").replace("\n", " ")[:200])
                        for k, v in dict(d.get("headers") or {}).items() if k in HEADERS)
        detail = tuple((str(k)[:32], v) for k, v in dict(d.get("detail") or {}).items()
                       if isinstance(v, (int, float, str)) and not isinstance(v, bool))[:8]
        return cls(status, str(d.get("type") or "")[:100], headers, detail, str(d.get("message") or "")[:300],
                   int(d.get("hops") or 0))


class StreamError(Exception):
    """A stream could not be opened: `status` (404, 422, 503, 504...) and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message.replace("\n", " ")[:300]


class StreamBroken(Exception):
    """A stream that had begun ended before its end: a tier below failed or went silent."""


class Stream(Protocol):
    """An opened stream: its head (status 200) and its body, as an async iterator of bytes; closed once."""

    head: StreamHead

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class OpenLocal(Protocol):
    """The gateway's side: open a stream of a camera this gateway runs (or recorded). Raises StreamError."""

    async def __call__(self, req: StreamRequest) -> Stream: ...


class LiveShare(Protocol):
    """The gateway's side: one relayed live stream per camera not run here, shared by all its viewers (a stream
    it returns may set `relayed = True`: served up, it is counted as relayed)."""

    async def open(self, req: StreamRequest, upstream: Callable[[float], Awaitable[Stream]],
                   wait: float) -> Stream:
        """A viewer of the camera's shared stream; `upstream(wait)` opens the one relayed stream when none is."""
        ...

    def report(self) -> dict[str, Any]:
        """Counters for the bridge report and metrics."""
        ...

    async def aclose(self) -> None:
        """End every share (at shutdown)."""
        ...


@dataclass(slots=True)
class RelayStats:
    """Counters of one gateway's relay (since start)."""

    bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # (role, kind) -> body bytes
    streams: dict[tuple[str, str], int] = field(default_factory=dict)  # (role, kind) -> streams begun
    cancelled: int = 0  # the asker's viewer left: stopped at the asker's word
    gave_up: int = 0  # no acknowledgement for ACK_TIMEOUT_S: the asker is gone
    timeouts: int = 0  # a tier below said nothing in time (504 or a broken stream)
    busy: int = 0  # refused: MAX_STREAMS already served
    malformed: int = 0  # requests dropped or answered 400
    errors: int = 0  # heads with an error status served up

    def add(self, role: str, kind: str, n: int) -> None:
        self.bytes[(role, kind)] = self.bytes.get((role, kind), 0) + n

    def begun(self, role: str, kind: str) -> None:
        self.streams[(role, kind)] = self.streams.get((role, kind), 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes": {r: {k: self.bytes.get((r, k), 0) for k in KINDS} for r in ROLES},
            "streams": {r: {k: self.streams.get((r, k), 0) for k in KINDS} for r in ROLES},
            "cancelled": self.cancelled, "gave_up": self.gave_up, "timeouts": self.timeouts, "busy": self.busy,
            "malformed": self.malformed, "errors": self.errors,
            "window_items": WINDOW, "chunk_bytes": CHUNK_BYTES,
        }


class _Gone(Exception):
    """The asker cancelled, or stopped acknowledging."""


class _Sender:
    """The serving side of one reply: pushes items within the window, reads the asker's acks in a task."""

    def __init__(self, push: aioredis.Redis, block: aioredis.Redis, reply: str, ack: str, window: int,
                 stats: RelayStats) -> None:
        self.push_client, self.block, self.reply, self.ack = push, block, reply, ack
        self.window = window
        self.stats = stats
        self.sent = 0
        self.acked = 0
        self.cancelled = False
        self._credit = asyncio.Event()
        self._reader: asyncio.Task | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_acks(), name="relay:acks")

    async def _read_acks(self) -> None:
        while not self.cancelled:
            try:
                got = await self.block.blpop([self.ack], timeout=ACK_POP_S)
            except (RedisError, OSError):
                await asyncio.sleep(ACK_POP_S)  # the give-up timer ends a stream whose link stays down
                continue
            if got is None:
                continue
            value = got[1]
            if value == CANCEL:
                self.cancelled = True
            else:
                with contextlib.suppress(ValueError):
                    self.acked = max(self.acked, min(int(value), self.sent))
            self._credit.set()

    async def push(self, item: bytes) -> None:
        """Push one item once the window allows; _Gone when the asker cancelled or fell silent."""
        while True:
            if self.cancelled:
                raise _Gone("cancelled")
            if self.sent - self.acked < self.window:
                break
            self._credit.clear()
            try:
                await asyncio.wait_for(self._credit.wait(), ACK_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.stats.gave_up += 1
                raise _Gone("no acknowledgement") from None
        async with self.push_client.pipeline(transaction=False) as p:
            p.rpush(self.reply, item)
            p.expire(self.reply, REPLY_TTL_S)
            await p.execute()
        self.sent += 1

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])


class RemoteStream:
    """The asking side of one stream: the request pushed, the head read; iterating pops the body's items and
    acknowledges what was consumed. `aclose` cancels a stream not read to its end."""

    def __init__(self, relay: "Relay", req: StreamRequest, queue: str, reply: str, ack: str, who: str) -> None:
        self.relay, self.req, self.queue, self.reply, self.ack, self.who = relay, req, queue, reply, ack, who
        self.head = StreamHead(0)
        self.piped = False  # a tier that relays it up counts it as relayed, not received
        self.popped = 0
        self.acked = 0
        self.done = False
        self.bytes = 0

    async def start(self, wait: float) -> None:
        r = self.relay
        async with r.redis.pipeline(transaction=False) as p:
            p.rpush(self.queue, self.req.to_json())
            p.ltrim(self.queue, -QUEUE_BOUND, -1)
            p.expire(self.queue, QUEUE_TTL_S)
            await p.execute()
        try:
            tag, payload = await self._pop(wait)
            if tag != b"H":
                raise StreamError(502, f"{self.who} sent no head")
            try:
                head = StreamHead.decode(payload)
            except (ValueError, KeyError, TypeError):
                raise StreamError(502, f"{self.who} sent a malformed head") from None
            if head.status != 200:
                self.done = True  # nothing follows an error head
                raise StreamError(head.status, head.message or f"{self.who} answered {head.status}")
            self.head = StreamHead(200, head.content_type, head.headers, head.detail, "", head.hops + 1)
        except StreamError:
            await self.aclose()
            raise
        except (RedisError, OSError) as e:
            await self.aclose()
            raise StreamError(503, f"this tier's Redis failed while asking {self.who}: {type(e).__name__}") from None

    async def _pop(self, wait: float) -> tuple[bytes, bytes]:
        """The next item that is not a keepalive; StreamError(504) when none comes within `wait` seconds."""
        while True:
            got = await self.relay.blocking.blpop([self.reply], timeout=max(0.1, min(wait, MAX_WAIT_S)))
            if got is None:
                self.relay.stats.timeouts += 1
                raise StreamError(504, f"{self.who} did not answer within {wait:.3g} s")
            self.popped += 1
            item = bytes(got[1])
            tag, payload = item[:1], item[1:]
            if tag != b"K":
                return tag, payload
            if self.popped - self.acked >= ACK_EVERY:  # a keepalive is consumed at once: its credit goes back
                await self._ack(str(self.popped).encode())
                self.acked = self.popped

    def __aiter__(self) -> "RemoteStream":
        return self

    async def __anext__(self) -> bytes:
        if self.done:
            raise StopAsyncIteration
        if self.popped - self.acked >= ACK_EVERY:  # what was popped before this call has been consumed
            await self._ack(str(self.popped).encode())
            self.acked = self.popped
        try:
            tag, payload = await self._pop(ITEM_WAIT_S)
        except StreamError as e:
            self.done = True
            raise StreamBroken(e.message) from None
        if tag == b"D":
            self.bytes += len(payload)
            self.relay.stats.add("relayed" if self.piped else "received", self.req.kind, len(payload))
            return payload
        self.done = True
        if tag == b"E":
            raise StopAsyncIteration
        if tag == b"X":
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                raise StreamBroken(str(json.loads(payload[:MAX_HEAD_BYTES]).get("message"))[:300])
        raise StreamBroken(f"{self.who} broke the stream")

    async def _ack(self, value: bytes) -> None:
        async with self.relay.redis.pipeline(transaction=False) as p:
            p.rpush(self.ack, value)
            p.ltrim(self.ack, -1, -1)  # only the newest count matters: the list holds one item
            p.expire(self.ack, REPLY_TTL_S)
            await p.execute()

    async def aclose(self) -> None:
        """Cancel a stream not read to its end (the server stops at once), and drop what waits for us."""
        try:
            if not self.done:
                self.done = True
                await self._ack(CANCEL)
            await self.relay.redis.delete(self.reply)
        except (RedisError, OSError):
            pass  # the keys expire anyway; the server gives up without acknowledgements


class Relay:
    """Opens streams of any camera of this tier's subtree (own, a peer gateway's, a tier below's) and serves the
    streams other gateways and the parent tier ask of this one."""

    def __init__(self, redis: aioredis.Redis, blocking: aioredis.Redis, node: str, store: "CameraStore",
                 workers: Mapping[str, Any], *, open_local: OpenLocal, gateway_id: str | None = None,
                 holder: Callable[[str], str | None] | None = None, prefix: str = "se",
                 live_share: LiveShare | None = None) -> None:
        self.redis = redis
        self.blocking = blocking  # socket timeout above MAX_WAIT_S: the asker's pops and the peer queue's
        self.node = node
        self.store = store
        self.workers = workers
        self.open_local = open_local
        self.live_share = live_share  # live streams of cameras not run here: one relayed stream per camera
        self.gateway_id = gateway_id
        self.holder = holder
        self.keys = TierKeys(prefix)
        self.gw_keys = GatewayKeys(prefix)
        self.stats = RelayStats()
        # Read when made, so a test or benchmark may set the module's figures first.
        self.window = WINDOW
        self.chunk_bytes = CHUNK_BYTES
        self._tasks: set[asyncio.Task] = set()

    # ---- asking ------------------------------------------------------------------------------------------
    async def open(self, req: StreamRequest, *, wait: float = HEAD_WAIT_S) -> Stream:
        """The stream asked for, from wherever the camera runs. Raises StreamError (404, 422, 503, 504...)."""
        cam = await self.store.get(req.camera_id)
        if cam is not None:
            peer = self.holder(req.camera_id) if self.holder is not None and req.camera_id not in self.workers \
                else None
            if peer is not None and peer != self.gateway_id:
                return await self._remote(req, self.gw_keys.stream_queue(peer),
                                          lambda rid: self.gw_keys.stream_reply(peer, rid),
                                          lambda rid: self.gw_keys.stream_ack(peer, rid),
                                          f"gateway {peer} of this tier", wait)
            return await self.open_local(req)
        raw = await self.redis.hget(self.keys.rcat, req.camera_id)
        if raw is None:
            return await self.open_local(req)  # a camera gone from the catalog: its recordings may still be here
        try:
            via = str(json.loads(raw)["via"])
        except (ValueError, KeyError, TypeError):
            raise StreamError(404, f"no readable record of camera {req.camera_id}") from None
        return await self._remote(req, self.keys.stream_queue(via), lambda rid: self.keys.stream_reply(via, rid),
                                  lambda rid: self.keys.stream_ack(via, rid), f"tier {via}", wait)

    async def _remote(self, req: StreamRequest, queue: str, reply_of: Callable[[str], str],
                      ack_of: Callable[[str], str], who: str, wait: float) -> Stream:
        """Ask `who` for the stream; a live one through the share (one relayed stream per camera)."""
        if req.kind == "live" and self.live_share is not None:
            async def upstream(w: float) -> Stream:
                one = StreamRequest("live", req.camera_id)  # the share's own request, whoever asked first
                return await self._ask(one, queue, reply_of(one.id), ack_of(one.id), who, w)
            return await self.live_share.open(req, upstream, wait)
        return await self._ask(req, queue, reply_of(req.id), ack_of(req.id), who, wait)

    async def _ask(self, req: StreamRequest, queue: str, reply: str, ack: str, who: str, wait: float) -> Stream:
        wait = max(0.1, min(wait, MAX_WAIT_S))
        s = RemoteStream(self, StreamRequest(req.kind, req.camera_id, req.id, req.event_id, req.start, req.end,
                                             wait, time.time()), queue, reply, ack, who)
        await s.start(wait)
        return s

    # ---- serving -----------------------------------------------------------------------------------------
    async def serve_queue(self, block: aioredis.Redis, push: aioredis.Redis, queue: str,
                          reply_of: Callable[[str], str], ack_of: Callable[[str], str],
                          stopping: asyncio.Event | None = None) -> None:
        """Pop stream requests from `queue` and serve each in a task (at most MAX_STREAMS at once), until
        `stopping` is set or cancelled. `block` pops (socket timeout above the pop), `push` answers."""
        delay = 0.5
        while stopping is None or not stopping.is_set():
            try:
                got = await block.blpop([queue], timeout=SERVE_POP_S)
                delay = 0.5
            except (RedisError, OSError) as e:
                log.debug("relay: %s", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if got is None:
                continue
            task = asyncio.create_task(self.serve(bytes(got[1]), block, push, reply_of, ack_of), name="relay:serve")
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay: a stream failed", exc_info=task.exception())

    async def serve_peers(self) -> None:
        """Serve the streams the tier's other gateways ask of this one (queue in this tier's Redis)."""
        assert self.gateway_id is not None
        gw = self.gateway_id
        await self.serve_queue(self.blocking, self.redis, self.gw_keys.stream_queue(gw),
                               lambda rid: self.gw_keys.stream_reply(gw, rid),
                               lambda rid: self.gw_keys.stream_ack(gw, rid))

    def serving(self) -> int:
        return len(self._tasks)

    async def serve(self, raw: bytes, block: aioredis.Redis, push: aioredis.Redis,
                    reply_of: Callable[[str], str], ack_of: Callable[[str], str]) -> None:
        """Answer one request: head, then the body within the window, then the end (or the failure)."""
        received = time.time()
        try:
            req = StreamRequest.parse(raw)
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            self.stats.malformed += 1
            rid = getattr(e, "request_id", None)
            log.debug("relay: dropped a malformed stream request: %s", e)
            if rid is not None:  # its asker is told why rather than left to time out
                await self._answer(push, reply_of(rid), StreamHead(400, message=f"bad stream request: {e}"))
            return
        if received - req.sent_at > QUEUE_TTL_S or req.ttl - HOP_MARGIN_S <= 0:
            return  # its asker gave up long ago (this tier was away)
        reply, ack = reply_of(req.id), ack_of(req.id)
        if len(self._tasks) > MAX_STREAMS:
            self.stats.busy += 1
            await self._answer(push, reply, StreamHead(503, message=f"tier {self.node} serves {MAX_STREAMS} "
                                                                    "streams already; try again shortly"))
            return
        sender = _Sender(push, block, reply, ack, self.window, self.stats)
        sender.start()
        stream: Stream | None = None
        try:
            stream = await self._open_alive(req, sender)
            if stream is None:
                return
            piped = isinstance(stream, RemoteStream)  # its bytes are counted as they arrive from below
            role = "relayed" if piped or getattr(stream, "relayed", False) else "served"
            if piped:
                stream.piped = True
            self.stats.begun(role, req.kind)
            await sender.push(stream.head.encode())
            sent = await self._pump(req, stream, sender, role, counted=piped)
            await sender.push(b"E" + json.dumps({"bytes": sent}).encode())
        except _Gone as e:
            if sender.cancelled:
                self.stats.cancelled += 1
            log.debug("relay: %s stream of %s stopped: %s", req.kind, req.camera_id, e)
        except StreamBroken as e:
            with contextlib.suppress(_Gone, RedisError, OSError):
                await sender.push(b"X" + json.dumps({"status": 502, "message": str(e)[:300]}).encode())
        except (RedisError, OSError) as e:
            log.debug("relay: reply to %s not sent: %s", req.id, e)
        except Exception as e:  # noqa: BLE001 - the source failed (a bug, a disk): the asker is told, we go on
            log.exception("relay: %s stream of %s failed", req.kind, req.camera_id)
            with contextlib.suppress(_Gone, RedisError, OSError):
                await sender.push(b"X" + json.dumps({"status": 502, "message": type(e).__name__}).encode())
        finally:
            if stream is not None:
                await stream.aclose()
            await sender.close()

    async def _open_alive(self, req: StreamRequest, sender: _Sender) -> Stream | None:
        """Open the stream (own camera, or asked of the next tier), pushing keepalives meanwhile; an error is
        answered as the head. None when there is nothing more to send."""
        budget = max(0.1, min(req.ttl, MAX_WAIT_S) - HOP_MARGIN_S)
        opening = asyncio.create_task(self.open(req, wait=budget), name="relay:open")
        deadline = time.monotonic() + OPEN_LIMIT_S
        try:
            while True:
                done, _ = await asyncio.wait({opening}, timeout=KEEPALIVE_S)
                if done:
                    break
                if time.monotonic() > deadline:
                    raise StreamError(504, f"tier {self.node} could not open the stream in {OPEN_LIMIT_S:g} s")
                await sender.push(b"K")
            return opening.result()
        except StreamError as e:
            if e.status == 504:
                self.stats.timeouts += 1
            self.stats.errors += 1
            await sender.push(StreamHead(e.status, message=e.message).encode())
            return None
        finally:
            if not opening.done():
                opening.cancel()
                with contextlib.suppress(BaseException):
                    s = await opening
                    await s.aclose()

    async def _pump(self, req: StreamRequest, stream: Stream, sender: _Sender, role: str, counted: bool) -> int:
        """Push the body in chunks; a keepalive when the source is quiet for KEEPALIVE_S. Returns body bytes."""
        it = stream.__aiter__()
        sent = 0
        nxt: asyncio.Task | None = None
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt}, timeout=KEEPALIVE_S)
                if not done:
                    await sender.push(b"K")
                    continue
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    return sent
                finally:
                    if done:
                        nxt = None
                for i in range(0, len(chunk), self.chunk_bytes):
                    piece = chunk[i:i + self.chunk_bytes]
                    await sender.push(b"D" + piece)
                    sent += len(piece)
                    if not counted:  # a piped stream's bytes are counted as they arrive (RemoteStream)
                        self.stats.add(role, req.kind, len(piece))
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt

    async def _answer(self, push: aioredis.Redis, reply: str, head: StreamHead) -> None:
        with contextlib.suppress(RedisError, OSError):
            async with push.pipeline(transaction=False) as p:
                p.rpush(reply, head.encode())
                p.expire(reply, REPLY_TTL_S)
                await p.execute()

    def report(self) -> dict[str, Any]:
        """The counters (RelayStats.to_dict) and, with a live share, its shared streams (`live_shares`)."""
        out = self.stats.to_dict()
        out["live_shares"] = self.live_share.report() if self.live_share is not None else None
        return out

    async def close(self) -> None:
        """End the streams being served (at shutdown), then the live shares."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3)
        if self.live_share is not None:
            await self.live_share.aclose()
