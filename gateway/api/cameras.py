"""Camera catalog over HTTP: create, list, read, change, delete, bulk import."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from redis.exceptions import RedisError

from gateway import keys
from gateway.api.auth import audit_refused_nodes, outside_jurisdiction, principal, require, require_node, scope_node
from gateway.api.errors import PAGE_DEFAULT, PAGE_MAX, AccessDenied, ApiError, query_int, read_json
from registry.bulk import BulkError, parse_bulk_csv, parse_bulk_json
from registry.ids import CameraIdError, validate_camera_id
from registry.models import Camera, CameraCreate, CameraPatch, validate_sources
from registry.store import CameraExists, CameraOwnedBelow, StoreConflict
from registry.urls import SourceError
from tiers.access import Role
from tiers.catalog import SubtreeCatalog

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

_STATES = {"connecting", "online", "offline", "disabled"}
BULK_BODY_MAX = 8 << 20  # a bulk import body (the application's own limit too)
CSV_TYPES = ("text/csv", "application/csv")  # bulk bodies read as CSV; anything else is JSON
NDJSON = "application/x-ndjson"  # Accept it to follow a bulk import's progress


def _view(app: web.Application, cam: Camera) -> dict[str, Any]:
    out = cam.public_dict()
    out["status"] = asdict(app[keys.SUPERVISOR].status(cam))
    return out


def _camera_id(request: web.Request) -> str:
    try:
        return validate_camera_id(request.match_info["camera_id"])
    except CameraIdError as e:
        raise ApiError(400, f"bad camera id: {e}") from None


async def _load(request: web.Request, role: Role = Role.VIEWER) -> Camera:
    """The camera in the path; 404 when absent or outside the caller's jurisdiction (same answer)."""
    cid = _camera_id(request)
    require(request, role)
    cam = await request.app[keys.STORE].get(cid)
    if cam is None:
        raise ApiError(404, f"no camera {cid}")
    require_node(request, cam.node, role, missing=f"no camera {cid}")
    return cam


def _subtree(app: web.Application) -> SubtreeCatalog:
    return SubtreeCatalog(app[keys.REDIS], app[keys.STORE], app[keys.SUPERVISOR], node=app[keys.SETTINGS].node)


async def _remote(request: web.Request, role: Role = Role.VIEWER) -> dict[str, Any] | None:
    """The path's camera when a tier below owns it (read-only here), else None; 404 outside the jurisdiction."""
    cid = _camera_id(request)
    if await request.app[keys.STORE].exists(cid):
        return None
    view = await _subtree(request.app).remote_get(cid)
    if view is None:
        return None
    require_node(request, view.node, role, missing=f"no camera {cid}")
    return view.api_dict()


async def _refuse_remote(request: web.Request) -> None:
    """409 for a change to a camera of a tier below: its own tier changes it (and the change flows up)."""
    view = await _remote(request, Role.ADMIN)
    if view is not None:
        raise ApiError(409, f"camera {view['id']} belongs to tier {view['owner']} (reached through {view['via']}); "
                            "change it there", owner=view["owner"])


async def _create(request: web.Request, body: Any, *, row: int | None = None) -> Camera:
    """Validate and store one camera for the caller (an admin over its node); ApiError or ValidationError else."""
    app = request.app
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object describing one camera")
    data = CameraCreate.model_validate(body)
    require_node(request, data.node, Role.ADMIN, hide=False)
    settings = app[keys.SETTINGS]
    try:
        validate_sources(data, settings.media_dirs)
    except SourceError as e:
        raise ApiError(422, str(e)) from None
    try:
        cam = await app[keys.STORE].add(data)
    except CameraOwnedBelow as e:
        # Ids are unique network-wide: a tier below already runs this one (it is in the remote catalog).
        # Which tier is named only to a caller over it (a township admin learns nothing of its sibling).
        if e.owner and principal(request).covers(e.owner):
            raise ApiError(409, f"camera {e.camera_id} already exists: a tier below owns it (tier {e.owner}, "
                                f"reached through {e.via or '?'}); choose another id", owner=e.owner) from None
        raise ApiError(409, f"camera {e.camera_id} already exists: a tier below owns it; choose another id") from None
    except CameraExists:
        raise ApiError(409, f"camera {data.id} already exists") from None
    except CameraIdError as e:
        raise ApiError(409, str(e)) from None
    log.info("camera %s created (node %s)", cam.id, cam.node)
    app[keys.AUDIT].record_request(request, "camera.create", cam.id, cam.node,
                                   {"name": cam.name, "url": cam.public_dict()["url"],
                                    **({"bulk_row": row} if row is not None else {})})
    await app[keys.SUPERVISOR].apply(cam)
    app[keys.PLACEMENT].changed()  # the gateway with the most room takes it, this one or another
    return cam


@routes.post("/api/v1/cameras")
async def create_camera(request: web.Request) -> web.Response:
    """Register one camera (admin, in its jurisdiction)."""
    require(request, Role.ADMIN)
    cam = await _create(request, await read_json(request))
    return web.json_response(_view(request.app, cam), status=201)


@routes.get("/api/v1/cameras")
async def list_cameras(request: web.Request) -> web.Response:
    """List cameras, filtered by node subtree (within the caller's jurisdiction) and state, paginated by cursor."""
    q = request.query
    node = scope_node(request, q.get("node"))
    state = q.get("state")
    if state is not None and state not in _STATES:
        raise ApiError(400, f"state must be one of {sorted(_STATES)}")
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    cursor = q.get("cursor") or None
    store = request.app[keys.STORE]
    items: list[dict] = []
    while True:
        try:
            # Never fetch past what this page can hold: the cursor must point at the last camera read.
            # This tier's own cameras and those of the tiers below, merged in one order.
            cams, cursor = await _subtree(request.app).page(node, limit - len(items), cursor)
        except ValueError as e:  # a cursor that is not ours
            raise ApiError(400, f"cursor: {e}") from None
        # Cameras another gateway of this tier runs: their status as that gateway last wrote it.
        await request.app[keys.PLACEMENT].refresh_status([c.id for c in cams if isinstance(c, Camera)])
        for cam in cams:
            view = _view(request.app, cam) if isinstance(cam, Camera) else cam.api_dict()
            if state is None or view["status"]["state"] == state:
                items.append(view)
        if len(items) >= limit or not cursor:
            break
    return web.json_response({"cameras": items[:limit], "next_cursor": cursor,
                              "total": await store.count(node) + await _subtree(request.app).remote_count(node)
                              if state is None else None})


@routes.get("/api/v1/cameras/{camera_id}")
async def get_camera(request: web.Request) -> web.Response:
    """One camera with its status."""
    remote = await _remote(request)
    if remote is not None:
        return web.json_response(remote)
    cam = await _load(request)
    await request.app[keys.PLACEMENT].refresh_status([cam.id])
    return web.json_response(_view(request.app, cam))


@routes.patch("/api/v1/cameras/{camera_id}")
async def patch_camera(request: web.Request) -> web.Response:
    """Change a camera (admin, in its jurisdiction, also after a move); the running stream follows at once."""
    cid = _camera_id(request)
    who = require(request, Role.ADMIN)
    await _refuse_remote(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object with the fields to change")
    patch = CameraPatch.model_validate(body)
    media_dirs = request.app[keys.SETTINGS].media_dirs

    moved_from: list[str] = []

    def change(cam: Camera) -> Camera:
        # Checked on the record being changed, inside the transaction: a concurrent move cannot slip by.
        if not who.covers(cam.node):
            raise AccessDenied(404, f"no camera {cid}", why="jurisdiction", node=cam.node)
        new = patch.apply(cam)
        if not who.covers(new.node):
            raise outside_jurisdiction(who, new.node)
        validate_sources(new, media_dirs)
        moved_from[:] = [cam.node] if new.node != cam.node else []
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
    request.app[keys.AUDIT].record_request(request, "camera.update", new.id, new.node,
                                           {"fields": sorted(body)[:50],
                                            **({"moved_from": moved_from[0]} if moved_from else {})})
    await request.app[keys.SUPERVISOR].apply(new)
    request.app[keys.PLACEMENT].changed()  # whichever gateway runs it applies the change at once
    return web.json_response(_view(request.app, new))


@routes.delete("/api/v1/cameras/{camera_id}")
async def delete_camera(request: web.Request) -> web.Response:
    """Retire a camera (admin, in its jurisdiction) and stop its stream."""
    require(request, Role.ADMIN)
    await _refuse_remote(request)
    cam = await _load(request, Role.ADMIN)
    cid = cam.id
    if not await request.app[keys.STORE].delete(cid):
        raise ApiError(404, f"no camera {cid}")
    await request.app[keys.SUPERVISOR].remove(cid)
    request.app[keys.PLACEMENT].changed()
    log.info("camera %s deleted", cid)
    request.app[keys.AUDIT].record_request(request, "camera.delete", cid, cam.node, {"name": cam.name})
    return web.json_response({"deleted": cid})


@routes.post("/api/v1/cameras/bulk")
async def bulk_import(request: web.Request) -> web.StreamResponse:
    """Import many cameras (JSON array or CSV); one result per row, rows independent; rows outside the
    caller's jurisdiction fail with 403."""
    who = require(request, Role.ADMIN)
    ctype = request.content_type
    try:
        if ctype in CSV_TYPES:
            raw = await request.read()
            if len(raw) > BULK_BODY_MAX:
                raise ApiError(413, f"CSV body larger than {BULK_BODY_MAX >> 20} MiB")
            try:
                rows = parse_bulk_csv(raw.decode("utf-8-sig"))
            except UnicodeDecodeError:
                raise ApiError(400, "CSV body is not UTF-8") from None
        else:
            rows = parse_bulk_json(await read_json(request, max_bytes=BULK_BODY_MAX))
    except BulkError as e:
        raise ApiError(400, str(e)) from None
    results = []
    created = 0
    # Accept: application/x-ndjson: one progress line per `step` rows (and at least each second), then the
    # result line; plain clients get the single JSON object below.
    stream = NDJSON in request.headers.get("Accept", "")
    resp: web.StreamResponse | None = None
    if stream:
        resp = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
        await resp.prepare(request)
    step = max(1, min(50, len(rows) // 100))
    last_sent = time.monotonic()
    refused: dict[str, list[int]] = {}  # node reached for outside the jurisdiction -> rows (audited below)
    for n, row in enumerate(rows, start=1):
        try:
            cam = await _create(request, row, row=n)
        except ApiError as e:
            if isinstance(e, AccessDenied) and e.node is not None:
                refused.setdefault(e.node, []).append(n)
            results.append({"row": n, "ok": False, "status": e.status, "error": e.message})
        except ValidationError as e:
            results.append({"row": n, "ok": False, "status": 422, "error": _first_error(e)})
        except (RedisError, ConnectionError):
            if resp is None:
                raise  # a 503 from the error middleware
            # Headers are sent: the failure goes in the stream, with how far the import got.
            audit_refused_nodes(request, refused, "rows")
            await _line(resp, {"error": {"status": 503, "message": "storage (Redis) unavailable; stopped at row "
                                         f"{n}, rows before it are imported", "done": n - 1, "created": created}})
            return resp
        else:
            created += 1
            results.append({"row": n, "ok": True, "status": 201, "id": cam.id})
        if resp is not None and (n % step == 0 or time.monotonic() - last_sent >= 1.0) and n < len(rows):
            last_sent = time.monotonic()
            # A client that went away stops hearing progress; the rows it sent are still imported.
            await _line(resp, {"progress": {"done": n, "total": len(rows), "created": created,
                                            "failed": n - created}})
    # Rows reaching outside the jurisdiction are refusals like single requests': for the admins over those nodes.
    audit_refused_nodes(request, refused, "rows")
    request.app[keys.AUDIT].record_request(request, "camera.bulk", f"{len(rows)} rows", who.node,
                                           {"rows": len(rows), "created": created, "failed": len(rows) - created})
    result = {"rows": len(rows), "created": created, "failed": len(rows) - created, "results": results}
    if resp is None:
        return web.json_response(result)
    await _line(resp, {"result": result})
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


async def _line(resp: web.StreamResponse, obj: dict[str, Any]) -> None:
    """One NDJSON line; a client gone meanwhile is not an error of the import."""
    with contextlib.suppress(ConnectionResetError):
        await resp.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")


def _first_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(row)"
        parts.append(f"{path}: {'unknown field' if err['type'] == 'extra_forbidden' else err['msg']}")
    return "; ".join(parts)
