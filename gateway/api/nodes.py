"""The node tree over HTTP: names, camera counts by state, online and intact rates, recent events."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.api.auth import audit_refused_nodes, require, require_node
from gateway.api.errors import ApiError, query_int
from tiers.access import Principal, Role
from tiers.catalog import CameraView, SubtreeCatalog
from tiers.names import NodeFileError, parse_nodes
from tiers.nodes import NodeCodeError, normalize_node
from tiers.rollup import NodeTree, build_tree, events_last_hour

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

NAMES_BODY_MAX = 8 << 20  # the application's body limit; larger files go in at start-up (nodes_file)
CSV_TYPES = ("text/csv", "application/csv", "text/plain")  # node name bodies read as CSV; anything else is JSON
MAX_DEPTH = 4  # levels of children below a node: a region's villages


def subtree_root(tier: str, p: Principal) -> str | None:
    """What a caller sees of this tier's tree: the tier's node, or its jurisdiction when that is deeper."""
    if p.covers(tier):
        return tier
    if p.node.startswith(tier):
        return p.node
    return None


def tier_root(request: web.Request) -> str:
    """The root of the tree the caller sees; 404 when this tier holds nothing of its jurisdiction."""
    p = require(request, Role.VIEWER)
    tier = request.app[keys.SETTINGS].node
    root = subtree_root(tier, p)
    if root is None:
        raise ApiError(404, f"this tier ({tier}) holds nothing in this token's jurisdiction ({p.node})")
    return root


async def camera_views(app: web.Application, root: str) -> list[CameraView]:
    """Every camera below `root` this tier knows (its own and its subtree's), with state and quality faults."""
    catalog = SubtreeCatalog(app[keys.REDIS], app[keys.STORE], app[keys.SUPERVISOR], node=app[keys.SETTINGS].node)
    return await catalog.cameras(root)


async def subtree_tree(app: web.Application, root: str) -> NodeTree:
    """Names, cameras (with status) and last-hour event counts below `root`, rolled up."""
    names = await app[keys.NODE_NAMES].subtree(root)
    cameras = await camera_views(app, root)
    events = await events_last_hour(app[keys.REDIS], root)
    return build_tree(root, names, cameras, events)


def _depth(request: web.Request) -> int | None:
    return query_int(request, "depth", None, 0, MAX_DEPTH, why=" (levels of children to include)")


@routes.get("/api/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """The tree below this tier (or the caller's jurisdiction), each node rolled up over its subtree."""
    depth = _depth(request)
    root = tier_root(request)
    tree = await subtree_tree(request.app, root)
    return web.json_response(tree.root.to_dict(depth))


@routes.get(r"/api/v1/nodes/{code:\d+}")
async def get_node(request: web.Request) -> web.Response:
    """One node of the tree with its subtree's figures and its children."""
    try:
        code = normalize_node(request.match_info["code"])
    except NodeCodeError as e:
        raise ApiError(400, f"node code: {e}") from None
    depth = _depth(request)
    require_node(request, code, Role.VIEWER)  # outside the jurisdiction: 404, as if it did not exist
    if not code.startswith(request.app[keys.SETTINGS].node):
        raise ApiError(404, f"node {code} is not in this tier's tree ({request.app[keys.SETTINGS].node})")
    tree = await subtree_tree(request.app, code)
    root = tree.root
    if root.name is None and root.total == 0 and not root.children and code != request.app[keys.SETTINGS].node:
        raise ApiError(404, f"node {code} has no name and no cameras in this tier")
    return web.json_response(root.to_dict(depth))


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


@routes.put("/api/v1/nodes/names")
async def put_names(request: web.Request) -> web.Response:
    """Load node names (CSV `code,name` or JSON); rows outside the caller's jurisdiction or malformed are refused."""
    p = require(request, Role.ADMIN)
    replace = _truthy(request.query.get("replace"))
    if request.content_length and request.content_length > NAMES_BODY_MAX:
        raise ApiError(413, f"body larger than {NAMES_BODY_MAX >> 20} MiB")
    raw = await request.read()
    fmt = "csv" if request.content_type in CSV_TYPES else "json"
    try:
        parsed = parse_nodes(raw, fmt)
    except NodeFileError as e:
        raise ApiError(400, str(e)) from None
    entries = []
    errors: list[dict[str, Any]] = [{"where": e.where, "error": e.message} for e in parsed.errors]
    refused: dict[str, list[str]] = {}
    for e in parsed.entries:
        if p.covers(e.code):
            entries.append(e)
        else:
            refused.setdefault(e.code, []).append(e.code)
            errors.append({"where": f"code {e.code}", "error": f"outside this token's jurisdiction ({p.node})"})
    # Names reaching outside the jurisdiction are refusals like single requests': for the admins over those nodes.
    audit_refused_nodes(request, refused, "node names")
    if replace and errors:
        # Replacing with part of a file would silently lose the names of the rows refused.
        raise ApiError(422, f"{len(errors)} rows refused; nothing replaced", errors=errors[:1000])
    if not entries and errors:
        raise ApiError(422, f"all {len(errors)} rows refused", errors=errors[:1000])
    stored = await request.app[keys.NODE_NAMES].put(entries, replace_under=p.node if replace else None)
    log.info("node names %s by %s: %d stored, %d refused", "replaced" if replace else "loaded", p.name,
             stored, len(errors))
    return web.json_response({"rows": parsed.rows, "stored": stored, "failed": len(errors),
                              "replaced": replace, "errors": errors[:1000]})


@routes.get("/api/v1/nodes/names")
async def get_names(request: web.Request) -> web.Response:
    """Every node name known in the caller's jurisdiction, code -> name."""
    p = require(request, Role.VIEWER)
    names = await request.app[keys.NODE_NAMES].subtree(p.node)
    return web.json_response({"names": dict(sorted(names.items()))})
