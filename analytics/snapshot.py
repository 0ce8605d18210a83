"""JPEG snapshots of frames, with the detected object's box drawn in."""

from __future__ import annotations

import cv2
import numpy as np

SNAPSHOT_WIDTH = 640  # event snapshots, by default (events.snapshot_width): each event pays for its JPEG
MIN_WIDTH, MAX_WIDTH = 64, 1280  # widths of the pictures served: thumbnails, live views, cross-tier fetches
BOX_COLOUR = (0, 200, 255)  # BGR amber: visible on both road and sky
TEXT_COLOUR = (0, 0, 0)


def fit(image: np.ndarray, max_width: int) -> np.ndarray:
    """The image scaled down to max_width (never up); the image itself when it already fits."""
    h, w = image.shape[:2]
    if max_width <= 0 or w <= max_width:
        return image
    # Area averaging matters when shrinking by 2x or more; for less, bilinear looks the same and
    # costs a third (1280 -> 960: 0.8 ms instead of 2.4 ms, per event snapshot).
    interp = cv2.INTER_AREA if 2 * max_width <= w else cv2.INTER_LINEAR
    return cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=interp)


def draw_box(img: np.ndarray, box: tuple[float, float, float, float], text: str,
             colour: tuple[int, int, int], *, thick: int, scale: float) -> None:
    """Draw a normalised box and its caption on `img` in place (caption above, or inside at the top edge)."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(box, (w, h, w, h)))
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
    if not text:
        return
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - base, y1 + th + 4)
    tx = min(max(0, x1), max(0, w - tw - 4))
    cv2.rectangle(img, (tx, ty - th - 4), (tx + tw + 4, ty + base), colour, cv2.FILLED)
    cv2.putText(img, text, (tx + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, 1, cv2.LINE_AA)


def encode_jpeg(image: np.ndarray, max_width: int = 640, quality: int = 75) -> bytes:
    """Scale a BGR image down to max_width (never up) and encode it as JPEG."""
    ok, buf = cv2.imencode(".jpg", fit(image, max_width), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def render_snapshot(
    image_bgr: np.ndarray,
    box: tuple[float, float, float, float] | None = None,
    label: str | None = None,
    score: float | None = None,
    *,
    max_width: int = SNAPSHOT_WIDTH,
    quality: int = 80,
) -> bytes:
    """JPEG of a frame with a normalised box and its "label score" caption drawn on it."""
    img = fit(image_bgr, max_width)
    if img is image_bgr:
        img = image_bgr.copy()  # never draw on the caller's frame: the tracker may still hold it
    h, w = img.shape[:2]
    if box is not None:
        text = " ".join(p for p in (label, f"{score:.2f}" if score is not None else None) if p)
        draw_box(img, box, text, BOX_COLOUR, thick=max(2, round(w / 400)), scale=max(0.5, w / 1600))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image_bgr.shape}")
    return buf.tobytes()
