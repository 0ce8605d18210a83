"""Recordings over HTTP (issue 11): a camera's timeline, a window as one MP4, an event's clip, live fMP4.

Operator, jurisdiction-scoped like a camera's picture (a camera outside the caller's jurisdiction is a 404,
audited as a refusal). Every answer is audited: the listing and a window as `recording.view`, a clip as
`clip.view`, a live view like live.mjpeg's (`live.view`, then `live.end` with how long it was watched).

Recordings are served by the gateway that recorded them, from its own disk (gateway/recordings.py); cameras of
tiers below are not relayed (yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

from analytics.events import iso_ms
from gateway import keys
from gateway.api.auth import require, require_node
from gateway.api.errors import ApiError
from gateway.api.events import _stored
from gateway.api.live import SlowReader, _bound_send_buffer, _send, _until_revoked, refuse_past_limits
from gateway.private import private_dir
from gateway.recording import (
    MAX_WINDOW_S, LiveMuxer, LiveViewer, NoRecording, RecordingError, RecordingSettings, WindowError, export_clip, export_window,
)
from gateway.recording.records import MAX_LIST_WINDOW_S
from gateway.recordings import EXPORT_DIR
from registry.ids import CameraIdError, validate_camera_id
from registry.models import Camera, RecordingChoice
from tiers.access import Role

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

DEFAULT_LIST_S = 86400.0  # a listing without `since` covers the last day
DEFAULT_WINDOW_S = 60.0  # recording.mp4 without `end`: this long from `start`
MAX_EXPORTS = 2  # exports (window or clip) written at once; more: 503, try again (each reads and writes a disk)
READ_CHUNK = 256 * 1024  # an export is sent in chunks of this many bytes (each write waits for the client)
MP4 = "video/mp4"
LIVE_START_TIMEOUT_S = 8.0  # live.mp4 waits this long for a key frame; the muxer it started lingers (LINGER_S), so
# a retry of a camera with a longer GOP gets the key frame cached meanwhile
_EXPORTS = web.AppKey("recording_exports", asyncio.Semaphore)


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


async def _camera(request: web.Request) -> Camera:
    """The path's camera of this tier, for an operator over its node; 404 when absent or elsewhere (same answer)."""
    try:
        cid = validate_camera_id(request.match_info["camera_id"])
    except CameraIdError as e:
        raise ApiError(400, f"bad camera id: {e}") from None
    require(request, Role.OPERATOR)
    missing = f"no camera {cid}"
    cam = await request.app[keys.STORE].get(cid)
    if cam is None:
        raise ApiError(404, missing)
    require_node(request, cam.node, Role.OPERATOR, missing=missing)
    return cam


def _window_error(e: WindowError) -> ApiError:
    return ApiError(422, str(e))


@routes.get("/api/v1/cameras/{camera_id}/recordings")
async def list_recordings(request: web.Request) -> web.Response:
    """What is recorded of a camera between `since` and `until` (ISO; default: the last day): segments and gaps."""
    cam = await _camera(request)
    now = time.time()
    until = _when(request, "until", now)
    since = _when(request, "since", until - DEFAULT_LIST_S)
    recs = request.app[keys.RECORDINGS]
    try:
        timeline = await asyncio.to_thread(recs.store.timeline, cam.id, since, until)
    except WindowError as e:
        raise ApiError(422, f"{e} (a listing covers at most {MAX_LIST_WINDOW_S / 86400:.0f} days)") from None
    request.app[keys.AUDIT].record_request(request, "recording.view", cam.id, cam.node,
                                           {"list": True, "since": iso_ms(since), "until": iso_ms(until)})
    return web.json_response({"camera_id": cam.id, "since": iso_ms(since), "until": iso_ms(until),
                              **timeline.to_dict()})


@routes.get("/api/v1/cameras/{camera_id}/recording.mp4")
async def recording_mp4(request: web.Request) -> web.StreamResponse:
    """One MP4 (fast start) of [start, end] (ISO, at most an hour; end defaults to a minute after start), cut at
    key frames, the camera's own codec."""
    cam = await _camera(request)
    start = _when(request, "start")
    end = _when(request, "end", start + DEFAULT_WINDOW_S)
    if end <= start:
        raise ApiError(422, "end must be after start")
    if end - start > MAX_WINDOW_S:
        raise ApiError(422, f"a window is at most {MAX_WINDOW_S:.0f} s (one hour); asked {end - start:.0f} s")
    recs = request.app[keys.RECORDINGS]
    return await _export(request, cam, "recording.view", {"start": iso_ms(start), "end": iso_ms(end)},
                         lambda out: export_window(recs.store, cam.id, start, end, out))


@routes.get("/api/v1/events/{event_id}/clip.mp4")
async def event_clip(request: web.Request) -> web.StreamResponse:
    """The recording around an event: its camera's pre_s before it to post_s after it (the tier's defaults for a
    camera no longer registered)."""
    _, se = await _stored(request)
    ev = se.event
    at = _when_event(ev.ts)
    recs = request.app[keys.RECORDINGS]
    cam = await request.app[keys.STORE].get(ev.camera_id)
    # A camera deleted since: the tier's defaults.
    settings: RecordingSettings = recs.settings_for(cam.recording if cam is not None else RecordingChoice())
    detail = {"event": ev.id, "type": ev.type, "camera_id": ev.camera_id, "pre_s": settings.pre_s,
              "post_s": settings.post_s}
    fake = _EventCamera(ev.camera_id, ev.node)
    return await _export(request, fake, "clip.view", detail,
                         lambda out: export_clip(recs.store, ev.camera_id, at, settings.pre_s, settings.post_s, out),
                         target=ev.id or ev.camera_id)


class _EventCamera:
    """The camera an event names (it may be gone from the catalog since)."""

    __slots__ = ("id", "node")

    def __init__(self, camera_id: str, node: str) -> None:
        self.id, self.node = camera_id, node


def _when_event(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def _export(request: web.Request, cam, action: str, detail: dict, make, *, target: str | None = None
                  ) -> web.StreamResponse:
    """Write an export in a thread (bounded: MAX_EXPORTS at once), then send it, or the byte range asked (aiohttp's
    FileResponse: 206 with one range, 416 for a range past its end); audited once it is found. The file is
    removed once sent."""
    app = request.app
    recs = app[keys.RECORDINGS]
    sem = app[_EXPORTS]
    attachment = _download(request)
    if sem.locked():
        raise ApiError(503, f"{MAX_EXPORTS} exports are being written; try again shortly", retry_after=5)
    async with sem:  # held while the export is written, not while a client downloads it
        folder = recs.root / EXPORT_DIR
        await asyncio.to_thread(private_dir, folder)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, ".mp4", None, folder)
        os.close(fd)
        path = Path(name)
        try:
            result = await asyncio.to_thread(make, path)
            await asyncio.to_thread(_stamp, path, result.end)
        except BaseException as e:
            await asyncio.to_thread(path.unlink, True)
            if isinstance(e, NoRecording):
                raise ApiError(404, str(e)) from None
            if isinstance(e, WindowError):
                raise _window_error(e) from None
            if isinstance(e, RecordingError):  # the export could not be written (the disk): nothing was sent yet
                raise ApiError(503, str(e), retry_after=5) from None
            raise
    app[keys.AUDIT].record_request(request, action, target or cam.id, cam.node,
                                   {**detail, "bytes": result.bytes, "seconds": round(result.duration, 2)})
    filename = f"{cam.id}-{iso_ms(result.start).replace(':', '')}.mp4"
    return _ExportFile(path, chunk_size=READ_CHUNK, headers={
        "Content-Type": MP4, "Cache-Control": "no-store",
        "X-Recording-Start": iso_ms(result.start), "X-Recording-End": iso_ms(result.end),
        "Content-Disposition": f'{"attachment" if attachment else "inline"}; filename="{filename}"',
    })


class _ExportFile(web.FileResponse):
    """An export sent by aiohttp's FileResponse (one Range: 206, past the end: 416, If-Range), removed once sent
    or once sending failed (a removal missed by a crash is swept at the next start: gateway/recordings.py)."""

    def __init__(self, path: Path, **kw) -> None:
        super().__init__(path, **kw)
        self.export_path = path

    async def prepare(self, request: web.BaseRequest):
        try:
            return await super().prepare(request)
        finally:
            await asyncio.to_thread(self.export_path.unlink, True)


def _stamp(path: Path, end: float) -> None:
    """Give an export the recording's end as its modification time: its ETag (mtime and size) is then the same
    for every export of the same window, so a player's later Range request with If-Range still gets a 206."""
    ns = int(end * 1e9)
    os.utime(path, ns=(ns, ns))


def _download(request: web.Request) -> bool:
    """`?download=1` (or true): answer as an attachment (a browser saves it) instead of inline."""
    raw = request.query.get("download", "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ApiError(400, "download must be 1 or 0 (true or false)")


@routes.get("/api/v1/cameras/{camera_id}/live.mp4")
async def live_mp4(request: web.Request) -> web.StreamResponse:
    """Live view at the camera's own quality: its packets remuxed (never re-encoded) into fragmented MP4, playable
    by a <video>; one connection to the camera however many viewers. Limits shared with live.mjpeg."""
    cam = await _camera(request)
    app = request.app
    worker = app[keys.SUPERVISOR].workers.get(cam.id)
    if worker is None or worker.live_mux is None:
        raise ApiError(503, "this camera is not running on this gateway (disabled, starting, or run by another "
                            "gateway of the tier)", retry_after=2)
    live = app[keys.LIVE]
    audit = app[keys.AUDIT]
    token_id, address = request[keys.PRINCIPAL].token_id, audit.client_address(request)
    refuse_past_limits(live, cam.id, token_id, address)
    live.acquire(token_id, address)
    viewer = None
    resp: web.StreamResponse | None = None
    opened_at: float | None = None
    slow = False
    mux = worker.live_mux
    try:
        viewer = mux.subscribe()
        worker.sync_sinks()  # the camera's connection starts feeding the muxer now
        init = await _first_chunk(viewer)
        resp = web.StreamResponse(headers=_live_headers(mux))
        _bound_send_buffer(request, live.send_buffer_bytes)
        await resp.prepare(request)
        audit.record_request(request, "live.view", cam.id, cam.node, {"format": "mp4"})
        opened_at = time.monotonic()

        async def stream() -> None:
            await _send(resp, live, init)
            async for chunk in viewer:
                if live.closing.is_set():
                    break
                await _send(resp, live, chunk)

        await _until_revoked(request, stream())
    except ApiError:
        raise  # before the head (no key frame came): an error answer
    except SlowReader:
        slow = True
        live.dropped_slow += 1
        if request.transport is not None:
            request.transport.abort()
    except (ConnectionError, asyncio.TimeoutError):
        pass
    except Exception:  # headers are sent: a failure can only end the stream
        log.exception("live.mp4 of %s failed", cam.id)
    finally:
        if viewer is not None:
            viewer.close()
        live.release(token_id, address)
        if opened_at is not None:
            detail: dict = {"seconds": round(time.monotonic() - opened_at, 1), "format": "mp4"}
            if slow:
                detail["dropped"] = "slow reader"
            audit.record_request(request, "live.end", cam.id, cam.node, detail)
    if resp is None:  # the client left before the stream began
        raise web.HTTPNoContent()
    if not slow:
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await asyncio.wait_for(resp.write_eof(), 2.0)
    return resp


async def _first_chunk(viewer: LiveViewer) -> bytes:
    """The viewer's init segment (its stream's first key frame came); 503 when the camera sends none in time.

    Waited for before the answer's head, so the head can name the stream's codec and its clock (_live_headers)."""
    try:
        return await asyncio.wait_for(anext(viewer), LIVE_START_TIMEOUT_S)
    except (asyncio.TimeoutError, StopAsyncIteration):
        raise ApiError(503, f"the camera sent no key frame within {LIVE_START_TIMEOUT_S:g} s", retry_after=2) from None


def _live_headers(mux: LiveMuxer) -> dict[str, str]:
    """live.mp4's head: the RFC 6381 codec string (the page asks the browser whether it plays it) and the offset
    from the stream's media time to the wall-clock time its frames reached this gateway (the page's latency)."""
    headers = {"Content-Type": MP4, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if mux.codecs:
        headers["X-Codecs"] = mux.codecs
    if mux.wall_offset is not None:
        headers["X-Live-Wall-Offset"] = f"{mux.wall_offset:.3f}"
    return headers



async def _end_live_views(app: web.Application) -> None:
    # Shutdown waits for handlers: a live.mp4 view of a camera sending nothing would hold it for its whole timeout.
    if keys.RECORDINGS in app:
        for mux in list(app[keys.RECORDINGS].live.values()):
            mux.close()


def setup(app: web.Application) -> None:
    """Routes, the bound on exports written at once, and ending live.mp4 views at shutdown."""
    app[_EXPORTS] = asyncio.Semaphore(MAX_EXPORTS)
    app.on_shutdown.append(_end_live_views)
    app.router.add_routes(routes)
