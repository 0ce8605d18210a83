"""MotionGate on synthetic frames."""

from __future__ import annotations

import cv2
import numpy as np

from analytics.motion import MotionGate


def scene(rng: np.random.Generator) -> np.ndarray:
    """A textured 720p background with a little sensor noise."""
    base = cv2.GaussianBlur(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), (0, 0), 6)
    return base


def noisy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def test_static_frames_settle_to_zero():
    rng = np.random.default_rng(0)
    bg = scene(rng)
    gate = MotionGate()
    assert gate.update(bg) == 0.0  # the first frame only seeds the background
    values = [gate.update(noisy(bg, rng)) for _ in range(30)]
    assert max(values[5:]) < 0.001
    assert not gate.moving


def test_moving_rectangle_is_motion():
    rng = np.random.default_rng(1)
    bg = scene(rng)
    gate = MotionGate()
    for _ in range(10):
        gate.update(noisy(bg, rng))
    assert not gate.moving
    fractions = []
    for i in range(10):
        img = noisy(bg, rng)
        x = 100 + 60 * i
        cv2.rectangle(img, (x, 300), (x + 120, 480), (255, 255, 255), cv2.FILLED)
        fractions.append(gate.update(img))
        assert gate.moving, fractions
    assert min(fractions) > gate.threshold
    # the rectangle covers ~2.3% of the picture
    assert 0.01 < max(fractions) < 0.1


def test_small_frames_and_reset():
    gate = MotionGate()
    small = np.zeros((90, 120, 3), np.uint8)
    gate.update(small)
    assert gate.update(small) == 0.0
    bright = np.full_like(small, 200)
    assert gate.update(bright) > 0.9 and gate.moving
    gate.reset()
    assert gate.update(bright) == 0.0 and not gate.moving
