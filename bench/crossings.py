"""Line crossings counted in a crowd at 5 and 10 fps analysis against the offline reference at 25 fps.

The crowd clip (tests/media_crowd.py): 20+ pedestrians cut out of the street clip walking both ways
across a counting line, passing and hiding each other, some standing a while, 1280x720 at 25 fps; the
crossings each way follow from the paths it was drawn from (the ground truth). The model runs once on
every frame of the clip (YOLOX-Nano, kept in the cache folder with the clip); the tracker and the line
rule then replay the frames an analysis at 25 fps (the reference), 10 fps and 5 fps would take. For
each: crossings in and out, against the reference and the ground truth, id switches (a walker's matched
track changing, CLEAR-MOT, walkers matched at IoU >= 0.5), confirmed tracks, and the tracker's
milliseconds per frame (median over --passes). Last, the tracker's cost with 25 people in view.

    .venv/bin/python -m bench.crossings [--seconds 40] [--seed 12] [--cache DIR] [--passes 5] [--seeds 7,3,...]

With --seeds, the same for other crowds drawn the same way (one row each: the gateway's tracker, every
rate against the reference and what was walked), to see that the figures hold beyond one crowd.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from analytics.detector import load_detector
from analytics.tracker import IouTracker
from analytics.types import Detection, Frame
from tests.media_crowd import FPS, cached_clip, cached_detections, ground_truth, make_scene, people_in_view, \
    recall, replay

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
RATES = (25, 10, 5)
GATEWAY_MIN_SCORE = 0.4  # a camera's analytics.min_score default: the boxes the gateway hands its tracker
LOW_SCORE = 0.1  # the second-stage variant is handed boxes down to this
CROWD_BOXES = 25


def _tracker_ms_with(boxes: int, frames: int = 200) -> float:
    """Mean ms per IouTracker.update with `boxes` people walking in view (synthetic, 5 fps)."""
    tr = IouTracker()
    image = np.zeros((1, 1, 3), np.uint8)
    cols = 5
    spent = 0.0
    for f in range(frames):
        dets = []
        for i in range(boxes):
            x = (i % cols) / cols + 0.02 + 0.002 * f * (1 if i % 2 else -1)
            y = 0.1 + 0.15 * (i // cols) + 0.001 * f
            dets.append(Detection("person", 0.8, (x, y, x + 0.06, y + 0.2)))
        t0 = time.perf_counter()
        tr.update(Frame("bench", image, f / 5, f / 5, f), dets)
        spent += time.perf_counter() - t0
    return 1000 * spent / frames


def _other_crowds(a: argparse.Namespace, detector, seeds: list[int]) -> None:
    """One row per crowd: in / out at each rate against its 25 fps reference and against what was walked."""
    print()
    print("| crowd | walked in / out | 25 fps / walked | 10 fps / ref | 10 fps / walked | 5 fps / ref "
          "| 5 fps / walked |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for seed in seeds:
        scene = make_scene(a.seconds, seed)
        dets = cached_detections(a.cache, cached_clip(a.cache, a.clip, scene), detector)
        truth = ground_truth(scene)
        got = {fps: replay(scene, a.clip, dets, fps, IouTracker(), GATEWAY_MIN_SCORE).counts for fps in RATES}

        def share(fps: int, base: dict[str, int]) -> str:
            return " / ".join(f"{got[fps][k] / max(base[k], 1):.2f}" for k in ("in", "out"))

        print(f"| {scene.key} | {truth['in']} / {truth['out']} | {share(25, truth)} | {share(10, got[25])} "
              f"| {share(10, truth)} | {share(5, got[25])} | {share(5, truth)} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Print crossings counted vs reference vs ground truth at 25, 10 and 5 fps, with id switches and cost."""
    p = argparse.ArgumentParser("bench.crossings", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=40.0, help="length of the crowd clip (40)")
    p.add_argument("--seed", type=int, default=12, help="the scene's random seed (12)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sharp-eyes-crowd",
                   help="folder for the clip and its detections (kept between runs)")
    p.add_argument("--clip", type=Path, default=SHARED / "media" / "street_720p.mp4", help="the real footage")
    p.add_argument("--model", type=Path, default=SHARED / "models" / "yolox_nano.onnx")
    p.add_argument("--passes", type=int, default=5, help="tracker timing passes; the median is shown (5)")
    p.add_argument("--seeds", default="", help="more crowds (their seeds, comma-separated): one row each")
    a = p.parse_args(argv)
    a.cache.mkdir(parents=True, exist_ok=True)

    scene = make_scene(a.seconds, a.seed)
    t0 = time.perf_counter()
    clip = cached_clip(a.cache, a.clip, scene)
    print(f"clip {clip} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    detector = load_detector(a.model)
    t0 = time.perf_counter()
    dets = cached_detections(a.cache, clip, detector)
    print(f"detections ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    truth = ground_truth(scene)
    crowd = people_in_view(scene)

    print(f"crowd clip {scene.key}: {a.seconds:g} s at {FPS} fps, 1280x720, {len(scene.walkers)} walkers, "
          f"in view at once min {crowd.min()} / median {int(np.median(crowd))} / max {crowd.max()}")
    print(f"model {detector.name}: finds {100 * recall(scene, a.clip, dets):.0f} % of the walkers wholly in the "
          f"picture and at least 70 % unhidden (score >= {GATEWAY_MIN_SCORE}, IoU >= 0.5), "
          f"{np.mean([sum(d.score >= GATEWAY_MIN_SCORE for d in f) for f in dets]):.1f} boxes a frame")
    print(f"ground truth (from the paths): in {truth['in']}, out {truth['out']}")
    print()
    print("| tracker | fps | in | out | in / ref | out / ref | in / truth | out / truth | id switches | tracks "
          "| ms / frame |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    variants = (
        (f"IouTracker, boxes >= {GATEWAY_MIN_SCORE} (the gateway's)", GATEWAY_MIN_SCORE, None),
        (f"+ second stage: boxes >= {LOW_SCORE}, new tracks >= {GATEWAY_MIN_SCORE}", LOW_SCORE, GATEWAY_MIN_SCORE),
    )
    for name, min_score, high in variants:
        ref = None
        for fps in RATES:
            runs = [replay(scene, a.clip, dets, fps, IouTracker(high_score=high), min_score)
                    for _ in range(a.passes)]
            r = runs[0]  # counts and ids do not change between passes; only the timing does
            ms = statistics.median(x.ms_per_frame for x in runs)
            ref = ref or r.counts
            ratio = {k: r.counts[k] / max(ref[k], 1) for k in r.counts}
            vs_truth = {k: r.counts[k] / max(truth[k], 1) for k in r.counts}
            print(f"| {name} | {fps}{' (ref)' if fps == RATES[0] else ''} | {r.counts['in']} | {r.counts['out']} "
                  f"| {ratio['in']:.2f} | {ratio['out']:.2f} | {vs_truth['in']:.2f} | {vs_truth['out']:.2f} "
                  f"| {r.id_switches} | {r.tracks} | {ms:.2f} |")
    if a.seeds:
        _other_crowds(a, detector, [int(x) for x in a.seeds.split(",") if x.strip()])
    cost = statistics.median(_tracker_ms_with(CROWD_BOXES) for _ in range(a.passes))
    print()
    print(f"tracker cost with {CROWD_BOXES} people in view: {cost:.2f} ms per update (median of {a.passes})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
