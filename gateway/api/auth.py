"""Bearer-token authentication and the role/jurisdiction checks handlers call (DESIGN §6).

Every /api/v1 handler states what it needs, before it reads or changes anything:

- ``require(request, Role.X)``: the caller's role is at least X, else 403.
- ``require_node(request, node, Role.X)``: role X *and* `node` in the caller's jurisdiction. Use it
  on a single resource (a camera, an event, a token): outside the jurisdiction it answers 404
  ("hide", the default), so a token cannot probe what exists elsewhere; ``hide=False`` gives a 403
  naming the jurisdiction, for a *target* the caller chose (the node of a camera being created).
- ``scope_node(request, node_param)``: the subtree a listing or a subscription covers. No filter:
  the caller's own subtree; a filter at or below the jurisdiction: the filter; a filter above it
  (an ancestor, e.g. "45" for a county token): narrowed to the jurisdiction; a disjoint filter: 403.
- ``until_revoked(request)``: for streams (WebSocket, SSE, MJPEG) that outlive the request's
  authentication: returns once the caller's token is revoked (never for the bootstrap token), so
  the handler races it and closes the stream.
"""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web

from gateway import keys
from gateway.api.errors import AccessDenied, ApiError, error, hash_token
from tiers.access import Principal, Role
from tiers.nodes import NodeCodeError, in_subtree, normalize_node, parent_of

BOOTSTRAP_ID = "bootstrap"
_MEDIA = (".jpg", ".mjpeg", ".mp4")  # what <img> and <video> tags load
# Open paths under /api/: the API's description holds no data of the tier, and tools read it before they have a token.
OPEN_PATHS = frozenset({"/api/v1/openapi.json"})


def _raw_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    if request.method == "GET" and (request.path.startswith("/api/v1/events") or request.path.endswith(_MEDIA)):
        # Browsers cannot set headers on WebSocket/EventSource/<img>; the access log drops queries.
        return request.query.get("token") or None
    return None


async def authenticate(request: web.Request) -> Principal | None:
    """The caller behind the request's token, or None; RedisError (a 503) when tokens cannot be read.

    For paths outside /api/ that need a token too (e.g. /metrics); /api/ paths get it from the middleware.
    """
    token = _raw_token(request)
    if not token:
        return None
    app = request.app
    if hmac.compare_digest(hash_token(token), app[keys.ADMIN_TOKEN_HASH]):
        # SHARP_EYES_ADMIN_TOKEN: the tier's own administrator, over the tier's node.
        return Principal(BOOTSTRAP_ID, "admin (SHARP_EYES_ADMIN_TOKEN)", Role.ADMIN, app[keys.SETTINGS].node)
    if keys.TOKENS in app:
        return await app[keys.TOKENS].verify(token)
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler):
    """Every /api/v1 call needs a valid bearer token; the caller's Principal is put on the request."""
    if not request.path.startswith("/api/") or request.path in OPEN_PATHS:
        return await handler(request)
    principal = await authenticate(request)
    if principal is None:
        return error(401, "missing, invalid, expired or revoked bearer token",
                     hint="send 'Authorization: Bearer <token>'")
    request[keys.PRINCIPAL] = principal
    try:
        return await handler(request)
    except AccessDenied as e:
        _audit_denial(request, principal, e)
        raise


def _audit_denial(request: web.Request, p: Principal, e: AccessDenied) -> None:
    # A token probing beyond its role or jurisdiction is a security event (DESIGN §6): who, what, from where.
    # The path, never the query (it may carry a token); the entry goes to the admins over the node reached for.
    request.app[keys.AUDIT].record_request(
        request, "access.denied", request.path, e.node or p.node,
        {"method": request.method, "status": e.status, "why": e.why, "reason": e.message})


MAX_DENIAL_ENTRIES = 100  # access.denied entries one request may leave for the rows it was refused


def audit_refused_nodes(request: web.Request, refused: dict[str, list], what: str) -> None:
    """Audit the rows of a batch (bulk import, node names) refused for lying outside the caller's jurisdiction.

    Single requests leave one `access.denied` entry for the node reached for (see `_audit_denial`); a
    batch that reaches into other nodes leaves one per subtree reached for, so the admins over each
    see it: `refused` maps each refused node to what was refused there (row numbers, codes); nodes
    under another refused node (not above the jurisdiction) share its entry. At most
    MAX_DENIAL_ENTRIES entries; the rest share one at their common ancestor.
    """
    if not refused:
        return
    p = request[keys.PRINCIPAL]

    def root(node: str) -> str:
        # The highest refused node at or above `node` that is not itself above the jurisdiction.
        top, up = node, parent_of(node)
        while up is not None and not p.node.startswith(up):
            if up in refused:
                top = up
            up = parent_of(up)
        return top

    groups: dict[str, list] = {}
    for node in sorted(refused):
        groups.setdefault(root(node) if not p.node.startswith(node) else node, []).extend(refused[node])
    roots = sorted(groups)
    if len(roots) > MAX_DENIAL_ENTRIES:
        rest = roots[MAX_DENIAL_ENTRIES - 1:]
        common = rest[0]
        while common is not None and not all(in_subtree(r, common) for r in rest):
            common = parent_of(common)
        merged = [x for r in rest for x in groups.pop(r)]
        groups[common or rest[0][:2]] = groups.get(common or rest[0][:2], []) + merged
    for node, items in sorted(groups.items()):
        request.app[keys.AUDIT].record_request(
            request, "access.denied", request.path, node,
            {"method": request.method, "status": 403, "why": "jurisdiction",
             "reason": f"{len(items)} {what} outside this token's jurisdiction ({p.node})",
             "refused": sorted(items)[:100], "count": len(items)})


def principal(request: web.Request) -> Principal:
    """The authenticated caller of this request."""
    return request[keys.PRINCIPAL]


def require(request: web.Request, role: Role) -> Principal:
    """The caller, or a 403 when its role is below `role`."""
    p = request[keys.PRINCIPAL]
    if not p.can(role):
        raise AccessDenied(403, f"this needs the {role.label} role; the token has {p.role.label}", why="role")
    return p


def require_node(request: web.Request, node: str, role: Role = Role.VIEWER, *, hide: bool = True,
                 missing: str = "not found") -> Principal:
    """The caller, checked for `role` over `node`: outside its jurisdiction is a 404 (hide) or a 403.

    With hide, give `missing` the very message the handler uses when the thing does not exist
    (e.g. f"no camera {cid}"), so the answer does not tell "elsewhere" from "nowhere".
    """
    p = require(request, role)
    if not p.covers(node):
        if hide:
            raise AccessDenied(404, missing, why="jurisdiction", node=node)
        raise outside_jurisdiction(p, node)
    return p


def scope_node(request: web.Request, node: str | None, role: Role = Role.VIEWER) -> str:
    """The subtree a listing or subscription covers: `node` (a raw query value or None) within the jurisdiction."""
    p = require(request, role)
    if not node:
        return p.node
    try:
        node = normalize_node(node)
    except NodeCodeError as e:
        raise ApiError(400, f"node: {e}") from None
    if p.covers(node):
        return node
    if node and p.node.startswith(node):
        return p.node  # an ancestor of the jurisdiction: everything this token may see below it
    raise outside_jurisdiction(p, node)


def outside_jurisdiction(p: Principal, node: str) -> AccessDenied:
    """The 403 for a node the caller named that lies outside its jurisdiction."""
    return AccessDenied(403, f"node {node} is outside this token's jurisdiction ({p.node})", why="jurisdiction",
                        node=node)


async def until_revoked(request: web.Request) -> None:
    """Return once the token that opened this stream stops authenticating; never for the bootstrap token."""
    p = request[keys.PRINCIPAL]
    raw = _raw_token(request)
    if p.token_id == BOOTSTRAP_ID or raw is None or keys.REVOCATIONS not in request.app:
        await asyncio.Event().wait()  # forever (until the stream's task is cancelled)
    await request.app[keys.REVOCATIONS].until_revoked(raw)
