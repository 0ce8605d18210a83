"""A camera's picture over HTTP: its newest frame as JPEG, and a live MJPEG view with detections drawn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from analytics.events import iso_ms
from analytics.snapshot import MAX_WIDTH, MIN_WIDTH
from gateway import keys
from gateway.api.auth import require_node, until_revoked
from gateway.api.errors import ApiError, query_int
from gateway.camera import CameraWorker
from gateway.web.frames import LiveFrames, fit_jpeg
from registry.ids import CameraIdError, validate_camera_id
from tiers.access import Role
from tiers.contract import TierKeys
from tiers.rpc import FetchError, Picture, UnknownCamera

log = logging.getLogger(__name__)


async def fetch_picture(app: web.Application, camera_id: str, timeout: float = 5.0, *, width: int = MAX_WIDTH,
                        boxes: bool = False) -> Picture:
    """A camera's newest frame, own or from the tier below that runs it, at most `width` wide.

    Raises UnknownCamera (404), NoFrame (503), TierTimeout (504) or FetchError (502): aiohttp HTTP
    errors, so a handler may let them through as the answer. Works without any bridge for own cameras.
    """
    return await app[keys.FETCHER].fetch(camera_id, timeout, width=width, boxes=boxes)


async def fetch_latest_jpeg(app: web.Application, camera_id: str, timeout: float = 5.0) -> bytes:
    """JPEG of a camera's newest frame (at most 1280 wide, no boxes); see fetch_picture."""
    return (await fetch_picture(app, camera_id, timeout)).jpeg


routes = web.RouteTableDef()

BOUNDARY = "frame"
MAX_FPS = 10.0
DEFAULT_FPS = 5.0
MIN_FPS = 0.2
SNAPSHOT_WIDTH = 640  # thumbnails
LIVE_WIDTH = 960  # live views
REMOTE_TIMEOUT_S = 5.0


def _fps(request: web.Request) -> float:
    raw = request.query.get("fps")
    if raw is None or raw == "":
        return DEFAULT_FPS
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "fps must be a number") from None
    if not MIN_FPS <= value <= MAX_FPS:  # also refuses nan and inf
        raise ApiError(400, f"fps must be between {MIN_FPS:g} and {MAX_FPS:g}")
    return value


async def _camera(request: web.Request) -> tuple[str, str, bool]:
    """(camera id, its node, whether this tier runs it); 404 when unknown or outside the caller's tree."""
    try:
        cid = validate_camera_id(request.match_info["camera_id"])
    except CameraIdError as e:
        raise ApiError(400, f"bad camera id: {e}") from None
    app = request.app
    cam = await app[keys.STORE].get(cid)
    if cam is not None:
        node, local = cam.node, True
    else:
        # A camera owned by a tier below, known from the catalog its bridge forwarded.
        raw = await app[keys.REDIS].hget(TierKeys().rcat, cid)
        if raw is None:
            raise ApiError(404, f"no camera {cid}")
        try:
            node, local = str(json.loads(raw)["node"]), False
        except (ValueError, KeyError, TypeError):
            raise ApiError(404, f"no camera {cid}") from None
    require_node(request, node, Role.OPERATOR)
    return cid, node, local


@routes.get("/api/v1/cameras/{camera_id}/snapshot.jpg")
async def snapshot(request: web.Request) -> web.Response:
    """The camera's newest frame as a JPEG thumbnail (`?width=` 64..1280, default 640)."""
    width = query_int(request, "width", SNAPSHOT_WIDTH, MIN_WIDTH, MAX_WIDTH)
    cid, node, local = await _camera(request)
    app = request.app
    worker = app[keys.SUPERVISOR].workers.get(cid)
    if worker is not None:
        frame = worker.latest
        if frame is None:
            raise ApiError(503, "no frame from this camera yet", state=worker.state.value, retry_after=2)
        jpeg = await app[keys.LIVE].jpeg(cid, frame, (), width=width, boxes=False)
        taken = frame.captured_at
    elif local and not _on_peer(app, cid):
        raise ApiError(503, "this camera is not running (disabled, or starting)", retry_after=2)
    else:
        # A camera of a tier below, or one another gateway of this tier runs: rendered at this width where it
        # runs, brought up the chain of bridges or from that gateway.
        try:
            pic = await fetch_picture(app, cid, REMOTE_TIMEOUT_S, width=width)
        except FetchError as e:
            raise ApiError(e.status, e.reason) from None
        jpeg = await _at_width(pic, width)
        taken = pic.captured_at
    app[keys.AUDIT].record_view(request, "camera.snapshot", cid, node, cid, {"width": width})
    headers = {"Cache-Control": "no-store"}
    if taken is not None:
        headers["X-Captured-At"] = iso_ms(taken)
    return web.Response(body=jpeg, content_type="image/jpeg", headers=headers)


def _on_peer(app: web.Application, camera_id: str) -> bool:
    """Whether another gateway of this tier runs the camera (its frames are asked of that gateway)."""
    holder = app[keys.PLACEMENT].holder(camera_id)
    return holder is not None and holder != app[keys.SETTINGS].gateway_id


async def _at_width(pic: Picture, width: int) -> bytes:
    # Only a tier from before widths were asked sends full frames; decoding every picture to check costs
    # about 1.3 ms at 960 px, per frame and viewer.
    return pic.jpeg if pic.fitted else await asyncio.to_thread(fit_jpeg, pic.jpeg, width)


def _part(jpeg: bytes, captured_at: float | None, detections: int | None) -> bytes:
    head = [f"--{BOUNDARY}", "Content-Type: image/jpeg", f"Content-Length: {len(jpeg)}"]
    if captured_at is not None:
        head.append(f"X-Captured-At: {iso_ms(captured_at)}")
    if detections is not None:
        head.append(f"X-Detections: {detections}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + jpeg + b"\r\n"


def _gone(request: web.Request, live: LiveFrames) -> bool:
    transport = request.transport
    return live.closing.is_set() or transport is None or transport.is_closing()


@routes.get("/api/v1/cameras/{camera_id}/live.mjpeg")
async def live_view(request: web.Request) -> web.StreamResponse:
    """Live view: multipart JPEG of the newest frames with detections drawn, at most `?fps=` (≤ 10) a second."""
    fps = _fps(request)
    width = query_int(request, "width", LIVE_WIDTH, MIN_WIDTH, MAX_WIDTH)
    cid, node, local = await _camera(request)
    app = request.app
    live = app[keys.LIVE]
    sup = app[keys.SUPERVISOR]
    here = local and cid in sup.workers
    if local and not here and not _on_peer(app, cid):
        raise ApiError(503, "this camera is not running (disabled, or starting)", retry_after=2)
    audit, opened_at = app[keys.AUDIT], None
    token_id, address = request[keys.PRINCIPAL].token_id, audit.client_address(request)
    refuse_past_limits(live, cid, token_id, address)
    resp = web.StreamResponse(headers={
        "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        "Cache-Control": "no-store", "X-Accel-Buffering": "no",
    })
    live.acquire(token_id, address)
    slow = False
    try:
        _bound_send_buffer(request, live.send_buffer_bytes)
        await resp.prepare(request)
        audit.record_request(request, "live.view", cid, node, {"fps": fps, "width": width})
        opened_at = time.monotonic()
        stream = (_stream_local(request, resp, live, cid, fps, width) if here
                  else _stream_remote(request, resp, live, cid, fps, width))
        await _until_revoked(request, stream)
    except SlowReader:
        # The client stopped taking frames: drop it now, unsent frames and all, so its slot is free again.
        slow = True
        live.dropped_slow += 1
        log.warning("live view of %s dropped: client %s (token %s) took no frame for %g s",
                    cid, address, token_id, live.stall_timeout_s)
        if request.transport is not None:
            request.transport.abort()
    except (ConnectionError, asyncio.TimeoutError):
        pass  # the client went away: end its stream
    except Exception:  # headers are sent: a failure can only end the stream, never become an error page
        log.exception("live view of %s failed", cid)
    finally:
        live.release(token_id, address)
        if opened_at is not None:
            # Who watched which camera, and for how long (DESIGN §6): the view's end, with its duration.
            detail = {"seconds": round(time.monotonic() - opened_at, 1)}
            if slow:
                detail["dropped"] = "slow reader"
            audit.record_request(request, "live.end", cid, node, detail)
    if slow:
        return resp
    with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
        # The closing boundary tells a reader the stream ended on purpose (camera removed, token revoked).
        await asyncio.wait_for(resp.write(f"--{BOUNDARY}--\r\n".encode()), 2.0)
        await resp.write_eof()
    return resp


def refuse_past_limits(live: LiveFrames, camera_id: str, token_id: str, address: str | None) -> None:
    """Raise 429 (counted, logged) or 503 when a new live view of the camera would pass the viewer limits."""
    refused = live.refusal(token_id, address)
    if refused is not None:
        status, reason = refused
        if status == 429:
            live.refused += 1
            log.info("live view of %s refused for token %s from %s: %s", camera_id, token_id, address, reason)
        raise ApiError(status, reason, retry_after=5)


def _bound_send_buffer(request: web.Request, size: int) -> None:
    """Cap the kernel's send buffer of this connection: without it, megabytes of frames queue (autotuned up to
    net.ipv4.tcp_wmem's maximum) before a viewer that stopped reading makes a write block."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class SlowReader(Exception):
    """The client did not take a frame within live.stall_timeout_s."""


async def _send(resp: web.StreamResponse, live: LiveFrames, part: bytes) -> None:
    """Write one part; a client that does not take it in time (the write blocks on a full buffer) is a SlowReader."""
    try:
        await asyncio.wait_for(resp.write(part), live.stall_timeout_s)
    except asyncio.TimeoutError:
        raise SlowReader from None


async def _until_revoked(request: web.Request, stream: Coroutine[Any, Any, None]) -> None:
    """Run the stream until it ends, or until the token that opened it is revoked."""
    send = asyncio.create_task(stream, name="live:send")
    watch = asyncio.create_task(until_revoked(request), name="live:revocation")
    try:
        await asyncio.wait({send, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (watch, send):
            t.cancel()
        await asyncio.wait({send, watch})
        # Taken here, also when this view is itself cancelled (its client gone, shutdown): a task's exception
        # left untaken is logged as an error when the task is collected.
        ended = {t: None if t.cancelled() else t.exception() for t in (watch, send)}
    if ended[send] is not None:
        raise ended[send]  # the stream's own end: a departed client, or a failure to log


async def _stream_local(request: web.Request, resp: web.StreamResponse, live: LiveFrames, cid: str, fps: float,
                        width: int) -> None:
    """Send this tier's camera: a frame only when a new one (or new boxes) exists, never above fps."""
    interval = 1.0 / fps
    poll = min(interval, 0.05)  # how soon a new frame, a removed camera or a departed client is noticed
    sup = request.app[keys.SUPERVISOR]
    loop = asyncio.get_running_loop()
    last = None
    next_at = loop.time()
    while not _gone(request, live):
        worker: CameraWorker | None = sup.workers.get(cid)
        if worker is None:
            break  # camera removed or disabled: the view ends
        frame = worker.latest
        if frame is not None and loop.time() >= next_at:
            dets = worker.latest_detections
            version = live.version(frame, dets, True)
            if version != last:
                jpeg = await live.jpeg(cid, frame, dets, width=width, boxes=True)
                # One frame in flight per client: a slow reader makes us skip frames (newest wins), not queue them.
                await _send(resp, live, _part(jpeg, frame.captured_at, len(dets)))
                last = version
                live.frames_sent += 1
                next_at = loop.time() + interval
                continue
        await asyncio.sleep(poll)


async def _stream_remote(request: web.Request, resp: web.StreamResponse, live: LiveFrames, cid: str,
                         fps: float, width: int) -> None:
    """Send a camera of a tier below, drawn where it runs and brought up the chain, at most fps times a second."""
    interval = 1.0 / fps
    loop = asyncio.get_running_loop()
    last: bytes | None = None
    while not _gone(request, live):
        t0 = loop.time()
        try:
            pic = await fetch_picture(request.app, cid, REMOTE_TIMEOUT_S, width=width, boxes=True)
        except UnknownCamera:
            break  # removed down there: the view ends
        except (FetchError, RedisError, OSError):
            pic = None  # no frame now, or the chain is slow: keep the last picture and ask again
        if pic is not None and pic.jpeg != last:
            last = pic.jpeg
            jpeg = await _at_width(pic, width)
            await _send(resp, live, _part(jpeg, pic.captured_at, pic.detections))
            live.frames_sent += 1
        await asyncio.sleep(max(0.0, interval - (loop.time() - t0)))


async def _close_views(app: web.Application) -> None:
    # Shutdown waits for handlers; live views would otherwise hold it for its whole timeout.
    if keys.LIVE in app:
        app[keys.LIVE].closing.set()


def setup(app: web.Application) -> None:
    """Routes, the shared frame renderer, and ending live views at shutdown."""
    limits = app[keys.SETTINGS].live
    app[keys.LIVE] = LiveFrames(limits.max_views, max_per_token=limits.max_per_token,
                                max_per_address=limits.max_per_address, stall_timeout_s=limits.stall_timeout_s,
                                send_buffer_bytes=limits.send_buffer_bytes)
    app.on_shutdown.append(_close_views)
    app.router.add_routes(routes)
