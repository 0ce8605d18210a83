"""Settings, records and errors of the recording library (issue 11).

Times are wall-clock UTC seconds since the epoch (floats) everywhere in the API: operators ask for
"ten minutes ago", and a packet's wall time is its arrival time mapped through its pts (recorder.py).
The dictionaries for the HTTP layer write them as ISO 8601 with milliseconds and a Z (`iso_ms`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from analytics.events import iso_ms
from registry.ids import CameraIdError, validate_camera_id
from registry.models import POST_S_RANGE, PRE_S_RANGE, RETAIN_DAYS_RANGE
from registry.urls import scrub

MAX_WINDOW_S = 3600.0  # one exported MP4 covers at most an hour (the issue; ~1.8 GB at 4 Mbit/s)
# A listing may span a month (a timeline UI scrolls by days); its rows are capped by MAX_LIST_ROWS.
MAX_LIST_WINDOW_S = 31 * 86400.0
MAX_LIST_ROWS = 20_000  # segments per listing: a month of 60 s segments is 44,640, so long windows are cut
DETAIL_MAX = 200  # characters of a gap's detail (a stream error's message) kept in the index


class RecordingError(Exception):
    """A recording or playback operation failed; the message is safe to show (no credentials)."""


class BadCameraId(RecordingError, ValueError):
    """A camera id that is not a 20-digit GB/T 28181 camera code (never used to build a path)."""


class WindowError(RecordingError, ValueError):
    """A time window that is empty, reversed, not finite, or longer than allowed."""


class SettingsError(RecordingError, ValueError):
    """Recording settings outside their ranges."""


class NoRecording(RecordingError):
    """Nothing is recorded for the camera in the asked window."""


class Mode(str, Enum):
    """What a camera records."""

    OFF = "off"
    EVENTS = "events"  # pre_s before and post_s after each detection track
    CONTINUOUS = "continuous"


class RecorderState(str, Enum):
    """What a camera's recorder is doing now (its status shows it with a reason)."""

    OFF = "off"  # mode off
    WAITING = "waiting"  # no stream yet, or waiting for a key frame to start a segment at
    RECORDING = "recording"  # a segment is open
    STANDBY = "standby"  # events mode, no event: packets go to the pre-event ring only
    PAUSED = "paused"  # disk full or a write error: nothing is written until space returns


class GapReason(str, Enum):
    """Why the index has no recording for a stretch of time."""

    STREAM_ENDED = "stream_ended"  # the camera's stream broke or ended (detail: its error)
    SOURCE_RESTART = "source_restart"  # the stream's timestamps jumped (camera restarted, file looped)
    DISK_FULL = "disk_full"
    WRITE_ERROR = "write_error"
    OVERLOAD = "overload"  # the writer fell behind: packets dropped up to the next key frame
    NO_EVENT = "no_event"  # events mode between events
    OFF = "off"  # recording was switched off
    STOPPED = "stopped"  # the gateway stopped (cleanly) or the camera was removed
    GATEWAY_DOWN = "gateway_down"  # the gateway stopped without closing its segments (found at start-up)
    NO_RECORDING = "no_recording"  # a hole the index holds no reason for


def check_camera_id(camera_id: Any) -> str:
    """Return `camera_id` if it is a valid GB/T 28181 camera code, else raise BadCameraId."""
    try:
        return validate_camera_id(camera_id)
    except CameraIdError as e:
        raise BadCameraId(str(e)) from None


def check_window(start: Any, end: Any, max_s: float = MAX_WINDOW_S) -> tuple[float, float]:
    """(start, end) as floats if end > start and the window is at most max_s long, else raise WindowError."""
    try:
        s, e = float(start), float(end)
    except (TypeError, ValueError):
        raise WindowError("window start and end must be numbers (UTC seconds)") from None
    if not (math.isfinite(s) and math.isfinite(e)):
        raise WindowError("window start and end must be finite")
    if e <= s:
        raise WindowError("window end must be after its start")
    if e - s > max_s:
        raise WindowError(f"window of {e - s:.0f} s is longer than the {max_s:.0f} s allowed")
    return s, e


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_detail(text: str | None) -> str | None:
    """A reason's detail fit for the index: credentials scrubbed, control characters dropped, bounded."""
    if text is None:
        return None
    text = _CONTROL.sub(" ", scrub(str(text))).strip()
    return text[:DETAIL_MAX] or None


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"recording.{name} must be a number")
    if not lo <= value <= hi:
        raise SettingsError(f"recording.{name} must be within {lo:g}..{hi:g}, got {value:g}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """A camera's `recording` settings: mode, retain_days 1..365, pre_s 0..30, post_s 0..120."""

    mode: Mode = Mode.OFF
    retain_days: int = 7
    pre_s: float = 5.0
    post_s: float = 10.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise SettingsError("recording.mode must be one of off, events, continuous") from None
        days = _number(self.retain_days, "retain_days", *RETAIN_DAYS_RANGE)
        if days != int(days):
            raise SettingsError("recording.retain_days must be a whole number of days")
        object.__setattr__(self, "retain_days", int(days))
        object.__setattr__(self, "pre_s", _number(self.pre_s, "pre_s", *PRE_S_RANGE))
        object.__setattr__(self, "post_s", _number(self.post_s, "post_s", *POST_S_RANGE))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "RecordingSettings":
        """Settings from the camera's `recording` object (missing keys take their defaults)."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise SettingsError("recording must be an object")
        unknown = set(d) - {"mode", "retain_days", "pre_s", "post_s"}
        if unknown:
            raise SettingsError(f"recording has unknown keys: {', '.join(sorted(map(str, unknown)))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The `recording` object."""
        return {"mode": self.mode.value, "retain_days": self.retain_days, "pre_s": self.pre_s, "post_s": self.post_s}


@dataclass(frozen=True, slots=True)
class Segment:
    """One MP4 file of a camera's recording: [start, end) wall-clock UTC, the camera's own codec."""

    id: int
    camera_id: str
    start: float
    end: float
    bytes: int
    codec: str
    width: int
    height: int
    path: str  # relative to the store's root: <camera_id>/<YYYY-MM-DD>/<HHMMSS.mmm>.mp4
    open: bool  # still being written (its end and bytes are the latest progress)

    @property
    def duration(self) -> float:
        """Seconds covered."""
        return max(0.0, self.end - self.start)

    def to_dict(self) -> dict[str, Any]:
        """The listing's form: start, end (ISO), bytes, codec, width, height."""
        return {"start": iso_ms(self.start), "end": iso_ms(self.end), "bytes": self.bytes, "codec": self.codec,
                "width": self.width, "height": self.height}


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch without recording and why."""

    camera_id: str
    start: float
    end: float
    reason: str  # a GapReason value
    detail: str | None = None  # e.g. the stream's error message (credentials scrubbed)

    def to_dict(self) -> dict[str, Any]:
        """The listing's form: start, end (ISO), reason (and detail when known)."""
        d: dict[str, Any] = {"start": iso_ms(self.start), "end": iso_ms(self.end), "reason": self.reason}
        if self.detail:
            d["detail"] = self.detail
        return d


@dataclass(frozen=True, slots=True)
class Timeline:
    """What is recorded for a camera in a window: segments and the gaps between them."""

    camera_id: str
    start: float
    end: float
    segments: tuple[Segment, ...]
    gaps: tuple[Gap, ...]
    truncated: bool = False  # more than MAX_LIST_ROWS segments: the listing stops early

    @property
    def covered_s(self) -> float:
        """Seconds of the window covered by segments."""
        return sum(max(0.0, min(s.end, self.end) - max(s.start, self.start)) for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        """{"segments": [{"start","end","bytes","codec",...}], "gaps": [{"start","end","reason"}]}."""
        d: dict[str, Any] = {"segments": [s.to_dict() for s in self.segments], "gaps": [g.to_dict() for g in self.gaps]}
        if self.truncated:
            d["truncated"] = True
        return d


@dataclass(frozen=True, slots=True)
class RecorderStatus:
    """A camera recorder's state for the camera's status (read from the loop)."""

    camera_id: str
    mode: Mode
    state: RecorderState
    reason: str | None  # why paused / waiting, for the operator
    segment_start: float | None  # start of the open segment
    packets: int  # packets handed in by the demuxer
    written: int  # packets written to segments
    bytes_written: int
    segments: int  # segments opened since start
    dropped: int  # packets dropped because the writer fell behind (resumed at a key frame)
    corrupt: int  # packets skipped as damaged or unmuxable
    waited_key: int  # packets skipped while waiting for a key frame
    ring_bytes: int  # events mode: bytes held for pre-event recording

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the camera's status."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["mode"], d["state"] = self.mode.value, self.state.value
        d["segment_start"] = iso_ms(self.segment_start) if self.segment_start is not None else None
        return d


@dataclass(frozen=True, slots=True)
class DiskStatus:
    """The recordings' disk: space, our usage, the budget, and whether recording is paused for space."""

    free_bytes: int
    used_bytes: int  # bytes of indexed segments
    max_bytes: int | None
    min_free_bytes: int
    full: bool  # recording paused: free space under the floor and nothing left to delete

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a retention sweep removed."""

    by_age: int  # segments older than their camera's retain_days
    by_budget: int  # oldest segments removed for max_bytes or the free-space floor
    bytes_freed: int


@dataclass(frozen=True, slots=True)
class Export:
    """One exported MP4 (a window or an event clip)."""

    path: str
    start: float  # wall time of the MP4's time 0 (the asked start, or the first recorded moment after it)
    end: float  # wall time its last frame ends
    bytes: int
    codec: str
    width: int
    height: int
    segments: int  # recorded segments it was cut from
    truncated: bool = False  # stopped early: the stream's parameters changed (a different camera stream)

    @property
    def duration(self) -> float:
        """Seconds of video."""
        return max(0.0, self.end - self.start)
