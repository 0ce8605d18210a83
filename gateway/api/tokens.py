"""Access tokens over HTTP: create (secret shown once), list, read, revoke; and who the caller is."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.api.auth import BOOTSTRAP_ID, outside_jurisdiction, principal, require, require_node, scope_node
from gateway.api.errors import AccessDenied, ApiError, read_json
from registry.tokens import MAX_LIFETIME_S, NAME_MAX, CreatorGone, TokenRecord
from tiers.access import Role
from tiers.nodes import NodeCodeError, normalize_node

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

FIELDS = frozenset({"name", "role", "node", "expires_in_s"})  # of a create body
CREATE_BODY_MAX = 4096


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _parse_create(body: Any, default_node: str) -> tuple[str, Role, str, float | None]:
    """(name, role, node, lifetime in seconds or None) from a create body; 422 naming the bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object: {\"name\", \"role\", \"node\", \"expires_in_s\"}")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(422, f"invalid token: unknown field(s) {unknown}")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > NAME_MAX \
            or not name.strip().isprintable():
        raise ApiError(422, f"invalid token: name must be 1..{NAME_MAX} printable characters")
    try:
        role = Role.parse(body.get("role"))
    except ValueError as e:
        raise ApiError(422, f"invalid token: role: {e}") from None
    node = body.get("node", default_node)
    if not isinstance(node, str):
        raise ApiError(422, "invalid token: node must be a string of digits")
    try:
        node = normalize_node(node)
    except NodeCodeError as e:
        raise ApiError(422, f"invalid token: node: {e}") from None
    lifetime = body.get("expires_in_s")
    if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, (int, float))
                                 or not 1 <= lifetime <= MAX_LIFETIME_S):
        raise ApiError(422, f"invalid token: expires_in_s must be a number of seconds, 1..{MAX_LIFETIME_S} "
                            "(leave it out for a token that lasts until revoked)")
    return name.strip(), role, node, lifetime


async def _load(request: web.Request) -> TokenRecord:
    """The token named in the path, if in the caller's jurisdiction (else 404)."""
    tid = request.match_info["token_id"]
    if tid == BOOTSTRAP_ID:
        raise ApiError(400, "the bootstrap token is set by SHARP_EYES_ADMIN_TOKEN (or the data folder's "
                            "admin_token file); change it there")
    rec = await request.app[keys.TOKENS].get(tid)
    if rec is None:
        raise ApiError(404, f"no token {tid[:32]}")
    require_node(request, rec.node, Role.ADMIN)
    return rec


@routes.post("/api/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    """Create a token within the caller's jurisdiction, at most the caller's role; the secret is shown once."""
    p = require(request, Role.ADMIN)
    name, role, node, lifetime = _parse_create(await read_json(request, max_bytes=CREATE_BODY_MAX), p.node)
    if not p.covers(node):
        raise outside_jurisdiction(p, node)
    if not p.can(role):
        raise AccessDenied(403, f"cannot create a {role.label} token with a {p.role.label} token", why="role",
                           node=node)
    try:
        # A token made by a token with a lifetime ends with it at the latest (capped, see docs/access.md),
        # and stops with it when it is revoked.
        rec, raw = await request.app[keys.TOKENS].create(name, role, node, p, lifetime_s=lifetime)
    except CreatorGone:
        raise ApiError(401, "missing, invalid, expired or revoked bearer token") from None
    except ValueError as e:
        raise ApiError(422, f"invalid token: {e}") from None
    # Shorter than asked (or than "until revoked"): the creator ends sooner.
    capped = rec.expires_at is not None and (
        lifetime is None or _ts(rec.expires_at) < _ts(rec.created_at) + lifetime - 0.01)
    request.app[keys.AUDIT].record_request(request, "token.create", rec.id, rec.node,
                                           {"name": rec.name, "role": rec.role.label, "expires_at": rec.expires_at,
                                            **({"expires_capped": True} if capped else {})})
    log.info("token %s (%s, %s over %s) created by %s", rec.id, rec.name, rec.role.label, rec.node, p.token_id)
    return web.json_response({**rec.public_dict(), "token": raw, "expires_capped": capped}, status=201)


@routes.get("/api/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """Tokens whose jurisdiction lies in the caller's (optionally narrowed with ?node=); ?active=true hides revoked."""
    node = scope_node(request, request.query.get("node"), Role.ADMIN)
    active = request.query.get("active")
    if active not in (None, "", "true", "false"):
        raise ApiError(400, "active must be true or false")
    recs = await request.app[keys.TOKENS].list(node)
    if active:
        recs = [r for r in recs if r.active == (active == "true")]
    return web.json_response({"tokens": [r.public_dict() for r in recs]})


@routes.get("/api/v1/tokens/{token_id}")
async def get_token(request: web.Request) -> web.Response:
    """One token's record (never its secret)."""
    return web.json_response((await _load(request)).public_dict())


@routes.delete("/api/v1/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token: its next request is refused, its open streams close within seconds."""
    rec = await _load(request)
    p = principal(request)
    store = request.app[keys.TOKENS]
    if rec.revoked:
        new = rec
    else:
        new = await store.revoke(rec.id, p)
        if new is None:
            raise ApiError(404, f"no token {rec.id}")
        request.app[keys.AUDIT].record_request(request, "token.revoke", new.id, new.node,
                                               {"name": new.name, "role": new.role.label})
        log.info("token %s revoked by %s", new.id, p.token_id)
    # The tokens it made (and theirs) stopped authenticating with it; mark them revoked too (also when
    # repeated: it finishes a cascade that was interrupted).
    also = await store.revoke_descendants(new, p)
    for d in also:
        request.app[keys.AUDIT].record_request(request, "token.revoke", d.id, d.node,
                                               {"name": d.name, "role": d.role.label, "with": new.id})
    if also:
        log.info("tokens %s revoked with %s", ", ".join(d.id for d in also), new.id)
    return web.json_response({"revoked": new.id, "token": new.public_dict(), "also_revoked": [d.id for d in also]})


@routes.get("/api/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    """The caller's token id, name, role and jurisdiction (any role)."""
    p = principal(request)
    return web.json_response({"id": p.token_id, "name": p.name, "role": p.role.label, "node": p.node})
