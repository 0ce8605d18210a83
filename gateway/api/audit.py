"""The audit trail over HTTP: entries in the caller's jurisdiction, newest first (admin)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from aiohttp import web

from gateway import keys
from gateway.api.auth import scope_node
from gateway.api.errors import PAGE_DEFAULT, PAGE_MAX, ApiError, query_int
from gateway.audit import AuditQuery
from gateway.events import parse_csv_set
from gateway.streams import StreamIdError, parse_entry_id
from tiers.access import Role

routes = web.RouteTableDef()

ACTION_PATTERN = r"^[a-z]+(\.[a-z_]+|\.\*)?$"  # an action (camera.create) or a prefix (camera.*)
_ACTION = re.compile(ACTION_PATTERN)
ACTOR_MAX, TARGET_MAX = 64, 128  # lengths of the actor and target filters
_ID = re.compile(r"([0-9]{2,12})-([0-9]{1,20}-[0-9]{1,20})")  # ASCII digits only (fullmatch: no "\n" after)


def _bound(request: web.Request, name: str) -> tuple[str, bool] | None:
    """A query bound as (stream entry id, is it a time): an entry id or cursor of this tier, or a UTC time."""
    value = request.query.get(name)
    if not value:
        return None
    m = _ID.fullmatch(value)
    if m:
        if m.group(1) != request.app[keys.SETTINGS].node:
            raise ApiError(400, f"{name}: {value[:64]} was recorded at another tier; page with this tier's "
                                "next_before cursors or give a time")
        try:
            return parse_entry_id(m.group(2)), False
        except StreamIdError as e:
            raise ApiError(400, f"{name}: audit id {value!r} {e}") from None
    try:
        # An unencoded "+01:00" offset arrives as " 01:00".
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+") if "T" in value else value)
    except ValueError:
        raise ApiError(400, f"{name} must be an audit id/cursor of this tier or an ISO 8601 time, "
                            "e.g. 2025-01-31T08:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    # Stream entry ids begin with the append time in ms: a time is a bound on them.
    return f"{max(0, int(t.timestamp() * 1000))}-0", True


@routes.get("/api/v1/audit")
async def audit_entries(request: web.Request) -> web.Response:
    """Audit entries whose target lies in the caller's jurisdiction, newest first, filtered and paged."""
    node = scope_node(request, request.query.get("node"), Role.ADMIN)
    actions = parse_csv_set(request.query.getall("action", []))
    if actions and not all(_ACTION.match(a) for a in actions):
        raise ApiError(400, "action must be names like camera.create or prefixes like camera.*")
    actor = request.query.get("actor") or None
    target = request.query.get("target") or None
    if (actor and len(actor) > ACTOR_MAX) or (target and len(target) > TARGET_MAX):
        raise ApiError(400, "actor or target too long")
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    since = _bound(request, "since")
    before = _bound(request, "before")
    audit = request.app[keys.AUDIT]
    entries, cursor = await audit.query(
        AuditQuery(node=node, actions=actions, actor=actor, target=target),
        before=before[0] if before else None, after=since[0] if since else None,
        # A time "since" includes entries at that ms; an id "since" means strictly after it.
        after_inclusive=bool(since and since[1]), limit=limit)
    tier = request.app[keys.SETTINGS].node
    return web.json_response({"entries": [e.to_dict() for e in entries],
                              "next_before": f"{tier}-{cursor}" if cursor else None})
