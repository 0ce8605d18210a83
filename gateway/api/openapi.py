"""The OpenAPI 3.1 description of the HTTP API, served at /api/v1/openapi.json.

Request and response bodies are derived from what the handlers validate and answer with: the
pydantic camera models (registry/models.py), the run-time status and token dataclasses, the event's
JSON Schema (analytics/schema/event.schema.json) and the limits the handlers import from their own
modules, so a changed field or limit changes the description with it. What has no model (the small
objects handlers build inline) is written here once. tests/test_openapi.py checks that every route
of the router is described and every described operation is routed, and fuzzes each operation
against a real gateway with tokens of every role.

Not described: the control-room page (`/`) and its files (`/static/...`): they are the web page,
not the API. aiohttp answers HEAD on every GET route; HEAD is not listed separately.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from analytics.events import EVENT_SCHEMA_PATH, EVENT_TYPES
from analytics.snapshot import MAX_WIDTH, MIN_WIDTH
from gateway.api import audit as audit_api
from gateway.api import cameras as cameras_api
from gateway.api import counts as counts_api
from gateway.api import live as live_api
from gateway.api import nodes as nodes_api
from gateway.api import tokens as tokens_api
from gateway.api.errors import JSON_BODY_MAX, PAGE_DEFAULT, PAGE_MAX
from gateway.camera import CameraState, CameraStatus
from gateway.recording import GapReason
from registry.bulk import BULK_MAX_ROWS, CSV_COLUMNS
from registry.ids import CAMERA_ID_PATTERN
from registry.models import Camera, CameraCreate, CameraPatch
from registry.tokens import MAX_LIFETIME_S, NAME_MAX, TOKEN_ID_PATTERN, TokenRecord
from registry.urls import MAX_URL_LENGTH
from tiers.access import Role
from tiers.counts import BUCKET_MAX_S, BUCKET_MIN_S, COUNTS_TTL_S, MAX_BUCKETS, MAX_WINDOW_S, MINUTE_S
from tiers.names import MAX_NAME_LENGTH
from tiers.nodes import Tier

PATH = "/api/v1/openapi.json"
VERSION = "1"  # of the HTTP API (/api/v1)

_EVENT_SCHEMA = EVENT_SCHEMA_PATH
_REF = "#/components/schemas/{model}"
_JSON = "application/json"
_ROLES = [r.label for r in Role]
_STATES = [s.value for s in CameraState]


def _event_schema() -> dict[str, Any]:
    schema = json.loads(_EVENT_SCHEMA.read_text())
    # Embedded as a component: its own $schema and $id would change how references inside it resolve.
    schema.pop("$schema", None)
    schema.pop("$id", None)
    return schema


# Node codes and event ids as the event's schema spells them.
_NODE_SCHEMA = {"type": "string", "pattern": _event_schema()["properties"]["node"]["pattern"]}
_EVENT_ID_SCHEMA = {"type": "string", "pattern": _event_schema()["properties"]["id"]["pattern"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], *, required: list[str] | None = None, description: str | None = None,
         closed: bool = True) -> dict[str, Any]:
    """An object schema; every property required unless `required` says otherwise; closed: no other keys."""
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "required": list(properties) if required is None else required}
    if closed:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


def _counts(description: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}, "description": description}


def _all_required(defs: dict[str, Any]) -> None:
    """Records are dumped whole (every key, null or not): in their response form every property is required."""
    for schema in defs.values():
        if "properties" in schema:
            schema["required"] = list(schema["properties"])
            for prop in schema["properties"].values():
                prop.pop("default", None)


# ---- schemas -------------------------------------------------------------------------------------------

def _camera_schemas() -> dict[str, Any]:
    """Create and patch bodies (validation form) and the camera record as answered (serialization form)."""
    _, inputs = models_json_schema([(CameraCreate, "validation"), (CameraPatch, "validation")], ref_template=_REF)
    # The answer's records get their own names: there every key is present, where the bodies leave them out.
    _, outputs = models_json_schema([(Camera, "serialization")], ref_template="#/components/schemas/{model}Out")
    out_defs = {f"{k}Out": v for k, v in outputs["$defs"].items()}
    _all_required(out_defs)
    stored = out_defs.pop("CameraOut")
    props = stored["properties"]
    for key in ("url", "substream_url"):
        # Shown with credentials masked (user:***@host): no longer bound by the stored URL's length.
        masked = {"type": "string", "minLength": 1,
                  "description": props[key].get("description", "") + "; credentials masked"}
        props[key] = masked if key == "url" else _nullable(masked)
    status = TypeAdapter(CameraStatus).json_schema(mode="serialization")
    status["properties"]["state"] = {"enum": _STATES, "description": "the stream's state"}
    status["properties"]["source"] = {"enum": ["main", "substream"], "description": "which stream analysis pulls"}
    _all_required({"status": status})
    status["additionalProperties"] = False
    camera = _obj({"id": props.pop("id"), **props, "status": _ref("CameraStatus")},
                  description="A camera of this tier with its run-time status (credentials in URLs masked).")
    # As CameraView.status_dict (tiers/catalog.py) answers it.
    remote_status = _obj({
        "state": {"enum": _STATES}, "quality": {"type": "array", "items": {"type": "string"}},
        "fps_in": {"type": "number"}, "fps_asked": {"type": "number"}, "fps_analyzed": {"type": "number"},
        "shed": {"type": "boolean"}, "skipped": _counts("sampled frames not analysed, by reason"),
        "last_frame_at": _nullable({"type": "string"}), "reconnects": {"type": "integer"},
        "last_error": _nullable({"type": "string"}), "updated_at": _nullable({"type": "string"}),
        "stale": {"type": "boolean"},
    }, description="A remote camera's status as its own tier last reported it")
    remote = _obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "node": _NODE_SCHEMA,
        "owner": {"type": "string", "description": "node of the tier deployment that runs it"},
        "via": _nullable({"type": "string", "description": "the child tier it came up through"}),
        "remote": {"const": True}, "status": _ref("RemoteCameraStatus"),
    }, required=["id", "name", "node", "owner", "via", "remote", "status"], closed=False,
        description="A camera run by a tier below, in its public form (read-only here: its own tier changes it)")
    return {**inputs["$defs"], **out_defs, "Camera": camera, "CameraStatus": status,
            "RemoteCameraStatus": remote_status, "RemoteCamera": remote,
            "AnyCamera": {"anyOf": [_ref("Camera"), _ref("RemoteCamera")]}}


def _token_schemas() -> dict[str, Any]:
    record = TypeAdapter(TokenRecord).json_schema(mode="serialization", ref_template=_REF)
    record.pop("$defs", None)
    props = record["properties"]
    props.pop("hash")  # the stored hash is never shown
    props["role"] = {"enum": _ROLES}
    props["node"] = _NODE_SCHEMA
    props["active"] = {"type": "boolean", "description": "neither revoked nor expired"}
    props["expired"] = {"type": "boolean"}
    _all_required({"record": record})
    record["additionalProperties"] = False
    create = _obj({
        "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX,
                 "description": f"who or what the token is for (1..{NAME_MAX} printable characters)"},
        "role": {"enum": _ROLES, "description": "at most the caller's own role"},
        "node": {"type": "string", "description": "jurisdiction, within the caller's; default: the caller's"},
        "expires_in_s": {"type": "number", "minimum": 1, "maximum": MAX_LIFETIME_S,
                         "description": "lifetime in seconds; absent: until revoked (never longer than the "
                                        "creating token's own)"},
    }, required=["name", "role"], description="A new token (keys: " + ", ".join(sorted(tokens_api.FIELDS)) + ")")
    created = _obj({**props, "token": {"type": "string", "description": "the secret, shown this once"},
                    "expires_capped": {"type": "boolean",
                                       "description": "the lifetime was shortened to the creator's"}},
                   description="A new token's record and its secret")
    return {"Token": record, "TokenCreate": create, "TokenCreated": created,
            "TokenList": _obj({"tokens": {"type": "array", "items": _ref("Token")}}),
            "TokenRevoked": _obj({"revoked": {"type": "string"}, "token": _ref("Token"),
                                  "also_revoked": {"type": "array", "items": {"type": "string"},
                                                   "description": "tokens made with it, revoked with it"}})}


def _node_schemas() -> dict[str, Any]:
    cameras = _obj({k: {"type": "integer", "minimum": 0} for k in ("total", "enabled", *_STATES, "intact")},
                   description="camera counts over the subtree")
    node = _obj({
        "code": _NODE_SCHEMA, "name": _nullable({"type": "string"}),
        "tier": {"enum": [t.value for t in Tier]}, "cameras": cameras,
        "online_rate": _nullable({"type": "number", "minimum": 0, "maximum": 1,
                                  "description": "online / enabled (null: none enabled)"}),
        "intact_rate": _nullable({"type": "number", "minimum": 0, "maximum": 1,
                                  "description": "online without a quality fault / enabled"}),
        "events_last_hour": _obj({"total": {"type": "integer", "minimum": 0},
                                  "by_type": _counts("events by type"), "by_label": _counts("detections by label")}),
        "children": {"type": "array", "items": _ref("Node")},
    }, description="A node of the tree with its subtree's figures rolled up")
    entry = _obj({"code": {"type": ["string", "integer"]}, "name": {"type": "string", "maxLength": MAX_NAME_LENGTH}},
                 closed=False)
    names_body = {"oneOf": [{"type": "array", "items": entry},
                            {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "code -> name"}]}
    result = _obj({
        "rows": {"type": "integer", "minimum": 0}, "stored": {"type": "integer", "minimum": 0},
        "failed": {"type": "integer", "minimum": 0}, "replaced": {"type": "boolean"},
        "errors": {"type": "array", "items": _ref("RowError")},
    })
    return {"Node": node, "NodeNamesBody": names_body, "NodeNamesResult": result,
            "NodeNames": _obj({"names": {"type": "object", "additionalProperties": {"type": "string"}}}),
            "RowError": _obj({"where": {"type": "string"}, "error": {"type": "string"}})}


def _counts_schemas() -> dict[str, Any]:
    by_label = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "label -> count"}
    directions = _obj({"in": by_label, "out": by_label}, description="crossings by direction, then label")
    phases = {"enter": by_label, "leave": by_label, "loiter": by_label}
    occupancy = {"now": {"type": "integer", "minimum": 0, "description": "objects inside when the bucket ends"},
                 "max": {"type": "integer", "minimum": 0, "description": "the most inside at once in the bucket"}}
    window = {"since": {"type": "string", "description": "start of the first bucket (whole minute, UTC)"},
              "until": {"type": "string", "description": "end of the last bucket"},
              "bucket": {"type": "integer", "description": "seconds per bucket"}}
    zone = _obj({**phases, **occupancy}, description="a zone's events by phase and label, and its occupancy")
    named = {"type": "object", "additionalProperties": directions, "description": "line name -> its crossings"}
    return {
        "CameraCounts": _obj({
            "camera_id": {"type": "string"}, "node": {"type": "string"}, **window,
            "buckets": {"type": "array", "items": _obj({
                "start": {"type": "string"}, "lines": named,
                "zones": {"type": "object", "additionalProperties": zone}})},
            "totals": _obj({"lines": named, "zones": {"type": "object", "additionalProperties": _obj({
                **phases, "max": occupancy["max"]})}}),
            "occupancy": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                          "description": "zone -> objects inside now"},
        }, description="One camera's line crossings and zone events per bucket (its configured rules and any "
                       "counted in the window)"),
        "NodeCounts": _obj({
            "node": {"type": "string"}, **window,
            "buckets": {"type": "array", "items": _obj({"start": {"type": "string"}, "crossings": directions,
                                                        "zones": _obj(phases)})},
            "totals": _obj({"crossings": directions, "zones": _obj(phases)}),
        }, description="Line crossings and zone events of every camera below a node (the tiers below included)"),
    }


def _misc_schemas() -> dict[str, Any]:
    field_error = _obj({"field": {"type": "string"}, "message": {"type": "string"}})
    error = _obj({"error": _obj({
        "status": {"type": "integer", "minimum": 400, "maximum": 599}, "message": {"type": "string"},
        "fields": {"type": "array", "items": field_error, "description": "422: each invalid field by its path"},
        "errors": {"type": "array", "items": _ref("RowError"), "description": "422: each refused row"},
        "hint": {"type": "string"},
        "retry_after": {"type": "number", "description": "seconds after which a retry may succeed"},
        "state": {"enum": _STATES, "description": "the camera's state, when it has no frame yet"},
        "owner": {"type": "string", "description": "409: the tier below that owns the camera"},
    }, required=["status", "message"])}, description="Every error: 4xx the caller's, 5xx the gateway's or a tier's")
    principal = {"name": {"type": "string"}, "role": {"enum": _ROLES}, "node": {"type": "string"}}
    bulk_row = _obj({"row": {"type": "integer", "minimum": 1}, "ok": {"type": "boolean"},
                     "status": {"type": "integer"}, "id": {"type": "string"}, "error": {"type": "string"}},
                    required=["row", "ok", "status"])
    audit = _obj({
        "id": {"type": "string", "description": "tier node code + '-' + stream entry id"},
        "ts": {"type": "string"}, "action": {"type": "string"}, "target": {"type": "string"},
        "node": {"type": "string", "description": "the target's node"},
        "actor": _obj({"id": {"type": "string"}, **principal, "role": {"type": "string"}}),
        "from": _nullable({"type": "string", "description": "client address"}),
        "tier": {"type": "string"}, "gateway": {"type": "string"}, "detail": {"type": "object"},
    }, required=["ts", "action", "target", "node", "actor", "from", "tier", "gateway", "detail"])
    lag = {"type": "object", "description": "entries and seconds behind, last forwarded id, counts"}
    return {
        "Error": error,
        "Describe": _obj({
            "service": {"type": "string"}, "node": {"type": "string"}, "you": _obj(principal),
            "page": {"type": "string"}, "api": {"type": "string"},
            "endpoints": {"type": "array", "items": {"type": "string"}},
        }),
        "Whoami": _obj({"id": {"type": "string"}, **principal}),
        "CameraList": _obj({
            "cameras": {"type": "array", "items": _ref("AnyCamera")},
            "next_cursor": _nullable({"type": "string", "description": "give as ?cursor= for the next page"}),
            "total": _nullable({"type": "integer", "minimum": 0, "description": "null when filtered by state"}),
        }),
        "Deleted": _obj({"deleted": {"type": "string"}}),
        "RecordingList": _obj({
            "camera_id": {"type": "string"}, "since": {"type": "string"}, "until": {"type": "string"},
            "segments": {"type": "array", "items": _obj({
                "start": {"type": "string"}, "end": {"type": "string"}, "bytes": {"type": "integer", "minimum": 0},
                "codec": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"}},
                description="one MP4 segment: [start, end) UTC, the camera's own codec")},
            "gaps": {"type": "array", "items": _obj({
                "start": {"type": "string"}, "end": {"type": "string"},
                "reason": {"enum": [r.value for r in GapReason]},
                "detail": {"type": "string", "description": "e.g. the stream's error"}},
                required=["start", "end", "reason"], description="a stretch without recording and why")},
            "truncated": {"const": True, "description": "more segments than one listing holds: it stops early"},
        }, required=["camera_id", "since", "until", "segments", "gaps"]),
        "BulkResult": _obj({"rows": {"type": "integer"}, "created": {"type": "integer"},
                            "failed": {"type": "integer"}, "results": {"type": "array", "items": bulk_row}}),
        "BulkLine": {"description": "each line of the NDJSON progress stream: progress, the final result, or the "
                                    "error that stopped the import (rows before it are imported)",
                     "oneOf": [
                         _obj({"progress": _obj({k: {"type": "integer"}
                                                 for k in ("done", "total", "created", "failed")})}),
                         _obj({"result": _ref("BulkResult")}),
                         _obj({"error": _obj({"status": {"const": 503}, "message": {"type": "string"},
                                              "done": {"type": "integer"}, "created": {"type": "integer"}})})]},
        "EventMessage": _obj({
            "event": {"enum": list(EVENT_TYPES)}, "id": {"type": "string", "description": "the event's id"},
            "data": {"type": "string", "contentMediaType": _JSON, "contentSchema": _ref("Event")},
        }, required=["data"], closed=False, description="one Server-Sent Event"),
        "EventPage": _obj({"events": {"type": "array", "items": _ref("Event")},
                           "next_before": _nullable({"type": "string",
                                                     "description": "give as ?before= to page back"})}),
        "AuditEntry": audit,
        "AuditPage": _obj({"entries": {"type": "array", "items": _ref("AuditEntry")},
                           "next_before": _nullable({"type": "string"})}),
        "BridgeReport": _obj({
            "node": {"type": "string"}, "uplink": {"type": "boolean", "description": "this tier has a parent"},
            "bridge": _nullable(_obj({"connected": {"type": "boolean"}, "streams": {"type": "object",
                                                                                   "additionalProperties": lag}},
                                     required=["connected", "streams"], closed=False)),
            "children": {"type": "array", "items": {"type": "object"}, "description": "tiers registered below"},
            "relay": _nullable(_obj({
                "bytes": {"type": "object", "description": "body bytes by role (served: this tier runs the camera; "
                                                           "relayed: piped from below to above; received: for a "
                                                           "viewer here) and kind (recordings, recording, clip, live)"},
                "streams": {"type": "object", "description": "streams begun, by role and kind"},
                "cancelled": {"type": "integer"}, "gave_up": {"type": "integer"}, "timeouts": {"type": "integer"},
                "busy": {"type": "integer"}, "malformed": {"type": "integer"}, "errors": {"type": "integer"},
                "live_shares": _nullable(_obj({
                    "open": {"type": "integer", "description": "relayed live streams open (one per camera)"},
                    "viewers": {"type": "integer", "description": "their viewers now (live.mp4 clients here and "
                                                                  "live streams served up)"},
                    "opened": {"type": "integer", "description": "relayed live streams opened since start"},
                    "hits": {"type": "integer", "description": "viewers that joined an open stream"},
                    "broken": {"type": "integer", "description": "shares ended by a broken or malformed stream"},
                    "skips": {"type": "integer", "description": "slow viewers' skips to the next key frame"},
                    "linger_s": {"type": "number"},
                    "cameras": {"type": "array", "description": "the most watched open shares", "items": _obj({
                        "camera_id": {"type": "string"}, "viewers": {"type": "integer"},
                        "subscribed": {"type": "integer"}, "hits": {"type": "integer"},
                        "fragments": {"type": "integer"}, "bytes": {"type": "integer"},
                        "skips": {"type": "integer"}, "hops": {"type": "integer"}, "seconds": {"type": "number"},
                    })},
                }, description="one relayed live stream per camera not run here, shared by its viewers")),
            }, closed=False)),
        }),
        "GatewayList": _obj({"node": {"type": "string"}, "unplaced": {
            "type": "integer", "minimum": 0, "description": "enabled cameras no gateway runs (at this gateway's last "
                                                            "look): a pinned camera whose gateway is away"},
            "gateways": {"type": "array", "items": _obj({
                "id": {"type": "string"}, "version": {"type": "string"}, "address": _nullable({"type": "string"}),
                "alive": {"type": "boolean"}, "draining": {"type": "boolean"},
                "this": {"type": "boolean", "description": "the gateway that answered"},
                "cameras": {"type": "integer", "minimum": 0}, "asked_fps": {"type": "number"},
                "analyzed_fps": {"type": "number"},
                "capacity_fps": {"type": "number", "description": "analysed frames/s it advertises for balancing"},
                "load": _nullable({"type": "number", "description": "asked / capacity"}),
                "started_at": {"type": "string"}, "last_seen": _nullable({"type": "string"}),
            })}}),
        "ChildGrantCreate": _obj({"node": {**_NODE_SCHEMA, "description": "the child tier's node code"}}),
        "ChildGrant": _obj({
            "node": {"type": "string"}, "user": {"type": "string", "description": "its Redis ACL user"},
            "granted_at": {"type": "number"}, "by": {"type": "string", "description": "the admin who granted it"},
            "uplink": {"type": "string", "description": "the child's uplink URL with its password: shown only here"},
        }),
        "ChildList": _obj({"node": {"type": "string"}, "children": {"type": "array", "items": _obj({
            "node": {"type": "string"}, "granted": {"type": "boolean"}, "user": _nullable({"type": "string"}),
            "granted_at": _nullable({"type": "number"}), "granted_by": _nullable({"type": "string"}),
            "gateway": _nullable({"type": "string"}), "last_seen": _nullable({"type": "number"}),
            "connected": {"type": "boolean"},
            "intake": _nullable({"type": "object", "description": "requests, operations and refusals by reason, "
                                                                  "as this gateway's intake saw them"}),
        })}}),
        "Health": _obj({
            "status": {"enum": ["ok", "degraded"]}, "node": {"type": "string"}, "redis": {"type": "boolean"},
            "cameras_running": {"type": "integer"}, "events_buffered": {"type": "integer"},
            "events_dropped": {"type": "integer"}, "detector": _nullable({"type": "string"}),
            "analysis": {"type": "object", "description": "asked vs analysed rate, capacity, shed cameras"},
            "bridge": _nullable({"type": "object", "description": "uplink connected, events and seconds behind"}),
            "intake": _obj({"running": {"type": "boolean"}, "children": {"type": "integer", "minimum": 0}},
                           description="what the child tiers send is checked and applied here"),
            "placement": {"type": "object", "description": "this gateway's cameras (leases), the tier's gateways, "
                                                           "cameras taken, handed over, leases lost, events fenced"},
            "recordings": {"type": "object", "description": "retention task running, sweeps done, the recordings' "
                                                            "disk: free and used bytes, budget, floor, full"},
        }, required=["status", "node", "redis", "cameras_running", "events_buffered", "events_dropped", "detector",
                     "analysis", "bridge"]),
    }


# ---- operations ----------------------------------------------------------------------------------------

_WHY = {
    400: "malformed input: a parameter, path or body that cannot be read",
    401: "missing, invalid, expired or revoked token",
    403: "the token's role is too low, or it names a node outside the token's jurisdiction",
    404: "unknown (or outside the token's jurisdiction: the same answer)",
    409: "conflict: duplicate, changed concurrently, or owned by a tier below",
    413: "body too large",
    422: "invalid fields, each named by its path; or a counts window or bucket out of bounds",
    429: "too many live views open for this token or client address",
    502: "a tier below answered with an error",
    503: "Redis unreachable; or the camera has no picture (not running, no frame yet) or every live view is "
         "taken: retry after `retry_after` seconds",
    504: "a tier below did not answer in time",
}
_API = (401, 503)  # every /api/v1 call: the token is checked in Redis


def _links(param: str, *op_ids: str) -> dict[str, Any]:
    """Links from a created thing (its `id` in the answer) to the operations on it."""
    return {op_id[0].upper() + op_id[1:]: {"operationId": op_id, "parameters": {param: "$response.body#/id"}}
            for op_id in op_ids}


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    out = dict(ok)
    for status in sorted(set(errors)):
        out[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    return out


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


_CAMERA_ID_SCHEMA = {"type": "string", "pattern": CAMERA_ID_PATTERN}
_CAMERA_ID = _path("camera_id", _CAMERA_ID_SCHEMA, "GB/T 28181 20-digit camera code")
_EVENT_ID = _path("event_id", _EVENT_ID_SCHEMA, "event id: origin node code '-' stream entry id")
_TOKEN_ID = _path("token_id", {"type": "string", "pattern": TOKEN_ID_PATTERN}, "token id (16 hex digits)")
_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
                "items per page")
_NODE = _query("node", _NODE_SCHEMA,
               "node subtree to cover (an ancestor of the token's jurisdiction means the jurisdiction)")
_CSV_LIST = {"type": "array", "items": {"type": "string"}}
_CAPTURED = {"X-Captured-At": {"schema": {"type": "string"}, "description": "when the frame was captured (UTC)"}}
_BEARER = [{"bearer": []}]
_BEARER_OR_QUERY = [{"bearer": []}, {"queryToken": []}]  # GETs browsers make without headers (auth.py)
_MP4_FILE = {"description": "the MP4 (moov first: seekable as it arrives)",
             "headers": {"X-Recording-Start": {"schema": {"type": "string"}, "description": "wall time of its time 0"},
                         "X-Recording-End": {"schema": {"type": "string"}, "description": "when its last frame ends"},
                         "X-Relay-Hops": {"schema": {"type": "integer"},
                                          "description": "present when the camera runs elsewhere: tiers (or gateways "
                                                         "of this tier) the stream crossed"}},
             "content": {"video/mp4": {"schema": {"type": "string"}}}}
_MP4_RANGES = {
    # Range and If-Range are HTTP's own request headers (RFC 9110), answered by aiohttp's FileResponse: one range.
    "206": {"description": "the one byte range asked (Range: bytes=a-b, a-, -n), for a player's seek; If-Range "
                           "with the ETag of an earlier answer holds (every export of a window has the same ETag). "
                           "Answered by the gateway that records the camera; one relayed from another gateway or "
                           "tier is sent whole (Accept-Ranges: none)",
            "headers": {"Content-Range": {"schema": {"type": "string"}, "description": "bytes a-b/size"}},
            "content": {"video/mp4": {"schema": {"type": "string"}}}},
    "416": {"description": "the range asked starts past the file's end (Content-Range: bytes */size)"},
}
_DOWNLOAD = {"name": "download", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["1", "0", "true", "false", "yes", "no"]},
             "description": "1: Content-Disposition attachment (a browser saves the file) instead of inline"}


def _operation(op_id: str, summary: str, role: Role | None, responses: dict[str, Any], *,
               tag: str, params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
               security: list[dict[str, list]] | None = None, description: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if role is not None:
        op["x-role"] = role.label  # the least role that may call it
        op["security"] = security or _BEARER
    else:
        op["security"] = []
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def _paths() -> dict[str, Any]:
    v, o, a = Role.VIEWER, Role.OPERATOR, Role.ADMIN
    camera = _json(_ref("AnyCamera"), "the camera")
    events_filter = [
        _NODE,
        _query("camera", _CAMERA_ID_SCHEMA, "one camera's events"),
        _query("type", {"type": "array", "items": {"enum": list(EVENT_TYPES)}},
               "event types (repeat the parameter or separate by commas)", style="form", explode=True),
        _query("label", _CSV_LIST, "detection labels (repeat or separate by commas)", style="form", explode=True),
        _query("zone", _CSV_LIST, "zone and line events of these rules, by name (repeat or separate by commas)",
               style="form", explode=True),
        _query("min_score", {"type": "number", "minimum": 0, "maximum": 1},
               "lowest score; events without a score pass"),
    ]
    jpeg = {"description": "the JPEG", "content": {"image/jpeg": {"schema": {"type": "string",
                                                                            "contentMediaType": "image/jpeg"}}}}
    return {
        PATH: {"get": _operation(
            "openapi", "This document", None, {"200": _json({"type": "object"}, "the OpenAPI 3.1 description")},
            tag="meta")},
        "/api/v1": {"get": _operation(
            "describe", "What this tier serves and who the caller is", v,
            _responses({"200": _json(_ref("Describe"), "the tier and the caller")}, *_API), tag="meta")},
        "/api/v1/whoami": {"get": _operation(
            "whoami", "The caller's token id, name, role and jurisdiction", v,
            _responses({"200": _json(_ref("Whoami"), "the caller")}, *_API), tag="tokens")},
        "/healthz": {"get": _operation(
            "healthz", "Liveness, Redis reachability, analysis load and bridge lag", None,
            {"200": _json(_ref("Health"), "health (status ok or degraded)")}, tag="meta")},
        "/metrics": {"get": _operation(
            "metrics", "Prometheus metrics of the token's jurisdiction", v,
            _responses({"200": {"description": "Prometheus text format 0.0.4", "content": {
                "text/plain": {"schema": {"type": "string"}}}}}, *_API), tag="meta")},
        "/api/v1/cameras": {
            "post": _operation(
                "createCamera", "Register a camera", a,
                _responses({"201": {**_json(_ref("Camera"), "the camera as stored, with its status"),
                                    "links": _links("camera_id", "getCamera", "patchCamera", "deleteCamera",
                                                    "cameraSnapshot", "liveView")}},
                           *_API, 400, 403, 409, 413, 422),
                tag="cameras", body=_body(_ref("CameraCreate"), "the camera; `id` is generated when absent")),
            "get": _operation(
                "listCameras", "List cameras of the subtree, this tier's and the tiers' below", v,
                _responses({"200": _json(_ref("CameraList"), "one page")}, *_API, 400, 403), tag="cameras",
                params=[_NODE, _query("state", {"enum": _STATES}, "only cameras in this state"), _LIMIT,
                        _query("cursor", {"type": "string"}, "next_cursor of the page before")]),
        },
        "/api/v1/cameras/bulk": {"post": _operation(
            "importCameras", "Register many cameras; one result per row, rows independent", a,
            _responses({"200": {"description": "the result of each row (or, with Accept: application/x-ndjson, "
                                               "progress lines and then the result)",
                                "content": {_JSON: {"schema": _ref("BulkResult")},
                                            cameras_api.NDJSON: {"schema": _ref("BulkLine")}}}},
                       *_API, 400, 403, 413),
            tag="cameras", body=_bulk_body())},
        "/api/v1/cameras/{camera_id}": {
            "parameters": [_CAMERA_ID],
            "get": _operation("getCamera", "One camera with its status", v,
                              _responses({"200": camera}, *_API, 400, 404), tag="cameras"),
            "patch": _operation(
                "patchCamera", "Change a camera; the running stream follows at once", a,
                _responses({"200": _json(_ref("Camera"), "the camera as changed")}, *_API, 400, 403, 404, 409, 413,
                           422),
                tag="cameras", body=_body(_ref("CameraPatch"), "the fields to change")),
            "delete": _operation(
                "deleteCamera", "Retire a camera and stop its stream", a,
                _responses({"200": _json(_ref("Deleted"), "its id")}, *_API, 400, 403, 404, 409), tag="cameras"),
        },
        "/api/v1/cameras/{camera_id}/snapshot.jpg": {"get": _operation(
            "cameraSnapshot", "The camera's newest frame as JPEG (also a lower tier's camera)", o,
            _responses({"200": {**jpeg, "headers": _CAPTURED}}, *_API, 400, 403, 404, 502, 503, 504),
            tag="live", security=_BEARER_OR_QUERY,
            params=[_CAMERA_ID, _query("width", {"type": "integer", "minimum": MIN_WIDTH, "maximum": MAX_WIDTH,
                                                 "default": live_api.SNAPSHOT_WIDTH}, "at most this wide")])},
        "/api/v1/cameras/{camera_id}/live.mjpeg": {"get": _operation(
            "liveView", "Live view: multipart JPEG with the current detections drawn", o,
            _responses({"200": {"description": "endless multipart/x-mixed-replace stream of JPEG parts (headers "
                                               "X-Captured-At, X-Detections), ended by its closing boundary",
                                "content": {f"multipart/x-mixed-replace; boundary={live_api.BOUNDARY}": {
                                    "schema": {"type": "string"}}}}},
                       *_API, 400, 403, 404, 429),
            tag="live", security=_BEARER_OR_QUERY,
            params=[_CAMERA_ID,
                    _query("fps", {"type": "number", "minimum": live_api.MIN_FPS, "maximum": live_api.MAX_FPS,
                                   "default": live_api.DEFAULT_FPS}, "at most this many frames a second"),
                    _query("width", {"type": "integer", "minimum": MIN_WIDTH, "maximum": MAX_WIDTH,
                                     "default": live_api.LIVE_WIDTH}, "at most this wide")])},
        "/api/v1/cameras/{camera_id}/live.mp4": {"get": _operation(
            "liveMp4", "Live view at the camera's own quality: fragmented MP4 of its stream, never re-encoded", o,
            _responses({"200": {"description": "endless fragmented MP4 (ftyp + moov, then moof + mdat per frame, from "
                                               "a key frame); a <video> plays it directly, or through Media Source "
                                               "Extensions. It ends when the stream breaks or reopens (reconnect)",
                                "headers": {
                                    "X-Codecs": {"schema": {"type": "string"},
                                                 "description": "RFC 6381 codec string of the stream (avc1.64001f, "
                                                                "hvc1.1.6.L93.B0): ask the browser whether it plays "
                                                                "video/mp4; codecs=\"...\" before playing"},
                                    "X-Live-Wall-Offset": {"schema": {"type": "string"},
                                                           "description": "seconds (Unix time): a frame of media "
                                                                          "time t was captured (X-Live-Clock) or "
                                                                          "reached the gateway at about t + "
                                                                          "this (when the answer began): the page's "
                                                                          "latency"},
                                    "X-Live-Clock": {"schema": {"type": "string", "enum": ["capture", "receipt"]},
                                                     "description": "the offset's clock: capture (the camera's "
                                                                    "RTCP sender reports, when consistent) or "
                                                                    "receipt at the gateway"}},
                                "content": {"video/mp4": {"schema": {"type": "string"}}}}},
                       *_API, 400, 403, 404, 429, 503, 504),
            tag="live", security=_BEARER_OR_QUERY, params=[_CAMERA_ID],
            description="One connection to the camera however many viewers; a viewer too slow to take it skips to "
                        "the next key frame. Limits and audit as live.mjpeg's (live.view / live.end). The answer "
                        "begins once the stream's first key frame is there (its head names the codec); 503 when the "
                        "camera is not running or sends no key frame within 8 s (retry: the key frame is kept "
                        "meanwhile); 504 when the tier below that runs it does not answer. A camera of a tier below "
                        "or of another gateway of this tier is streamed from there (X-Relay-Hops).")},
        "/api/v1/cameras/{camera_id}/recordings": {"get": _operation(
            "listRecordings", "What is recorded of a camera: segments and the gaps between them, with reasons", o,
            _responses({"200": _json(_ref("RecordingList"), "the window's segments and gaps")},
                       *_API, 400, 403, 404, 422, 503, 504),
            tag="recordings",
            params=[_CAMERA_ID,
                    _query("since", {"type": "string", "format": "date-time"},
                           "window start, ISO 8601 (no offset: UTC); default: a day before until"),
                    _query("until", {"type": "string", "format": "date-time"},
                           "window end, ISO 8601; default: now (a window covers at most 31 days)")],
            description="Audited as recording.view.")},
        "/api/v1/cameras/{camera_id}/recording.mp4": {"get": _operation(
            "recordingMp4", "One MP4 (fast start) of a window of a camera's recording, at most an hour", o,
            _responses({"200": _MP4_FILE, **_MP4_RANGES}, *_API, 400, 403, 404, 422, 503, 504),
            tag="recordings", security=_BEARER_OR_QUERY,
            params=[_CAMERA_ID, _DOWNLOAD,
                    {**_query("start", {"type": "string", "format": "date-time"},
                              "window start, ISO 8601 (no offset: UTC)"), "required": True},
                    _query("end", {"type": "string", "format": "date-time"},
                           "window end, ISO 8601; default: a minute after start; at most an hour after it")],
            description="Cut at the key frame at or before start (earlier frames hidden by an edit list) and after "
                        "the last frame before end; the camera's own codec, resolution and bitrate. 404: nothing "
                        "recorded in the window; 422: a window reversed or longer than an hour; 503: too many "
                        "exports at once; 504: the tier below that runs the camera did not answer. A camera of a "
                        "tier below (or another gateway of this tier) is played from there, through the chain. "
                        "Audited as recording.view.")},
        "/api/v1/events": {"get": _operation(
            "eventHistory", "Past events, newest first", o,
            _responses({"200": _json(_ref("EventPage"), "one page")}, *_API, 400, 403), tag="events",
            security=_BEARER_OR_QUERY,
            params=[*events_filter,
                    _query("before", _EVENT_ID_SCHEMA, "only events older than this event id (next_before)"),
                    _query("since", _EVENT_ID_SCHEMA, "only events newer than this event id"), _LIMIT])},
        "/api/v1/events/ws": {"get": _operation(
            "eventsWebSocket", "Live events over WebSocket, one JSON event per text message", o,
            _responses({"101": {"description": "switched to WebSocket; each message is one Event"}},
                       *_API, 400, 403),
            tag="events", security=_BEARER_OR_QUERY,
            description="A request without the WebSocket upgrade headers is answered 400.",
            params=[*events_filter, _query("since", _EVENT_ID_SCHEMA, "resume after this event id")])},
        "/api/v1/events/stream": {"get": _operation(
            "eventsStream", "Live events as Server-Sent Events (event: type, id: event id, data: Event)", o,
            _responses({"200": {"description": "endless text/event-stream; the schema is that of each event "
                                               "(comments keep the connection alive)",
                                "content": {"text/event-stream": {"schema": _ref("EventMessage")}}}},
                       *_API, 400, 403),
            tag="events", security=_BEARER_OR_QUERY,
            params=[*events_filter, _query("since", _EVENT_ID_SCHEMA, "resume after this event id"),
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _EVENT_ID_SCHEMA,
                     "description": "resume after this event id (what EventSource sends when it reconnects)"}])},
        "/api/v1/events/{event_id}": {"get": _operation(
            "getEvent", "One event", o, _responses({"200": _json(_ref("Event"), "the event")}, *_API, 400, 403, 404),
            tag="events", security=_BEARER_OR_QUERY, params=[_EVENT_ID])},
        "/api/v1/events/{event_id}/snapshot.jpg": {"get": _operation(
            "eventSnapshot", "The JPEG kept with an event (box drawn); every opening is audited", o,
            _responses({"200": jpeg}, *_API, 400, 403, 404), tag="events", security=_BEARER_OR_QUERY,
            params=[_EVENT_ID])},
        "/api/v1/events/{event_id}/clip.mp4": {"get": _operation(
            "eventClip", "The recording around an event: its camera's pre_s before it to post_s after it", o,
            _responses({"200": _MP4_FILE, **_MP4_RANGES}, *_API, 400, 403, 404, 422, 503, 504), tag="recordings",
            security=_BEARER_OR_QUERY, params=[_EVENT_ID, _DOWNLOAD],
            description="pre_s and post_s are the camera's recording settings (the tier's defaults for a camera no "
                        "longer registered). 404: no such event, or nothing recorded around it. Audited as "
                        "clip.view.")},
        "/api/v1/nodes": {"get": _operation(
            "listNodes", "The tree below this tier (or the token's jurisdiction), rolled up", v,
            _responses({"200": _json(_ref("Node"), "the root node")}, *_API, 400, 404), tag="nodes",
            params=[_depth()])},
        "/api/v1/nodes/{code}": {"get": _operation(
            "getNode", "One node with its subtree's figures", v,
            _responses({"200": _json(_ref("Node"), "the node")}, *_API, 400, 404), tag="nodes",
            params=[_path("code", {"type": "string", "pattern": r"^[0-9]+$"}, "node code (padded form accepted)"),
                    _depth()])},
        "/api/v1/cameras/{camera_id}/counts": {"get": _operation(
            "cameraCounts", "A camera's line crossings and zone events per bucket, with zone occupancy", v,
            _responses({"200": _json(_ref("CameraCounts"), "the counts")}, *_API, 400, 404, 422), tag="counts",
            params=[_CAMERA_ID, *_count_window()],
            description="Also for a camera of a tier below: its events are counted at every tier they reach.")},
        "/api/v1/nodes/{code}/counts": {"get": _operation(
            "nodeCounts", "Line crossings and zone events summed over a node's subtree, per bucket", v,
            _responses({"200": _json(_ref("NodeCounts"), "the counts")}, *_API, 400, 404, 422), tag="counts",
            params=[_path("code", {"type": "string", "pattern": r"^[0-9]+$"}, "node code (padded form accepted)"),
                    *_count_window()])},
        "/api/v1/nodes/names": {
            "get": _operation("getNodeNames", "Every node name in the token's jurisdiction", v,
                              _responses({"200": _json(_ref("NodeNames"), "code -> name")}, *_API), tag="nodes"),
            "put": _operation(
                "putNodeNames", "Load node names; rows outside the jurisdiction or malformed are refused", a,
                _responses({"200": _json(_ref("NodeNamesResult"), "what was stored and refused")},
                           *_API, 400, 403, 413, 422),
                tag="nodes", body=_names_body(),
                params=[_query("replace", {"type": "boolean"}, "replace every name in the jurisdiction "
                                                               "(refused unless every row is good)")]),
        },
        "/api/v1/bridge": {"get": _operation(
            "bridge", "Forwarding lag to the parent tier and the tiers registered below", v,
            _responses({"200": _json(_ref("BridgeReport"), "the bridge")}, *_API), tag="tiers")},
        "/api/v1/gateways": {"get": _operation(
            "listGateways", "The gateways sharing this tier's cameras: cameras, load, capacity, last seen", o,
            _responses({"200": _json(_ref("GatewayList"), "the gateways")}, *_API, 403), tag="tiers")},
        "/api/v1/tiers/children": {
            "post": _operation(
                "grantChild", "Make (or replace) a child tier's uplink credential; the URL is shown once", a,
                _responses({"201": _json(_ref("ChildGrant"), "the grant and the child's uplink URL")},
                           *_API, 400, 403, 409, 413, 422),
                tag="tiers", body=_body(_ref("ChildGrantCreate"), "the child tier")),
            "get": _operation(
                "listChildren", "Granted and connected child tiers, with what the intake refused", a,
                _responses({"200": _json(_ref("ChildList"), "the children")}, *_API, 403), tag="tiers"),
        },
        "/api/v1/tiers/children/{node}": {
            "parameters": [_path("node", {"type": "string"}, "the child tier's node code")],
            "delete": _operation(
                "revokeChild", "Revoke a child tier's uplink credential at once", a,
                _responses({"204": {"description": "revoked: its connections are closed"}}, *_API, 403, 404),
                tag="tiers"),
        },
        "/api/v1/tokens": {
            "post": _operation(
                "createToken", "Create a token (the secret is shown once)", a,
                _responses({"201": {**_json(_ref("TokenCreated"), "the token and its secret"),
                                    "links": _links("token_id", "getToken", "revokeToken")}},
                           *_API, 400, 403, 413, 422),
                tag="tokens", body=_body(_ref("TokenCreate"), "the new token")),
            "get": _operation(
                "listTokens", "Tokens whose jurisdiction lies in the caller's", a,
                _responses({"200": _json(_ref("TokenList"), "the tokens")}, *_API, 400, 403), tag="tokens",
                params=[_NODE, _query("active", {"enum": ["true", "false"]}, "only active (or only inactive) tokens")]),
        },
        "/api/v1/tokens/{token_id}": {
            "parameters": [_TOKEN_ID],
            "get": _operation("getToken", "One token's record (never its secret)", a,
                              _responses({"200": _json(_ref("Token"), "the token")}, *_API, 400, 403, 404),
                              tag="tokens"),
            "delete": _operation(
                "revokeToken", "Revoke a token and the tokens made with it", a,
                _responses({"200": _json(_ref("TokenRevoked"), "what was revoked")}, *_API, 400, 403, 404),
                tag="tokens"),
        },
        "/api/v1/audit": {"get": _operation(
            "audit", "The audit trail of the jurisdiction, newest first", a,
            _responses({"200": _json(_ref("AuditPage"), "one page")}, *_API, 400, 403), tag="audit",
            params=[_NODE,
                    _query("action", {"type": "array", "items": {"type": "string",
                                                                 "pattern": audit_api.ACTION_PATTERN}},
                           "actions (camera.create) or prefixes (camera.*), repeated or comma-separated",
                           style="form", explode=True),
                    _query("actor", {"type": "string", "maxLength": audit_api.ACTOR_MAX}, "token id of the actor"),
                    _query("target", {"type": "string", "maxLength": audit_api.TARGET_MAX}, "the target"),
                    _LIMIT,
                    _query("since", {"type": "string"}, "after this audit id (this tier's) or ISO 8601 time"),
                    _query("before", {"type": "string"}, "before this cursor/audit id or ISO 8601 time")])},
    }


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": {_JSON: {"schema": schema}}}


def _count_window() -> list[dict[str, Any]]:
    return [
        _query("since", {"type": "string", "format": "date-time"},
               f"start (ISO 8601, rounded down to the minute); default until - {counts_api.DEFAULT_WINDOW_S} s; at "
               f"most {MAX_WINDOW_S // 86400} days before until, and within the {COUNTS_TTL_S // 86400} days kept"),
        _query("until", {"type": "string", "format": "date-time"}, "end (ISO 8601, rounded up to the minute); "
                                                                   "default now"),
        _query("bucket", {"type": "integer", "minimum": BUCKET_MIN_S, "maximum": BUCKET_MAX_S,
                          "multipleOf": MINUTE_S, "default": counts_api.DEFAULT_BUCKET_S},
               f"seconds per bucket (whole minutes); at most {MAX_BUCKETS} buckets"),
    ]


def _depth() -> dict[str, Any]:
    return _query("depth", {"type": "integer", "minimum": 0, "maximum": nodes_api.MAX_DEPTH},
                  "levels of children to include (absent: all)")


def _bulk_body() -> dict[str, Any]:
    csv = {"schema": {"type": "string", "description": "a header row naming some of " + ", ".join(CSV_COLUMNS)
                      + "; labels separated by ; or |"}}
    return {"required": True,
            "description": f"at most {BULK_MAX_ROWS} rows, {cameras_api.BULK_BODY_MAX >> 20} MiB",
            "content": {_JSON: {"schema": {"type": "array", "maxItems": BULK_MAX_ROWS, "items": _ref("CameraCreate")}},
                        **{t: csv for t in cameras_api.CSV_TYPES}}}


def _names_body() -> dict[str, Any]:
    csv = {"schema": {"type": "string", "description": "CSV with a header naming the columns code and name"}}
    return {"required": True, "description": f"at most {nodes_api.NAMES_BODY_MAX >> 20} MiB",
            "content": {_JSON: {"schema": _ref("NodeNamesBody")}, **{t: csv for t in nodes_api.CSV_TYPES}}}


def _error_responses() -> dict[str, Any]:
    return {f"E{status}": {"description": why, "content": {_JSON: {"schema": _ref("Error")}}}
            for status, why in _WHY.items()}


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sharp Eyes gateway",
            "version": VERSION,
            "description": "One tier of the Sharp Eyes video network: cameras, events, live views, nodes, tokens "
                           "and the audit trail. Every /api/v1 call needs a bearer token; a token has a role "
                           f"({', '.join(_ROLES)}: `x-role` on each operation is the least it needs) and a "
                           "jurisdiction: a node code whose subtree alone it sees and changes. Request bodies "
                           f"are JSON unless stated, at most {JSON_BODY_MAX >> 20} MiB; source URLs at most "
                           f"{MAX_URL_LENGTH} characters. An empty query parameter counts as absent.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in ("meta", "cameras", "live", "recordings", "events", "nodes", "counts", "tiers",
                                        "tokens", "audit")],
        "paths": _paths(),
        "components": {
            "schemas": {**_camera_schemas(), "Event": _event_schema(), **_token_schemas(), **_node_schemas(),
                        **_counts_schemas(), **_misc_schemas()},
            "responses": _error_responses(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <token> (the tier's admin token or one from "
                                          "POST /api/v1/tokens)"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                               "description": "the same token as ?token=, for the GETs browsers make without "
                                              "headers: /api/v1/events... and .jpg/.mjpeg"},
            },
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this gateway's HTTP API (a fresh copy)."""
    return copy.deepcopy(_document())


@functools.cache
def _encoded() -> bytes:
    return json.dumps(_document(), ensure_ascii=False, separators=(",", ":")).encode()


async def handle(request: web.Request) -> web.Response:
    """The description, open like the page: it holds no data of this tier."""
    return web.Response(body=_encoded(), content_type=_JSON, charset="utf-8")
