"""CPU cost of video quality diagnosis per analysed frame (docs/quality.md), as the camera worker pays it.

Each analysed frame is shrunk once (`Thumbs.of`) and diagnosed (`QualityDiagnoser.update`); this
times both on frames spread through the clip, one pass after another on a fresh diagnoser, and
prints the median per frame over the passes, next to a JPEG encode of the same frame (what one
event snapshot costs) as a yardstick measured in the same run.

    .venv/bin/python -m bench.quality [--clip street_720p.mp4] [--frames 80] [--passes 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

from analytics.quality import QualityDiagnoser, Thumbs
from bench.ceilings import sample_images
from bench.pipeline import CLIP


def _per_frame_ms(images: list, step) -> float:
    t0 = time.perf_counter()
    for i, im in enumerate(images):
        step(i, im)
    return (time.perf_counter() - t0) * 1000 / len(images)


def main(argv: list[str] | None = None) -> int:
    """Print the median ms per frame of the shrink, the diagnosis and a JPEG encode."""
    p = argparse.ArgumentParser(prog="bench.quality", description=__doc__.splitlines()[0])
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--frames", type=int, default=80, help="frames spread through the clip (80)")
    p.add_argument("--passes", type=int, default=5, help="passes over the frames; the median is reported (5)")
    a = p.parse_args(argv)
    if not a.clip.exists():
        print(f"no clip at {a.clip} (give --clip)", file=sys.stderr)
        return 2
    images = sample_images(a.clip, a.frames)
    h, w = images[0].shape[:2]
    shrink, total, jpeg = [], [], []
    for _ in range(a.passes):
        shrink.append(_per_frame_ms(images, lambda i, im: Thumbs.of(im)))
        diagnoser = QualityDiagnoser()
        # Analysed at 5 fps: timestamps 0.2 s apart, as the worker gives them.
        total.append(_per_frame_ms(images, lambda i, im, d=diagnoser: d.update(Thumbs.of(im), i * 0.2)))
        jpeg.append(_per_frame_ms(images, lambda i, im: cv2.imencode(".jpg", im)))
    print(f"video quality diagnosis, {len(images)} frames of {a.clip.name} ({w}x{h}), median of {a.passes} passes")
    print("| step | ms per frame |")
    print("| --- | ---: |")
    print(f"| shrink (Thumbs.of) | {statistics.median(shrink):.2f} |")
    print(f"| shrink + diagnosis (what the worker pays) | {statistics.median(total):.2f} |")
    print(f"| yardstick: JPEG encode of the full frame | {statistics.median(jpeg):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
