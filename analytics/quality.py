"""Video quality diagnosis (视频质量诊断) on frames already decoded: one small set of thumbnails per frame.

Checks, each a fault with a start and an end (see QualityConfig for the thresholds):

- ``signal_loss`` — a black, blue or other single-colour screen (a DVR's "no video" page, a dead
  encoder). A source that sends no frames at all is the camera's ``offline`` state, not a fault here.
- ``frozen`` — the analysed frames stay practically identical to the first of a still streak: compared
  on pixels sampled from the full-resolution frame (not averaged), so a live sensor's noise counts as
  change, and only on the flattest quarter of them, where an encoder that re-quantizes its one picture
  at every key frame has no detail to round differently, so that does not.
- ``blur`` — the re-blur index of Crété-Roffet et al. (2007): the share of the picture's gradient
  that survives blurring it again. It is a ratio of the picture to itself, so it compares across
  scenes where gradient energy (variance of the Laplacian varies 3x across the street clip's scenes)
  does not.
- ``too_dark`` / ``overexposed`` — mean luma, and the share of clipped white pixels.
- ``low_contrast`` — (p95 - p5) / (p95 + p5) of luma: a veil of fog or a washed-out picture; it does
  not change with gain, so a dim picture is too dark, not low in contrast.
- ``colour_cast`` — the cast factor of the equivalent-circle method: distance of the mean (a*, b*)
  from neutral over the spread of (a*, b*) in CIELAB.
- ``occlusion`` — the share of grid cells that carried detail in the learned baseline and now show
  nothing (detail measured relative to the picture's own contrast, so fog is not cover; a cell whose
  detail is all blur shows nothing either); or, baseline or not, one connected region of such cells
  over most of the grid next to cells that still show the scene (a lens covered, sprayed or smeared
  before any baseline was learned). The baseline is learned only from uncovered, normally exposed
  views, and a ``BaselineStore`` keeps it across restarts.
- ``scene_change`` — the view no longer matches the learned reference (per-cell normalised
  cross-correlation, blind to lighting) and holds steady on a new view for ``scene_confirm_s``.
  A passing bus covers part of the grid for a few seconds; a moved camera changes most of it for good.
  It ends when the view returns, or after ``scene_accept_s`` when the new view becomes the reference.

A fault starts when 80 % of the analysed frames over its hold time show it (``min_duration_s``;
``scene_confirm_s`` for scene change; all frames over ``frozen_s`` for frozen), and ends when 80 %
over ``clear_s`` are back inside a hysteresis margin. Checks that a worse fault makes meaningless
are held off while it lasts: a solid screen masks everything; darkness or glare masks blur,
contrast, cast, cover and scene; a cover masks blur, contrast, cast and scene. While a cover of one
even shade is seen, exposure is judged on the part of the picture it leaves: a dark cover over most
of the lens is not a dark scene, while a night's uneven dark still masks the cover check.
"""

from __future__ import annotations

import collections
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
# frozen encoder's key frames only re-quantize the same picture.
START_SHARE = {"frozen": 1.0}
GAP_S = 5.0  # frames further apart than this: the stream broke, start the streaks again

# Frozen. An encoder repeating one picture re-quantizes it at every key frame (a camera's rate control
# gives each GOP its own quantizer): mean change 1.0-1.2 grey levels over the samples, none above 15,
# all of it where the picture has detail to round: its flattest quarter changes by at most 0.8 against
# the streak's first frame, while a live sensor's noise changes it as much as the rest (night in
# day_night.mp4: 2.1 and more analysed at 5 fps, 3.6 and more at 1 fps).
FLAT_SHARE = 0.25  # share of the probe, least local range first, that the frozen check compares
MOVE_LEVEL = 24  # a sample changed by more than this moved: re-quantizing never does (15 at most measured)
MOVED_SHARE = 0.001  # share of moved samples below which a frame may still be the same picture
CLIP_MARGIN = 3  # samples this close to 0 or 255 are clipped: a live sensor's noise does not show there

# Occlusion. Detail of a cell: mean |dx| + |dy| of the 160-wide luma over the picture's p5..p95 spread.
# A cover or a smear near the lens is far out of focus: 0.001-0.003 under a cover, 0.006-0.035 under a
# smear, while cells of the street that show anything carry 0.06-0.3 (its sky, 0.007, is featureless too).
FEATURELESS = 0.04  # detail below which a cell shows nothing (cover, smear, sky, a plain wall)
TEXTURED = 0.06  # detail at or above which a cell shows the scene: the cells a cover can hide
# Without a baseline a cover is one connected featureless region over most of the grid, next to cells
# that still show the scene. The street's sky reaches 0.17 of the grid; a cover under 0.7 of it stays
# unseen until a baseline exists, and a view that is mostly plain wall or sky is taken for a cover.
BLIND_FRACTION = 0.7
BLIND_CLEAR = 0.8  # the region must shrink below this share of BLIND_FRACTION for the fault to end
MIN_TEXTURED_SHARE = 0.2  # a baseline with fewer textured cells shows too little for a cover to hide
MIN_VISIBLE = 2  # cells with detail outside the region: with none the picture is blurred, foggy or dark
SMEARED = 0.65  # a cell's re-blur index (160 wide) from which its detail is all blur: a smear, not the scene
# (the street's cells stay under 0.58; out of focus at 2.5 px, the blur fault clip, 0.71 at most, in
# a few cells; under a grease smear 0.5-0.9, cells below 0.65 there being nearly featureless anyway).
CLIPPED_LEVEL = 250  # luma from which a pixel counts as clipped white (overexposed)
# An opaque cover is one even shade, softly shaded (p5..p95 of its pixels: 10-32 levels for a dark
# cover with a soft edge), where a night's unlit ground carries glow and lit patches (90 and more).
COVER_RANGE = 48
LEARN_TAU_S = 30.0  # time constant of the baseline: a lasting cover is never learned as the normal picture
SAVE_AFTER_S = 60.0  # seconds of uncovered view learned before the baseline is worth keeping
SAVE_EVERY_S = 300.0  # at most one save per camera this often (the store is the tier's Redis)
BASELINE_VERSION = 1  # bumped whenever the detail measure changes: older saved baselines are ignored


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Thresholds of the checks; the per-camera settings (registry AnalyticsSettings.quality) mirror them."""

    min_duration_s: float = 3.0  # a fault must show this long before it starts
    clear_s: float = 3.0  # and be gone this long before it ends
    solid_fraction: float = 0.97  # share of pixels within a few levels of one colour: a solid screen
    frozen_s: float = 10.0  # seconds of practically identical frames (longer than the camera's GOP)
    frozen_delta: float = 1.2  # mean change of the flattest samples (grey levels) below which frames are the same
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
    def of(cls, image: np.ndarray, small: np.ndarray | None = None) -> "Thumbs":
        """Shrink a BGR frame once: area averaging to 320 and 160 wide (unless `small` is given), plus a strided probe."""
        h, w = image.shape[:2]
        fine_bgr = _shrink(image, FINE_WIDTH)
        if small is None:
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
    return mean, p5, p95, float(hist[CLIPPED_LEVEL:].sum() / n)


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


def cell_detail(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per grid cell: mean |dx| + |dy| (grey levels per pixel), and the re-blur index of reblur_index (1: no
    gradient at all). A cover takes the first away; a smear leaves a little, all of it blurred.
    """
    cw, ch = grey.shape[1] // GRID[0], grey.shape[0] // GRID[1]
    f = grey[: ch * GRID[1], : cw * GRID[0]].astype(np.float32)
    total = np.zeros(GRID[0] * GRID[1], np.float32)
    worst = np.zeros(GRID[0] * GRID[1], np.float32)
    for ksize, axis in (((1, 9), 0), ((9, 1), 1)):
        b = cv2.blur(f, ksize)
        d_f, d_b = np.zeros_like(f), np.zeros_like(f)
        head = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        d_f[head] = np.abs(np.diff(f, axis=axis))
        d_b[head] = np.abs(np.diff(b, axis=axis))
        # Area resizing to the grid is the mean of each cell, and fast.
        s_f = cv2.resize(d_f, GRID, interpolation=cv2.INTER_AREA).ravel()
        s_v = cv2.resize(np.maximum(d_f - d_b, 0), GRID, interpolation=cv2.INTER_AREA).ravel()
        total += s_f
        worst = np.maximum(worst, (s_f - s_v) / np.maximum(s_f, 1e-6))
    return total, worst


_RANGE_KERNEL = np.ones((3, 3), np.uint8)


def _flattest(probe: np.ndarray, share: float = FLAT_SHARE) -> np.ndarray:
    """Mask of the samples with the least local range (3x3 max - min), at least `share` of them (ties join).

    Clipped samples (crushed black, blown white) are left out: there even a live sensor shows no noise.
    """
    local = cv2.morphologyEx(probe, cv2.MORPH_GRADIENT, _RANGE_KERNEL)
    lit = (probe > CLIP_MARGIN) & (probe < 255 - CLIP_MARGIN)
    if np.count_nonzero(lit) < share * probe.size:
        lit = np.ones(probe.shape, bool)  # mostly clipped: judge by what there is
    level = int(np.searchsorted(np.cumsum(np.bincount(local[lit], minlength=256)), share * np.count_nonzero(lit)))
    return lit & (local <= level)


def _featureless_region(blank: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of blank cells, as a mask over the cells (none: all False)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(blank.reshape(GRID[1], GRID[0]).astype(np.uint8),
                                                           connectivity=4)
    if n < 2:
        return np.zeros(blank.shape, bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == best).ravel()


def _is_cover(pixels: np.ndarray) -> bool:
    """Whether blank cells' pixels look like one opaque cover: an even shade, not clipped black.

    A night's unlit ground is blank too, but lamps' glow and lit patches make it uneven, and where the
    camera clips it to black it cannot be told from a black cover: there the darkness counts as the scene's.
    """
    p5, p50, p95 = np.percentile(pixels, (5, 50, 95))
    return p95 - p5 <= COVER_RANGE and p50 > CLIP_MARGIN


@dataclass(frozen=True, slots=True)
class Baseline:
    """A camera's learned occlusion baseline, as a BaselineStore keeps it across restarts."""

    detail: tuple[float, ...]  # per cell, row by row: cell_detail over the picture's spread
    learned_s: float  # seconds of uncovered, normally exposed view it was learned from

    def to_bytes(self) -> bytes:
        """JSON, tagged with the grid and the measure's version so a changed diagnoser ignores it."""
        return json.dumps({"v": BASELINE_VERSION, "grid": list(GRID), "learned_s": round(self.learned_s, 1),
                           "detail": [round(x, 5) for x in self.detail]}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Baseline | None":
        """The baseline in `data`; None when it is not one this diagnoser can use (other grid, version, garbage)."""
        try:
            raw = json.loads(data)
            detail = tuple(float(x) for x in raw["detail"])
            learned = float(raw["learned_s"])
            ok = raw["v"] == BASELINE_VERSION and list(raw["grid"]) == list(GRID)
        except (ValueError, TypeError, KeyError):
            return None
        if not ok or len(detail) != GRID[0] * GRID[1] or not all(math.isfinite(x) and x >= 0 for x in detail):
            return None
        # A baseline with next to nothing textured has nothing a cover could hide: it is no reference.
        if sum(x >= TEXTURED for x in detail) < MIN_TEXTURED_SHARE * len(detail) or not learned >= 0:
            return None
        return cls(detail, learned)


class BaselineStore(Protocol):
    """Keeps one camera's occlusion baseline across restarts (gateway/quality_store.py: the tier's Redis)."""

    def load(self, deliver: Callable[[bytes | None], None]) -> None:
        """Fetch the saved baseline and hand it to `deliver` (None: none saved), now or later, from any thread."""
        ...

    def save(self, data: bytes) -> None:
        """Keep `data` as the camera's baseline; never blocks (called on the analysis thread)."""
        ...

    def forget(self) -> None:
        """Drop the saved baseline (the camera looks at another view now); never blocks."""
        ...


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

    def __init__(self, config: QualityConfig | None = None, store: BaselineStore | None = None) -> None:
        self.config = config or QualityConfig()
        self._checks = {name: _Check(name) for name in FAULTS}
        self._lock = threading.Lock()  # update() runs in a worker thread, flush() on the loop
        self._last_ts: float | None = None
        self._still_ref: np.ndarray | None = None  # probe of the first frame of the still streak (frozen)
        self._still_flat: np.ndarray | None = None  # its flattest samples (_flattest)
        self._tex_ref: np.ndarray | None = None  # per-cell detail baseline (occlusion)
        self._learned_s = 0.0  # seconds of uncovered view the baseline was learned from
        self._saved_at: float | None = None  # when the baseline was last handed to the store
        self._home: np.ndarray | None = None  # reference view, grey cells (scene change)
        self._candidate: np.ndarray | None = None  # a new view the camera may have settled on
        self.last: dict[str, float] = {}  # the last frame's measures, for status and debugging
        self._store = store
        if store is not None:
            store.load(self.restore)

    @property
    def active(self) -> tuple[str, ...]:
        """Faults active now, in FAULTS order."""
        return tuple(name for name, c in self._checks.items() if c.active)

    @property
    def store(self) -> BaselineStore | None:
        """Where the occlusion baseline is kept across restarts (None: nowhere)."""
        return self._store

    @property
    def baseline(self) -> Baseline | None:
        """The occlusion baseline as learned so far (None: none yet)."""
        with self._lock:
            ref = self._tex_ref
            return None if ref is None else Baseline(tuple(float(x) for x in ref), self._learned_s)

    def restore(self, data: bytes | None) -> bool:
        """Take a saved baseline (Baseline.to_bytes) as the occlusion reference; False if none or unusable."""
        baseline = Baseline.from_bytes(data) if data else None
        if baseline is None:
            return False
        with self._lock:
            # Whatever was learned since the start (a few frames, perhaps of a covered lens) gives way.
            self._tex_ref = np.array(baseline.detail, np.float32)
            self._learned_s = baseline.learned_s
            # Saved already; restored before any frame, the first frame it learns from saves it again
            # (which renews its expiry), and the next save is SAVE_EVERY_S after that.
            self._saved_at = self._last_ts
        return True

    def reset(self) -> None:
        """Forget baselines and streaks (not the active faults): a new stream or a new view."""
        with self._lock:
            self._reset_locked()
            self._forget_baseline()

    def _reset_locked(self) -> None:
        for c in self._checks.values():
            c.reset()
        self._still_ref = None
        self._home = None
        self._candidate = None

    def _forget_baseline(self, saved: bool = False) -> None:
        """Forget the occlusion baseline, and with `saved` the store's copy too (it shows the old view)."""
        self._tex_ref = None
        self._learned_s = 0.0
        self._saved_at = None
        if saved and self._store is not None:
            self._store.forget()

    def flush(self, ts: float, cause: str) -> list[QualityChange]:
        """End every active fault (camera stopped, diagnosis switched off): every start gets its end.

        The occlusion baseline is kept, as it is across restarts: switched on again over a covered lens,
        diagnosis still knows what the lens showed before.
        """
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
            self._still_ref = None
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

        delta, moving = self._stillness(t.probe, cfg.frozen_delta)

        cells = _cells(t.grey)
        spread = max(p95 - p5, 16.0)
        detail, reblurred = cell_detail(t.grey)
        tex = detail / spread
        blank = (tex < FEATURELESS) | (reblurred >= SMEARED)  # cells that show nothing of the scene
        dark, over = mean < cfg.dark_luma, mean > cfg.bright_luma or clipped > cfg.clipped_fraction
        occluded, featureless, region = self._occlusion(tex, blank, ts, dt, exposed=not (dark or over))
        seen = mean  # the luma exposure is judged on
        covered = (occluded >= cfg.occlusion_fraction or featureless >= BLIND_FRACTION
                   or self._checks["occlusion"].active)
        if covered and region.any() and not blank.all() and _is_cover(cells[region]):
            # Exposure is judged on what the lens still sees: a dark cover over most of it is not a dark scene.
            shown = cells[~blank]
            seen, clipped = float(shown.mean()), float(np.count_nonzero(shown >= CLIPPED_LEVEL)) / shown.size
        changed, changed_cand = self._scene(cells, dt)

        v = {
            "luma_mean": mean, "luma_p5": p5, "luma_p95": p95, "clipped_fraction": clipped,
            "uniform_fraction": solid, "contrast": contrast, "cast_factor": cast, "a_mean": a_mean, "b_mean": b_mean,
            "blur_index": -1.0 if blur is None else blur, "frame_delta": -1.0 if delta is None else delta,
            "moving_fraction": -1.0 if moving is None else moving, "occluded_fraction": occluded,
            "featureless_fraction": featureless, "seen_luma": seen, "changed_fraction": changed,
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
            still = delta < cfg.frozen_delta and moving is not None and moving < MOVED_SHARE
            raw["frozen"] = (still, delta >= cfg.frozen_delta * 1.5 or (moving or 0) >= 2 * MOVED_SHARE,
                             _severity(-delta, -cfg.frozen_delta, 0.0), {"frame_delta": delta})
        if blur is None:
            raw["blur"] = (False, False, 0.0, {})
        else:
            raw["blur"] = (blur >= cfg.blur_index, blur < cfg.blur_index - 0.03, _severity(blur, cfg.blur_index, 0.8),
                           {"blur_index": blur})
        raw["too_dark"] = (seen < cfg.dark_luma, seen >= cfg.dark_luma * 1.15, _severity(-seen, -cfg.dark_luma, 0.0),
                           {"luma_mean": seen, "luma_p95": p95})
        raw["overexposed"] = (
            seen > cfg.bright_luma or clipped > cfg.clipped_fraction,
            seen <= cfg.bright_luma - 10 and clipped <= 0.8 * cfg.clipped_fraction,
            max(_severity(seen, cfg.bright_luma, 255.0), _severity(clipped, cfg.clipped_fraction, 1.0)),
            {"luma_mean": seen, "clipped_fraction": clipped},
        )
        raw["low_contrast"] = (contrast < cfg.min_contrast, contrast >= cfg.min_contrast * 1.15,
                               _severity(-contrast, -cfg.min_contrast, 0.0),
                               {"contrast": contrast, "luma_p5": p5, "luma_p95": p95})
        # A grey picture (night mode) has no chroma to speak of: its ratio is noise over noise.
        raw["colour_cast"] = (cast > cfg.cast_factor and chroma >= 5.0, cast <= cfg.cast_factor * 0.85 or chroma < 4.0,
                              _severity(cast, cfg.cast_factor, 4.0),
                              {"cast_factor": cast, "a_mean": a_mean, "b_mean": b_mean})
        raw["occlusion"] = (
            occluded >= cfg.occlusion_fraction or featureless >= BLIND_FRACTION,
            occluded < cfg.occlusion_fraction * 0.7 and featureless < BLIND_FRACTION * BLIND_CLEAR,
            max(_severity(occluded, cfg.occlusion_fraction, 1.0), _severity(featureless, BLIND_FRACTION, 1.0)),
            {"occluded_fraction": occluded, "featureless_fraction": featureless},
        )
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
                        self._forget_baseline(saved=True)  # the detail baseline described the old view
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
                        self._forget_baseline(saved=True)
                        scene.reset()
                    out.append(QualityChange(name, "end", round(score if mask is None else 0.0, 3), extra))
        return out

    def _stillness(self, probe: np.ndarray, same: float) -> tuple[float | None, float | None]:
        """Change of the flattest samples against the first frame of the still streak, and the share moved.

        A frame that differs by `same` or more, or moved, starts a new streak: slow real change (light,
        shadows) adds up against the streak's first frame, while re-quantizing one picture never does.
        """
        ref = self._still_ref
        if ref is None or ref.shape != probe.shape or self._still_flat is None:
            self._still_ref, self._still_flat = probe, _flattest(probe)
            return None, None
        diff = cv2.absdiff(probe, ref)
        delta = float(diff[self._still_flat].mean())
        moving = float(np.count_nonzero(diff > MOVE_LEVEL)) / diff.size
        if delta >= same or moving >= MOVED_SHARE:
            self._still_ref, self._still_flat = probe, _flattest(probe)
        return delta, moving

    def _occlusion(self, tex: np.ndarray, blank: np.ndarray, ts: float, dt: float,
                   exposed: bool) -> tuple[float, float, np.ndarray]:
        """Share of the baseline's textured cells now blank; the share of the grid one connected blank region
        covers next to cells that still show the scene (0 when fewer than MIN_VISIBLE do); that region.

        Learns the baseline only from uncovered, normally exposed views, and hands it to the store now and then.
        """
        cfg = self.config
        region = _featureless_region(blank)
        visible = np.count_nonzero(~region & ~blank & (tex >= TEXTURED))
        featureless = float(np.count_nonzero(region)) / tex.size if visible >= MIN_VISIBLE else 0.0
        ref = self._tex_ref
        if ref is not None and ref.shape != tex.shape:
            ref = self._tex_ref = None
        frac = 0.0
        if ref is not None:
            textured = ref >= TEXTURED
            if textured.sum() >= MIN_TEXTURED_SHARE * tex.size:  # else a featureless view: nothing to hide
                frac = float(np.count_nonzero(textured & blank)) / float(textured.sum())
        uncovered = (frac < 0.5 * cfg.occlusion_fraction and featureless < BLIND_FRACTION
                     and not self._checks["occlusion"].active)
        if exposed and uncovered:
            if ref is None:
                self._tex_ref = tex.astype(np.float32)
            else:
                # A slow baseline: a lasting cover is never learned as the normal picture.
                ref += (1.0 - math.exp(-dt / LEARN_TAU_S)) * (tex - ref)
            self._learned_s += min(dt, GAP_S)  # after a break in the stream, one frame is not minutes of view
            self._maybe_save(ts)
        return frac, featureless, region

    def _maybe_save(self, ts: float) -> None:
        """Hand the baseline to the store once it is learned well enough, then at most every SAVE_EVERY_S."""
        if self._store is None or self._tex_ref is None or self._learned_s < SAVE_AFTER_S:
            return
        if self._saved_at is not None and 0 <= ts - self._saved_at < SAVE_EVERY_S:
            return
        self._saved_at = ts
        self._store.save(Baseline(tuple(float(x) for x in self._tex_ref), self._learned_s).to_bytes())

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
