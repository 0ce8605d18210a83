"""Zone and line counts over HTTP: per camera (its lines and zones) and per node (summed over the subtree).

Counted in Redis as each event is written (tiers/counts.py), at this tier and at every tier above, so an
upper tier answers for cameras of the tiers below from its own Redis, and a restart loses nothing.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from analytics.events import iso_ms
from gateway import keys
from gateway.api.auth import require, require_node
from gateway.api.errors import ApiError, query_int
from registry.ids import CameraIdError, validate_camera_id
from tiers.access import Role
from tiers.catalog import SubtreeCatalog
from tiers.counts import (BUCKET_MAX_S, BUCKET_MIN_S, MAX_BUCKETS, MAX_WINDOW_S, MINUTE_S, camera_counts, node_counts,
                          window)
from tiers.nodes import NodeCodeError, normalize_node

routes = web.RouteTableDef()

DEFAULT_WINDOW_S = 3600  # without `since`: the last hour
DEFAULT_BUCKET_S = 60


def _time(request: web.Request, name: str) -> float | None:
    """An ISO 8601 time query parameter (UTC when it names no offset); None when absent; 400 when malformed."""
    value = request.query.get(name)
    if not value:
        return None
    try:
        # An unencoded "+01:00" offset arrives as " 01:00".
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+") if "T" in value else value)
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time, e.g. 2025-01-31T08:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def parse_window(request: web.Request, now: float | None = None) -> tuple[float, float, int]:
    """since, until and bucket (seconds) from the query: 400 when malformed, 422 when out of bounds."""
    now = time.time() if now is None else now
    bucket = query_int(request, "bucket", DEFAULT_BUCKET_S, BUCKET_MIN_S, BUCKET_MAX_S, why=" seconds")
    assert bucket is not None
    if bucket % MINUTE_S:
        raise ApiError(422, f"bucket must be a whole number of minutes (a multiple of {MINUTE_S} s), got {bucket}")
    until = _time(request, "until")
    since = _time(request, "since")
    until = now if until is None else until
    since = until - DEFAULT_WINDOW_S if since is None else since
    if since >= until:
        raise ApiError(422, "since must be before until")
    if until - since > MAX_WINDOW_S:
        raise ApiError(422, f"the window (until - since) is at most {MAX_WINDOW_S // 86400} days")
    if since < now - MAX_WINDOW_S - 86400:
        raise ApiError(422, f"counts are kept {MAX_WINDOW_S // 86400 + 1} days: since is older than that")
    w = window(since, until, bucket)
    if len(w.buckets) > MAX_BUCKETS:
        raise ApiError(422, f"at most {MAX_BUCKETS} buckets a query: choose a larger bucket or a shorter window")
    return since, until, bucket


def _head(since: float, until: float, bucket: int) -> dict[str, Any]:
    w = window(since, until, bucket)
    return {"since": iso_ms(w.start * MINUTE_S), "until": iso_ms(w.end * MINUTE_S), "bucket": bucket}


@routes.get(r"/api/v1/cameras/{camera_id}/counts")
async def get_camera_counts(request: web.Request) -> web.Response:
    """One camera's crossings per line, direction and label and its zones' events and occupancy, per bucket."""
    try:
        cid = validate_camera_id(request.match_info["camera_id"])
    except CameraIdError as e:
        raise ApiError(400, f"bad camera id: {e}") from None
    require(request, Role.VIEWER)
    since, until, bucket = parse_window(request)
    app = request.app
    cam = await app[keys.STORE].get(cid)
    if cam is not None:
        node, rules = cam.node, cam.public_dict().get("analytics") or {}
    else:
        # A camera of a tier below: its events (and counts) came up through the intake.
        view = await SubtreeCatalog(app[keys.REDIS], app[keys.STORE], app[keys.SUPERVISOR],
                                    node=app[keys.SETTINGS].node).remote_get(cid)
        if view is None:
            raise ApiError(404, f"no camera {cid}")
        node, rules = view.node, view.public.get("analytics") or {}
    require_node(request, node, Role.VIEWER, missing=f"no camera {cid}")
    lines = [r["name"] for r in rules.get("lines") or () if isinstance(r, dict) and "name" in r]
    zones = [r["name"] for r in rules.get("zones") or () if isinstance(r, dict) and "name" in r]
    body = await camera_counts(app[keys.REDIS], cid, window(since, until, bucket), lines=lines, zones=zones)
    return web.json_response({"camera_id": cid, "node": node, **_head(since, until, bucket), **body})


@routes.get(r"/api/v1/nodes/{code:\d+}/counts")
async def get_node_counts(request: web.Request) -> web.Response:
    """Crossings and zone events summed over a node's subtree (the tiers below included), per bucket."""
    try:
        code = normalize_node(request.match_info["code"])
    except NodeCodeError as e:
        raise ApiError(400, f"node code: {e}") from None
    require_node(request, code, Role.VIEWER, missing=f"node {code} is not in this tier's tree")
    tier = request.app[keys.SETTINGS].node
    if not code.startswith(tier):
        raise ApiError(404, f"node {code} is not in this tier's tree ({tier})")
    since, until, bucket = parse_window(request)
    body = await node_counts(request.app[keys.REDIS], code, window(since, until, bucket))
    return web.json_response({"node": code, **_head(since, until, bucket), **body})
