"""Video quality diagnosis on the real street clip: each fault clip raises its check, the clean clip none."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import av
import jsonschema
import numpy as np
import pytest

from analytics.quality import FAULTS, QualityChange, QualityConfig, QualityDiagnoser
from registry.models import Camera, CameraPatch, QualitySettings
from sample_streams import clip_path
from sample_streams.generate import FAULT_CLIPS, make_fault_clips
from analytics.events import event_schema
from tests.gateway_fixtures import until

ANALYSIS_FPS = 5.0  # the default analysis rate of a camera
SLACK_S = 1.0  # a start or end may come this long after its hold time: 80 % of the frames decide


def sampled_frames(path: Path, fps: float = ANALYSIS_FPS, loops: int = 1) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, BGR frame) at `fps`, as a camera worker gets them; a file looped `loops` times runs on in time."""
    offset = 0.0
    for _ in range(loops):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
            due = 0.0
            last = 0.0
            for frame in container.decode(stream):
                last = frame.time
                if frame.time + 0.02 < due:
                    continue
                due += 1 / fps
                yield offset + frame.time, frame.to_ndarray(format="bgr24")
        offset += max(duration, last + 1 / fps)


def diagnose(path: Path, *, fps: float = ANALYSIS_FPS, loops: int = 1,
             config: QualityConfig | None = None) -> list[tuple[float, QualityChange]]:
    """Every quality change the diagnoser reports on a video, with the time of its frame."""
    diagnoser = QualityDiagnoser(config)
    return [(ts, change) for ts, image in sampled_frames(path, fps, loops) for change in diagnoser.update(image, ts)]


def hold_of(fault: str, cfg: QualityConfig) -> float:
    """How long after its onset a fault may take to start."""
    # A frozen encoder re-encodes its picture once at the next key frame (a visible step, GOP 2 s
    # in the fault clips); every frame after that is the same.
    frozen = cfg.frozen_s + 2.0
    return {"frozen": frozen, "scene_change": cfg.scene_confirm_s}.get(fault, cfg.min_duration_s)


@pytest.fixture(scope="module")
def fault_clips(street_clip, tmp_path_factory) -> Path:
    """Every fault clip of sample_streams.generate.FAULT_CLIPS, made once from the real street clip."""
    out = tmp_path_factory.mktemp("fault-clips")
    make_fault_clips(street_clip, out)
    return out


# --------------------------------------------------------------------------- the clean clip


@pytest.mark.parametrize("fps", [1.0, ANALYSIS_FPS, 12.5])
def test_the_clean_clip_raises_nothing(street_clip, fps):
    # Three passes: four hard cuts between scenes per pass (a montage), all of which a camera that
    # is merely looking at a busy street must survive without a scene-change or any other alarm.
    diagnoser = QualityDiagnoser()
    alarms: Counter[str] = Counter()
    spent, frames = 0.0, 0
    extremes: dict[str, list[float]] = {}
    for ts, image in sampled_frames(street_clip, fps, loops=3):
        t0 = time.perf_counter()
        changes = diagnoser.update(image, ts)
        spent += time.perf_counter() - t0
        frames += 1
        alarms.update(c.fault for c in changes if c.phase == "start")
        for key, value in diagnoser.last.items():
            lo_hi = extremes.setdefault(key, [value, value])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], value), max(lo_hi[1], value)
    report = ", ".join(f"{f} {alarms[f]}" for f in FAULTS)
    print(f"\nclean clip at {fps} fps, {frames} frames of 1280x720: false alarms {report}; "
          f"{1000 * spent / frames:.2f} ms per frame")
    print("  measures min..max: " + ", ".join(f"{k} {lo:.3g}..{hi:.3g}" for k, (lo, hi) in extremes.items()))
    assert frames >= 3 * 16 * fps * 0.9
    assert sum(alarms.values()) == 0, report
    assert diagnoser.active == ()


# --------------------------------------------------------------------------- one clip per fault


@pytest.mark.parametrize("name", list(FAULT_CLIPS))
def test_each_fault_clip_raises_its_check_and_no_other(fault_clips, name):
    spec = FAULT_CLIPS[name]
    cfg = QualityConfig()
    events = diagnose(fault_clips / f"{name}.mp4")
    print(f"\n{name}: " + ", ".join(f"{t:.1f}s {c.fault} {c.phase} {c.score:.2f}" for t, c in events))
    if spec.fault is None:
        assert events == [], "a clip without a fault raised alarms"
        return
    assert {c.fault for _, c in events} == {spec.fault}, "the wrong check (or another one too) fired"
    starts = [(t, c) for t, c in events if c.phase == "start"]
    ends = [(t, c) for t, c in events if c.phase == "end"]
    assert len(starts) == 1, events
    t_start, start = starts[0]
    # Not on the clean part, and not long after the fault's own hold time.
    assert spec.onset < t_start <= spec.onset + hold_of(spec.fault, cfg) + SLACK_S, events
    assert 0.5 <= start.score <= 1 and start.extra, start
    if spec.until is None:
        assert ends == [], "the fault lasts to the end of the clip"
    else:
        assert len(ends) == 1, events
        t_end, end = ends[0]
        assert spec.until < t_end <= spec.until + cfg.clear_s + SLACK_S, events
        assert 0 <= end.score < 0.5 and end.extra["duration_s"] > 0 and end.extra["peak_score"] >= start.score


def test_scores_and_measures_describe_the_fault(fault_clips):
    events = dict((c.fault, c) for _, c in diagnose(fault_clips / "black.mp4") if c.phase == "start")
    assert events["signal_loss"].extra["colour"] == "black" and events["signal_loss"].score == 1.0
    events = dict((c.fault, c) for _, c in diagnose(fault_clips / "blue.mp4") if c.phase == "start")
    assert events["signal_loss"].extra["colour"] == "blue"
    dark = next(c for _, c in diagnose(fault_clips / "dark.mp4") if c.phase == "start")
    assert dark.extra["luma_mean"] < QualityConfig().dark_luma


def test_live_sensor_noise_is_not_a_frozen_picture():
    # day_night.mp4's night is a static street under grainy sensor noise: no motion, yet a live
    # picture. It is too dark, which is right; it is not frozen.
    diagnoser = QualityDiagnoser()
    faults, deltas = set(), []
    for ts, image in sampled_frames(clip_path("day_night"), loops=2):
        faults.update(c.fault for c in diagnoser.update(image, ts))
        if diagnoser.last["luma_mean"] < 30:
            deltas.append(diagnoser.last["frame_delta"])
    assert faults == {"too_dark"}
    # The flattest quarter of the samples against the still streak's first frame: night noise keeps it at
    # 2.2 and more, re-quantizing one picture (tests/test_quality_faults.py) under 0.8; the threshold is 1.2.
    assert min(deltas) > 1.5 * QualityConfig().frozen_delta, "night noise sits well above the frozen threshold"


def test_a_picture_repeated_exactly_is_frozen_at_any_rate(street_clip):
    still = next(sampled_frames(street_clip))[1]
    for fps in (1.0, 5.0, 25.0):
        diagnoser = QualityDiagnoser()
        starts = [ts for i in range(int(15 * fps)) for ts in [i / fps]
                  for c in diagnoser.update(still, ts) if c.phase == "start"]
        assert diagnoser.active == ("frozen",), fps
        assert starts and starts[0] <= QualityConfig().frozen_s + 1.0 / fps + SLACK_S


# --------------------------------------------------------------------------- settings


def test_per_camera_settings_change_the_outcome(fault_clips):
    dark = fault_clips / "dark.mp4"
    assert diagnose(dark, config=QualityConfig(disabled=("too_dark",))) == []
    assert diagnose(dark, config=QualityConfig(dark_luma=5.0)) == []
    # A longer hold time delays the start by as much.
    starts = [t for t, c in diagnose(dark, config=QualityConfig(min_duration_s=5.0)) if c.phase == "start"]
    assert len(starts) == 1 and 3.0 + 5.0 - 0.8 * 5.0 <= starts[0] <= 3.0 + 5.0 + SLACK_S


def test_a_disabled_check_still_masks_what_it_makes_meaningless(fault_clips):
    # With signal_loss off, a black screen is still not reported as dark, frozen, blurred and the rest.
    assert diagnose(fault_clips / "black.mp4", config=QualityConfig(disabled=("signal_loss",))) == []


def test_flush_ends_every_active_fault(fault_clips):
    diagnoser = QualityDiagnoser()
    for ts, image in sampled_frames(fault_clips / "black.mp4"):
        diagnoser.update(image, ts)
    assert diagnoser.active == ("signal_loss",)
    ends = diagnoser.flush(20.0, "camera stopped")
    assert [(c.fault, c.phase, c.extra["cause"]) for c in ends] == [("signal_loss", "end", "camera stopped")]
    assert diagnoser.active == () and diagnoser.flush(21.0, "again") == []


def test_settings_defaults_mirror_the_diagnoser():
    settings = QualitySettings()
    config = QualityConfig()
    for f in dataclasses.fields(QualityConfig):
        if f.name != "disabled":
            assert getattr(settings, f.name) == getattr(config, f.name), f.name
    # Two settings steer the gateway, not the checks: whether to diagnose, and how often.
    assert set(QualitySettings.model_fields) == {f.name for f in dataclasses.fields(QualityConfig)} | {"enabled", "interval_s"}
    assert set(QualitySettings.model_json_schema()["properties"]["disabled"]["items"]["enum"]) == set(FAULTS)


def test_quality_settings_validate_and_patch_key_by_key():
    cam = Camera.model_validate({"id": "45010200001320000001", "name": "c", "node": "450102", "url": "file:a.mp4",
                                 "created_at": 1000.0, "updated_at": 1000.0})
    assert cam.analytics.quality == QualitySettings()
    cam = CameraPatch.model_validate({"analytics": {"quality": {"dark_luma": 25}}}).apply(cam, now=1001.0)
    cam = CameraPatch.model_validate({"analytics": {"quality": {"disabled": ["blur", "blur"]}}}).apply(cam, now=1002.0)
    q = cam.analytics.quality
    assert q.dark_luma == 25 and q.disabled == ["blur"] and q.blur_index == QualitySettings().blur_index
    for bad in ({"dark_luma": -1}, {"blur_index": 1.5}, {"frozen_s": 0}, {"disabled": ["nonsense"]}, {"darkness": 3},
                {"enabled": None}, {"dark_luma": 230}):
        with pytest.raises(ValueError):
            CameraPatch.model_validate({"analytics": {"quality": bad}}).apply(cam)


# --------------------------------------------------------------------------- through a real gateway


async def _quality_of(gw, cid: str, want: tuple[str, ...]) -> dict | None:
    status = (await gw.camera(cid))["status"]
    return status if tuple(status["quality"]) == want else None


async def test_a_camera_that_goes_dark_reports_start_and_end(make_gateway, redis_url, fault_clips):
    # dark.mp4: clean for 3 s, dark from 3 s to 10 s, clean again; the file camera loops in real time.
    async with make_gateway(redis_url, media_dirs=[fault_clips]) as gw:
        async with gw.subscribe(type="quality") as sub:
            cam = await gw.add_camera(name="dark", node="450102", url="file:dark.mp4", analytics={"fps": 5})
            cid = cam["id"]
            online = await gw.wait_state(cid, "online", timeout=20)
            assert online["status"]["quality"] == []
            await sub.wait_for(lambda ev: any(e["phase"] == "start" for e in ev), timeout=40, what="quality start")
            start = sub.events[0]
            status = await until(lambda: _quality_of(gw, cid, ("too_dark",)), 10, "status showing too_dark")
            await sub.wait_for(lambda ev: any(e["phase"] == "end" for e in ev), timeout=40, what="quality end")
            end = next(e for e in sub.events if e["phase"] == "end")
            cleared = await until(lambda: _quality_of(gw, cid, ()), 10, "status without faults")
            code, jpeg = await gw.request("GET", start["snapshot"])
            code_cam, listing = await gw.request("GET", f"/api/v1/cameras/{cid}")
    validator = jsonschema.Draft202012Validator(event_schema())
    for e in (start, end):
        validator.validate(e)
    assert (start["type"], start["phase"], start["reason"], start["camera_id"]) == ("quality", "start", "too_dark", cid)
    assert 0.5 <= start["score"] <= 1 and start["extra"]["luma_mean"] < 40
    assert (end["phase"], end["reason"]) == ("end", "too_dark") and end["extra"]["duration_s"] > 0
    assert status["state"] == "online" and cleared["state"] == "online"
    assert code == 200 and jpeg[:2] == b"\xff\xd8"
    # Settings come back with the camera: the thresholds it was diagnosed with.
    assert code_cam == 200 and listing["analytics"]["quality"]["dark_luma"] == 40
    # The clean start of the clip raised nothing: the first event is the dark start.
    assert [e["phase"] for e in sub.events[:2]] == ["start", "end"]


async def test_switching_diagnosis_off_ends_open_faults(make_gateway, redis_url, fault_clips):
    async with make_gateway(redis_url, media_dirs=[fault_clips]) as gw:
        async with gw.subscribe(type="quality") as sub:
            cam = await gw.add_camera(name="black", node="450102", url="file:black.mp4", analytics={"fps": 5})
            await sub.wait_for(lambda ev: any(e["phase"] == "start" for e in ev), timeout=40, what="quality start")
            code, _ = await gw.request("PATCH", f"/api/v1/cameras/{cam['id']}",
                                       json={"analytics": {"quality": {"enabled": False}}})
            assert code == 200
            await sub.wait_for(lambda ev: any(e["phase"] == "end" for e in ev), timeout=20, what="quality end")
            await asyncio.sleep(1.0)
            status = (await gw.camera(cam["id"]))["status"]
    assert [(e["reason"], e["phase"]) for e in sub.events] == [("signal_loss", "start"), ("signal_loss", "end")]
    assert sub.events[1]["extra"]["cause"] == "diagnosis switched off"
    assert status["quality"] == []
