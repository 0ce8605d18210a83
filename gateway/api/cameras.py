"""Camera catalog over HTTP: create, list, read, change, delete, bulk import."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateway import keys
from gateway.api.errors import ApiError, read_json
from registry.bulk import BulkError, parse_bulk_csv, parse_bulk_json
from registry.ids import CameraIdError, validate_camera_id
from registry.models import Camera, CameraCreate, CameraPatch, validate_sources
from registry.store import CameraExists, StoreConflict
from registry.urls import SourceError
from tiers.nodes import NodeCodeError, normalize_node

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

_STATES = {"connecting", "online", "offline", "disabled"}


def _view(app: web.Application, cam: Camera) -> dict[str, Any]:
    out = cam.public_dict()
    out["status"] = asdict(app[keys.SUPERVISOR].status(cam))
    return out


def _camera_id(request: web.Request) -> str:
    try:
        return validate_camera_id(request.match_info["camera_id"])
    except CameraIdError as e:
        raise ApiError(400, f"bad camera id: {e}") from None


async def _load(request: web.Request) -> Camera:
    cid = _camera_id(request)
    cam = await request.app[keys.STORE].get(cid)
    if cam is None:
        raise ApiError(404, f"no camera {cid}")
    return cam


async def _create(app: web.Application, body: Any) -> Camera:
    """Validate and store one camera; raise ApiError or ValidationError with the reason."""
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object describing one camera")
    data = CameraCreate.model_validate(body)
    settings = app[keys.SETTINGS]
    try:
        validate_sources(data, settings.media_dirs)
    except SourceError as e:
        raise ApiError(422, str(e)) from None
    try:
        cam = await app[keys.STORE].add(data)
    except CameraExists:
        raise ApiError(409, f"camera {data.id} already exists") from None
    except CameraIdError as e:
        raise ApiError(409, str(e)) from None
    log.info("camera %s created (node %s)", cam.id, cam.node)
    await app[keys.SUPERVISOR].apply(cam)
    return cam


@routes.post("/api/v1/cameras")
async def create_camera(request: web.Request) -> web.Response:
    """Register one camera."""
    cam = await _create(request.app, await read_json(request))
    return web.json_response(_view(request.app, cam), status=201)


@routes.get("/api/v1/cameras")
async def list_cameras(request: web.Request) -> web.Response:
    """List cameras, filtered by node subtree and state, paginated by cursor."""
    q = request.query
    node = None
    if q.get("node"):
        try:
            node = normalize_node(q["node"])
        except NodeCodeError as e:
            raise ApiError(400, f"node: {e}") from None
    state = q.get("state")
    if state is not None and state not in _STATES:
        raise ApiError(400, f"state must be one of {sorted(_STATES)}")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit must be between 1 and 1000")
    cursor = q.get("cursor") or None
    store = request.app[keys.STORE]
    items: list[dict] = []
    while True:
        try:
            # Never fetch past what this page can hold: the cursor must point at the last camera read.
            cams, cursor = await store.list(node=node, page_size=limit - len(items), cursor=cursor)
        except ValueError as e:  # a cursor that is not ours
            raise ApiError(400, f"cursor: {e}") from None
        for cam in cams:
            view = _view(request.app, cam)
            if state is None or view["status"]["state"] == state:
                items.append(view)
        if len(items) >= limit or not cursor:
            break
    return web.json_response({"cameras": items[:limit], "next_cursor": cursor,
                              "total": await store.count(node) if state is None else None})


@routes.get("/api/v1/cameras/{camera_id}")
async def get_camera(request: web.Request) -> web.Response:
    """One camera with its status."""
    return web.json_response(_view(request.app, await _load(request)))


@routes.patch("/api/v1/cameras/{camera_id}")
async def patch_camera(request: web.Request) -> web.Response:
    """Change a camera; the running stream follows at once."""
    cid = _camera_id(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object with the fields to change")
    patch = CameraPatch.model_validate(body)
    media_dirs = request.app[keys.SETTINGS].media_dirs

    def change(cam: Camera) -> Camera:
        new = patch.apply(cam)
        validate_sources(new, media_dirs)
        return new

    try:
        # Read-modify-write in one optimistic transaction: concurrent PATCHes never lose a change.
        new = await request.app[keys.STORE].modify(cid, change)
    except SourceError as e:
        raise ApiError(422, str(e)) from None
    except StoreConflict:
        raise ApiError(409, "camera is being changed by someone else; retry") from None
    if new is None:
        raise ApiError(404, f"no camera {cid}")
    log.info("camera %s changed (%s)", new.id, ", ".join(sorted(body)))
    await request.app[keys.SUPERVISOR].apply(new)
    return web.json_response(_view(request.app, new))


@routes.delete("/api/v1/cameras/{camera_id}")
async def delete_camera(request: web.Request) -> web.Response:
    """Retire a camera and stop its stream."""
    cid = _camera_id(request)
    if not await request.app[keys.STORE].delete(cid):
        raise ApiError(404, f"no camera {cid}")
    await request.app[keys.SUPERVISOR].remove(cid)
    log.info("camera %s deleted", cid)
    return web.json_response({"deleted": cid})


@routes.post("/api/v1/cameras/bulk")
async def bulk_import(request: web.Request) -> web.Response:
    """Import many cameras (JSON array or CSV); one result per row, rows independent."""
    ctype = request.content_type
    try:
        if ctype in ("text/csv", "application/csv"):
            raw = await request.read()
            if len(raw) > 8 << 20:
                raise ApiError(413, "CSV body larger than 8 MiB")
            try:
                rows = parse_bulk_csv(raw.decode("utf-8-sig"))
            except UnicodeDecodeError:
                raise ApiError(400, "CSV body is not UTF-8") from None
        else:
            rows = parse_bulk_json(await read_json(request, max_bytes=8 << 20))
    except BulkError as e:
        raise ApiError(400, str(e)) from None
    results = []
    created = 0
    for n, row in enumerate(rows, start=1):
        try:
            cam = await _create(request.app, row)
        except ApiError as e:
            results.append({"row": n, "ok": False, "status": e.status, "error": e.message})
        except ValidationError as e:
            results.append({"row": n, "ok": False, "status": 422, "error": _first_error(e)})
        else:
            created += 1
            results.append({"row": n, "ok": True, "status": 201, "id": cam.id})
    return web.json_response({"rows": len(rows), "created": created, "failed": len(rows) - created,
                              "results": results})


def _first_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(row)"
        parts.append(f"{path}: {'unknown field' if err['type'] == 'extra_forbidden' else err['msg']}")
    return "; ".join(parts)
