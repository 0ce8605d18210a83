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

    def __init__(self, max_viewers: int = 32, cache_size: int = 128, *, max_per_token: int = 4,
                 max_per_address: int = 8, stall_timeout_s: float = 10.0, send_buffer_bytes: int = 256 * 1024) -> None:
        self.max_viewers = max_viewers
        self.max_per_token = max_per_token
        self.max_per_address = max_per_address
        self.stall_timeout_s = stall_timeout_s  # a viewer that takes no frame for this long is dropped
        self.send_buffer_bytes = send_buffer_bytes  # kernel send buffer of each live view's socket
        self.viewers = 0  # live streams open now
        self.opened = 0  # live streams opened since start
        self.refused = 0  # live streams refused by a per-token or per-address limit
        self.dropped_slow = 0  # live streams ended because their client stopped taking frames
        self.by_token: collections.Counter[str] = collections.Counter()  # open views per token id
        self.by_address: collections.Counter[str] = collections.Counter()  # open views per client address
        self.frames_sent = 0
        self.renders = 0  # encodes done (thumbnails and live frames); less than frames sent when shared
        self.closing = asyncio.Event()  # set at shutdown: every live stream ends
        self._cache: collections.OrderedDict[_Key, tuple[_Version, asyncio.Future[bytes]]] = \
            collections.OrderedDict()
        self._cache_size = cache_size

    def refusal(self, token_id: str, address: str | None) -> tuple[int, str] | None:
        """(status, reason) when a new view for this token and address would exceed a limit; None to admit it."""
        if self.viewers >= self.max_viewers:
            return 503, f"too many live views open on this gateway ({self.max_viewers})"
        if self.by_token[token_id] >= self.max_per_token:
            return 429, (f"this token already holds {self.by_token[token_id]} live views open, its limit "
                         f"(live.max_per_token = {self.max_per_token}); close one first")
        if address is not None and self.by_address[address] >= self.max_per_address:
            return 429, (f"this client address already holds {self.by_address[address]} live views open, its limit "
                         f"(live.max_per_address = {self.max_per_address}); close one first")
        return None

    def acquire(self, token_id: str, address: str | None) -> None:
        """Count one open view against the gateway's, the token's and the address's limits."""
        self.viewers += 1
        self.opened += 1
        self.by_token[token_id] += 1
        if address is not None:
            self.by_address[address] += 1

    def release(self, token_id: str, address: str | None) -> None:
        """Free the slots acquire() took."""
        self.viewers -= 1
        for counter, key in ((self.by_token, token_id), (self.by_address, address)):
            if key is None:
                continue
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

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
