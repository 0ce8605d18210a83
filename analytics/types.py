"""Immutable values that flow through the analysis pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Picture(Protocol):
    """A decoded picture still in the decoder's format: converted only when it is analysed."""

    width: int
    height: int

    def to_bgr(self, max_width: int) -> np.ndarray:
        """BGR pixels, scaled down to max_width (never up)."""
        ...

    def thumb(self, width: int) -> np.ndarray | None:
        """A small BGR thumbnail `width` wide made from the decoder's pixels, or None (made from to_bgr's)."""
        ...


@dataclass(frozen=True, slots=True)
class Sample:
    """A frame the sampler chose for analysis, not yet converted (a newer one may supersede it)."""

    camera_id: str
    picture: Picture
    captured_at: float  # wall clock (time.time()) when the frame left the decoder
    media_ts: float | None  # position in the source in seconds (monotonic within a pass)
    seq: int  # sampled frame number since the stream was opened


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded, converted frame handed from an ingest thread to the loop."""

    camera_id: str
    image: np.ndarray  # HxWx3 uint8, BGR
    captured_at: float  # wall clock (time.time()) when the frame left the decoder
    media_ts: float | None  # position in the source file in seconds (file sources only)
    seq: int  # frame number since the stream was opened


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found by a detector, box in 0..1 of the frame."""

    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, normalised


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What the tracker reports about one tracked object after a frame."""

    kind: str  # "appear" | "update" | "leave"
    track_id: int
    detection: Detection  # the detection this report is about (best one for "leave")
    frame: Frame  # the frame the detection came from (for the snapshot)
