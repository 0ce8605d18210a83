"""Bearer-token authentication and the role/jurisdiction checks handlers call (DESIGN §6)."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway import keys
from gateway.api.errors import ApiError, error, hash_token
from tiers.access import Principal, Role

BOOTSTRAP_ID = "bootstrap"
_MEDIA = (".jpg", ".mjpeg")  # what <img> tags load


def _raw_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    if request.method == "GET" and (request.path.startswith("/api/v1/events") or request.path.endswith(_MEDIA)):
        # Browsers cannot set headers on WebSocket/EventSource/<img>; the access log drops queries.
        return request.query.get("token") or None
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler):
    """Every /api/v1 call needs a valid bearer token; the caller's Principal is put on the request."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    token = _raw_token(request)
    principal: Principal | None = None
    if token:
        app = request.app
        if hmac.compare_digest(hash_token(token), app[keys.ADMIN_TOKEN_HASH]):
            # SHARP_EYES_ADMIN_TOKEN: the tier's own administrator, over the whole tier.
            principal = Principal(BOOTSTRAP_ID, "admin (SHARP_EYES_ADMIN_TOKEN)", Role.ADMIN,
                                  app[keys.SETTINGS].node)
        elif keys.TOKENS in app:
            principal = await app[keys.TOKENS].verify(token)
    if principal is None:
        return error(401, "missing, invalid or revoked bearer token", hint="send 'Authorization: Bearer <token>'")
    request[keys.PRINCIPAL] = principal
    return await handler(request)


def principal(request: web.Request) -> Principal:
    """The authenticated caller of this request."""
    return request[keys.PRINCIPAL]


def require(request: web.Request, role: Role) -> Principal:
    """The caller, or a 403 when its role is below `role`."""
    p = request[keys.PRINCIPAL]
    if not p.can(role):
        raise ApiError(403, f"this needs the {role.label} role; the token has {p.role.label}")
    return p


def require_node(request: web.Request, node: str, role: Role = Role.VIEWER, *, hide: bool = True) -> Principal:
    """The caller, checked for `role` over `node`: outside its jurisdiction is a 404 (hide) or a 403."""
    p = require(request, role)
    if not p.covers(node):
        if hide:
            raise ApiError(404, "not found in this token's jurisdiction")
        raise ApiError(403, f"node {node} is outside this token's jurisdiction ({p.node})")
    return p
