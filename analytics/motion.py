"""Motion gate: a cheap test of whether anything in the picture changed."""

from __future__ import annotations

import cv2
import numpy as np

WORK_WIDTH = 160  # the gate looks at a thumbnail: change of a whole object, not noise


class MotionGate:
    """Fraction of pixels that differ from a running-average background."""

    def __init__(self, threshold: float = 0.004, pixel_delta: int = 25, alpha: float = 0.05) -> None:
        self.threshold = threshold
        self.pixel_delta = pixel_delta
        self.alpha = alpha  # background learning rate per analysed frame
        self._background: np.ndarray | None = None
        self._fraction = 0.0

    @property
    def moving(self) -> bool:
        """Whether the last frame changed at least `threshold` of the picture."""
        return self._fraction >= self.threshold

    @property
    def fraction(self) -> float:
        """Changed fraction of the last frame."""
        return self._fraction

    def reset(self) -> None:
        """Forget the background (the stream was reopened or the camera moved)."""
        self._background = None
        self._fraction = 0.0

    def update(self, image_bgr: np.ndarray) -> float:
        """Compare a frame with the background, learn it in, return the changed fraction."""
        h, w = image_bgr.shape[:2]
        work_h = max(1, round(h * WORK_WIDTH / w))
        # shrink first: colour conversion and blur then cost a thumbnail, not a full frame
        small = cv2.resize(image_bgr, (WORK_WIDTH, work_h), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        gray = cv2.GaussianBlur(gray, (5, 5), 0)
        bg = self._background
        if bg is None or bg.shape != gray.shape:
            self._background = gray.astype(np.float32)
            self._fraction = 0.0
            return 0.0
        diff = cv2.absdiff(gray, cv2.convertScaleAbs(bg))
        self._fraction = float(np.count_nonzero(diff > self.pixel_delta)) / diff.size
        cv2.accumulateWeighted(gray, bg, self.alpha)
        return self._fraction
