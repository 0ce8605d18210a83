"""Child tiers' uplink credentials over HTTP: grant (the uplink URL shown once), list, revoke (admin of this tier)."""

from __future__ import annotations

import time

from aiohttp import web

from gateway import keys
from gateway.api.auth import require
from gateway.api.bridge import registered_children
from gateway.api.errors import AccessDenied, ApiError, read_json
from tiers.access import Principal, Role
from tiers.catalog import STALE_AFTER_S  # a child not heard from for this long: not connected
from tiers.grants import GrantError, uplink_url

routes = web.RouteTableDef()

GRANT_BODY_MAX = 1024


def _tier_admin(request: web.Request) -> Principal:
    """An admin whose jurisdiction covers this tier itself: credentials into this tier are theirs to hand out."""
    p = require(request, Role.ADMIN)
    node = request.app[keys.SETTINGS].node
    if not p.covers(node):
        raise AccessDenied(403, f"granting child tiers needs an admin of this tier ({node}); the token is for "
                                f"{p.node}", why="jurisdiction", node=node)
    return p


def intake_base(request: web.Request) -> str:
    """The URL children reach this tier's Redis at (credentials are put in per child); 409 when there is none."""
    base = request.app.get(keys.INTAKE_URL)
    if not base:
        raise ApiError(409, "children cannot reach this tier's Redis: set intake_url (the redis://, rediss:// or "
                            "redis+sentinel:// address children dial), or give the embedded Redis a listener "
                            "(redis_listen); "
                            "see docs/security.md")
    return base


@routes.post("/api/v1/tiers/children")
async def grant(request: web.Request) -> web.Response:
    """Make (or replace) a child tier's uplink credential; the URL with its password is in this reply only."""
    p = _tier_admin(request)
    body = await read_json(request, GRANT_BODY_MAX)
    if not isinstance(body, dict) or set(body) - {"node"} or not isinstance(body.get("node"), str):
        raise ApiError(422, "invalid grant: expected {\"node\": \"<child node code>\"}")
    base = intake_base(request)
    try:
        g, password = await request.app[keys.GRANTS].grant(body["node"], by=p.name)
    except GrantError as e:
        raise ApiError(422, f"invalid grant: node: {e}") from None
    request.app[keys.AUDIT].record_request(request, "tier.grant", g.node, g.node, {"user": g.user})
    return web.json_response({**g.as_dict(), "uplink": uplink_url(base, g.user, password)}, status=201,
                             headers={"Cache-Control": "no-store"})


@routes.get("/api/v1/tiers/children")
async def list_children(request: web.Request) -> web.Response:
    """Every granted child and every child heard from: grant, link, and what this gateway's intake refused."""
    _tier_admin(request)
    app = request.app
    grants = {g.node: g for g in await app[keys.GRANTS].list()}
    seen = {str(c.get("node")): c for c in await registered_children(app)}
    intake = app[keys.INTAKE].report()
    now = time.time()
    out = []
    for node in sorted(set(grants) | set(seen)):
        g, s = grants.get(node), seen.get(node, {})
        last = s.get("last_seen")
        out.append({
            "node": node, "granted": g is not None, "user": g.user if g else None,
            "granted_at": g.granted_at if g else None, "granted_by": g.by if g else None,
            "gateway": s.get("gateway"), "last_seen": last,
            "connected": isinstance(last, (int, float)) and now - last < STALE_AFTER_S,
            "intake": intake.get(node),
        })
    return web.json_response({"node": app[keys.SETTINGS].node, "children": out})


@routes.delete("/api/v1/tiers/children/{node}")
async def revoke(request: web.Request) -> web.Response:
    """Delete a child's credential and close its connections at once."""
    _tier_admin(request)
    try:
        g = await request.app[keys.GRANTS].revoke(request.match_info["node"])
    except GrantError as e:
        raise ApiError(404, str(e)) from None
    request.app[keys.AUDIT].record_request(request, "tier.revoke", g.node, g.node, {"user": g.user})
    return web.Response(status=204)
