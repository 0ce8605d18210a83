"""Camera records and the request bodies that create and change them (pydantic v2)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from analytics.rules import MAX_POINTS, polygon_error
from registry.ids import id_in_node_division, validate_camera_id
from registry.urls import MAX_URL_LENGTH, SourceError, check_url, parse_source, redact_url, scrub
from tiers.nodes import normalize_node

__all__ = [
    "AnalyticsPatch",
    "AnalyticsSettings",
    "Camera",
    "CameraCreate",
    "CameraPatch",
    "Location",
    "QualityPatch",
    "QualitySettings",
    "RecordingChoice",
    "error_details",
    "validate_sources",
]

# Inputs may hold camera passwords: keep them out of ValidationError's str() (error_details
# also drops them from the structured form).
_CONFIG = ConfigDict(extra="forbid", hide_input_in_errors=True, allow_inf_nan=False)


def _drop_null(prop: dict[str, Any]) -> None:
    branches = [b for b in prop.pop("anyOf", []) if b != {"type": "null"}]
    if len(branches) == 1:
        prop.update(branches[0])
    elif branches:
        prop["anyOf"] = branches


def _patch_schema(*not_null: str) -> Callable[[dict[str, Any]], None]:
    """The JSON Schema of a patch model: a key left out keeps its value (so no `default` is shown), and the
    keys in `not_null` (every key when none is named) refuse an explicit null (so their schema has none)."""
    def hook(schema: dict[str, Any]) -> None:
        for name, prop in schema.get("properties", {}).items():
            prop.pop("default", None)
            if not not_null or name in not_null:
                _drop_null(prop)
    return hook

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_NO_CONTROL),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=_NO_CONTROL),
]
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_URL_LENGTH)]
NodeCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=16)]
Fps = Annotated[float, Field(ge=0.1, le=30)]
Score = Annotated[float, Field(ge=0.05, le=0.99)]
Threshold = Annotated[float, Field(ge=0, le=1)]
Labels = Annotated[list[Label], Field(max_length=80)]
Priority = Literal["low", "normal", "high"]
Epoch = Annotated[float, Field(ge=0, le=32503680000)]  # up to year 3000

_DESC = {
    "fps": "frames analysed per second (0.1..30)",
    "labels": "detector labels to report (at most 80); null reports every label",
    "min_score": "minimum detection confidence to report (0.05..0.99)",
    "motion_threshold": "fraction of changed pixels that opens the motion gate (0..1); null uses the default",
    "priority": "who is shed first when the gateway cannot analyse every camera at its rate: low, normal or "
                "high (a high camera's share is 4x a normal one's, 16x a low one's; none is shed to nothing)",
    "id": "GB/T 28181 20-digit camera code (type 131 or 132)",
    "name": "human-readable camera name (1..128 characters)",
    "node": "administrative node code the camera belongs to (2/4/6/9/12 digits, padded form accepted)",
    "url": "main stream: rtsp://, rtsps:// or file: inside a media folder; may hold credentials",
    "substream_url": "optional low-resolution stream used for analysis; same rules as url",
    "enabled": "whether the gateway ingests and analyses this camera",
    "location": "WGS-84 position of the camera",
    "analytics": "analysis settings",
    "gateway": "pin the camera to this gateway of the tier (its gateway_id); null: the tier places it where "
               "there is room",
    "recording": "video recording of the camera's own stream (the main stream when there is a substream), remuxed, "
                 "never re-encoded; a key absent or null takes the tier's default (recordings.* settings)",
}
GatewayId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def _dedupe(labels: list[str] | None) -> list[str] | None:
    if labels is None:
        return None
    # Order kept: it is what the administrator typed and what the API shows back.
    return list(dict.fromkeys(labels))


def _check_node(value: str) -> str:
    return normalize_node(value)


def _check_url(value: str | None) -> str | None:
    return None if value is None else check_url(value)


#: Video quality checks (analytics/quality.py FAULTS); a camera may switch single ones off.
QualityCheck = Literal[
    "signal_loss", "frozen", "blur", "too_dark", "overexposed", "low_contrast", "colour_cast", "occlusion",
    "scene_change",
]

_Hold = Annotated[float, Field(ge=0.5, le=600)]
_Interval = Annotated[float, Field(ge=0.2, le=60)]
_Share = Annotated[float, Field(ge=0.05, le=1)]
_Luma = Annotated[float, Field(ge=0, le=255)]
_Checks = Annotated[list[QualityCheck], Field(max_length=9)]

# Defaults mirror analytics.quality.QualityConfig (a test pins them together).
_QDESC = {
    "enabled": "run video quality diagnosis on this camera",
    "interval_s": "seconds between diagnosed frames (0.2..60; under overload up to twice this, with the camera's "
                  "share): camera health needs seconds, not every frame",
    "disabled": "checks not run on this camera (signal_loss, frozen, blur, ...)",
    "min_duration_s": "seconds a fault must show (in 80 % of analysed frames) before its start event (0.5..600)",
    "clear_s": "seconds a fault must be gone before its end event (0.5..600)",
    "solid_fraction": "signal loss: share of the picture within 10 levels of one colour (0.5..1)",
    "frozen_s": "frozen: seconds in which every analysed frame shows the same picture (see frozen_delta); "
                "keep it above the camera's key-frame interval (1..3600)",
    "frozen_delta": "frozen: mean change (grey levels) of the flattest quarter of full-resolution sample pixels, "
                    "against the first frame of a still streak, below which frames show the same picture; "
                    "re-quantizing one picture stays below it, a live sensor's noise above (0..20)",
    "blur_index": "blur: re-blur index (0 sharp .. 1 featureless) at or above which the picture is blurred (0.05..1)",
    "dark_luma": "too dark: mean luma (0..255) below which the picture is too dark",
    "bright_luma": "overexposed: mean luma (0..255) above which the picture is overexposed",
    "clipped_fraction": "overexposed: or this share of pixels clipped white (0..1)",
    "min_contrast": "low contrast: (p95 - p5) / (p95 + p5) of luma below which contrast is low (0..1)",
    "cast_factor": "colour cast: mean chroma over chroma spread (CIELAB) above which the picture has a cast (0.1..20)",
    "occlusion_fraction": "occlusion: share of the baseline's textured areas gone flat (0.05..1)",
    "scene_change_fraction": "scene change: share of the reference view's textured areas that no longer match "
                             "(0.05..1)",
    "scene_confirm_s": "scene change: seconds the new view must hold before the start event (1..3600)",
    "scene_accept_s": "scene change: seconds after which the new view becomes the reference and the fault ends "
                      "(1..86400)",
}
_DESC["quality"] = "video quality diagnosis: which checks run and their thresholds"


def _dedupe_checks(checks: list[str] | None) -> list[str] | None:
    return None if checks is None else list(dict.fromkeys(checks))


class QualitySettings(BaseModel):
    """Video quality diagnosis of a camera: which checks run, and their thresholds."""

    model_config = _CONFIG

    enabled: bool = Field(True, description=_QDESC["enabled"])
    disabled: _Checks = Field(default_factory=list, description=_QDESC["disabled"])
    interval_s: _Interval = Field(1.0, description=_QDESC["interval_s"])
    min_duration_s: _Hold = Field(3.0, description=_QDESC["min_duration_s"])
    clear_s: _Hold = Field(3.0, description=_QDESC["clear_s"])
    solid_fraction: Annotated[float, Field(ge=0.5, le=1)] = Field(0.97, description=_QDESC["solid_fraction"])
    frozen_s: Annotated[float, Field(ge=1, le=3600)] = Field(10.0, description=_QDESC["frozen_s"])
    frozen_delta: Annotated[float, Field(ge=0, le=20)] = Field(1.2, description=_QDESC["frozen_delta"])
    blur_index: _Share = Field(0.36, description=_QDESC["blur_index"])
    dark_luma: _Luma = Field(40.0, description=_QDESC["dark_luma"])
    bright_luma: _Luma = Field(200.0, description=_QDESC["bright_luma"])
    clipped_fraction: Threshold = Field(0.15, description=_QDESC["clipped_fraction"])
    min_contrast: Threshold = Field(0.30, description=_QDESC["min_contrast"])
    cast_factor: Annotated[float, Field(ge=0.1, le=20)] = Field(1.20, description=_QDESC["cast_factor"])
    occlusion_fraction: _Share = Field(0.5, description=_QDESC["occlusion_fraction"])
    scene_change_fraction: _Share = Field(0.6, description=_QDESC["scene_change_fraction"])
    scene_confirm_s: Annotated[float, Field(ge=1, le=3600)] = Field(6.0, description=_QDESC["scene_confirm_s"])
    scene_accept_s: Annotated[float, Field(ge=1, le=86400)] = Field(120.0, description=_QDESC["scene_accept_s"])

    _dedupe_disabled = field_validator("disabled")(_dedupe_checks)

    @model_validator(mode="after")
    def _dark_below_bright(self) -> "QualitySettings":
        if self.dark_luma >= self.bright_luma:
            raise ValueError("dark_luma must be below bright_luma")
        return self


class QualityPatch(BaseModel):
    """A partial change to QualitySettings; only the keys present are changed."""

    model_config = ConfigDict(**_CONFIG, json_schema_extra=_patch_schema())

    enabled: bool | None = Field(None, description=_QDESC["enabled"])
    disabled: _Checks | None = Field(None, description=_QDESC["disabled"])
    interval_s: _Interval | None = Field(None, description=_QDESC["interval_s"])
    min_duration_s: _Hold | None = Field(None, description=_QDESC["min_duration_s"])
    clear_s: _Hold | None = Field(None, description=_QDESC["clear_s"])
    solid_fraction: Annotated[float, Field(ge=0.5, le=1)] | None = Field(None, description=_QDESC["solid_fraction"])
    frozen_s: Annotated[float, Field(ge=1, le=3600)] | None = Field(None, description=_QDESC["frozen_s"])
    frozen_delta: Annotated[float, Field(ge=0, le=20)] | None = Field(None, description=_QDESC["frozen_delta"])
    blur_index: _Share | None = Field(None, description=_QDESC["blur_index"])
    dark_luma: _Luma | None = Field(None, description=_QDESC["dark_luma"])
    bright_luma: _Luma | None = Field(None, description=_QDESC["bright_luma"])
    clipped_fraction: Threshold | None = Field(None, description=_QDESC["clipped_fraction"])
    min_contrast: Threshold | None = Field(None, description=_QDESC["min_contrast"])
    cast_factor: Annotated[float, Field(ge=0.1, le=20)] | None = Field(None, description=_QDESC["cast_factor"])
    occlusion_fraction: _Share | None = Field(None, description=_QDESC["occlusion_fraction"])
    scene_change_fraction: _Share | None = Field(None, description=_QDESC["scene_change_fraction"])
    scene_confirm_s: Annotated[float, Field(ge=1, le=3600)] | None = Field(None, description=_QDESC["scene_confirm_s"])
    scene_accept_s: Annotated[float, Field(ge=1, le=86400)] | None = Field(None, description=_QDESC["scene_accept_s"])

    _dedupe_disabled = field_validator("disabled")(_dedupe_checks)

    @field_validator("*")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for keys the client sent: an explicit null cannot mean "unset" here.
        if value is None:
            raise ValueError("may not be null")
        return value


RuleName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_NO_CONTROL)]
Coord = Annotated[float, Field(ge=0, le=1)]
XY = tuple[Coord, Coord]
Loiter = Annotated[float, Field(ge=1, le=86400)]
MAX_RULES = 16  # zones and lines of one camera together
MIN_LINE_LENGTH = 0.01  # a tripwire shorter than 1 % of the picture is a slip of the mouse, not a line

_RDESC = {
    "zones": f"areas (0..1 image coordinates) whose objects raise zone events: enter, leave, loiter; zones and lines "
             f"together at most {MAX_RULES}, names unique",
    "lines": "directed tripwires a -> b: an object's bottom centre crossing from the left of a -> b to its right, as "
             "seen in the image, is \"in\", the other way \"out\"",
    "rule_name": "the rule's name, carried in its events' `zone` field (1..64 characters)",
    "polygon": f"simple polygon, 3..{MAX_POINTS} [x, y] points in 0..1 of the picture (x right, y down)",
    "rule_labels": "detector labels the rule applies to; null: every label",
    "loiter_s": "an object inside this long raises one loiter event per visit (1..86400 s); null: none",
    "a": "start of the line, [x, y] in 0..1",
    "b": "end of the line, [x, y] in 0..1",
}


class ZoneRule(BaseModel):
    """An area of the picture: objects entering, leaving or loitering in it raise zone events."""

    model_config = _CONFIG

    name: RuleName = Field(description=_RDESC["rule_name"])
    polygon: Annotated[list[XY], Field(min_length=3, max_length=MAX_POINTS)] = Field(description=_RDESC["polygon"])
    labels: Labels | None = Field(None, description=_RDESC["rule_labels"])
    loiter_s: Loiter | None = Field(None, description=_RDESC["loiter_s"])

    _dedupe_labels = field_validator("labels")(_dedupe)

    @field_validator("polygon")
    @classmethod
    def _simple(cls, value: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if (why := polygon_error(value)) is not None:
            raise ValueError(why)
        return value


class LineRule(BaseModel):
    """A directed tripwire: objects crossing it raise line events with their direction."""

    model_config = _CONFIG

    name: RuleName = Field(description=_RDESC["rule_name"])
    a: XY = Field(description=_RDESC["a"])
    b: XY = Field(description=_RDESC["b"])
    labels: Labels | None = Field(None, description=_RDESC["rule_labels"])

    _dedupe_labels = field_validator("labels")(_dedupe)

    @model_validator(mode="after")
    def _long_enough(self) -> "LineRule":
        if math.dist(self.a, self.b) < MIN_LINE_LENGTH:
            raise ValueError(f"a and b must be at least {MIN_LINE_LENGTH} apart")
        return self


Zones = Annotated[list[ZoneRule], Field(max_length=MAX_RULES)]
Lines = Annotated[list[LineRule], Field(max_length=MAX_RULES)]


def _check_rules(zones: list[ZoneRule], lines: list[LineRule]) -> None:
    """At most MAX_RULES rules, and a name names one rule: its events carry it."""
    if len(zones) + len(lines) > MAX_RULES:
        raise ValueError(f"zones and lines: at most {MAX_RULES} rules in all, got {len(zones) + len(lines)}")
    names = [r.name for r in (*zones, *lines)]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"zones and lines: names must be unique, repeated: {', '.join(dup)}")


class AnalyticsSettings(BaseModel):
    """How a camera's frames are analysed."""

    model_config = _CONFIG

    fps: Fps = Field(5.0, description=_DESC["fps"])
    labels: Labels | None = Field(None, description=_DESC["labels"])
    min_score: Score = Field(0.4, description=_DESC["min_score"])
    motion_threshold: Threshold | None = Field(None, description=_DESC["motion_threshold"])
    priority: Priority = Field("normal", description=_DESC["priority"])
    quality: QualitySettings = Field(default_factory=QualitySettings, description=_DESC["quality"])
    zones: Zones = Field(default_factory=list, description=_RDESC["zones"])
    lines: Lines = Field(default_factory=list, description=_RDESC["lines"])

    _dedupe_labels = field_validator("labels")(_dedupe)

    @field_validator("lines")
    @classmethod
    def _rules(cls, lines: list[LineRule], info: ValidationInfo) -> list[LineRule]:
        # After zones (fields validate in order): the error names analytics.lines.
        _check_rules(info.data.get("zones") or [], lines)
        return lines


_ANALYTICS_NOT_NULL = ("fps", "min_score", "quality", "priority", "zones", "lines")  # labels, motion_threshold: null resets


class AnalyticsPatch(BaseModel):
    """A partial change to AnalyticsSettings; only the keys present are changed."""

    model_config = ConfigDict(**_CONFIG, json_schema_extra=_patch_schema(*_ANALYTICS_NOT_NULL))

    fps: Fps | None = Field(None, description=_DESC["fps"])
    labels: Labels | None = Field(None, description=_DESC["labels"])
    min_score: Score | None = Field(None, description=_DESC["min_score"])
    motion_threshold: Threshold | None = Field(None, description=_DESC["motion_threshold"])
    priority: Priority | None = Field(None, description=_DESC["priority"])
    quality: QualityPatch | None = Field(None, description=_DESC["quality"] + "; only keys present change")
    zones: Zones | None = Field(None, description=_RDESC["zones"] + "; the list given replaces the camera's")
    lines: Lines | None = Field(None, description=_RDESC["lines"] + "; the list given replaces the camera's")

    _dedupe_labels = field_validator("labels")(_dedupe)

    @field_validator(*_ANALYTICS_NOT_NULL)
    @classmethod
    def _not_null(cls, value: float | None) -> float:
        # Runs only for keys the client sent: an explicit null cannot mean "unset" here.
        if value is None:
            raise ValueError("may not be null")
        return value


# Ranges of a camera's recording settings (gateway/recording checks the same through these).
RETAIN_DAYS_RANGE = (1, 365)
PRE_S_RANGE = (0.0, 30.0)
POST_S_RANGE = (0.0, 120.0)
RecordingMode = Literal["off", "events", "continuous"]
RetainDays = Annotated[int, Field(ge=RETAIN_DAYS_RANGE[0], le=RETAIN_DAYS_RANGE[1])]
PreS = Annotated[float, Field(ge=PRE_S_RANGE[0], le=PRE_S_RANGE[1])]
PostS = Annotated[float, Field(ge=POST_S_RANGE[0], le=POST_S_RANGE[1])]

_RECDESC = {
    "mode": "off; events: pre_s before and post_s after each detection track; continuous",
    "retain_days": f"days recordings are kept ({RETAIN_DAYS_RANGE[0]}..{RETAIN_DAYS_RANGE[1]}; the disk budget may "
                   "remove them sooner)",
    "pre_s": f"events mode: seconds kept before a track appears ({PRE_S_RANGE[0]:g}..{PRE_S_RANGE[1]:g}); also an "
             "event clip's lead",
    "post_s": f"events mode: seconds kept after a track leaves ({POST_S_RANGE[0]:g}..{POST_S_RANGE[1]:g}); also an "
              "event clip's tail",
}


class RecordingChoice(BaseModel):
    """A camera's recording settings; a key absent or null takes the tier's default (recordings.*).

    In a PATCH only the keys present change, and null returns a key to the tier's default."""

    model_config = ConfigDict(**_CONFIG, frozen=True)

    mode: RecordingMode | None = Field(None, description=_RECDESC["mode"])
    retain_days: RetainDays | None = Field(None, description=_RECDESC["retain_days"])
    pre_s: PreS | None = Field(None, description=_RECDESC["pre_s"])
    post_s: PostS | None = Field(None, description=_RECDESC["post_s"])


class Location(BaseModel):
    """A WGS-84 position."""

    model_config = _CONFIG

    lat: float = Field(ge=-90, le=90, description="latitude in degrees (-90..90)")
    lon: float = Field(ge=-180, le=180, description="longitude in degrees (-180..180)")


class _CameraFields(BaseModel):
    """Fields shared by the create body and the stored record."""

    model_config = _CONFIG

    name: Name = Field(description=_DESC["name"])
    node: NodeCode = Field(description=_DESC["node"])
    url: Url = Field(description=_DESC["url"])
    substream_url: Url | None = Field(None, description=_DESC["substream_url"])
    enabled: bool = Field(True, description=_DESC["enabled"])
    location: Location | None = Field(None, description=_DESC["location"])
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings, description=_DESC["analytics"])
    gateway: GatewayId | None = Field(None, description=_DESC["gateway"])
    recording: RecordingChoice = Field(default_factory=RecordingChoice, description=_DESC["recording"])

    _node = field_validator("node")(_check_node)
    _urls = field_validator("url", "substream_url")(_check_url)

    def __repr_args__(self):  # type: ignore[override]
        # Models end up in logs and tracebacks: show URLs redacted.
        for key, value in super().__repr_args__():
            if key in ("url", "substream_url") and isinstance(value, str):
                value = redact_url(value)
            yield key, value


class CameraCreate(_CameraFields):
    """Body of a request that registers a camera; `id` is generated when absent."""

    id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = Field(
        None, description=_DESC["id"]
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        validate_camera_id(value)
        node = info.data.get("node")  # validated before the id (declared first); absent when invalid
        return value if node is None else id_in_node_division(value, node)


class Camera(_CameraFields):
    """A stored camera record, credentials included; use public_dict() for anything shown."""

    model_config = ConfigDict(**_CONFIG, frozen=True)

    id: Annotated[str, StringConstraints(max_length=32)] = Field(description=_DESC["id"])
    created_at: Epoch = Field(description="when the camera was registered (Unix epoch seconds)")
    updated_at: Epoch = Field(description="when the record last changed (Unix epoch seconds)")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return validate_camera_id(value)

    @classmethod
    def from_create(cls, data: CameraCreate, *, camera_id: str | None = None, now: float | None = None) -> Camera:
        """The record for a create body; `camera_id` is used when the body has no id."""
        cid = data.id or camera_id
        if cid is None:
            raise ValueError("camera id missing: the body has none and none was generated")
        ts = time.time() if now is None else now
        fields = data.model_dump(exclude={"id"})
        return cls.model_validate({**fields, "id": cid, "created_at": ts, "updated_at": ts})

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready dict with credentials in the URLs masked."""
        # id first: it is what people scan for in a listing.
        out = {"id": self.id, **self.model_dump(mode="json", exclude={"id"})}
        out["url"] = redact_url(self.url)
        if self.substream_url is not None:
            out["substream_url"] = redact_url(self.substream_url)
        return out

    def to_json(self) -> str:
        """Full JSON with credentials, for storage in Redis only."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Camera:
        """Inverse of to_json()."""
        return cls.model_validate_json(data)


_CAMERA_NOT_NULL = ("name", "enabled", "analytics", "url", "recording")  # substream_url and location: null removes them


class CameraPatch(BaseModel):
    """A partial change to a camera; keys absent are kept, null clears the optional ones."""

    model_config = ConfigDict(**_CONFIG, json_schema_extra=_patch_schema("node", *_CAMERA_NOT_NULL))

    name: Name | None = Field(None, description=_DESC["name"])
    node: NodeCode | None = Field(None, description=_DESC["node"])
    url: Url | None = Field(None, description=_DESC["url"])
    substream_url: Url | None = Field(None, description=_DESC["substream_url"] + "; null removes it")
    enabled: bool | None = Field(None, description=_DESC["enabled"])
    location: Location | None = Field(None, description=_DESC["location"] + "; null removes it")
    analytics: AnalyticsPatch | None = Field(None, description=_DESC["analytics"] + "; only keys present change")
    gateway: GatewayId | None = Field(None, description=_DESC["gateway"] + "; null unpins it")
    recording: RecordingChoice | None = Field(None, description=_DESC["recording"] + "; only keys present change")

    _urls = field_validator("url", "substream_url")(_check_url)

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("may not be null")
        return normalize_node(value)

    @field_validator(*_CAMERA_NOT_NULL)
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Field validators run only for keys the client sent, so None here is an explicit null.
        if value is None:
            raise ValueError("may not be null")
        return value

    def __repr_args__(self):  # type: ignore[override]
        for key, value in super().__repr_args__():
            if key in ("url", "substream_url") and isinstance(value, str):
                value = redact_url(value)
            yield key, value

    def apply(self, camera: Camera, *, now: float | None = None) -> Camera:
        """A new Camera with this patch applied; the result is validated again."""
        current = camera.model_dump()
        change = self.model_dump(exclude_unset=True)
        analytics_change = change.pop("analytics", None) or {}
        quality_change = analytics_change.pop("quality", None) or {}
        analytics = {**current["analytics"], **analytics_change,
                     "quality": {**current["analytics"]["quality"], **quality_change}}
        recording = {**current["recording"], **(self.recording.model_dump(exclude_unset=True) if self.recording else {})}
        change.pop("recording", None)
        merged = {**current, **change, "analytics": analytics, "recording": recording}
        ts = time.time() if now is None else now
        # Never move updated_at backwards (clock steps, a stale `now`): readers compare it.
        merged["updated_at"] = max(ts, camera.updated_at)
        return Camera.model_validate(merged)


def validate_sources(camera: _CameraFields, media_dirs: Sequence[Path]) -> None:
    """Check that url and substream_url are allowed sources; raise SourceError naming the field."""
    for field in ("url", "substream_url"):
        value = getattr(camera, field)
        if value is None:
            continue
        try:
            parse_source(value, media_dirs)
        except SourceError as exc:
            raise SourceError(f"{field}: {exc}") from None


def error_details(exc: ValidationError) -> list[dict[str, Any]]:
    """ValidationError as a JSON-ready list of {loc, msg, type}, without input values or secrets."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append({"loc": loc, "msg": scrub(msg), "type": err["type"]})
    return out
