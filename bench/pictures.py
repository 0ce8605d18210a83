"""Bytes one cross-tier picture puts on each hop, by what is asked for (docs/tiers.md, "Cross-tier fetch").

Before the width travelled with the request, the tier running a camera sent its full frame (JPEG q85)
and the asking tier scaled it; now it renders at the width asked (q70, as the live view). Also the
render time per picture. Medians over frames spread through the clip.

    .venv/bin/python -m bench.pictures [--clip street_720p.mp4] [--frames 20]
"""

from __future__ import annotations

import statistics
import time

from analytics.snapshot import encode_jpeg
from bench.ceilings import clip_frames_cli
from gateway.web.frames import render_frame


def _measure(images: list, encode) -> tuple[float, float]:
    sizes, times = [], []
    encode(images[0])  # warm-up: first calls pay for OpenCV's lazy set-up
    for im in images:
        t0 = time.perf_counter()
        sizes.append(len(encode(im)))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(sizes), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Print one table: median bytes and render ms per picture for each way of asking."""
    got = clip_frames_cli("bench.pictures", __doc__, 20, argv)
    if got is None:
        return 2
    a, images = got
    h, w = images[0].shape[:2]
    base, base_ms = _measure(images, lambda im: encode_jpeg(im, max_width=0, quality=85))  # full frame, as before
    rows = [(f"full frame {w}x{h}, q85 (before)", base, base_ms)]
    for width in (320, 640, 960):
        size, ms = _measure(images, lambda im, width=width: render_frame(im, (), width=width))
        rows.append((f"width {width}, q70", size, ms))
    print(f"cross-tier picture sizes, {len(images)} frames of {a.clip.name} ({w}x{h}), medians")
    print("| asked for | bytes per hop | vs before | render ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, size, ms in rows:
        print(f"| {name} | {size:,.0f} | {base / size:.1f}x less | {ms:.1f} |" if size != base
              else f"| {name} | {size:,.0f} | - | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
