"""CPU cost of video quality diagnosis per analysed frame (docs/quality.md), as the camera worker pays it.

Each analysed frame is shrunk once (`Thumbs.of`) and diagnosed (`QualityDiagnoser.update`); this
times both on frames spread through the clip, one pass after another on a fresh diagnoser, and
prints the median per frame over the passes, next to a JPEG encode of the same frame (what one
event snapshot costs) as a yardstick measured in the same run.

    .venv/bin/python -m bench.quality [--clip street_720p.mp4] [--frames 80] [--passes 5]
"""

from __future__ import annotations

import statistics
import time

import cv2

from analytics.quality import QualityDiagnoser, Thumbs
from bench.ceilings import clip_frames_cli


def _per_frame_ms(images: list, step) -> float:
    t0 = time.perf_counter()
    for i, im in enumerate(images):
        step(i, im)
    return (time.perf_counter() - t0) * 1000 / len(images)


def main(argv: list[str] | None = None) -> int:
    """Print the median ms per frame of the shrink, the diagnosis and a JPEG encode."""
    got = clip_frames_cli("bench.quality", __doc__, 80, argv, lambda p: p.add_argument(
        "--passes", type=int, default=5, help="passes over the frames; the median is reported (5)"))
    if got is None:
        return 2
    a, images = got
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
