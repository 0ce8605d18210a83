"""Make the small synthetic H.264 sample clips, and faulty files for tests.

    python -m sample_streams.generate [--out DIR] [--only NAME ...]
    python -m sample_streams.generate --faults VIDEO --out DIR [--only NAME ...]

Clips (deterministic: drawn with numpy/cv2 from fixed seeds, encoded single-threaded):

- ``moving_objects.mp4`` — 640x360, 15 fps, 12 s: a textured street scene with a few shapes
  moving across it at different speeds and in different directions (motion gate, tracking).
- ``day_night.mp4`` — 640x360, 15 fps, 12 s: the scene fades from daylight to a dark, noisy
  night with street lamps and back, with a vehicle driving across (video quality, low light).

Helpers other code reuses (test generators of faulty clips):

- :func:`make_clip` — encode any iterable of frames to an H.264/yuv420p MP4.
- :func:`corrupt_copy` — a copy of a video with garbage bytes over its middle.
- :func:`garbage_file` — random bytes under a ``.mp4`` name.
- :func:`make_fault_clips` — clips made from a real recording that each show one video-quality
  fault (blurred, dark, overexposed, low contrast, colour cast, covered, black, blue screen, frozen,
  camera moved), clean before it starts: ``python -m sample_streams.generate --faults VIDEO --out DIR``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from sample_streams import CLIPS_DIR

#: H.264 encoders tried in order; the first one this PyAV build has is used.
H264_ENCODERS = ("libx264", "libopenh264", "h264")


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    frames: int
    fps: float
    width: int
    height: int
    size: int  # bytes
    codec: str

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def h264_encoder() -> str:
    """Name of the H.264 encoder this PyAV build offers (libx264 preferred)."""
    for name in H264_ENCODERS:
        try:
            codec = av.Codec(name, "w")
        except Exception:
            continue
        if codec.is_encoder:
            return name
    raise RuntimeError(f"PyAV has no H.264 encoder (tried {', '.join(H264_ENCODERS)})")


def _to_frame(item, width: int, height: int) -> av.VideoFrame:
    if isinstance(item, av.VideoFrame):
        return item
    arr = np.asarray(item)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.shape[:2] != (height, width):
        arr = cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="bgr24")


def make_clip(
    path: str | os.PathLike,
    frames_iter: Iterable,
    fps: int | float | Fraction,
    width: int,
    height: int,
    *,
    gop_seconds: float = 2.0,
    crf: int = 26,
    preset: str = "medium",
    codec: str | None = None,
) -> ClipInfo:
    """Encode ``frames_iter`` to an H.264 (yuv420p, no B-frames, GOP ``gop_seconds``) MP4 at ``path``.

    Frames are BGR ``uint8`` arrays of shape (height, width, 3) (grayscale (h, w) arrays and
    ``av.VideoFrame`` work too; other sizes are scaled). The file is written next to ``path``
    and renamed into place, so a failed run leaves no half-written clip. Returns a
    :class:`ClipInfo`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even width and height, got {width}x{height}")
    rate = Fraction(fps).limit_denominator(1001)
    codec = codec or h264_encoder()
    gop = max(1, round(float(rate) * gop_seconds))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.mp4")
    count = 0
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            cc = stream.codec_context
            cc.gop_size = gop
            cc.max_b_frames = 0
            if codec == "libx264":
                # threads=1 + fixed GOP without scene cuts: the same bytes on every machine.
                stream.options = {
                    "crf": str(crf), "preset": preset, "profile": "main", "threads": "1",
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
                }
            elif codec == "libopenh264":
                stream.options = {"allow_skip_frames": "0"}
                cc.bit_rate = 600_000
            for item in frames_iter:
                frame = _to_frame(item, width, height)
                frame.pts = count
                out.mux(stream.encode(frame))
                count += 1
            out.mux(stream.encode(None))
        if count == 0:
            raise ValueError("make_clip: no frames")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ClipInfo(path, count, float(rate), width, height, path.stat().st_size, codec)


def corrupt_copy(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    start: float = 0.4,
    length: float = 0.2,
    seed: int = 1234,
) -> Path:
    """Copy ``src`` to ``dst`` with garbage bytes over its middle.

    Bytes from ``start`` to ``start + length`` (fractions of the file size; by default 40 %..60 %)
    are overwritten with seeded random bytes. The size and container header stay intact (the
    bundled clips keep their index at the front), so the file still opens but the frames in the
    middle are broken: a decoder reports errors or garbage there, then recovers at a key frame.
    """
    data = bytearray(Path(src).read_bytes())
    if not data:
        raise ValueError(f"{src} is empty")
    a = int(len(data) * start)
    b = min(len(data), max(a + 1, int(len(data) * (start + length))))
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    return dst


def garbage_file(dst: str | os.PathLike, size: int = 64 * 1024, *, seed: int = 4321) -> Path:
    """Write ``size`` seeded random bytes to ``dst`` (give it a ``.mp4`` name): not a video at all."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return dst


# --------------------------------------------------------------------------- scenes

W, H, FPS, SECONDS = 640, 360, 15, 12


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Noise in 0..1 with features about ``cell`` pixels across."""
    small = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    big = cv2.resize(small, ((w // cell + 2) * cell, (h // cell + 2) * cell), interpolation=cv2.INTER_CUBIC)
    return big[:h, :w]


def _street_background(seed: int) -> np.ndarray:
    """A static street scene (BGR float32 0..255): sky, buildings with windows, pavement, road."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.float32)
    horizon, road_top, road_bottom = 150, 230, 330
    # Sky: a vertical gradient with soft clouds.
    t = np.linspace(0, 1, horizon, dtype=np.float32)[:, None]
    sky = np.stack([235 - 40 * t, 205 - 30 * t, 160 - 30 * t], -1) * np.ones((1, W, 1), np.float32)
    clouds = _smooth_noise(rng, horizon, W, 48)[..., None]
    img[:horizon] = sky + 30 * np.clip(clouds - 0.5, 0, 1)
    # Ground: grass/pavement texture.
    ground = 105 + 35 * _smooth_noise(rng, H - horizon, W, 24) + 14 * _smooth_noise(rng, H - horizon, W, 3)
    img[horizon:] = np.stack([ground * 0.85, ground, ground * 0.95], -1)
    # Buildings along the horizon with lit/unlit windows.
    x = 0
    while x < W:
        bw = int(rng.integers(50, 110))
        bh = int(rng.integers(50, 130))
        tone = float(rng.integers(90, 170))
        colour = (tone * 0.9, tone * 0.95, tone * float(rng.uniform(0.95, 1.15)))
        cv2.rectangle(img, (x, horizon - bh), (x + bw - 4, horizon), colour, -1)
        for wy in range(horizon - bh + 8, horizon - 10, 16):
            for wx in range(x + 6, x + bw - 14, 14):
                shade = 60.0 if rng.random() < 0.6 else 200.0
                cv2.rectangle(img, (wx, wy), (wx + 7, wy + 8), (shade, shade, shade * 0.9), -1)
        x += bw
    # Road with kerbs and dashed lane markings.
    road = 80 + 16 * _smooth_noise(rng, road_bottom - road_top, W, 4)
    img[road_top:road_bottom] = road[..., None]
    img[road_top - 4:road_top] = 170
    img[road_bottom:road_bottom + 4] = 170
    mid = (road_top + road_bottom) // 2
    for dx in range(0, W, 60):
        cv2.rectangle(img, (dx, mid - 2), (dx + 30, mid + 2), (215, 215, 215), -1)
    return np.clip(img, 0, 255)


def _wrap(pos: float, size: int, extent: float) -> float:
    """Position wrapped so the object leaves one edge completely and comes back at the other."""
    span = size + 2 * extent
    return (pos + extent) % span - extent


S = 4  # cv2 fixed-point shift: positions with 1/16-pixel precision, so slow motion is smooth


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * (1 << S))), int(round(y * (1 << S)))


def _draw_car(img, x: float, y: float, colour, length: int = 70, height: int = 28, lights: float = 0.0):
    x0, y0 = x - length / 2, y - height / 2
    cv2.rectangle(img, _pt(x0, y0 + 8), _pt(x0 + length, y0 + height), colour, -1, cv2.LINE_AA, S)
    cv2.rectangle(img, _pt(x0 + 14, y0), _pt(x0 + length - 18, y0 + 10), colour, -1, cv2.LINE_AA, S)
    cv2.rectangle(img, _pt(x0 + 18, y0 + 2), _pt(x0 + length - 22, y0 + 9), (70, 60, 50), -1, cv2.LINE_AA, S)
    for wx in (x0 + 14, x0 + length - 14):
        cv2.circle(img, _pt(wx, y0 + height), 6 << S, (25, 25, 25), -1, cv2.LINE_AA, S)
    if lights > 0:
        lamp = (200 + 55 * lights, 240, 255)
        cv2.circle(img, _pt(x0 + length - 2, y0 + 14), 4 << S, lamp, -1, cv2.LINE_AA, S)


def moving_objects_frames(seed: int = 7) -> Iterator[np.ndarray]:
    """Frames of ``moving_objects.mp4``: shapes crossing a textured scene at different speeds."""
    bg = _street_background(seed).astype(np.uint8)
    n = FPS * SECONDS
    for i in range(n):
        t = i / FPS
        img = bg.copy()
        # A red car fast left→right in the near lane, a blue van slower right→left in the far lane.
        _draw_car(img, _wrap(-40 + 110 * t, W, 40), 300, (40, 40, 200))
        _draw_car(img, _wrap(W + 50 - 55 * t, W, 50), 252, (190, 120, 40), length=90, height=32)
        # A yellow ball bouncing diagonally across the pavement.
        bx = _wrap(30 + 35 * t, W, 20)
        by = 195 + 25 * abs(math.sin(t * 1.7))
        cv2.circle(img, _pt(bx, by), 14 << S, (40, 210, 230), -1, cv2.LINE_AA, S)
        # A green triangle drifting slowly right→left along the buildings.
        tx = _wrap(W - 80 - 18 * t, W, 25)
        tri = np.array([_pt(tx, 118), _pt(tx - 20, 148), _pt(tx + 20, 148)], np.int32)
        cv2.fillPoly(img, [tri], (60, 170, 60), cv2.LINE_AA, S)
        # A pedestrian (dark upright box + head) walking down the pavement, slowest of all.
        px, py = 520 - 6 * t, 160 + 4 * t
        cv2.rectangle(img, _pt(px - 7, py), _pt(px + 7, py + 36), (90, 50, 110), -1, cv2.LINE_AA, S)
        cv2.circle(img, _pt(px, py - 7), 7 << S, (120, 150, 200), -1, cv2.LINE_AA, S)
        yield img


def day_night_brightness(t: float, seconds: float = SECONDS) -> float:
    """Scene brightness 1.0 (day) .. 0.1 (night) at time ``t``: day, fade out, night, fade in, day."""
    u = t / seconds
    night = 0.1
    if u < 0.15 or u >= 0.85:
        return 1.0
    if 0.4 <= u < 0.6:
        return night
    edge = (u - 0.15) / 0.25 if u < 0.4 else (0.85 - u) / 0.25  # 0 at day, 1 at night
    s = 0.5 - 0.5 * math.cos(math.pi * edge)
    return 1.0 + (night - 1.0) * s


def day_night_frames(seed: int = 11) -> Iterator[np.ndarray]:
    """Frames of ``day_night.mp4``: daylight → dark noisy night with lamps → daylight, a car driving."""
    bg = _street_background(seed)
    rng = np.random.default_rng(seed + 1)
    lamps = [(90, 168), (250, 168), (410, 168), (570, 168)]
    glow = np.zeros((H, W), np.float32)
    for lx, ly in lamps:
        cv2.circle(glow, (lx, ly), 26, 1.0, -1)
    glow = cv2.GaussianBlur(glow, (0, 0), 18)
    glow = glow / glow.max()
    # Sensor noise in 2x2-pixel grains: a fixed pattern plus a smaller part that changes every
    # frame (per-pixel noise would be smoothed away by the encoder or blow the size budget).
    fixed_pattern = rng.normal(0, 1, (H // 2, W // 2)).astype(np.float32)
    n = FPS * SECONDS
    for i in range(n):
        t = i / FPS
        b = day_night_brightness(t)
        dark = (1.0 - b) / 0.9  # 0 by day, 1 at night
        img = bg.copy()
        _draw_car(img, _wrap(-50 + 80 * t, W, 45), 292, (50, 60, 185), lights=dark)
        img *= b
        # Night: bluish cast, lamp glow over the road, sensor noise.
        img[..., 0] += 10 * dark
        img += (70 * dark * glow)[..., None] * np.array([0.6, 0.85, 1.0], np.float32)
        if dark > 0.05:
            grain = rng.normal(0, 5, (H // 2, W // 2)).astype(np.float32) + 10 * fixed_pattern
            img += cv2.resize(dark * grain, (W, H), interpolation=cv2.INTER_NEAREST)[..., None]
        for lx, ly in lamps:
            cv2.circle(img, (lx, ly - 40), 4, (180 + 75 * dark,) * 3, -1, cv2.LINE_AA)
            cv2.line(img, (lx, ly - 36), (lx, 170), (60 * b + 20,) * 3, 2)
        yield np.clip(img, 0, 255).astype(np.uint8)


#: name → frame generator of every bundled clip.
SCENES: dict[str, Callable[[], Iterable[np.ndarray]]] = {
    "moving_objects.mp4": moving_objects_frames,
    "day_night.mp4": day_night_frames,
}

#: encoder quality per clip (noise is expensive: day_night needs a higher CRF to stay small).
CRF = {"moving_objects.mp4": 26, "day_night.mp4": 30}


def generate(out: Path = CLIPS_DIR, only: Iterable[str] | None = None, log=print) -> list[ClipInfo]:
    """Write the bundled clips into ``out``; returns what was written."""
    names = list(only) if only else list(SCENES)
    infos = []
    for name in names:
        if not name.endswith(".mp4"):
            name += ".mp4"
        if name not in SCENES:
            raise SystemExit(f"unknown clip {name!r}; known: {', '.join(SCENES)}")
        started = time.monotonic()
        log(f"{name}: encoding {W}x{H} @ {FPS} fps, {SECONDS} s ...", flush=True)
        info = make_clip(out / name, SCENES[name](), FPS, W, H, crf=CRF.get(name, 26))
        log(
            f"{name}: {info.frames} frames, {info.duration:.1f} s, {info.size / 1024:.0f} KiB "
            f"({info.codec}) in {time.monotonic() - started:.1f} s -> {info.path}",
            flush=True,
        )
        infos.append(info)
    return infos


# --------------------------------------------------------------------------- faulty cameras (video quality)


@dataclass(frozen=True)
class FaultClip:
    """A clip made from a real recording that shows one video-quality fault for part of its length."""

    name: str
    fault: str | None  # the quality check it must raise (analytics.quality.FAULTS); None: none at all
    onset: float  # seconds: the picture is clean before this
    until: float | None  # seconds: clean again from here; None: faulty to the end
    seconds: float  # length of the clip
    note: str


#: Fault clips are made at this size and rate from the source (the checks work on thumbnails anyway).
FAULT_W, FAULT_H, FAULT_FPS = 640, 360, 12.5

FAULT_CLIPS: dict[str, FaultClip] = {c.name: c for c in (
    FaultClip("blurred", "blur", 3.0, None, 16.0, "out of focus: Gaussian blur, sigma 2.5 px at 640 wide"),
    FaultClip("dark", "too_dark", 3.0, 10.0, 16.0, "exposure drops to 12 % for 7 s, then recovers"),
    FaultClip("overexposed", "overexposed", 3.0, None, 16.0, "gain 2.6 plus offset: most of the picture clips"),
    FaultClip("low_contrast", "low_contrast", 3.0, None, 16.0, "a fog veil: 30 % picture, 70 % light grey"),
    FaultClip("colour_cast", "colour_cast", 3.0, None, 16.0, "white balance off: red x1.35, blue x0.7"),
    FaultClip("covered", "occlusion", 3.0, None, 16.0, "a brown cover over about 60 % of the lens"),
    FaultClip("black", "signal_loss", 3.0, None, 16.0, "the picture goes black"),
    FaultClip("blue", "signal_loss", 3.0, None, 16.0, "a DVR's blue 'NO VIDEO' screen"),
    FaultClip("frozen", "frozen", 3.0, 18.0, 24.0, "the encoder repeats the frame at 3 s for 15 s, then goes on"),
    FaultClip("moved", "scene_change", 6.0, 16.0, 22.0,
              "a camera panning back and forth over one view is knocked aside (shift, 6 degree roll, zoom) "
              "for 10 s, then put back"),
    FaultClip("bus", None, 5.0, 9.0, 14.0,
              "no fault: a bus close to the camera (about 45 % of the picture) crosses the same view in 4 s"),
)}


def read_frames(src: str | os.PathLike, width: int = FAULT_W, height: int = FAULT_H,
                fps: float | None = FAULT_FPS) -> Iterator[np.ndarray]:
    """Frames of a video at ``fps`` (None: every frame), scaled and converted to BGR in one call."""
    with av.open(str(src)) as container:
        due = 0.0
        for frame in container.decode(video=0):
            if fps is not None:
                if frame.time is not None and frame.time + 0.25 / fps < due:
                    continue
                due += 1 / fps
            yield frame.reformat(width=width, height=height, format="bgr24").to_ndarray()


def _lut(gain, offset: float = 0.0) -> np.ndarray:
    """A per-channel lookup table (256x1x3) for x * gain + offset, clipped: cheaper than float maths."""
    x = np.arange(256, dtype=np.float32)[:, None] * np.broadcast_to(np.asarray(gain, np.float32), (3,)) + offset
    return np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(256, 1, 3)


_COVER: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _covered(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) not in _COVER:
        mask = np.zeros((h, w), np.float32)
        cv2.ellipse(mask, (int(w * 0.3), int(h * 0.75)), (int(w * 0.55), int(h * 0.7)), -20, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), w * 0.02)  # a soft edge, as a cover near the lens has
        shade = np.array((40, 55, 75), np.float32) + 25 * np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        _COVER[(h, w)] = (cv2.merge([mask] * 3), shade * mask[..., None])
    mask3, cover = _COVER[(h, w)]
    return cv2.convertScaleAbs(img * (1 - mask3) + cover)


def _blue_screen(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    out = np.empty_like(img)
    out[:] = (170, 40, 10)
    cv2.putText(out, "NO VIDEO", (w // 2 - 60, h // 2 + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2,
                cv2.LINE_AA)
    return out


def _moved(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0, 1.15)
    m[0, 2] += 0.18 * w
    m[1, 2] += 0.05 * h
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def _bus_sprite(source: Sequence[np.ndarray]) -> np.ndarray:
    """The purple bus of the source's third scene (8.2 s), cut out at 75 % of its size."""
    img = source[min(round(8.2 * FAULT_FPS), len(source) - 1)]
    h, w = img.shape[:2]
    crop = img[round(h * 0.055): round(h * 0.97), round(w * 0.07): round(w * 0.955)]
    return cv2.resize(crop, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)


def _with_bus(img: np.ndarray, bus: np.ndarray, progress: float) -> np.ndarray:
    """The view with the bus driven from the right edge (progress 0) out past the left edge (progress 1)."""
    if not 0 <= progress <= 1:
        return img
    h, w = img.shape[:2]
    bh, bw = bus.shape[:2]
    x = round(w - progress * (w + bw))  # left edge of the bus
    y = h - bh - 4
    out = img.copy()
    a, b = max(x, 0), min(x + bw, w)
    if b > a:
        out[y:y + bh, a:b] = bus[:, a - x: b - x]
    return out


_FAULT_FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blurred": lambda img: cv2.GaussianBlur(img, (0, 0), 2.5),
    "dark": lambda img, lut=_lut(0.12): cv2.LUT(img, lut),
    "overexposed": lambda img, lut=_lut(2.6, 40.0): cv2.LUT(img, lut),
    "low_contrast": lambda img, lut=_lut(0.3, 0.7 * 170): cv2.LUT(img, lut),
    "colour_cast": lambda img, lut=_lut((0.7, 1.0, 1.35)): cv2.LUT(img, lut),
    "covered": _covered,
    "black": np.zeros_like,
    "blue": _blue_screen,
    "moved": _moved,
}


def fault_clip_frames(name: str, source: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """Frames of fault clip ``name`` made from ``source``, a recording's frames at FAULT_FPS (see FAULT_CLIPS)."""
    spec = FAULT_CLIPS[name]
    n = round(spec.seconds * FAULT_FPS)

    def faulty(i: int) -> bool:
        t = i / FAULT_FPS
        return spec.onset <= t and (spec.until is None or t < spec.until)

    if name == "frozen":
        # The encoder keeps sending the frame of the onset; afterwards the source goes on where it stopped.
        held = round(spec.onset * FAULT_FPS)
        lost = round((spec.until - spec.onset) * FAULT_FPS)  # type: ignore[operator]
        for i in range(n):
            yield source[(held if faulty(i) else (i if i < held else i - lost)) % len(source)]
        return
    if name in ("moved", "bus"):
        # A camera panning back and forth over one view (the source's first 4 s, forth and back).
        view = source[: round(4 * FAULT_FPS)]
        order = list(range(len(view))) + list(range(len(view) - 2, 0, -1))
        bus = _bus_sprite(source)
        for i in range(n):
            img = view[order[i % len(order)]]
            if name == "moved":
                yield _moved(img) if faulty(i) else img
            else:
                yield _with_bus(img, bus, (i / FAULT_FPS - spec.onset) / (spec.until - spec.onset))  # type: ignore
        return
    fn = _FAULT_FILTERS[name]
    for i in range(n):
        img = source[i % len(source)]  # a shorter source loops
        yield fn(img) if faulty(i) else img


def make_fault_clips(src: str | os.PathLike, out: Path, names: Iterable[str] | None = None,
                     log=None) -> dict[str, ClipInfo]:
    """Write the fault clips (all, or ``names``) made from the video ``src`` into ``out`` as ``<name>.mp4``."""
    names = list(names or FAULT_CLIPS)
    for name in names:
        if name not in FAULT_CLIPS:
            raise SystemExit(f"unknown fault clip {name!r}; known: {', '.join(FAULT_CLIPS)}")
    source = list(read_frames(src))  # decoded once for all clips (about 70 MB at 640x360, 12.5 fps, 16 s)
    infos = {}
    for name in names:
        info = make_clip(out / f"{name}.mp4", fault_clip_frames(name, source), FAULT_FPS, FAULT_W, FAULT_H,
                         crf=23, preset="veryfast")
        if log:
            log(f"{info.path.name}: {FAULT_CLIPS[name].note} ({info.frames} frames, {info.size / 1024:.0f} KiB)",
                flush=True)
        infos[name] = info
    return infos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_streams.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=CLIPS_DIR, help=f"output folder (default {CLIPS_DIR})")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"only this clip ({', '.join(SCENES)}; with --faults: {', '.join(FAULT_CLIPS)})")
    parser.add_argument("--faults", type=Path, metavar="VIDEO",
                        help="make the video-quality fault clips from this recording instead (into --out)")
    args = parser.parse_args(argv)
    if args.faults:
        make_fault_clips(args.faults, args.out, args.only, log=print)
        return 0
    generate(args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
