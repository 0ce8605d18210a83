"""JPEG snapshots of frames, with the detected object's box drawn in."""

from __future__ import annotations

import cv2
import numpy as np

BOX_COLOUR = (0, 200, 255)  # BGR amber: visible on both road and sky
TEXT_COLOUR = (0, 0, 0)


def _fit(image: np.ndarray, max_width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max_width <= 0 or w <= max_width:
        return image
    return cv2.resize(image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, max_width: int = 640, quality: int = 75) -> bytes:
    """Scale a BGR image down to max_width (never up) and encode it as JPEG."""
    ok, buf = cv2.imencode(".jpg", _fit(image, max_width), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def render_snapshot(
    image_bgr: np.ndarray,
    box: tuple[float, float, float, float] | None = None,
    label: str | None = None,
    score: float | None = None,
    *,
    max_width: int = 960,
    quality: int = 80,
) -> bytes:
    """JPEG of a frame with a normalised box and its "label score" caption drawn on it."""
    img = _fit(image_bgr, max_width)
    if img is image_bgr:
        img = image_bgr.copy()  # never draw on the caller's frame: the tracker may still hold it
    h, w = img.shape[:2]
    if box is not None:
        thick = max(2, round(w / 400))
        x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(box, (w, h, w, h)))
        cv2.rectangle(img, (x1, y1), (x2, y2), BOX_COLOUR, thick, cv2.LINE_AA)
        text = " ".join(p for p in (label, f"{score:.2f}" if score is not None else None) if p)
        if text:
            scale = max(0.5, w / 1600)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            # caption above the box, or inside it when the box touches the top edge
            ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - base, y1 + th + 4)
            tx = min(max(0, x1), max(0, w - tw - 4))
            cv2.rectangle(img, (tx, ty - th - 4), (tx + tw + 4, ty + base), BOX_COLOUR, cv2.FILLED)
            cv2.putText(img, text, (tx + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image_bgr.shape}")
    return buf.tobytes()
