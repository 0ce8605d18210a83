"""Video files made by tests: containers and codecs the sample clips do not cover, and video-quality faults
the sample fault clips (sample_streams.generate.FAULT_CLIPS) do not show, made from real footage."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import av
import cv2
import numpy as np

from sample_streams.generate import FAULT_FPS, FAULT_H, FAULT_W, make_clip, read_frames

BFRAMES = 2  # B-frames between anchors, fixed (b-adapt=0): every GOP reads I B B P B B P ...
SQUARE = 40  # side of the moving square, pixels
SPEED = 2  # pixels per frame the square moves right: 140 frames before it wraps round


def write_bframe_avi(path: str | Path, seconds: float = 4.0, fps: int = 25,
                     size: tuple[int, int] = (320, 240)) -> Path:
    """Write an H.264 AVI with B-frames (as DVR exports are) showing a square moving right; return its path."""
    try:
        av.Codec("libx264", "w")
    except Exception as e:  # PyAV wheels carry libx264; a system FFmpeg build might not
        raise RuntimeError("this PyAV has no libx264 encoder, needed for B-frames") from e
    path = Path(path)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    # A gradient background gives the encoder texture to predict, so P- and B-frames carry motion.
    background = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 96)], axis=-1).astype(np.uint8)
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # threads=1 and a fixed GOP and B pattern: the same frame types on every machine.
        stream.options = {"preset": "veryfast", "threads": "1",
                          "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes={BFRAMES}:b-adapt=0"}
        for i in range(round(seconds * fps)):
            image = background.copy()
            x = (i * SPEED) % (width - SQUARE)
            y = (height - SQUARE) // 2
            image[y:y + SQUARE, x:x + SQUARE] = 255
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# ---- video-quality fault clips made from real footage (tests/test_quality_faults.py) --------------------

REQUANT_QPS = (24, 30, 26, 32)  # the quantizer each GOP of a frozen encoder gets, in turn (a camera's rate control)
COVER_AXES = (0.5, 0.8)  # half-axes of the cover (ellipse) over width and height: about 85 % of the picture
COVER_CENTRE = (0.4, 0.6)  # its centre, as fractions of width and height: the top-right corner stays clear
COVER_TILT = -15  # degrees
COVER_EDGE = 0.03  # softness of its edge, a share of the width: a cover at the lens is far out of focus
DARK_COVER_BGR = (10.0, 13.0, 17.0)  # a hand or a bag: dark, a little lighter towards the bottom
DARK_COVER_SHADE = 10.0  # grey levels it brightens top to bottom
SMEAR_LEVEL = 150.0  # the grey of a sprayed, translucent film over the lens
SMEAR_OPACITY = 0.65  # how much of the view it hides
SMEAR_BLUR = 0.02  # blur of the scene seen through it, a share of the width
BLUR_SMEAR = 0.03  # a smeared lens (grease): the scene blurred this much (a share of the width), nothing more
HEAVY_BLUR_SCALE = 4  # heavy blurs are made at 1/4 of the size
HALF_COVER_AXES = (0.75, 0.5)  # a cover rising from the bottom edge over about 40 % of the picture
HALF_COVER_CENTRE = (0.5, 1.05)


@functools.cache
def cover_mask(height: int, width: int, axes: tuple[float, float] = COVER_AXES,
               centre: tuple[float, float] = COVER_CENTRE) -> np.ndarray:
    """Float mask 0..1 (h, w, 1) of a cover (by default about 85 % of the picture, the top-right corner clear)."""
    mask = np.zeros((height, width), np.float32)
    middle = (round(width * centre[0]), round(height * centre[1]))
    size = (round(width * axes[0]), round(height * axes[1]))
    cv2.ellipse(mask, middle, size, COVER_TILT, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), width * COVER_EDGE)[..., None]
    mask.flags.writeable = False  # cached: shared by every frame
    return mask


def covered_lens(image: np.ndarray, axes: tuple[float, float] = COVER_AXES,
                 centre: tuple[float, float] = COVER_CENTRE) -> np.ndarray:
    """The view with a dark cover over about 85 % of the lens (it makes the whole picture too dark on average)."""
    h, w = image.shape[:2]
    mask = cover_mask(h, w, axes, centre)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    shade = np.array(DARK_COVER_BGR, np.float32) + DARK_COVER_SHADE * ramp
    return cv2.convertScaleAbs(image * (1 - mask) + shade * mask)


def _heavy_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of `sigma` pixels, done at a quarter of the size (ten times faster, the same to the eye)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (w // HEAVY_BLUR_SCALE, h // HEAVY_BLUR_SCALE), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / HEAVY_BLUR_SCALE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def sprayed_lens(image: np.ndarray) -> np.ndarray:
    """The view through a translucent grey film sprayed over about 85 % of the lens."""
    h, w = image.shape[:2]
    mask = cover_mask(h, w)
    film = _heavy_blur(image, w * SMEAR_BLUR) * (1 - SMEAR_OPACITY) + SMEAR_LEVEL * SMEAR_OPACITY
    return cv2.convertScaleAbs(image * (1 - mask) + film * mask)


def smeared_lens(image: np.ndarray) -> np.ndarray:
    """The view through grease smeared over about 85 % of the lens: that part heavily blurred."""
    h, w = image.shape[:2]
    mask = cover_mask(h, w)
    return cv2.convertScaleAbs(image * (1 - mask) + _heavy_blur(image, w * BLUR_SMEAR) * mask)


def half_covered_lens(image: np.ndarray) -> np.ndarray:
    """The view with the same dark cover over its lower 40 % only: too little to recognise without a baseline."""
    return covered_lens(image, HALF_COVER_AXES, HALF_COVER_CENTRE)


LENS_FAULTS = {"covered": covered_lens, "sprayed": sprayed_lens, "smeared": smeared_lens}


def write_lens_fault_clips(out: str | Path, source: str | Path, seconds: float = 10.0) -> dict[str, Path]:
    """`<fault>.mp4` in `out` for each of LENS_FAULTS: the source's first `seconds` (real footage) with that lens
    fault from the very first frame, made as the fault clips are (640x360, 12.5 fps); the source is decoded once.
    """
    frames = list(itertools.islice(read_frames(source, FAULT_W, FAULT_H, FAULT_FPS), round(seconds * FAULT_FPS)))
    paths = {}
    for fault, fn in LENS_FAULTS.items():
        paths[fault] = Path(out) / f"{fault}.mp4"
        make_clip(paths[fault], map(fn, frames), FAULT_FPS, FAULT_W, FAULT_H, crf=23, preset="veryfast")
    return paths


def write_frozen_encoder_clip(path: str | Path, source: str | Path, *, live_s: float = 3.0, frozen_s: float = 15.0,
                              gop_s: float = 1.0, every: int = 2) -> Path:
    """Real footage at its own size (every `every`-th frame) that freezes after `live_s`: the encoder then sends the
    last picture again and again, re-quantized at every key frame (GOP `gop_s`, quantizers from REQUANT_QPS).
    """
    path = Path(path)
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        rate = stream.average_rate / every
        width, height = stream.codec_context.width, stream.codec_context.height
        live = []
        for i, frame in enumerate(src.decode(stream)):
            if frame.time is not None and frame.time >= live_s:
                break
            if i % every == 0:
                live.append(frame.to_ndarray(format="yuv420p"))  # as decoded: no colour conversion either way
    gop = max(1, round(float(rate) * gop_s))
    total = len(live) + round(float(rate) * frozen_s)
    # x264 zones give each GOP a constant quantizer of its own: a still picture is re-quantized at every
    # key frame, as a camera's rate control does, where a constant-quality encode would repeat it exactly.
    zones = "/".join(f"{start},{min(start + gop, total) - 1},q={REQUANT_QPS[k % len(REQUANT_QPS)]}"
                     for k, start in enumerate(range(0, total, gop)))
    with av.open(str(path), "w", format="mp4") as out:
        enc = out.add_stream("libx264", rate=rate)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.options = {"preset": "veryfast", "threads": "1",
                       "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:zones={zones}"}
        for i in range(total):
            frame = av.VideoFrame.from_ndarray(live[min(i, len(live) - 1)], format="yuv420p")
            frame.pts = i
            out.mux(enc.encode(frame))
        out.mux(enc.encode(None))
    return path


# ---- what a cover is not (tests/test_quality_faults.py) ---------------------------------------------------

LAMPS_X = (0.15, 0.4, 0.65, 0.9)  # lamps along a street, as shares of the width
LAMP_Y = 0.35  # their height, a share of the picture's
NIGHT_GAIN = 0.1  # what is left of the daylight
LAMP_GLOW = 180.0  # grey levels of glow at a lamp
LAMP_GLOW_SIGMA = 0.04  # spread of the glow, a share of the width
LAMP_COLOUR = (0.6, 0.85, 1.0)  # sodium light, B G R


def night_street(image: np.ndarray) -> np.ndarray:
    """The real street by night: a tenth of the daylight, and lamps glowing along it."""
    h, w = image.shape[:2]
    glow = np.zeros((h, w), np.float32)
    for x in LAMPS_X:
        cv2.circle(glow, (round(w * x), round(h * LAMP_Y)), round(w * LAMP_GLOW_SIGMA), 1.0, -1)
    glow = cv2.GaussianBlur(glow, (0, 0), w * LAMP_GLOW_SIGMA)
    glow *= LAMP_GLOW / glow.max()
    return cv2.convertScaleAbs(image * NIGHT_GAIN + glow[..., None] * np.array(LAMP_COLOUR, np.float32))
