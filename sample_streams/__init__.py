"""Sample video clips, the generator that makes them, and serving a file as an RTSP camera.

- ``sample_streams/clips/*.mp4`` — small synthetic H.264 clips (``python -m sample_streams.generate``).
- :mod:`sample_streams.generate` — ``make_clip``, ``corrupt_copy``, ``garbage_file`` for tests.
- :mod:`sample_streams.rtsp` — ``RtspServer``: a real GStreamer RTSP server serving MP4 files.
"""

from __future__ import annotations

from pathlib import Path

CLIPS_DIR = Path(__file__).resolve().parent / "clips"

#: The clips ``python -m sample_streams.generate`` makes, by file name.
CLIP_NAMES = ("moving_objects.mp4", "day_night.mp4")


def clip_path(name: str) -> Path:
    """Path of a bundled clip, by file name (``"moving_objects.mp4"``) or stem (``"moving_objects"``)."""
    if not name.endswith(".mp4"):
        name += ".mp4"
    path = CLIPS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no sample clip {name!r} in {CLIPS_DIR} (run: python -m sample_streams.generate)")
    return path


__all__ = ["CLIPS_DIR", "CLIP_NAMES", "clip_path"]
