"""A crowd clip with known paths, made from real footage: 20+ pedestrians cut out of the street clip walk both
ways across a counting line, pass and hide each other, cross the picture sideways, and some stand a while.

The people are the street clip's own pedestrians (tests/media_rules.py uses the first), cut out of their
frames with GrabCut (a mask, not a rectangle, so a nearer person hides only what a body would hide), and
told apart by flipping, height and brightness. The picture is a street seen from above at an angle: a
person's height grows with how low their feet are in the picture. Every walker's feet follow a path
simulated frame by frame, so the line crossings each way (the ground truth) follow from the paths
(`ground_truth`), as do the boxes where each walker is drawn (`boxes_at`, for id switches).

The clip is written at test or bench time into a cache folder (`cached_clip`), never committed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

from analytics.detector import Detector
from analytics.rules import Line, RuleEngine, TrackPoint
from analytics.tracker import IouTracker, greedy_pairs, iou_matrix
from analytics.types import Detection, Frame
from sample_streams.generate import make_clip

WIDTH, HEIGHT, FPS = 1280, 720, 25
PERSON = frozenset({"person"})
VERSION = 2  # bump when the scene or the drawing changes: cached clips carry it in their name

# Pedestrians of the street clip (frame number, their box in 0..1 as the model finds it there): the
# walking man by the bus stop (8.64 s) and the man loading a car in the car park (12.48 s). (His
# neighbour, bent over a trolley, GrabCut does not cut out at a size that is quick to cut.)
SOURCES = (
    (216, (0.018, 0.535, 0.072, 0.847)),
    (312, (0.319, 0.081, 0.547, 1.0)),
)
GRABCUT_ITERATIONS = 5
CUT_HEIGHT = 280  # pixels: cut-outs are cut at most this high (the tallest walker is ~270 px): quick to cut
BACKGROUND_AT = 216  # the bus stop's street and pavement (8.64 s)...
BACKGROUND_BLUR = 40.0  # ...blurred past recognition (sigma in pixels at 1280 wide, as tests/media_rules.py)

# Perspective: a person's height, as a share of the picture's, where their feet are at y (0..1).
# YOLOX-Nano (416 wide input) finds a lone cut-out from ~180 px high (0.25 of 720) and hardly below 150.
HEIGHT_AT_TOP, HEIGHT_GROWTH = 0.22, 0.22  # 0.27 at y = 0.25, 0.35 at the line, 0.44 at the bottom
LINE_Y = 0.6
LINE = Line("crossing", (0.02, LINE_Y), (0.98, LINE_Y))  # left to right: walking down across it is "in"
ARRIVALS = 3.0  # walkers a second: a median of 19-24 in view at once (seeds 7, 12), as they take 6-15 s to cross
SIZE_SPREAD = 0.08  # walkers are up to 8 % shorter or taller than person_height
STEP_BOB = 0.012  # up-and-down of a step, a share of the body's height, at STEP_HZ
STEP_HZ = 1.8


def person_height(foot_y: float) -> float:
    """A person's height (share of the picture's) with their feet at foot_y."""
    return HEIGHT_AT_TOP + HEIGHT_GROWTH * foot_y


@dataclass(frozen=True, slots=True)
class Walker:
    """One person: who they look like and where their feet are on each frame (NaN: not in the scene)."""

    wid: int
    source: int  # index into SOURCES
    flip: bool
    gain: float  # brightness
    size: float  # tall or short: their height is person_height(y) times this
    xs: np.ndarray  # foot x per frame, 0..1
    ys: np.ndarray  # foot y per frame
    kind: str  # "down" | "up" | "across" | "linger"


@dataclass(frozen=True, slots=True)
class Scene:
    """The walkers of a clip `seconds` long at FPS."""

    seconds: float
    seed: int
    walkers: tuple[Walker, ...]

    @property
    def frames(self) -> int:
        """Number of frames of the clip."""
        return round(self.seconds * FPS)

    @property
    def key(self) -> str:
        """A short name for this scene's clip and whatever is cached from it."""
        return f"crowd-v{VERSION}-s{self.seed}-{self.seconds:g}s"


def _walk(rng: np.random.Generator, waypoints: list[tuple[float, float, float]], speed: float,
          start: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Feet positions per frame walking through (x, y, pause_s) at `speed` body heights per second."""
    xs = np.full(frames, np.nan)
    ys = np.full(frames, np.nan)
    x, y = waypoints[0][0], waypoints[0][1]
    f = start
    wobble = rng.uniform(0, 2 * math.pi)
    for tx, ty, pause in waypoints[1:]:
        while True:
            step = speed * person_height(min(max(y, 0.0), 1.0)) / FPS
            dx, dy = tx - x, ty - y
            dist = math.hypot(dx, dy)
            if dist <= step:
                x, y = tx, ty
                break
            x, y = x + dx / dist * step, y + dy / dist * step
            if 0 <= f < frames:
                xs[f], ys[f] = x, y
            f += 1
        for i in range(round(pause * FPS)):  # standing: a small sway, no steps
            if 0 <= f < frames:
                xs[f] = x + 0.002 * math.sin(wobble + i / FPS * 1.3)
                ys[f] = y
            f += 1
    return xs, ys


def make_scene(seconds: float = 40.0, seed: int = 12) -> Scene:
    """Walkers arriving ARRIVALS a second (some already in view at the start), both ways, across, lingering."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * FPS)
    walkers: list[Walker] = []
    lead_in = 14.0  # walkers set off this long before the clip starts, so it opens on a full street
    t = -lead_in
    while t < seconds:
        t += rng.exponential(1.0 / ARRIVALS)
        kind = rng.choice(["down", "up", "across", "linger"], p=[0.34, 0.34, 0.17, 0.15])
        speed = rng.uniform(0.45, 1.0)  # body heights a second: a stroll to a brisk walk
        x0 = rng.uniform(0.06, 0.94)
        x1 = float(np.clip(x0 + rng.uniform(-0.3, 0.3), 0.04, 0.96))
        top, bottom = -0.02, 1.0 + person_height(1.0) + 0.02  # wholly out of the picture
        if kind == "down":
            wp = [(x0, top, 0.0), (x1, bottom, 0.0)]
        elif kind == "up":
            wp = [(x0, bottom, 0.0), (x1, top, 0.0)]
        elif kind == "across":
            # along the street, clear of the line: these cross the others' paths, not the line
            y = rng.choice([rng.uniform(0.3, LINE_Y - 0.08), rng.uniform(LINE_Y + 0.08, 0.95)])
            left, right = -0.05, 1.05
            wp = [(left, y, 0.0), (right, y + rng.uniform(-0.05, 0.05), 0.0)]
            if rng.random() < 0.5:
                wp.reverse()
        else:
            # walks in, stands 3-10 s somewhere (a few close to the line), then goes on or turns back
            from_top = rng.random() < 0.5
            stop_y = LINE_Y + rng.choice([-1, 1]) * rng.uniform(0.04, 0.25)
            start_y = top if from_top else bottom
            end_y = start_y if rng.random() < 0.4 else (bottom if from_top else top)
            wp = [(x0, start_y, 0.0), (float(np.clip((x0 + x1) / 2, 0.05, 0.95)), stop_y, rng.uniform(3, 10)),
                  (x1, end_y, 0.0)]
        xs, ys = _walk(rng, wp, speed, round(t * FPS), frames)
        if np.isnan(xs).all():
            continue
        walkers.append(Walker(len(walkers) + 1, int(rng.integers(len(SOURCES))), bool(rng.random() < 0.5),
                              float(rng.uniform(0.75, 1.2)),
                              float(rng.uniform(1 - SIZE_SPREAD, 1 + SIZE_SPREAD)), xs, ys, str(kind)))
    return Scene(seconds, seed, tuple(walkers))


def in_view(w: Walker, f: int) -> bool:
    """Whether any of the walker is in the picture on frame f."""
    y = w.ys[f]
    return not math.isnan(y) and y > 0 and y - w.size * person_height(min(y, 1.0)) < 1.0


def ground_truth(scene: Scene, line: Line = LINE, fps: float = FPS) -> dict[str, int]:
    """Crossings of the line each way by the walkers' feet, judged by the rule engine on the true paths."""
    engine = RuleEngine(lines=[line])
    counts = {"in": 0, "out": 0}
    step = FPS / fps
    for i in range(int(scene.frames / step)):
        f = round(i * step)
        pts = [TrackPoint(w.wid, "person", 1.0, (w.xs[f] - 0.01, w.ys[f] - 0.1, w.xs[f] + 0.01, w.ys[f]))
               for w in scene.walkers if in_view(w, f)]
        for hit in engine.update(f / FPS, pts):
            counts[hit.direction] += 1
    return counts


def people_in_view(scene: Scene) -> np.ndarray:
    """How many walkers are in the picture on each frame."""
    return np.array([sum(in_view(w, f) for w in scene.walkers) for f in range(scene.frames)])


@dataclass(frozen=True, slots=True)
class Cutout:
    """A person cut out of the street clip: their pixels and a soft mask, feet at the bottom row."""

    image: np.ndarray  # BGR
    mask: np.ndarray  # float32 0..1


@lru_cache(maxsize=2)
def cutouts(source: str | Path) -> tuple[Cutout, ...]:
    """The street clip's pedestrians (SOURCES), cut out with GrabCut and cropped to their mask."""
    wanted = {f: box for f, box in SOURCES}
    images: dict[int, np.ndarray] = {}
    with av.open(str(source)) as src:
        for i, frame in enumerate(src.decode(video=0)):
            if i in wanted:
                images[i] = frame.to_ndarray(format="bgr24")
            if len(images) == len(wanted):
                break
    out = []
    for f, box in SOURCES:
        img = images[f]
        h, w = img.shape[:2]
        x1, y1, x2, y2 = (round(v * s) for v, s in zip(box, (w, h, w, h)))
        mx, my = round(0.15 * (x2 - x1)), round(0.05 * (y2 - y1))
        cx1, cy1, cx2, cy2 = max(0, x1 - mx), max(0, y1 - my), min(w, x2 + mx), min(h, y2 + my)
        k = min(1.0, CUT_HEIGHT / (cy2 - cy1))
        crop = cv2.resize(img[cy1:cy2, cx1:cx2], None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        mask = np.zeros(crop.shape[:2], np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's clustering is seeded: the same cut-out on every run
        rect = (round((x1 - cx1) * k), round((y1 - cy1) * k), round((x2 - x1) * k), round((y2 - y1) * k))
        cv2.grabCut(crop, mask, rect, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
        fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
        fg = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)  # the person, no crumbs
        ys, xs = np.nonzero(fg)
        fg = fg[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        crop = crop[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        soft = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 1.2)  # a feathered edge, no cut-out halo
        out.append(Cutout(crop, soft))
    return tuple(out)


def _look(c: Cutout, w: Walker) -> Cutout:
    """The walker's own version of a cut-out: mirrored or not, lighter or darker.

    (Re-colouring clothes by hue cost the model a third of its finds: 85 % of the well-visible walkers
    found at 0.4 without, 53 % with a hue spread of +-50.)
    """
    img, mask = c.image, c.mask
    if w.flip:
        img, mask = img[:, ::-1], mask[:, ::-1]
    img = np.clip(img.astype(np.float32) * w.gain, 0, 255).astype(np.uint8)
    return Cutout(img, np.ascontiguousarray(mask))


def _placed(c: Cutout, w: Walker, f: int, bob: float) -> tuple[int, int, int, int]:
    """Where a walker's cut-out is drawn on frame f in pixels (x1, y1, x2, y2): feet on their path."""
    foot_x, foot_y = w.xs[f], w.ys[f]
    ph = w.size * person_height(min(foot_y, 1.0)) * HEIGHT * (1 + bob)
    scale = ph / c.image.shape[0]
    pw = c.image.shape[1] * scale
    x1 = round(foot_x * WIDTH - pw / 2)
    y2 = round(foot_y * HEIGHT)
    return x1, round(y2 - ph), x1 + round(pw), y2


def boxes_at(scene: Scene, f: int, source: str | Path) -> dict[int, tuple[float, float, float, float]]:
    """Walker id -> the box (0..1, clipped to the picture) of what is drawn of them on frame f."""
    aspects = [c.image.shape[1] / c.image.shape[0] for c in cutouts(source)]
    out = {}
    for w in scene.walkers:
        if not in_view(w, f):
            continue
        ph = w.size * person_height(min(w.ys[f], 1.0))
        aspect = aspects[w.source]
        x1 = w.xs[f] - ph * aspect * HEIGHT / WIDTH / 2
        box = (max(x1, 0.0), max(w.ys[f] - ph, 0.0), min(x1 + ph * aspect * HEIGHT / WIDTH, 1.0), min(w.ys[f], 1.0))
        if box[2] > box[0] and box[3] > box[1]:
            out[w.wid] = box
    return out


def render(scene: Scene, source: str | Path):
    """The clip's frames (BGR, WIDTH x HEIGHT): the walkers drawn far to near over the street."""
    cuts = cutouts(source)
    looks = {w.wid: _look(cuts[w.source], w) for w in scene.walkers}
    with av.open(str(source)) as src:
        for i, frame in enumerate(src.decode(video=0)):
            if i == BACKGROUND_AT:
                street = cv2.resize(frame.to_ndarray(format="bgr24"), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
                break
    street = cv2.GaussianBlur(street, (0, 0), BACKGROUND_BLUR)
    for f in range(scene.frames):
        img = street.copy()
        here = sorted((w for w in scene.walkers if in_view(w, f)), key=lambda w: w.ys[f])  # far ones first
        for w in here:
            c = looks[w.wid]
            bob = STEP_BOB * abs(math.sin(math.pi * STEP_HZ * f / FPS + w.wid)) if w.kind != "linger" else 0.0
            x1, y1, x2, y2 = _placed(c, w, f, bob)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            person = cv2.resize(c.image, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA).astype(np.float32)
            alpha = cv2.resize(c.mask, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)[..., None]
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, WIDTH), min(y2, HEIGHT)
            if sx2 <= sx1 or sy2 <= sy1:
                continue
            p = person[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1]
            a = alpha[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1]
            region = img[sy1:sy2, sx1:sx2].astype(np.float32)
            img[sy1:sy2, sx1:sx2] = (region + a * (p - region) + 0.5).astype(np.uint8)
        yield img


def write_clip(path: str | Path, source: str | Path, scene: Scene) -> Path:
    """Draw the scene and encode it: H.264, WIDTH x HEIGHT at FPS, GOP 2 s."""
    make_clip(path, render(scene, source), FPS, WIDTH, HEIGHT, crf=23, preset="veryfast")
    return Path(path)


def cached_clip(cache_dir: str | Path, source: str | Path, scene: Scene) -> Path:
    """The scene's clip in cache_dir, drawn only if it is not there yet (the name says scene and version)."""
    digest = hashlib.sha256(Path(source).read_bytes()[:1 << 20]).hexdigest()[:8]  # another source, another clip
    path = Path(cache_dir) / f"{scene.key}-{digest}.mp4"
    if not path.exists():
        write_clip(path, source, scene)
    return path


# ---- the clip analysed: detections once per frame, then the tracker and rules at any rate ------------------

DETECT_MIN_SCORE = 0.1  # kept in the cache: low enough for a tracker's second stage to have its boxes


def detect_clip(clip: str | Path, detector: Detector, min_score: float = DETECT_MIN_SCORE) -> list[list[Detection]]:
    """The detector's people on every frame of the clip, decoded as a camera's would be."""
    out = []
    with av.open(str(clip)) as src:
        for frame in src.decode(video=0):
            out.append(detector.detect(frame.to_ndarray(format="bgr24"), min_score, PERSON))
    return out


def cached_detections(cache_dir: str | Path, clip: Path, detector: Detector) -> list[list[Detection]]:
    """detect_clip's answer, kept as JSON next to the clip (keyed by clip and model)."""
    path = Path(cache_dir) / f"{clip.stem}-{detector.name.replace(':', '_')}-dets.json"
    if path.exists():
        rows = json.loads(path.read_text())
    else:
        rows = [[[d.score, *d.box] for d in dets] for dets in detect_clip(clip, detector)]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        tmp.replace(path)
    return [[Detection("person", r[0], tuple(r[1:])) for r in dets] for dets in rows]  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Replay:
    """What the tracker and the line made of the clip at one analysis rate."""

    fps: float
    counts: dict[str, int]  # line crossings each way
    id_switches: int  # a walker's matched track changed (CLEAR-MOT IDSW), walkers matched at IoU >= MATCH_IOU
    tracks: int  # confirmed tracks
    ms_per_frame: float  # tracker.update, mean
    max_boxes: int  # most detections handed to the tracker in one frame


MATCH_IOU = 0.5


def replay(scene: Scene, source: str | Path, dets: list[list[Detection]], fps: float, tracker: IouTracker,
           min_score: float = 0.4, line: Line = LINE) -> Replay:
    """Feed the frames an analysis at `fps` would take to the tracker and the line; count, time, judge ids."""
    engine = RuleEngine(lines=[line])
    image = np.zeros((1, 1, 3), np.uint8)
    counts = {"in": 0, "out": 0}
    step = FPS / fps
    last_id: dict[int, int] = {}
    switches = 0
    spent = 0.0
    n = 0
    most = 0
    ids: set[int] = set()
    for i in range(int(len(dets) / step)):
        f = round(i * step)
        given = [d for d in dets[f] if d.score >= min_score]
        most = max(most, len(given))
        frame = Frame("crowd", image, f / FPS, f / FPS, f)
        t0 = time.perf_counter()
        tracker.update(frame, given)
        spent += time.perf_counter() - t0
        n += 1
        for hit in engine.update(f / FPS, tracker.seen, tracker.ended):
            counts[hit.direction] += 1
        ids.update(p.track_id for p in tracker.seen)
        truth = boxes_at(scene, f, source)
        if truth and tracker.seen:
            wids = list(truth)
            ious = iou_matrix(np.array([truth[w] for w in wids]), np.array([p.box for p in tracker.seen]))
            for wi, ti in greedy_pairs(ious, MATCH_IOU):
                wid, tid = wids[wi], tracker.seen[ti].track_id
                if last_id.get(wid, tid) != tid:
                    switches += 1
                last_id[wid] = tid
    return Replay(fps, counts, switches, len(ids), 1000 * spent / max(n, 1), most)


def recall(scene: Scene, source: str | Path, dets: list[list[Detection]], min_score: float = 0.4,
           visible: float = 0.7) -> float:
    """Share of the walkers wholly in the picture and at least `visible` unhidden that the model finds (IoU >= 0.5)."""
    found = wanted = 0
    for f, frame_dets in enumerate(dets):
        truth = boxes_at(scene, f, source)
        ws = [w for w in scene.walkers if w.wid in truth]
        good = []
        for w in ws:
            b = truth[w.wid]
            if b[1] <= 0.0 or w.ys[f] > 1.0:
                continue  # cut by the picture's edge
            area = (b[2] - b[0]) * (b[3] - b[1])
            hidden = sum(max(0.0, min(b[2], c[2]) - max(b[0], c[0])) * max(0.0, min(b[3], c[3]) - max(b[1], c[1]))
                         for v in ws if v.ys[f] > w.ys[f] for c in (truth[v.wid],))
            if 1 - min(hidden / area, 1.0) >= visible:
                good.append(b)
        boxes = [d.box for d in frame_dets if d.score >= min_score]
        wanted += len(good)
        if good and boxes:
            found += int((iou_matrix(np.array(good), np.array(boxes)).max(axis=1) >= MATCH_IOU).sum())
    return found / max(wanted, 1)
