"""JPEGs of cameras' newest frames for thumbnails and live views, encoded once however many watch."""

from __future__ import annotations

import asyncio
import collections
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from analytics.snapshot import draw_box
from analytics.types import Detection, Frame

# BGR colours, bright enough on road, sky and night frames; the common street labels each get their own.
_FIXED = {"car": (0, 200, 255), "person": (80, 220, 80), "bus": (200, 100, 255), "truck": (255, 160, 60),
          "bicycle": (60, 220, 220), "motorcycle": (120, 120, 255)}
_PALETTE = tuple(_FIXED.values())


def label_colour(label: str) -> tuple[int, int, int]:
    """A stable colour per label (others by crc32, not hash(): the same on every run)."""
    return _FIXED.get(label) or _PALETTE[zlib.crc32(label.encode()) % len(_PALETTE)]


def render_frame(image: np.ndarray, detections: tuple[Detection, ...] = (), *, width: int = 960,
                 quality: int = 70) -> bytes:
    """JPEG of a BGR frame scaled down to `width` (never up), with each detection's box and caption."""
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    elif detections:
        image = image.copy()  # never draw on the worker's frame: analysis and snapshots still read it
    h, w = image.shape[:2]
    thick = max(2, round(w / 400))
    scale = max(0.4, w / 1800)
    for d in detections:
        draw_box(image, d.box, f"{d.label} {d.score:.2f}", label_colour(d.label), thick=thick, scale=scale)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def fit_jpeg(jpeg: bytes, width: int, quality: int = 70) -> bytes:
    """A JPEG scaled down to `width` (re-encoded only when wider)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a JPEG")
    return jpeg if image.shape[1] <= width else render_frame(image, (), width=width, quality=quality)


@dataclass(frozen=True, slots=True)
class _Key:
    camera_id: str
    width: int
    boxes: bool


@dataclass(frozen=True, slots=True)
class _Version:
    captured_at: float
    seq: int
    detections: tuple[Detection, ...]


class LiveFrames:
    """Renders frames off the loop, sharing one encode among all viewers of the same camera and size."""

    def __init__(self, max_viewers: int = 32, cache_size: int = 128) -> None:
        self.max_viewers = max_viewers
        self.viewers = 0  # live streams open now
        self.opened = 0  # live streams opened since start
        self.frames_sent = 0
        self.renders = 0  # encodes done (thumbnails and live frames); less than frames sent when shared
        self.closing = asyncio.Event()  # set at shutdown: every live stream ends
        self._cache: collections.OrderedDict[_Key, tuple[_Version, asyncio.Future[bytes]]] = \
            collections.OrderedDict()
        self._cache_size = cache_size

    def version(self, frame: Frame, detections: tuple[Detection, ...], boxes: bool) -> _Version:
        """What identifies one rendering of a camera's state: the frame and, when drawn, its boxes."""
        return _Version(frame.captured_at, frame.seq, detections if boxes else ())

    async def jpeg(self, camera_id: str, frame: Frame, detections: tuple[Detection, ...], *, width: int,
                   boxes: bool) -> bytes:
        """The JPEG of this frame at this width; concurrent and repeated asks share one encode."""
        key = _Key(camera_id, width, boxes)
        version = self.version(frame, detections, boxes)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            self._cache.move_to_end(key)
            return await asyncio.shield(hit[1])
        dets = detections if boxes else ()
        fut = asyncio.ensure_future(asyncio.to_thread(render_frame, frame.image, dets, width=width))
        self.renders += 1
        self._cache[key] = (version, fut)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        try:
            # Shielded: one viewer leaving must not cancel the encode others are waiting for.
            return await asyncio.shield(fut)
        except Exception:
            if self._cache.get(key, (None, None))[1] is fut:
                del self._cache[key]
            raise
