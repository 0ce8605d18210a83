"""Recordings over HTTP (issue 11): a camera's timeline, a window as one MP4, an event's clip, live fMP4.

Operator, jurisdiction-scoped like a camera's picture (a camera outside the caller's jurisdiction is a 404,
audited as a refusal). Every answer is audited: the listing and a window as `recording.view`, a clip as
`clip.view`, a live view like live.mjpeg's (`live.view`, then `live.end` with how long it was watched).

Recordings are served by the gateway that recorded them, from its own disk (gateway/recordings.py). A camera
another gateway of this tier runs, or one of a tier below, is played through that gateway or down the chain of
bridges (tiers/relay.py: streamed in chunks with back-pressure, bytes counted per hop); jurisdiction and audit
are this tier's, the owning gateway trusts the tier above as it does for pictures. Local and relayed answers take
one path: `local_opener` opens a stream of a camera run here (what the relay serves to others too), `Relay.open`
finds where the camera is, `_play` writes the stream as the HTTP answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import weakref
from datetime import datetime, timezone
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from redis.exceptions import RedisError

from analytics.events import iso_ms
from gateway import keys
from gateway.api.auth import require, require_node
from gateway.api.errors import ApiError
from gateway.api.events import _stored
from gateway.api.live import SlowReader, _bound_send_buffer, _send, _until_revoked, refuse_past_limits
from gateway.recording import (
    MAX_WINDOW_S, Export, NoRecording, RecordingError, RecordingSettings, WindowError, export_clip, export_window,
)
from gateway.recording.live import LiveMuxer
from gateway.recording.records import MAX_LIST_WINDOW_S
from gateway.events import EventIdError
from gateway.exports import ExportKey, ExportsBusy, Lease, Written
from registry.ids import CameraIdError, validate_camera_id
from registry.models import RecordingChoice
from tiers.access import Role
from tiers.contract import TierKeys
from tiers.relay import Stream, StreamBroken, StreamError, StreamHead, StreamRequest

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

DEFAULT_LIST_S = 86400.0  # a listing without `since` covers the last day
DEFAULT_WINDOW_S = 60.0  # recording.mp4 without `end`: this long from `start`
READ_CHUNK = 256 * 1024  # an export is sent in chunks of this many bytes (each write waits for the client)
MP4 = "video/mp4"
LIVE_START_TIMEOUT_S = 8.0  # live.mp4 waits this long for a key frame; the muxer it started lingers (LINGER_S), so
# a retry of a camera with a longer GOP gets the key frame cached meanwhile


def _when(request: web.Request, name: str, default: float | None = None) -> float:
    """A query parameter as UTC seconds: ISO 8601 (a time without offset is UTC); 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, f"{name} is required: an ISO 8601 time, e.g. 2026-12-01T02:00:00Z")
        return default
    try:
        dt = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time, e.g. 2026-12-01T02:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


async def _camera(request: web.Request) -> tuple[str, str]:
    """(camera id, its node) of the path's camera in this tier's subtree (own, or known from the catalog a tier
    below forwarded), for an operator over its node; 404 when absent or elsewhere (the same answer)."""
    try:
        cid = validate_camera_id(request.match_info["camera_id"])
    except CameraIdError as e:
        raise ApiError(400, f"bad camera id: {e}") from None
    require(request, Role.OPERATOR)
    missing = f"no camera {cid}"
    app = request.app
    cam = await app[keys.STORE].get(cid)
    if cam is not None:
        node = cam.node
    else:
        raw = await app[keys.REDIS].hget(TierKeys().rcat, cid)
        try:
            node = str(json.loads(raw)["node"]) if raw is not None else None
        except (ValueError, KeyError, TypeError):
            node = None
        if node is None:
            raise ApiError(404, missing)
    require_node(request, node, Role.OPERATOR, missing=missing)
    return cid, node


# ---- the one path: open where the camera is, write the stream as the answer --------------------------------
async def _open(request: web.Request, req: StreamRequest) -> Stream:
    """The stream asked for, from this gateway, a peer of this tier or the tier below (the relay decides)."""
    try:
        return await request.app[keys.RELAY].open(req)
    except StreamError as e:
        extra = {"retry_after": 2} if e.status in (503, 504) else {}
        raise ApiError(e.status, e.message, **extra) from None
    except (RedisError, OSError) as e:
        raise ApiError(503, f"this tier's Redis is unavailable ({type(e).__name__})", retry_after=2) from None


def _headers(head: StreamHead, attachment: bool = False) -> dict[str, str]:
    out = {"Content-Type": head.content_type or "application/octet-stream", "Cache-Control": "no-store",
           **dict(head.headers)}
    if attachment and "Content-Disposition" in out:
        out["Content-Disposition"] = out["Content-Disposition"].replace("inline;", "attachment;", 1)
    if head.hops:
        out["X-Relay-Hops"] = str(head.hops)  # tiers and peer gateways crossed to reach this one
        out["Accept-Ranges"] = "none"  # a relayed export is streamed as the tier below sends it (no ranges)
    return out


def _download(request: web.Request) -> bool:
    """`?download=1` (or true): answer as an attachment (a browser saves it) instead of inline."""
    raw = request.query.get("download", "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ApiError(400, "download must be 1 or 0 (true or false)")


def _detail(detail: dict, head: StreamHead) -> dict:
    out = {**detail, **dict(head.detail)}
    if head.hops:
        out["hops"] = head.hops
    return out


async def _play(request: web.Request, req: StreamRequest, node: str, action: str, detail: dict,
                target: str) -> web.StreamResponse:
    """Open the stream, audit it (with its bytes), write it; a stream that breaks midway aborts the connection,
    so the client sees a short body (Content-Length), never a whole-looking one. An export of this gateway's own is
    sent by aiohttp's FileResponse instead: a byte range asked (a player's seek) is answered 206, or 416."""
    attachment = _download(request)
    stream = await _open(request, req)
    try:
        head = stream.head
        request.app[keys.AUDIT].record_request(request, action, target, node, _detail(detail, head))
        if isinstance(stream, _LocalExport):
            return _ExportFile(stream.take_lease(), chunk_size=READ_CHUNK, headers=_headers(head, attachment))
        resp = web.StreamResponse(headers=_headers(head, attachment))
        await resp.prepare(request)
        try:
            async for chunk in stream:
                await resp.write(chunk)  # waits while the client's buffer is full: back-pressure down the chain
        except StreamBroken as e:
            log.warning("%s of %s broke off: %s", req.kind, req.camera_id, e)
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write_eof()
        return resp
    finally:
        await stream.aclose()


@routes.get("/api/v1/cameras/{camera_id}/recordings")
async def list_recordings(request: web.Request) -> web.StreamResponse:
    """What is recorded of a camera between `since` and `until` (ISO; default: the last day): segments and gaps."""
    cid, node = await _camera(request)
    now = time.time()
    until = _when(request, "until", now)
    since = _when(request, "since", until - DEFAULT_LIST_S)
    return await _play(request, StreamRequest("recordings", cid, start=since, end=until), node, "recording.view",
                       {"list": True, "since": iso_ms(since), "until": iso_ms(until)}, cid)


@routes.get("/api/v1/cameras/{camera_id}/recording.mp4")
async def recording_mp4(request: web.Request) -> web.StreamResponse:
    """One MP4 (fast start) of [start, end] (ISO, at most an hour; end defaults to a minute after start), cut at
    key frames, the camera's own codec."""
    cid, node = await _camera(request)
    start = _when(request, "start")
    end = _when(request, "end", start + DEFAULT_WINDOW_S)
    try:
        _check_window(start, end)
    except StreamError as e:
        raise ApiError(e.status, e.message) from None
    return await _play(request, StreamRequest("recording", cid, start=start, end=end), node, "recording.view",
                       {"start": iso_ms(start), "end": iso_ms(end)}, cid)


def _check_window(start: float, end: float) -> None:
    """422 for a window reversed or over an hour (checked where it is asked and again where it is served)."""
    if end <= start:
        raise StreamError(422, "end must be after start")
    if end - start > MAX_WINDOW_S:
        raise StreamError(422, f"a window is at most {MAX_WINDOW_S:.0f} s (one hour); asked {end - start:.0f} s")


@routes.get("/api/v1/events/{event_id}/clip.mp4")
async def event_clip(request: web.Request) -> web.StreamResponse:
    """The recording around an event: its camera's pre_s before it to post_s after it (the tier's defaults for a
    camera no longer registered), from the tier that owns the camera."""
    _, se = await _stored(request)
    ev = se.event
    return await _play(request, StreamRequest("clip", ev.camera_id, event_id=ev.id), ev.node, "clip.view",
                       {"event": ev.id, "type": ev.type, "camera_id": ev.camera_id}, ev.id or ev.camera_id)


@routes.get("/api/v1/cameras/{camera_id}/live.mp4")
async def live_mp4(request: web.Request) -> web.StreamResponse:
    """Live view at the camera's own quality: its packets remuxed (never re-encoded) into fragmented MP4, playable
    by a <video>; one connection to the camera however many viewers of this gateway (a camera of another gateway
    or tier: one relayed stream, gateway/live_share.py). Limits shared with live.mjpeg."""
    cid, node = await _camera(request)
    app = request.app
    live = app[keys.LIVE]
    audit = app[keys.AUDIT]
    token_id, address = request[keys.PRINCIPAL].token_id, audit.client_address(request)
    refuse_past_limits(live, cid, token_id, address)
    stream = await _open(request, StreamRequest("live", cid))
    live.acquire(token_id, address)
    opened_at: float | None = None
    slow = False
    resp = web.StreamResponse(headers={**_headers(stream.head), "X-Accel-Buffering": "no"})
    try:
        _bound_send_buffer(request, live.send_buffer_bytes)
        await resp.prepare(request)
        audit.record_request(request, "live.view", cid, node, _detail({"format": "mp4"}, stream.head))
        opened_at = time.monotonic()

        async def send() -> None:
            async for chunk in stream:
                if live.closing.is_set():
                    break
                await _send(resp, live, chunk)

        await _until_revoked(request, send())
    except SlowReader:
        slow = True
        live.dropped_slow += 1
        if request.transport is not None:
            request.transport.abort()
    except (ConnectionError, asyncio.TimeoutError, StreamBroken):
        pass
    except Exception:  # headers are sent: a failure can only end the stream
        log.exception("live.mp4 of %s failed", cid)
    finally:
        await stream.aclose()  # a relayed stream is cancelled down the chain: the owner unsubscribes
        live.release(token_id, address)
        if opened_at is not None:
            detail: dict = {"seconds": round(time.monotonic() - opened_at, 1), "format": "mp4"}
            if slow:
                detail["dropped"] = "slow reader"
            audit.record_request(request, "live.end", cid, node, detail)
    if not slow:
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await asyncio.wait_for(resp.write_eof(), 2.0)
    return resp


# ---- a camera run here: the streams this gateway serves (to its own clients and to others) ---------------------
class _LocalStream:
    """A stream of this gateway's own: a head and its body's chunks; `close` releases what it holds."""

    __slots__ = ("head", "_chunks", "_close")

    def __init__(self, head: StreamHead, chunks: AsyncIterator[bytes],
                 close: Callable[[], Awaitable[None]] | None = None) -> None:
        self.head, self._chunks, self._close = head, chunks, close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            await close()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def local_opener(app: web.Application) -> Callable[[StreamRequest], Awaitable[Stream]]:
    """The relay's OpenLocal for this gateway: a stream of a camera it runs (or recorded)."""
    async def open_local(req: StreamRequest) -> Stream:
        if req.kind == "recordings":
            return await _local_listing(app, req)
        if req.kind == "recording":
            return await _local_window(app, req)
        if req.kind == "clip":
            return await _local_clip(app, req)
        return await _local_live(app, req)
    return open_local


async def _local_listing(app: web.Application, req: StreamRequest) -> Stream:
    if await app[keys.STORE].get(req.camera_id) is None:
        raise StreamError(404, f"no camera {req.camera_id}")
    until = req.end if req.end is not None else time.time()
    since = req.start if req.start is not None else until - DEFAULT_LIST_S
    try:
        timeline = await asyncio.to_thread(app[keys.RECORDINGS].store.timeline, req.camera_id, since, until)
    except WindowError as e:
        raise StreamError(422, f"{e} (a listing covers at most {MAX_LIST_WINDOW_S / 86400:.0f} days)") from None
    body = json.dumps({"camera_id": req.camera_id, "since": iso_ms(since), "until": iso_ms(until),
                       **timeline.to_dict()}).encode()
    return _LocalStream(StreamHead(200, "application/json", (("Content-Length", str(len(body))),)), _once(body))


async def _local_window(app: web.Application, req: StreamRequest) -> Stream:
    assert req.start is not None and req.end is not None  # StreamRequest.parse and the handler see to it
    start, end = req.start, req.end
    _check_window(start, end)
    recs = app[keys.RECORDINGS]
    return await _export(app, ExportKey("recording", req.camera_id, start, end),
                         lambda out: export_window(recs.store, req.camera_id, start, end, out))


async def _local_clip(app: web.Application, req: StreamRequest) -> Stream:
    missing = StreamError(404, "no such event (or it is past retention)")
    events = app[keys.EVENTS]
    try:
        entry = await events.resolve(req.event_id or "")
    except EventIdError:
        raise missing from None
    se = await events.get(entry) if entry is not None else None
    if se is None or se.event.id != req.event_id or se.event.camera_id != req.camera_id:
        raise missing
    ev = se.event
    recs = app[keys.RECORDINGS]
    cam = await app[keys.STORE].get(ev.camera_id)
    # A camera deleted since: the tier's defaults.
    settings: RecordingSettings = recs.settings_for(cam.recording if cam is not None else RecordingChoice())
    at = _when_event(ev.ts)
    pre, post = settings.pre_s, settings.post_s
    key = ExportKey("clip", ev.camera_id, at - pre, at + post, ev.id, pre, post)
    return await _export(app, key, lambda out: export_clip(recs.store, ev.camera_id, at, pre, post, out),
                         (("pre_s", pre), ("post_s", post)))


def _when_event(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def _export(app: web.Application, key: ExportKey, make: Callable[[Path], Export],
                  detail: tuple = ()) -> Stream:
    """The export of `key`: kept from an earlier request, being written for another (waits for it), or written now
    in a thread (at most MAX_WRITING at once: gateway/exports.py); the stream reads the file."""
    recs = app[keys.RECORDINGS]
    store = recs.store

    def write(path: Path) -> tuple[Export, bool]:
        # What is recorded of the camera so far, before the export reads it: a window ending later is still being
        # recorded (or not yet): served, not kept, so that a later request sees the newer footage.
        recorded = store.index.last_end(key.camera_id) if store.index is not None else None
        result = make(path)
        _stamp(path, result.end)
        return result, recorded is not None and key.end <= recorded

    async def written(path: Path) -> Written:
        try:
            result, keep = await asyncio.to_thread(write, path)
        except NoRecording as e:
            raise StreamError(404, str(e)) from None
        except WindowError as e:
            raise StreamError(422, str(e)) from None
        except RecordingError as e:  # the export could not be written (the disk): nothing was sent yet
            raise StreamError(503, str(e)) from None
        size = (await asyncio.to_thread(path.stat)).st_size
        head = StreamHead(200, MP4, (
            ("Content-Length", str(size)),
            ("X-Recording-Start", iso_ms(result.start)), ("X-Recording-End", iso_ms(result.end)),
            ("Content-Disposition",
             f'inline; filename="{key.camera_id}-{iso_ms(result.start).replace(":", "")}.mp4"'),
        ), (("bytes", result.bytes), ("seconds", round(result.duration, 2))))
        return Written(path, size, head, result.start, keep)

    try:
        lease = await recs.exports.open(key, written)
    except ExportsBusy as e:
        raise StreamError(503, str(e)) from None
    head = lease.written.head
    if detail:
        head = StreamHead(head.status, head.content_type, head.headers, (*head.detail, *detail))
    return _LocalExport(head, lease)


class _LocalExport:
    """An export of this gateway's (gateway/exports.py keeps it a while): sent to its own client as a file (ranges:
    _ExportFile), or read in chunks when it serves another tier or gateway. Holds a lease on the file: the cache
    deletes no file a reader holds."""

    __slots__ = ("head", "_lease", "_file")

    def __init__(self, head: StreamHead, lease: Lease) -> None:
        self.head, self._lease = head, lease
        self._file = None

    def take_lease(self) -> Lease:
        """Hand the file's lease to whoever sends it (it releases it then); closing this no longer does."""
        lease, self._lease = self._lease, None
        assert lease is not None
        return lease

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._lease is not None
        self._file = f = await asyncio.to_thread(open, self._lease.written.path, "rb")
        while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
            yield chunk

    async def aclose(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            await asyncio.to_thread(f.close)
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


class _ExportFile(web.FileResponse):
    """An export sent by aiohttp's FileResponse (one Range: 206, past the end: 416, If-Range). Its lease is held
    until the file is sent or sending failed, or, for an answer never prepared (the client left between the handler
    and the send), until it is garbage: the file cannot go between the handler returning and the send opening it."""

    def __init__(self, lease: Lease, **kw) -> None:
        super().__init__(lease.written.path, **kw)
        self.lease = lease
        weakref.finalize(self, lease.release)

    async def prepare(self, request: web.BaseRequest):
        try:
            return await super().prepare(request)
        finally:
            self.lease.release()


def _stamp(path: Path, end: float) -> None:
    """Give an export the recording's end as its modification time: its ETag (mtime and size) is then the same
    for every export of the same window, so a player's later Range request with If-Range still gets a 206."""
    ns = int(end * 1e9)
    os.utime(path, ns=(ns, ns))


async def _local_live(app: web.Application, req: StreamRequest) -> Stream:
    worker = app[keys.SUPERVISOR].workers.get(req.camera_id)
    if worker is None or worker.live_mux is None:
        raise StreamError(503, "this camera is not running on this gateway (disabled, starting, or run by another "
                               "gateway of the tier)")
    mux = worker.live_mux
    viewer = mux.subscribe()
    worker.sync_sinks()  # the camera's connection starts feeding the muxer now
    try:
        # Waited for before the head, so that the head can name the stream's codec and its clock (_live_headers).
        init = await asyncio.wait_for(anext(viewer), LIVE_START_TIMEOUT_S)
    except (asyncio.TimeoutError, StopAsyncIteration):
        viewer.close()
        raise StreamError(503, f"the camera sent no key frame within {LIVE_START_TIMEOUT_S:g} s") from None
    except BaseException:
        viewer.close()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        yield init
        async for chunk in viewer:
            yield chunk

    async def close() -> None:
        viewer.close()  # the muxer forgets this viewer

    return _LocalStream(StreamHead(200, MP4, _live_headers(mux)), chunks(), close)


def _live_headers(mux: LiveMuxer) -> tuple[tuple[str, str], ...]:
    """live.mp4's head: the RFC 6381 codec string (the page asks the browser whether it plays it) and the offset
    from the stream's media time to the wall-clock time its frames were captured (by the camera's sender reports)
    or reached the gateway that runs the camera, with which of the two (the page's latency)."""
    out = []
    if mux.codecs:
        out.append(("X-Codecs", mux.codecs))
    if mux.wall_offset is not None:
        out.append(("X-Live-Wall-Offset", f"{mux.wall_offset:.3f}"))
        out.append(("X-Live-Clock", mux.clock))  # "capture" (the camera's sender reports) or "receipt"
    return tuple(out)


async def _end_live_views(app: web.Application) -> None:
    # Shutdown waits for handlers: a live.mp4 view of a camera sending nothing would hold it for its whole timeout.
    if keys.RECORDINGS in app:
        for mux in list(app[keys.RECORDINGS].live.values()):
            mux.close()
    relay = app.get(keys.RELAY)
    if relay is not None and relay.live_share is not None:
        await relay.live_share.aclose()  # views of cameras of other gateways or tiers (one relayed stream each)


def setup(app: web.Application) -> None:
    """Routes, and ending live.mp4 views at shutdown."""
    app.on_shutdown.append(_end_live_views)
    app.router.add_routes(routes)
