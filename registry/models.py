"""Camera records and the request bodies that create and change them (pydantic v2)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from registry.ids import validate_camera_id
from registry.urls import MAX_URL_LENGTH, SourceError, check_url, parse_source, redact_url, scrub
from tiers.nodes import normalize_node

__all__ = [
    "AnalyticsPatch",
    "AnalyticsSettings",
    "Camera",
    "CameraCreate",
    "CameraPatch",
    "Location",
    "error_details",
    "validate_sources",
]

# Inputs may hold camera passwords: keep them out of ValidationError's str() (error_details
# also drops them from the structured form).
_CONFIG = ConfigDict(extra="forbid", hide_input_in_errors=True, allow_inf_nan=False)

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
Epoch = Annotated[float, Field(ge=0, le=32503680000)]  # up to year 3000

_DESC = {
    "fps": "frames analysed per second (0.1..30)",
    "labels": "detector labels to report (at most 80); null reports every label",
    "min_score": "minimum detection confidence to report (0.05..0.99)",
    "motion_threshold": "fraction of changed pixels that opens the motion gate (0..1); null uses the default",
    "id": "GB/T 28181 20-digit camera code (type 131 or 132)",
    "name": "human-readable camera name (1..128 characters)",
    "node": "administrative node code the camera belongs to (2/4/6/9/12 digits, padded form accepted)",
    "url": "main stream: rtsp://, rtsps:// or file: inside a media folder; may hold credentials",
    "substream_url": "optional low-resolution stream used for analysis; same rules as url",
    "enabled": "whether the gateway ingests and analyses this camera",
    "location": "WGS-84 position of the camera",
    "analytics": "analysis settings",
}


def _dedupe(labels: list[str] | None) -> list[str] | None:
    if labels is None:
        return None
    # Order kept: it is what the administrator typed and what the API shows back.
    return list(dict.fromkeys(labels))


def _check_node(value: str) -> str:
    return normalize_node(value)


def _check_url(value: str | None) -> str | None:
    return None if value is None else check_url(value)


class AnalyticsSettings(BaseModel):
    """How a camera's frames are analysed."""

    model_config = _CONFIG

    fps: Fps = Field(5.0, description=_DESC["fps"])
    labels: Labels | None = Field(None, description=_DESC["labels"])
    min_score: Score = Field(0.4, description=_DESC["min_score"])
    motion_threshold: Threshold | None = Field(None, description=_DESC["motion_threshold"])

    _dedupe_labels = field_validator("labels")(_dedupe)


class AnalyticsPatch(BaseModel):
    """A partial change to AnalyticsSettings; only the keys present are changed."""

    model_config = _CONFIG

    fps: Fps | None = Field(None, description=_DESC["fps"])
    labels: Labels | None = Field(None, description=_DESC["labels"])
    min_score: Score | None = Field(None, description=_DESC["min_score"])
    motion_threshold: Threshold | None = Field(None, description=_DESC["motion_threshold"])

    _dedupe_labels = field_validator("labels")(_dedupe)

    @field_validator("fps", "min_score")
    @classmethod
    def _not_null(cls, value: float | None) -> float:
        # Runs only for keys the client sent: an explicit null cannot mean "unset" here.
        if value is None:
            raise ValueError("may not be null")
        return value


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
    def _check_id(cls, value: str | None) -> str | None:
        return None if value is None else validate_camera_id(value)


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


class CameraPatch(BaseModel):
    """A partial change to a camera; keys absent are kept, null clears the optional ones."""

    model_config = _CONFIG

    name: Name | None = Field(None, description=_DESC["name"])
    node: NodeCode | None = Field(None, description=_DESC["node"])
    url: Url | None = Field(None, description=_DESC["url"])
    substream_url: Url | None = Field(None, description=_DESC["substream_url"] + "; null removes it")
    enabled: bool | None = Field(None, description=_DESC["enabled"])
    location: Location | None = Field(None, description=_DESC["location"] + "; null removes it")
    analytics: AnalyticsPatch | None = Field(None, description=_DESC["analytics"] + "; only keys present change")

    _urls = field_validator("url", "substream_url")(_check_url)

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("may not be null")
        return normalize_node(value)

    @field_validator("name", "enabled", "analytics", "url")
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
        merged = {**current, **change, "analytics": {**current["analytics"], **analytics_change}}
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
