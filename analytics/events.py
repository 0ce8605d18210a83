"""The event: one JSON object, the same on every tier and every transport (DESIGN §4)."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fastjsonschema

EVENT_TYPES = ("detection", "motion", "quality", "status", "zone", "line")
EVENT_SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "event.schema.json"  # the wire form's JSON Schema


@functools.cache
def event_schema() -> dict[str, Any]:
    """The JSON Schema of an event's wire form."""
    return json.loads(EVENT_SCHEMA_PATH.read_text())


@functools.cache
def _validator() -> Any:
    # Compiled to Python once: ~11 µs an event, where jsonschema's validator took ~160 (a parent checks every
    # event its children send). The schema keeps to keywords both understand (draft 7's).
    return fastjsonschema.compile(event_schema())


def event_error(d: Any) -> str | None:
    """How `d` (an event's wire form from elsewhere, e.g. a child tier) breaks the schema, or None."""
    try:
        _validator()(d)
    except fastjsonschema.JsonSchemaException as e:
        return str(e.message)[:160]
    return None


def iso_ms(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z suffix."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event was first written: tier node code and gateway instance."""

    node: str
    gateway: str


@dataclass(frozen=True, slots=True)
class Event:
    """One event; optional fields that do not apply stay None and are omitted on the wire."""

    type: str
    camera_id: str
    node: str
    ts: str  # capture time, UTC ISO 8601 with ms
    origin: Origin
    id: str | None = None  # "<origin node>-<redis stream entry id>", set once written
    label: str | None = None
    score: float | None = None
    box: tuple[float, float, float, float] | None = None
    track_id: int | None = None
    zone: str | None = None  # zone and line events: the rule's name
    direction: str | None = None  # line events: "in" (left of a -> b to its right, as seen) or "out"
    snapshot: str | None = None
    model: str | None = None
    media_ts: float | None = None
    phase: str | None = None  # detection: start | update | end; motion/quality: start | end; zone: enter | leave | loiter
    state: str | None = None  # status events: the camera's new state
    reason: str | None = None  # status/quality events: why (credentials already stripped)
    extra: dict[str, Any] = field(default_factory=dict)  # quality scores, resolution, ...

    def to_dict(self) -> dict[str, Any]:
        """Wire form: omit fields that do not apply."""
        # Field by field rather than dataclasses.asdict, whose deep copy was most of the cost of an event's
        # JSON (every published event pays it on the event loop).
        out: dict[str, Any] = {}
        for k in _EVENT_FIELDS:
            v = getattr(self, k)
            if v is None or (k == "extra" and not v):
                continue
            if k == "box":
                v = [round(float(x), 4) for x in v]
            elif k == "score":
                v = round(float(v), 4)
            elif k == "origin":
                v = {"node": v.node, "gateway": v.gateway}
            elif k == "extra":
                v = copy.deepcopy(v)
            out[k] = v
        return out

    def to_json(self) -> str:
        """Compact JSON of the wire form."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    def with_id(self, event_id: str, snapshot: str | None) -> "Event":
        """Copy with the id (and snapshot URL) assigned when it was written."""
        return replace(self, id=event_id, snapshot=snapshot)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Event":
        """Parse the wire form (trusted: it comes from our own Redis)."""
        d = dict(d)
        origin = d.pop("origin")
        box = d.pop("box", None)
        known = {f for f in cls.__slots__}  # type: ignore[attr-defined]
        kwargs = {k: v for k, v in d.items() if k in known}
        return cls(origin=Origin(**origin), box=tuple(box) if box else None, **kwargs)


_EVENT_FIELDS = tuple(f.name for f in fields(Event))  # wire order
