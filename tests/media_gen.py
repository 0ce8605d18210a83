"""Video files made by tests: containers and codecs the sample clips do not cover."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

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
