"""One camera's analysis on a clock the test drives: real frames, the real detector, no sleeping."""

from __future__ import annotations

import av
import numpy as np
import pytest

from analytics.detector import load_detector
from analytics.events import Event, Origin
from analytics.types import Sample
from gateway.analysis import CameraAnalysis, EventSink
from registry.models import Camera, CameraCreate

T0 = 1_800_000_000.0
FPS = 5.0


class ArrayPicture:
    """A decoded picture already in BGR (what AvPicture gives after conversion)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.height, self.width = image.shape[:2]

    def to_bgr(self, max_width: int) -> np.ndarray:
        return self.image

    def thumb(self, width: int) -> None:
        return None  # the analysis shrinks the BGR image itself


class Recorder:
    """Stands where the tier's EventLog stands: keeps what the analysis publishes, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Event, bytes | None]] = []

    def publish(self, event: Event, snapshot: bytes | None = None) -> None:
        self.events.append((event, snapshot))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def street_frames(path, seconds: float, fps: float = FPS) -> list[np.ndarray]:
    """BGR frames of the clip at `fps` over its first `seconds`."""
    out, step = [], None
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        step = round(float(stream.average_rate) / fps)
        for i, f in enumerate(c.decode(stream)):
            if f.time is not None and f.time >= seconds:
                break
            if i % step == 0:
                out.append(f.to_ndarray(format="bgr24"))
    return out


def camera(**analytics) -> Camera:
    return Camera.from_create(CameraCreate(name="street", node="450102", url="rtsp://127.0.0.1:9/closed",
                                           analytics=analytics), camera_id="45010200001320000001", now=T0)


def run_frames(analysis: CameraAnalysis, frames: list[np.ndarray], detector, clock: Clock, start: int = 0) -> list:
    """Each frame through the job's three steps, as the runner does them; returns the plans."""
    plans = []
    for i, image in enumerate(frames, start):
        clock.t = T0 + i / FPS
        sample = Sample(analysis.camera.id, ArrayPicture(image), clock.t, i / FPS, i)
        plan = analysis.plan(sample)
        plans.append(plan)
        analysis.apply(analysis.work(sample, plan, detector))
    return plans


@pytest.fixture(scope="module")
def detector(model_path):
    return load_detector(model_path)


@pytest.fixture(scope="module")
def frames(street_clip):
    return street_frames(street_clip, seconds=3.0)


async def test_tracks_start_and_end_on_a_driven_clock(detector, frames):
    clock = Clock(T0)
    rec = Recorder()
    analysis = CameraAnalysis(camera(fps=FPS), EventSink(rec, Origin("450102", "test"), "yolox:yolox_nano"),
                              max_width=1280, clock=clock)
    run_frames(analysis, frames, detector, clock)
    starts = [e for e, _ in rec.events if e.type == "detection" and e.phase == "start"]
    assert starts, "the street clip's motorway cars start tracks"
    assert {e.label for e in starts} & {"car", "truck"}
    assert all(snap and snap[:2] == b"\xff\xd8" for e, snap in rec.events if e.type == "detection")  # JPEGs
    assert analysis.latest is not None and analysis.latest_detections
    assert not [e for e, _ in rec.events if e.phase == "end"]  # still in view

    # The stream goes quiet: not yet past the tracker's patience, nothing ends...
    clock.t += analysis.tracker.max_age_s / 2
    await analysis.idle()
    assert not [e for e, _ in rec.events if e.phase == "end"]
    # ...then past it, every object in view ends, once.
    clock.t += analysis.tracker.max_age_s
    await analysis.idle()
    await analysis.idle()
    ends = [e for e, _ in rec.events if e.phase == "end"]
    assert sorted(e.track_id for e in ends) == sorted(e.track_id for e in starts)


async def test_quality_is_diagnosed_at_its_own_rate_not_every_frame(detector, frames):
    clock = Clock(T0)
    analysis = CameraAnalysis(camera(fps=FPS, quality={"interval_s": 1.0}),
                              EventSink(Recorder(), Origin("450102", "test"), None), max_width=1280, clock=clock)
    plans = run_frames(analysis, frames[:10], None, clock)  # 2 s at 5 fps
    assert [p.diagnose for p in plans] == [True, False, False, False, False] * 2


async def test_without_a_model_motion_starts_and_ends(frames):
    clock = Clock(T0)
    rec = Recorder()
    analysis = CameraAnalysis(camera(fps=FPS), EventSink(rec, Origin("450102", "test"), None), max_width=1280,
                              clock=clock)
    run_frames(analysis, frames, None, clock)  # the clip pans: the picture moves
    phases = [e.phase for e, _ in rec.events if e.type == "motion"]
    assert phases[:1] == ["start"]
    still = frames[-1]
    run_frames(analysis, [still] * 100, None, clock, start=len(frames))  # 20 s of one picture: the gate settles
    phases = [e.phase for e, _ in rec.events if e.type == "motion"]
    assert phases == ["start", "end"], phases


async def test_stop_ends_what_is_open_once(detector, frames):
    clock = Clock(T0)
    rec = Recorder()
    analysis = CameraAnalysis(camera(fps=FPS), EventSink(rec, Origin("450102", "test"), "yolox:yolox_nano"),
                              max_width=1280, clock=clock)
    run_frames(analysis, frames[:8], detector, clock)
    await analysis.stop()
    await analysis.stop()  # a second stop has nothing left to end
    starts = sorted(e.track_id for e, _ in rec.events if e.phase == "start")
    ends = sorted(e.track_id for e, _ in rec.events if e.phase == "end")
    assert starts and starts == ends
