"""Video quality diagnosis (视频质量诊断) on frames already decoded: one small set of thumbnails per frame.

Checks, each a fault with a start and an end (see QualityConfig for the thresholds):

- ``signal_loss`` — a black, blue or other single-colour screen (a DVR's "no video" page, a dead
  encoder). A source that sends no frames at all is the camera's ``offline`` state, not a fault here.
- ``frozen`` — consecutive analysed frames practically identical: compared on pixels sampled from the
  full-resolution frame (not averaged), so a live sensor's noise counts as change and an encoder
  repeating one picture does not.
- ``blur`` — the re-blur index of Crété-Roffet et al. (2007): the share of the picture's gradient
  that survives blurring it again. It is a ratio of the picture to itself, so it compares across
  scenes where gradient energy (variance of the Laplacian varies 3x across the street clip's scenes)
  does not.
- ``too_dark`` / ``overexposed`` — mean luma, and the share of clipped white pixels.
- ``low_contrast`` — (p95 - p5) / (p95 + p5) of luma: a veil of fog or a washed-out picture; it does
  not change with gain, so a dim picture is too dark, not low in contrast.
- ``colour_cast`` — the cast factor of the equivalent-circle method: distance of the mean (a*, b*)
  from neutral over the spread of (a*, b*) in CIELAB.
- ``occlusion`` — the share of grid cells that carried texture in the learned baseline and are now
  flat (texture measured relative to the picture's own contrast, so darkness or fog is not cover).
- ``scene_change`` — the view no longer matches the learned reference (per-cell normalised
  cross-correlation, blind to lighting) and holds steady on a new view for ``scene_confirm_s``.
  A passing bus covers part of the grid for a few seconds; a moved camera changes most of it for good.
  It ends when the view returns, or after ``scene_accept_s`` when the new view becomes the reference.

A fault starts when 80 % of the analysed frames over its hold time show it (``min_duration_s``;
``scene_confirm_s`` for scene change; all frames over ``frozen_s`` for frozen), and ends when 80 %
over ``clear_s`` are back inside a hysteresis margin. Checks that a worse fault makes meaningless
are held off while it lasts: a solid screen masks everything; darkness or glare masks blur,
contrast, cast, cover and scene; a cover masks blur, contrast, cast and scene.
"""

from __future__ import annotations

import collections
import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

FAULTS: tuple[str, ...] = (
    "signal_loss", "frozen", "blur", "too_dark", "overexposed", "low_contrast", "colour_cast", "occlusion",
    "scene_change",
)

FINE_WIDTH = 320  # blur needs detail a 160-pixel thumbnail has lost
SMALL_WIDTH = 160  # everything else, and the motion gate
GRID = (8, 6)  # cells across and down: a cell is about a car at the thumbnail's scale
PROBE_WIDTH = 320  # pixels sampled across for the frozen check
SHARE = 0.8  # share of frames over a hold time that must agree: one odd frame neither starts nor ends a fault
# Frozen needs every frame: a live camera's key frames bring fresh sensor noise every GOP, while a
# frozen encoder's key frames repeat the same picture.
START_SHARE = {"frozen": 1.0}
GAP_S = 5.0  # frames further apart than this: the stream broke, start the streaks again


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Thresholds of the checks; the per-camera settings (registry AnalyticsSettings.quality) mirror them."""

    min_duration_s: float = 3.0  # a fault must show this long before it starts
    clear_s: float = 3.0  # and be gone this long before it ends
    solid_fraction: float = 0.97  # share of pixels within a few levels of one colour: a solid screen
    frozen_s: float = 10.0  # seconds of practically identical frames (longer than the camera's GOP)
    frozen_delta: float = 0.35  # mean change of sampled pixels (grey levels) below which two frames are the same
    blur_index: float = 0.36  # re-blur index (0 sharp .. 1 featureless) at or above which the picture is blurred
    dark_luma: float = 40.0  # mean luma (0..255) below which the picture is too dark
    bright_luma: float = 200.0  # mean luma above which it is overexposed
    clipped_fraction: float = 0.15  # or this share of pixels clipped white
    min_contrast: float = 0.30  # (p95 - p5) / (p95 + p5) of luma below which contrast is low
    cast_factor: float = 1.20  # mean chroma over chroma spread (CIELAB) above which there is a colour cast
    occlusion_fraction: float = 0.5  # share of the baseline's textured cells gone flat
    scene_change_fraction: float = 0.6  # share of the reference's textured cells that no longer match
    scene_confirm_s: float = 6.0  # the new view must hold this long (a passing vehicle does not)
    scene_accept_s: float = 120.0  # after this long the new view becomes the reference and the fault ends
    disabled: tuple[str, ...] = ()  # checks not run (they still mask the checks they make meaningless)


@dataclass(frozen=True, slots=True)
class Thumbs:
    """What the checks look at, made once per analysed frame (the motion gate reuses ``small``)."""

    small: np.ndarray  # BGR, 160 wide
    grey: np.ndarray  # luma of ``small``
    fine: np.ndarray  # luma, 320 wide (blur)
    probe: np.ndarray  # green channel sampled without averaging from the full frame (frozen)

    @classmethod
    def of(cls, image: np.ndarray) -> "Thumbs":
        """Shrink a BGR frame once: area averaging to 320 and 160 wide, plus a strided probe."""
        h, w = image.shape[:2]
        fine_bgr = _shrink(image, FINE_WIDTH)
        small = _shrink(fine_bgr, SMALL_WIDTH)
        step = max(1, w // PROBE_WIDTH)
        # Strided, not averaged: averaging 4x4 pixels would divide a live sensor's noise by four.
        probe = np.ascontiguousarray(image[::step, ::step, 1])
        return cls(small, cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), cv2.cvtColor(fine_bgr, cv2.COLOR_BGR2GRAY), probe)


def small_thumb(image: np.ndarray) -> np.ndarray:
    """The 160-wide thumbnail Thumbs.of makes, alone (the motion gate's input on frames not diagnosed)."""
    return _shrink(_shrink(image, FINE_WIDTH), SMALL_WIDTH)


def _shrink(image: np.ndarray, width: int) -> np.ndarray:
    """Area-average down to `width` (never up), halving first: OpenCV's 2x area path is ~8x faster."""
    h, w = image.shape[:2]
    while w >= 2 * width and w % 2 == 0 and h % 2 == 0:
        w, h = w // 2, h // 2
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if w > width:
        image = cv2.resize(image, (width, max(2, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return image


@dataclass(frozen=True, slots=True)
class QualityChange:
    """A fault that started or ended with a frame."""

    fault: str
    phase: str  # "start" | "end"
    score: float  # severity 0..1: 0.5 at the threshold, 1 at the worst the measure can be
    extra: dict[str, Any]  # the measured values behind it


def _severity(x: float, on: float, worst: float) -> float:
    """0.5 at the threshold, 1 at the worst value, falling towards 0 on the good side."""
    if worst == on:
        return 1.0
    return float(min(1.0, max(0.0, 0.5 + 0.5 * (x - on) / (worst - on))))


def _hist_stats(grey: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, 5th and 95th percentile and clipped-white share of a uint8 picture, from one histogram."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    n = hist.sum()
    cdf = np.cumsum(hist)
    p5 = float(np.searchsorted(cdf, 0.05 * n))
    p95 = float(np.searchsorted(cdf, 0.95 * n))
    mean = float(hist @ np.arange(256)) / n
    return mean, p5, p95, float(hist[250:].sum() / n)


def _solid_share(small: np.ndarray) -> tuple[float, tuple[int, int, int]]:
    """Share of pixels within 10 levels of the median colour (per channel, the least of three), and that colour."""
    n = small.shape[0] * small.shape[1]
    share, med = 1.0, []
    for c in range(3):
        hist = cv2.calcHist([small], [c], None, [256], [0, 256]).ravel()
        m = int(np.searchsorted(np.cumsum(hist), n / 2))
        med.append(m)
        share = min(share, float(hist[max(0, m - 10): m + 11].sum()) / n)
    return share, (med[0], med[1], med[2])


def _colour_name(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    if max(bgr) < 40:
        return "black"
    if b > 1.6 * max(g, r):
        return "blue"
    if min(bgr) > 200:
        return "white"
    if max(bgr) - min(bgr) < 25:
        return "grey"
    return "colour"


def reblur_index(grey: np.ndarray) -> float | None:
    """Crété-Roffet re-blur index: 0 for a sharp picture, towards 1 for a blurred one; None when featureless."""
    f = grey.astype(np.float32)
    worst = 0.0
    for ksize, axis in (((1, 9), 0), ((9, 1), 1)):
        b = cv2.blur(f, ksize)
        d_f = np.abs(np.diff(f, axis=axis))
        d_b = np.abs(np.diff(b, axis=axis))
        s_f = float(d_f.sum())
        if s_f < 0.5 * d_f.size:  # under half a grey level per pixel: nothing to judge sharpness by
            return None
        s_v = float(np.maximum(d_f - d_b, 0).sum())
        worst = max(worst, (s_f - s_v) / s_f)
    return worst


def _cells(grey: np.ndarray) -> np.ndarray:
    """The grid's cells as rows of pixels (float32), the picture cropped to a whole number of cells."""
    cw, ch = grey.shape[1] // GRID[0], grey.shape[0] // GRID[1]
    g = grey[: ch * GRID[1], : cw * GRID[0]].astype(np.float32)
    return g.reshape(GRID[1], ch, GRID[0], cw).transpose(0, 2, 1, 3).reshape(GRID[0] * GRID[1], ch * cw)


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of matching cells (rows); 0 where either is flat."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(den > 1e-3, (a * b).sum(axis=1) / np.maximum(den, 1e-3), 0.0)


class _Check:
    """One fault's debounce: a start after SHARE of a hold time shows it, an end after SHARE of clear_s clears."""

    __slots__ = ("name", "hist", "active", "since", "peak")

    def __init__(self, name: str) -> None:
        self.name = name
        self.hist: collections.deque[tuple[float, bool, bool]] = collections.deque()
        self.active = False
        self.since = 0.0
        self.peak = 0.0

    def push(self, ts: float, on: bool, clear: bool, keep: float) -> None:
        self.hist.append((ts, on, clear))
        # Keep one entry older than the window: it is the frame on screen when the window opened.
        while len(self.hist) > 2 and self.hist[1][0] <= ts - keep:
            self.hist.popleft()

    def share(self, ts: float, window: float, which: int) -> float:
        """Share of frames in the last `window` seconds with flag `which`; 0 until the history spans it."""
        if not self.hist or ts - self.hist[0][0] < window:
            return 0.0
        entries = [e for e in self.hist if e[0] > ts - window]
        older = [e for e in self.hist if e[0] <= ts - window]
        if older:
            entries.append(older[-1])
        return sum(1 for e in entries if e[which]) / len(entries)

    def reset(self) -> None:
        self.hist.clear()


class QualityDiagnoser:
    """Per-camera video quality diagnosis; update() with each analysed frame returns the faults that changed."""

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self._checks = {name: _Check(name) for name in FAULTS}
        self._lock = threading.Lock()  # update() runs in a worker thread, flush() on the loop
        self._last_ts: float | None = None
        self._prev_probe: np.ndarray | None = None
        self._tex_ref: np.ndarray | None = None  # per-cell texture baseline (occlusion)
        self._home: np.ndarray | None = None  # reference view, grey cells (scene change)
        self._candidate: np.ndarray | None = None  # a new view the camera may have settled on
        self.last: dict[str, float] = {}  # the last frame's measures, for status and debugging

    @property
    def active(self) -> tuple[str, ...]:
        """Faults active now, in FAULTS order."""
        return tuple(name for name, c in self._checks.items() if c.active)

    def reset(self) -> None:
        """Forget baselines and streaks (not the active faults): a new stream or a new view."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        for c in self._checks.values():
            c.reset()
        self._prev_probe = None
        self._tex_ref = None
        self._home = None
        self._candidate = None

    def flush(self, ts: float, cause: str) -> list[QualityChange]:
        """End every active fault (camera stopped, diagnosis switched off): every start gets its end."""
        with self._lock:
            out = []
            for c in self._checks.values():
                if c.active:
                    c.active = False
                    out.append(QualityChange(c.name, "end", 0.0, {"cause": cause, "duration_s": round(ts - c.since, 1),
                                                                   "peak_score": round(c.peak, 3)}))
            self._reset_locked()
            self._last_ts = None
            return out

    def update(self, image: np.ndarray | Thumbs, ts: float) -> list[QualityChange]:
        """Diagnose one analysed frame (BGR image or its Thumbs) captured at `ts` seconds."""
        thumbs = image if isinstance(image, Thumbs) else Thumbs.of(image)
        with self._lock:
            return self._update(thumbs, ts)

    # ---- the checks ----------------------------------------------------------------------------
    def _update(self, t: Thumbs, ts: float) -> list[QualityChange]:
        cfg = self.config
        if self._last_ts is not None and not 0 <= ts - self._last_ts <= GAP_S:
            # A break in the stream (or a clock step): streaks start again, faults stay as they were.
            for c in self._checks.values():
                c.reset()
            self._prev_probe = None
        dt = 0.2 if self._last_ts is None else max(ts - self._last_ts, 1e-3)
        self._last_ts = ts

        mean, p5, p95, clipped = _hist_stats(t.grey)
        solid, colour = _solid_share(t.small)
        contrast = (p95 - p5) / (p95 + p5) if p95 + p5 > 0 else 0.0
        lab = cv2.cvtColor(t.small, cv2.COLOR_BGR2Lab)
        m, s = cv2.meanStdDev(lab)
        a_mean, b_mean = float(m[1, 0]) - 128.0, float(m[2, 0]) - 128.0
        chroma = math.hypot(a_mean, b_mean)
        cast = chroma / max(math.hypot(float(s[1, 0]), float(s[2, 0])), 1.0)
        blur = reblur_index(t.fine)

        probe = t.probe
        prev, self._prev_probe = self._prev_probe, probe
        delta = moving = None
        if prev is not None and prev.shape == probe.shape:
            diff = cv2.absdiff(probe, prev)
            delta = float(diff.mean())
            moving = float(np.count_nonzero(diff > 24)) / diff.size

        cells = _cells(t.grey)
        spread = max(p95 - p5, 16.0)
        tex = cells.std(axis=1) / spread
        occluded = self._occlusion(tex, dt)
        changed, changed_cand = self._scene(cells, dt)

        v = {
            "luma_mean": mean, "luma_p5": p5, "luma_p95": p95, "clipped_fraction": clipped,
            "uniform_fraction": solid, "contrast": contrast, "cast_factor": cast, "a_mean": a_mean, "b_mean": b_mean,
            "blur_index": -1.0 if blur is None else blur, "frame_delta": -1.0 if delta is None else delta,
            "moving_fraction": -1.0 if moving is None else moving, "occluded_fraction": occluded,
            "changed_fraction": changed,
        }
        self.last = v

        # (on, clear, score, extra) per check; neither on nor clear where it cannot be judged on this frame.
        raw: dict[str, tuple[bool, bool, float, dict[str, Any]]] = {}
        sol = solid >= cfg.solid_fraction
        raw["signal_loss"] = (sol, solid < cfg.solid_fraction - 0.05, _severity(solid, cfg.solid_fraction, 1.0),
                              {"uniform_fraction": solid, "colour": _colour_name(colour), "luma_mean": mean})
        if delta is None:
            raw["frozen"] = (False, False, 0.0, {})
        else:
            still = delta < cfg.frozen_delta and moving is not None and moving < 0.001
            raw["frozen"] = (still, delta >= cfg.frozen_delta * 1.5 or (moving or 0) >= 0.002,
                             _severity(-delta, -cfg.frozen_delta, 0.0), {"frame_delta": delta})
        if blur is None:
            raw["blur"] = (False, False, 0.0, {})
        else:
            raw["blur"] = (blur >= cfg.blur_index, blur < cfg.blur_index - 0.03, _severity(blur, cfg.blur_index, 0.8),
                           {"blur_index": blur})
        raw["too_dark"] = (mean < cfg.dark_luma, mean >= cfg.dark_luma * 1.15, _severity(-mean, -cfg.dark_luma, 0.0),
                           {"luma_mean": mean, "luma_p95": p95})
        over = mean > cfg.bright_luma or clipped > cfg.clipped_fraction
        raw["overexposed"] = (
            over, mean <= cfg.bright_luma - 10 and clipped <= 0.8 * cfg.clipped_fraction,
            max(_severity(mean, cfg.bright_luma, 255.0), _severity(clipped, cfg.clipped_fraction, 1.0)),
            {"luma_mean": mean, "clipped_fraction": clipped},
        )
        raw["low_contrast"] = (contrast < cfg.min_contrast, contrast >= cfg.min_contrast * 1.15,
                               _severity(-contrast, -cfg.min_contrast, 0.0),
                               {"contrast": contrast, "luma_p5": p5, "luma_p95": p95})
        # A grey picture (night mode) has no chroma to speak of: its ratio is noise over noise.
        raw["colour_cast"] = (cast > cfg.cast_factor and chroma >= 5.0, cast <= cfg.cast_factor * 0.85 or chroma < 4.0,
                              _severity(cast, cfg.cast_factor, 4.0),
                              {"cast_factor": cast, "a_mean": a_mean, "b_mean": b_mean})
        raw["occlusion"] = (occluded >= cfg.occlusion_fraction, occluded < cfg.occlusion_fraction * 0.7,
                            _severity(occluded, cfg.occlusion_fraction, 1.0), {"occluded_fraction": occluded})
        scene = self._checks["scene_change"]
        raw["scene_change"] = (
            changed >= cfg.scene_change_fraction and changed_cand < 0.5,
            changed < cfg.scene_change_fraction * 0.6,
            _severity(changed, cfg.scene_change_fraction, 1.0),
            {"changed_fraction": changed},
        )

        # A worse fault masks the checks it makes meaningless (raw now, or already active).
        def bad(name: str) -> bool:
            return raw[name][0] or self._checks[name].active

        masks: dict[str, str | None] = {name: None for name in FAULTS}
        if bad("signal_loss"):
            for name in FAULTS[1:]:
                masks[name] = "signal_loss"
        else:
            exposure = next((n for n in ("too_dark", "overexposed") if bad(n)), None)
            for name in ("blur", "low_contrast", "colour_cast", "occlusion", "scene_change"):
                masks[name] = exposure
            if exposure is None and bad("occlusion"):
                for name in ("blur", "low_contrast", "colour_cast", "scene_change"):
                    masks[name] = "occlusion"

        out: list[QualityChange] = []
        hold = {"frozen": cfg.frozen_s, "scene_change": cfg.scene_confirm_s}
        keep = max(cfg.min_duration_s, cfg.clear_s, cfg.frozen_s, cfg.scene_confirm_s) + 1.0
        for name in FAULTS:
            c = self._checks[name]
            on, clear, score, extra = raw[name]
            mask = masks[name]
            if mask is not None or name in cfg.disabled:
                on, clear = False, True
            c.push(ts, on, clear, keep)
            extra = {k: (round(float(x), 3) if isinstance(x, float) else x) for k, x in extra.items()}
            if not c.active:
                if on and c.share(ts, hold.get(name, cfg.min_duration_s), 1) >= START_SHARE.get(name, SHARE) - 1e-9:
                    c.active, c.since, c.peak = True, ts, score
                    out.append(QualityChange(name, "start", round(score, 3), extra))
                    if name == "scene_change":
                        self._tex_ref = None  # the texture baseline described the old view
            else:
                c.peak = max(c.peak, score) if mask is None else c.peak
                accepted = name == "scene_change" and ts - c.since >= cfg.scene_accept_s
                if accepted or c.share(ts, cfg.clear_s, 2) >= SHARE:
                    c.active = False
                    extra = {**extra, "duration_s": round(ts - c.since, 1), "peak_score": round(c.peak, 3)}
                    if mask is not None:
                        extra["superseded_by"] = mask
                    elif name in cfg.disabled:
                        extra["cause"] = "check switched off"
                    if accepted:
                        extra["accepted"] = True  # the next frame is the new reference view
                        self._home, self._candidate = None, None
                    if name == "scene_change":
                        self._tex_ref = None
                        scene.reset()
                    out.append(QualityChange(name, "end", round(score if mask is None else 0.0, 3), extra))
        return out

    def _occlusion(self, tex: np.ndarray, dt: float) -> float:
        """Share of the baseline's textured cells that are flat now; learns the baseline while uncovered."""
        ref = self._tex_ref
        if ref is None or ref.shape != tex.shape:
            self._tex_ref = tex.copy()
            return 0.0
        textured = ref >= 0.06
        if textured.sum() < 0.2 * tex.size:
            frac = 0.0  # a featureless view: nothing a cover could hide
        else:
            frac = float(np.count_nonzero(textured & (tex < 0.02))) / float(textured.sum())
        if frac < 0.5 * self.config.occlusion_fraction and not self._checks["occlusion"].active:
            # A slow baseline (30 s): a lasting cover is never learned as the normal picture.
            a = 1.0 - math.exp(-dt / 30.0)
            ref += a * (tex - ref)
        return frac

    def _scene(self, cells: np.ndarray, dt: float) -> tuple[float, float]:
        """Share of the reference's textured cells that no longer match, and the same against the candidate."""
        home = self._home
        if home is None or home.shape != cells.shape:
            self._home = cells.copy()
            return 0.0, 1.0
        textured = home.std(axis=1) >= 3.0
        if textured.sum() < 0.2 * cells.shape[0]:
            self._home = cells.copy()  # too little to compare: take the view as it is
            return 0.0, 1.0
        changed = float(np.count_nonzero(textured & (_ncc(cells, home) < 0.5))) / float(textured.sum())
        check = self._checks["scene_change"]
        cfg = self.config
        if changed < 0.6 * cfg.scene_change_fraction:
            self._candidate = None
            if not check.active:
                # Follow slow drift (light, a slow pan) with a 2 s time constant, only while the view matches.
                a = 1.0 - math.exp(-dt / 2.0)
                home += a * (cells - home)
            return changed, 1.0
        if check.active or changed < cfg.scene_change_fraction:
            return changed, 1.0
        cand = self._candidate
        if cand is None:
            self._candidate = cells.copy()
            check.reset()  # the streak counts from the moment the view settled
            return changed, 0.0
        ctex = cand.std(axis=1) >= 3.0
        moved = float(np.count_nonzero(ctex & (_ncc(cells, cand) < 0.5))) / max(float(ctex.sum()), 1.0)
        if moved >= 0.5:
            # Still moving (a pan, a vehicle filling the view): the new view has not settled yet.
            self._candidate = cells.copy()
            check.reset()
            return changed, 0.0
        cand += (1.0 - math.exp(-dt / 2.0)) * (cells - cand)
        return changed, moved
