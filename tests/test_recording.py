"""Recording, playback and live fMP4 (issue 11) on real video: the street clip and clips made here.

Packets are read with PyAV and handed to the recorder as the demuxer thread would, paced by a driven
clock (tests.media_rec.FakeClock), not by real time: a minute of recording takes well under a second.
The store runs without writer threads here (`writer_threads=0`: `store.flush()` writes what is queued,
in the test's thread) except where the writer thread itself is under test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import av
import pytest

from gateway.recording import (
    BadCameraId, GapReason, LiveMuxer, Mode, NoRecording, RecorderState, RecordingSettings, RecordingStore,
    SettingsError, WindowError, export_clip, export_window,
)
from gateway.recording.mp4 import fragment_starts_with_key, trex_default_flags
from tests.media_gen import write_bframe_avi
from tests.media_rec import CAMERA, CAMERA_B, T0, FakeClock, boxes, decode, feed, source_packets, write_clip

ROOT = Path(__file__).resolve().parent.parent
GOP_S = 2.0  # the street clip: a key frame every 50 frames at 25 fps
CLIP_S = 16.04  # the street clip's length
CONTINUOUS = RecordingSettings(mode=Mode.CONTINUOUS, retain_days=7)


def _store(root: Path, clock: FakeClock, **kw) -> RecordingStore:
    kw.setdefault("segment_s", 10.0)
    kw.setdefault("writer_threads", 0)
    kw.setdefault("min_free_bytes", 0)
    store = RecordingStore(root, clock=clock, **kw)
    store.open()
    return store


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    s = _store(tmp_path / "rec", clock)
    yield s
    s.close()


@pytest.fixture
def recorded(tmp_path, street_clip, clock):
    """64 s of continuous recording of the looped street clip (4 passes), 10 s segments."""
    s = _store(tmp_path / "rec", clock)
    rec = s.recorder(CAMERA, CONTINUOUS)
    feed([rec], street_clip, clock, passes=4)
    s.flush()
    yield s
    s.close()


def _max_hole(timeline) -> float:
    return max((g.end - g.start for g in timeline.gaps), default=0.0)


# ---- continuous recording -----------------------------------------------------------------------------
def test_continuous_recording_covers_a_minute_without_gaps(recorded, street_clip):
    """60 s of continuous recording: segments cover >= 95 % of it, no hole is longer than one GOP,
    every segment is a clean MP4 that starts at a key frame, a looped file starts a new segment."""
    tl = recorded.timeline(CAMERA, T0, T0 + 60)
    assert tl.covered_s >= 0.95 * 60, tl.covered_s
    assert _max_hole(tl) <= GOP_S, tl.gaps
    assert all(g.end - g.start <= GOP_S for g in tl.gaps)
    # Rotated at the first key frame after 10 s, and a new segment where the file loops (its pts restart).
    starts = [s.start - T0 for s in tl.segments]
    assert len(tl.segments) >= 7
    assert any(abs(st - CLIP_S) < 0.3 for st in starts), starts
    for a, b in zip(tl.segments, tl.segments[1:]):
        assert b.start - a.end < 0.5 and a.end - b.start < 0.3  # abutting: no hole, no real overlap
    d = tl.to_dict()
    assert set(d) == {"segments", "gaps"}
    assert set(d["segments"][0]) >= {"start", "end", "bytes", "codec"}
    assert d["segments"][0]["codec"] == "h264" and d["segments"][0]["start"].endswith("Z")
    for seg in tl.segments[:3]:
        path = recorded.path_of(seg)
        assert boxes(path.read_bytes())[:2] == ["ftyp", "moov"]  # fragmented: moov first, then moof/mdat
        with av.open(str(path)) as c:
            first = next(p for p in c.demux(c.streams.video[0]) if p.size)
            assert first.is_keyframe
        got = decode(path)
        assert got.errors == 0 and got.codec == "h264" and (got.width, got.height) == (1280, 720)
        assert abs(got.duration - seg.duration) < 0.2, (got.duration, seg.duration)
    status = recorded.recorder(CAMERA).status()
    assert status.state is RecorderState.RECORDING and status.corrupt == 0 and status.dropped == 0


def test_window_plays_back_as_the_source_remuxed(recorded, street_clip, tmp_path):
    """A 30 s window across rotations and loop seams decodes to 30 s +- 1 at 1280x720 H.264, its packets
    are the source's own bytes (no re-encode) and its bitrate is the source's; the MP4 is fast-start."""
    out = tmp_path / "window.mp4"
    export = export_window(recorded, CAMERA, T0 + 5, T0 + 35, out)
    assert export.codec == "h264" and (export.width, export.height) == (1280, 720)
    assert export.segments >= 3 and not export.truncated
    data = out.read_bytes()
    assert boxes(data)[:2] == ["ftyp", "moov"] and "mdat" in boxes(data)  # moov before mdat: seekable at once
    got = decode(out)
    assert got.errors == 0
    assert (got.codec, got.width, got.height) == ("h264", 1280, 720)
    assert abs(got.duration - 30.0) <= 1.0, got.duration
    assert abs(got.first) < 0.05  # the pre-roll before the start is hidden by the edit list
    hashes, src_bytes, src_s = source_packets(street_clip)
    assert got.packet_hashes <= hashes  # every packet byte-identical to one of the source's
    rate, src_rate = got.bytes * 8 / got.duration, src_bytes * 8 / src_s
    assert abs(rate - src_rate) / src_rate < 0.15, (rate, src_rate)
    assert abs(export.duration - 30.0) <= 1.0


def test_clip_around_an_event_time(recorded, tmp_path):
    """A clip is pre_s before and post_s after the event's time."""
    export = export_clip(recorded, CAMERA, T0 + 30.5, 4, 6, tmp_path / "clip.mp4")
    got = decode(export.path)
    assert got.errors == 0 and abs(got.duration - 10.0) <= 1.0, got.duration
    with pytest.raises(NoRecording):
        export_clip(recorded, CAMERA, T0 - 1000, 4, 6, tmp_path / "none.mp4")
    with pytest.raises(WindowError):
        export_clip(recorded, CAMERA, T0 + 30, 31, 6, tmp_path / "x.mp4")
    assert not (tmp_path / "none.mp4").exists() and not list(tmp_path.glob("*.part"))


def test_a_window_starting_in_a_gap_starts_at_the_recording(store, street_clip, clock, tmp_path):
    """Asked from before the recording began: the MP4 starts at its first key frame, not with an empty edit."""
    rec = store.recorder(CAMERA, CONTINUOUS)
    clock.set(T0 + 100)
    feed([rec], street_clip, clock)
    store.flush()
    export = export_window(store, CAMERA, T0 + 90, T0 + 108, tmp_path / "w.mp4")
    assert abs(export.start - (T0 + 100)) < 0.2
    got = decode(export.path)
    assert got.errors == 0 and abs(got.duration - 8.0) <= 1.0, got.duration


# ---- stream events ------------------------------------------------------------------------------------
def test_source_restart_leaves_a_gap_not_a_damaged_file(store, street_clip, clock):
    """The stream breaks mid-GOP and comes back 4 s later: the index shows a gap with the reason (no
    credentials), the segment before it is a whole, cleanly decodable file, recording goes on after it."""
    rec = store.recorder(CAMERA, CONTINUOUS)
    fed: list[float] = []
    feed([rec], street_clip, clock, seconds=7.3, each=lambda p, t: fed.append(t),
         end_stream="connection lost to rtsp://admin:secret@10.0.0.5:554/live")
    clock.advance(4.0)
    restart = clock()
    feed([rec], street_clip, clock, seconds=8.0)
    store.flush()
    tl = store.timeline(CAMERA, T0, clock())
    assert len(tl.segments) == 2
    first, second = tl.segments
    # Its last frame is shown a few frames after the last packet arrived (B-frames: pts > dts).
    assert T0 + 7.3 <= first.end <= T0 + 7.3 + 0.3, first.end - T0
    assert abs(second.start - restart) < 0.2
    [gap] = tl.gaps
    assert gap.reason == GapReason.STREAM_ENDED.value
    assert abs(gap.start - first.end) < 0.01 and abs(gap.end - second.start) < 0.01
    assert "secret" not in (gap.detail or "") and "connection lost" in gap.detail
    data = store.path_of(first).read_bytes()
    kinds = boxes(data)  # no torn box
    assert kinds[:2] == ["ftyp", "moov"] and kinds.count("moof") == kinds.count("mdat")
    got = decode(store.path_of(first))
    assert got.errors == 0 and got.frames == len(fed), (got.frames, len(fed))
    assert rec.status().state is RecorderState.RECORDING


def test_a_stream_joined_mid_gop_starts_at_its_first_key_frame(store, street_clip, clock):
    """Packets before the first key frame are skipped (counted); the first segment starts at it."""
    rec = store.recorder(CAMERA, CONTINUOUS)
    feed([rec], street_clip, clock, seconds=9, skip=10)
    store.flush()
    [seg] = store.timeline(CAMERA, T0, clock()).segments
    assert abs(seg.start - (T0 + GOP_S)) < 0.15, seg.start - T0
    assert rec.status().waited_key == 40
    got = decode(store.path_of(seg))
    assert got.errors == 0 and abs(got.duration - 7.0) < 0.2


def test_bframes_without_pts_and_raw_streams_are_recorded(tmp_path, clock):
    """An AVI with B-frames (DVR export: no real pts) and a raw Annex B H.264 stream (no timestamps at all)
    are recorded and play back with every frame."""
    avi = write_bframe_avi(tmp_path / "b.avi", seconds=4.0)
    raw = write_clip(tmp_path / "raw.h264", "libx264", seconds=4.0, fmt="h264")
    for n, src in enumerate((avi, raw)):
        camera = f"1101000000132000001{n}"
        store = _store(tmp_path / f"rec{n}", clock)
        rec = store.recorder(camera, CONTINUOUS)
        start = clock()
        feed([rec], src, clock, end_stream="file ended")
        store.flush()
        out = tmp_path / f"out{n}.mp4"
        export = export_window(store, camera, start, start + 10, out)
        got, want = decode(out), decode(src)
        assert got.errors == 0 and got.frames == want.frames == 100, (src.name, got.frames, want.frames)
        assert (got.codec, got.width, got.height) == ("h264", 320, 240)
        assert export.segments == 1
        store.close()
        clock.advance(100)


def test_hevc_is_recorded_as_hevc(tmp_path, clock):
    """An H.265 camera is recorded and played back as H.265 (tagged hvc1 for browsers), not re-encoded."""
    try:
        av.Codec("libx265", "w")
    except Exception:
        pytest.skip("this PyAV has no libx265 encoder to make an H.265 clip")
    src = write_clip(tmp_path / "h265.mp4", "libx265", seconds=6.0, gop=25)
    store = _store(tmp_path / "rec", clock, segment_s=2.0)
    rec = store.recorder(CAMERA, CONTINUOUS)
    feed([rec], src, clock, passes=2)
    store.flush()
    tl = store.timeline(CAMERA, T0, clock())
    assert tl.covered_s >= 11.5 and {s.codec for s in tl.segments} == {"hevc"}
    out = tmp_path / "w.mp4"
    export_window(store, CAMERA, T0 + 1.5, T0 + 10.5, out)
    got = decode(out)
    assert (got.codec, got.width, got.height, got.errors) == ("hevc", 320, 240, 0)
    assert abs(got.duration - 9.0) <= 1.0
    assert got.packet_hashes <= source_packets(src)[0]
    assert b"hvc1" in out.read_bytes()[:8192]
    store.close()


def test_settings_changes_and_removal_take_effect_at_once(store, street_clip, clock):
    """Switched off mid-stream: the segment closes with an `off` gap; back on, recording resumes at the next
    key frame; a removed camera's segment closes (`stopped`) and a re-added one records again."""
    rec = store.recorder(CAMERA, CONTINUOUS)

    def switch(packet, now):
        if abs(now - (T0 + 5.0)) < 0.02:
            store.recorder(CAMERA, RecordingSettings(mode=Mode.OFF))
        if abs(now - (T0 + 9.0)) < 0.02:
            store.recorder(CAMERA, CONTINUOUS)
        store.flush()

    feed([rec], street_clip, clock, each=switch)
    tl = store.timeline(CAMERA, T0, clock())
    assert [g.reason for g in tl.gaps] == [GapReason.OFF.value]
    # The gap starts where the last frame handed in before the switch is shown (B-frames: a few frames on).
    assert T0 + 5.0 <= tl.gaps[0].start <= T0 + 5.4 and T0 + 9.0 <= tl.segments[1].start <= T0 + 9.0 + GOP_S + 0.1
    store.remove(CAMERA)
    store.flush()
    clock.advance(20)
    again = store.recorder(CAMERA, CONTINUOUS)
    assert again is not rec and rec.done
    feed([again], street_clip, clock, seconds=4, end_stream="end")
    store.flush()
    tl = store.timeline(CAMERA, T0, clock())
    assert [g.reason for g in tl.gaps] == [GapReason.OFF.value, GapReason.STOPPED.value]
    assert len(tl.segments) == 3


# ---- events mode --------------------------------------------------------------------------------------
def test_events_mode_keeps_pre_and_post_around_a_track(tmp_path, street_clip, clock):
    """Events mode records pre_s before a track appears (from the ring, though the track is reported late)
    and post_s after it leaves, nothing else; a later one-off event gets its own segment."""
    store = _store(tmp_path / "rec", clock, segment_s=60.0)
    settings = RecordingSettings(mode=Mode.EVENTS, pre_s=3, post_s=4)
    rec = store.recorder(CAMERA, settings)
    said: set[str] = set()

    def analysis(packet, now):  # what the tracker reports, 1.5 s late (analysis latency, confirmation)
        store.flush()  # the writer keeps up with the camera
        if now >= T0 + 21.5 and "appear" not in said:
            said.add("appear")
            rec.track_appeared(7, T0 + 20.0)
        if now >= T0 + 26.0 and "leave" not in said:
            said.add("leave")
            rec.track_left(7, T0 + 25.0)
        if now >= T0 + 40.5 and "mark" not in said:
            said.add("mark")
            rec.mark(T0 + 40.0)
        if now < T0 + 21.0:
            assert rec.status().state in (RecorderState.STANDBY, RecorderState.WAITING)

    feed([rec], street_clip, clock, passes=3, each=analysis)
    store.flush()
    tl = store.timeline(CAMERA, T0, T0 + 48)
    assert len(tl.segments) == 2, [(s.start - T0, s.end - T0) for s in tl.segments]
    event, marked = tl.segments
    assert T0 + 17.0 - GOP_S - 0.1 <= event.start <= T0 + 17.0, event.start - T0  # key frame at or before -pre_s
    assert T0 + 29.0 <= event.end <= T0 + 29.0 + 0.3, event.end - T0  # post_s after the track left
    assert T0 + 37.0 - GOP_S - 0.1 <= marked.start <= T0 + 37.0 and T0 + 44.0 <= marked.end <= T0 + 44.5
    assert {g.reason for g in tl.gaps} == {GapReason.NO_EVENT.value, GapReason.NO_RECORDING.value}
    got = decode(store.path_of(event))
    assert got.errors == 0 and abs(got.duration - event.duration) < 0.2
    assert rec.status().ring_bytes > 0  # standing by with a pre-event ring again
    store.close()


# ---- retention and the disk budget --------------------------------------------------------------------
def test_retention_removes_segments_older_than_retain_days(tmp_path, street_clip, clock):
    """retain_days per camera: a sweep removes the older recordings, files included, keeps the rest."""
    store = _store(tmp_path / "rec", clock)
    a = store.recorder(CAMERA, RecordingSettings(mode=Mode.CONTINUOUS, retain_days=1))
    b = store.recorder(CAMERA_B, RecordingSettings(mode=Mode.CONTINUOUS, retain_days=3))
    days = (0.0, 1.5, 2.04)
    for d in days:
        clock.set(T0 + d * 86400)
        feed([a, b], street_clip, clock, end_stream="file ended")
        store.flush()
    old = store.segments(CAMERA, T0, T0 + 60)
    assert old and all(store.path_of(s).exists() for s in old)
    report = store.sweep(T0 + 2.05 * 86400)  # camera A keeps 1 day: the day-0 recording goes, 1.5 stays
    assert report.by_age == len(old) and report.bytes_freed > 0 and report.by_budget == 0
    assert not store.segments(CAMERA, T0, T0 + 60)
    assert not any(store.path_of(s).exists() for s in old)
    assert not (store.root / CAMERA / "2026-01-01").exists()  # the emptied day folder goes too
    for d in days[1:]:
        assert store.segments(CAMERA, T0 + d * 86400, T0 + d * 86400 + 60)
    for d in days:
        assert store.segments(CAMERA_B, T0 + d * 86400, T0 + d * 86400 + 60)  # camera B keeps 3 days
    store.close()


def test_disk_budget_removes_the_oldest_first(tmp_path, street_clip, clock):
    """Over max_bytes while recording, the oldest segments of any camera go first, the newest stay."""
    budget = 3_000_000
    store = _store(tmp_path / "rec", clock, segment_s=4.0, max_bytes=budget)
    a = store.recorder(CAMERA, CONTINUOUS)
    b = store.recorder(CAMERA_B, CONTINUOUS)
    feed([a], street_clip, clock, end_stream="file ended")  # camera A first, then B, then A again
    store.flush()
    feed([b], street_clip, clock, end_stream="file ended")
    store.flush()
    feed([a], street_clip, clock, passes=2, each=lambda p, t: store.flush(), end_stream="file ended")
    store.flush()
    store.sweep(clock())
    disk = store.disk_status()
    assert disk.used_bytes <= budget, disk
    on_disk = sum(f.stat().st_size for f in store.root.rglob("*.mp4"))
    assert on_disk <= budget
    kept = store.segments(CAMERA, T0, clock()) + store.segments(CAMERA_B, T0, clock())
    removed_before = min(s.start for s in kept)
    assert removed_before > T0 + 2 * CLIP_S  # A's and B's first recordings are gone entirely
    assert not store.segments(CAMERA_B, T0, clock())
    newest = max(s.end for s in kept)
    assert abs(newest - clock()) < 0.5  # the newest recording is kept
    store.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs: a real full disk (ENOSPC) without filling the machine's."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a full-disk test (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path, leave: int) -> None:
    """Write a filler file until only `leave` bytes are free."""
    with open(path, "ab") as f:
        while True:
            free = shutil.disk_usage(path.parent).free
            if free <= leave:
                return
            try:
                f.write(b"\0" * min(1 << 20, free - leave))
                f.flush()
            except OSError:
                return


def test_full_disk_pauses_recording_and_resumes_when_space_returns(small_disk, street_clip, clock):
    """Under the free-space floor, the oldest segments are deleted first; when the disk is full of
    something else, recording pauses (status says why; packets are still taken, nothing raises) and
    resumes at a key frame once space returns; the pause is a disk_full gap in the index."""
    floor = 1 << 20
    store = _store(small_disk / "rec", clock, segment_s=2.0, min_free_bytes=floor)
    rec = store.recorder(CAMERA, CONTINUOUS)
    filler = small_disk / "other-data"
    _fill(filler, leave=3 << 20)
    feed([rec], street_clip, clock, each=lambda p, t: store.flush())  # 1.86 MB: fits, floor kept
    store.flush()
    assert rec.status().state is RecorderState.RECORDING
    feed([rec], street_clip, clock, open_stream=False, each=lambda p, t: store.flush())
    store.flush()  # another 1.86 MB: under the floor, so the oldest segments made room
    assert store.segments(CAMERA, T0, T0 + 4) == [] and rec.status().state is RecorderState.RECORDING
    # Kept within what is written between two space checks (2 s of this ~1 Mbit/s camera, the index).
    assert shutil.disk_usage(small_disk).free >= floor // 2
    paused_at: list[float] = []

    def watch(packet, now):
        _fill(filler, leave=floor // 4)  # someone else fills the disk, taking what retention frees
        store.flush()
        if not paused_at and rec.status().state is RecorderState.PAUSED:
            paused_at.append(now)

    feed([rec], street_clip, clock, open_stream=False, seconds=8, each=watch)
    status = rec.status()
    assert status.state is RecorderState.PAUSED and "disk full" in status.reason, status
    assert store.disk_status().full and paused_at
    packets_before = status.packets
    filler.unlink()  # space comes back
    resumed_at: list[float] = []

    def watch_resume(packet, now):
        store.flush()
        if not resumed_at and rec.status().state is RecorderState.RECORDING:
            resumed_at.append(now)

    feed([rec], street_clip, clock, open_stream=False, each=watch_resume)
    assert rec.status().packets > packets_before and resumed_at
    assert resumed_at[0] - paused_at[0] < 8 + 5 + GOP_S + 1  # retried every 5 s, restarted at a key frame
    store.flush()
    tl = store.timeline(CAMERA, T0, clock())
    full = [g for g in tl.gaps if g.reason == GapReason.DISK_FULL.value]
    assert full and full[0].start <= paused_at[0] + 0.5 and abs(full[0].end - resumed_at[0]) < GOP_S
    assert not store.disk_status().full
    last = tl.segments[-1]
    assert decode(store.path_of(last)).errors == 0
    store.close()


def test_enospc_while_writing_cuts_the_segment_cleanly_and_pauses(small_disk, street_clip, clock):
    """With no floor, the disk runs out mid-fragment: the write error is caught, the segment is cut at its
    last whole fragment and still decodes, recording pauses 'disk full', and resumes once space returns."""
    store = _store(small_disk / "rec", clock, segment_s=60.0, min_free_bytes=0)
    rec = store.recorder(CAMERA, CONTINUOUS)
    filler = small_disk / "other-data"
    _fill(filler, leave=(1 << 20) + (1 << 19))
    feed([rec], street_clip, clock, each=lambda p, t: store.flush())
    status = rec.status()
    assert status.state is RecorderState.PAUSED and status.reason == "disk full", status
    [seg] = store.segments(CAMERA, T0, clock())
    assert not seg.open and 4.0 < seg.duration < 14.0, seg.duration
    kinds = boxes(store.path_of(seg).read_bytes())
    assert kinds.count("moof") == kinds.count("mdat")  # the torn fragment was cut off
    got = decode(store.path_of(seg))
    assert got.errors == 0 and abs(got.duration - seg.duration) < 0.3
    filler.unlink()
    feed([rec], street_clip, clock, open_stream=False, each=lambda p, t: store.flush())
    assert rec.status().state is RecorderState.RECORDING
    store.close()


# ---- crash and restart --------------------------------------------------------------------------------
CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from gateway.recording import Mode, RecordingSettings, RecordingStore
    from tests.media_rec import CAMERA, FakeClock, feed
    clock = FakeClock()
    store = RecordingStore({rec!r}, clock=clock, writer_threads=0, min_free_bytes=0, segment_s=60)
    store.open()
    rec = store.recorder(CAMERA, RecordingSettings(mode=Mode.CONTINUOUS))
    def each(packet, now):
        store.flush()
        if now >= {kill_at!r}:
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no trailer: a crash mid-segment
    feed([rec], {clip!r}, clock, passes=2, each=each)
""")


def test_a_segment_left_open_by_a_crash_is_repaired_at_start_up(tmp_path, street_clip, clock):
    """A gateway killed mid-segment leaves a playable file; start-up indexes its real end, marks the
    time after it as gateway_down, and a lost index is rebuilt from the files."""
    rec_dir = tmp_path / "rec"
    script = CRASH_SCRIPT.format(root=str(ROOT), rec=str(rec_dir), kill_at=T0 + 12.3, clip=str(street_clip))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    clock.set(T0 + 100)
    store = RecordingStore(rec_dir, clock=clock, writer_threads=0, min_free_bytes=0)
    report = store.open()
    assert report.repaired == 1
    tl = store.timeline(CAMERA, T0, T0 + 100)
    [seg] = tl.segments
    assert not seg.open and T0 + 10.5 <= seg.end <= T0 + 12.4, seg.end - T0  # at most ~1 s (a fragment) lost
    assert [g.reason for g in tl.gaps] == [GapReason.GATEWAY_DOWN.value]
    got = decode(store.path_of(seg))
    assert got.errors == 0 and abs(got.duration - seg.duration) < 0.2
    store.close()
    for f in rec_dir.glob("index.sqlite3*"):
        f.unlink()
    store = RecordingStore(rec_dir, clock=clock, writer_threads=0, min_free_bytes=0)
    assert store.open().reindexed == 1
    [again] = store.timeline(CAMERA, T0, T0 + 100).segments
    assert abs(again.start - seg.start) < 0.001 and abs(again.end - seg.end) < 0.05
    store.close()


# ---- hostile input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../etc/passwd", "1101000000132000000", "11010000001110000001",
                                 "1101000000132000000\n", "１１０１００００００１３２００００００１", "", None, 11010000001320000001])
def test_camera_ids_are_validated_before_any_path(store, bad, tmp_path):
    """Ids that are not 20-digit camera codes are refused everywhere, and nothing is created for them."""
    with pytest.raises(BadCameraId):
        store.recorder(bad, CONTINUOUS)
    with pytest.raises(BadCameraId):
        store.timeline(bad, T0, T0 + 10)
    with pytest.raises(BadCameraId):
        export_window(store, bad, T0, T0 + 10, tmp_path / "x.mp4")
    assert sorted(p.name for p in store.root.iterdir()) == sorted(p.name for p in store.root.glob("index.sqlite3*"))


def test_windows_and_settings_are_checked(store, tmp_path):
    """Windows over an hour, empty, reversed or not finite, and settings out of range: clear errors."""
    for start, end in ((T0, T0 + 3601), (T0, T0), (T0 + 5, T0), (float("nan"), T0), (T0, float("inf")), ("a", T0)):
        with pytest.raises(WindowError):
            export_window(store, CAMERA, start, end, tmp_path / "x.mp4")
    with pytest.raises(WindowError):
        store.timeline(CAMERA, T0, T0 + 32 * 86400)
    with pytest.raises(NoRecording):
        export_window(store, CAMERA, T0, T0 + 3600, tmp_path / "x.mp4")
    assert store.timeline(CAMERA, T0, T0 + 86400).to_dict()["segments"] == []
    for bad in ({"mode": "always"}, {"retain_days": 0}, {"retain_days": 366}, {"pre_s": 31}, {"post_s": -1},
                {"post_s": 121}, {"retain_days": 1.5}, {"pre_s": True}, {"extra": 1}):
        with pytest.raises(SettingsError):
            RecordingSettings.from_dict({"mode": "events", **bad})
    assert RecordingSettings.from_dict({"mode": "events", "pre_s": 30, "post_s": 120}).pre_s == 30.0


def test_corrupt_and_stray_packets_are_counted_and_skipped(store, street_clip, clock, tmp_path):
    """Packets flagged corrupt, packets without timestamps in a stream that has them, and a stray old
    packet do not stop the recorder: they are counted and skipped, and what is recorded still decodes."""
    rec = store.recorder(CAMERA, CONTINUOUS)
    kept: list[av.Packet] = []

    class Mangler:
        n = 0

        def stream_opened(self, stream):
            rec.stream_opened(stream)

        def stream_ended(self, reason):
            rec.stream_ended(reason)

        def packet(self, packet):
            self.n += 1
            if self.n == 5:
                kept.append(packet)
            if self.n % 60 == 30:
                bad = av.Packet(bytes(packet))
                bad.pts, bad.dts, bad.is_keyframe = packet.pts, packet.dts, packet.is_keyframe
                bad.is_corrupt = True
                rec.packet(bad)  # a damaged packet (RTP loss) instead of the real one
                return
            if self.n % 97 == 0:
                rec.packet(av.Packet(b"\x00\x00\x00\x01garbage"))  # no timestamps at all
            if self.n == 250:
                rec.packet(kept[0])  # a stray packet from the past
            rec.packet(packet)

    feed([Mangler()], street_clip, clock)
    store.flush()
    status = rec.status()
    assert status.corrupt >= 6 + 4 and status.state is RecorderState.RECORDING
    out = tmp_path / "w.mp4"
    export_window(store, CAMERA, T0, T0 + 16, out)
    got = decode(out)
    assert got.errors == 0 and got.duration > 10


# ---- the writer --------------------------------------------------------------------------------------
def test_a_writer_that_falls_behind_drops_to_a_key_frame(tmp_path, street_clip, clock):
    """With its queue full (a stalled disk), the camera's packets are dropped and counted, never waited
    for; recording resumes at a key frame once the writer catches up, leaving an overload gap."""
    store = _store(tmp_path / "rec", clock, queue_bytes=1 << 20)
    rec = store.recorder(CAMERA, CONTINUOUS)
    flushed = []

    def stall_then_catch_up(packet, now):
        if now >= T0 + 12 and not flushed:
            flushed.append(now)
            store.flush()

    feed([rec], street_clip, clock, each=stall_then_catch_up)
    store.flush()
    status = rec.status()
    assert status.dropped > 0
    tl = store.timeline(CAMERA, T0, clock())
    assert len(tl.segments) == 2
    [gap] = tl.gaps
    assert gap.reason == GapReason.OVERLOAD.value and gap.end - gap.start >= 1.0
    for seg in tl.segments:
        assert decode(store.path_of(seg)).errors == 0
    store.close()


def test_the_writer_thread_records_the_same(tmp_path, street_clip, clock):
    """With a real writer thread: the demuxer side only queues (microseconds), flush() waits for the writer."""
    store = _store(tmp_path / "rec", clock, writer_threads=1)
    rec = store.recorder(CAMERA, CONTINUOUS)
    times: list[float] = []

    class Timed:
        def stream_opened(self, s):
            rec.stream_opened(s)

        def stream_ended(self, r):
            rec.stream_ended(r)

        def packet(self, p):
            t = time.perf_counter()
            rec.packet(p)
            times.append(time.perf_counter() - t)

    feed([Timed()], street_clip, clock, passes=2)
    store.flush()
    tl = store.timeline(CAMERA, T0, clock())
    assert tl.covered_s >= 0.95 * 2 * CLIP_S and _max_hole(tl) <= GOP_S
    times.sort()
    assert times[len(times) // 2] < 200e-6  # the median hand-over (no muxing in the demuxer thread)
    store.close()
    clock.advance(30)
    closed = RecordingStore(tmp_path / "rec", clock=clock, writer_threads=0)
    closed.open()
    tl2 = closed.timeline(CAMERA, T0, clock() + 10)
    assert all(not s.open for s in tl2.segments)
    assert tl2.gaps and tl2.gaps[-1].reason == GapReason.STOPPED.value
    closed.close()


# ---- live fMP4 ----------------------------------------------------------------------------------------
async def _read(viewer, chunks: list[bytes], stop: asyncio.Event | None = None) -> None:
    async for chunk in viewer:
        chunks.append(chunk)
        if stop is not None and stop.is_set():
            return


def _fragments(chunks: list[bytes]) -> list[bytes]:
    return chunks[1:]


def _check_live(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    kinds = boxes(data)
    assert kinds[:2] == ["ftyp", "moov"]
    assert kinds[2:] == ["moof", "mdat"] * ((len(kinds) - 2) // 2)
    moov = chunks[0][chunks[0].find(b"moov") - 4:]
    first = chunks[1]
    assert fragment_starts_with_key(first[:int.from_bytes(first[:4], "big")], trex_default_flags(moov))


async def test_live_fmp4_is_init_then_fragments_and_decodes(street_clip, clock):
    """One viewer: ftyp + moov, then moof/mdat pairs starting at a key frame; the bytes decode with PyAV
    to every frame at the camera's size and codec."""
    muxer = LiveMuxer(CAMERA, asyncio.get_running_loop(), clock=clock)
    viewer = muxer.subscribe()
    chunks: list[bytes] = []
    reader = asyncio.create_task(_read(viewer, chunks))
    fed: list[float] = []
    await asyncio.to_thread(feed, [muxer], street_clip, clock, seconds=8.0, end_stream="done",
                            each=lambda p, t: fed.append(t))
    await asyncio.wait_for(reader, 10)
    assert viewer.end_reason == "stream ended"
    _check_live(chunks)
    got = decode(b"".join(chunks))
    assert (got.codec, got.width, got.height, got.errors) == ("h264", 1280, 720, 0)
    assert got.frames == len(fed) and len(chunks) - 1 == len(fed)  # one fragment per frame
    assert muxer.stats().fragments == len(fed) and viewer.dropped == 0


async def test_live_viewers_share_one_muxer_and_each_starts_at_a_key_frame(street_clip, clock):
    """A second viewer joining mid-GOP starts at the last key frame (from the cache, at once); one muxer
    serves both; a looped file's restarting timestamps do not break the stream."""
    loop = asyncio.get_running_loop()
    muxer = LiveMuxer(CAMERA, loop, clock=clock)
    first = muxer.subscribe()
    a: list[bytes] = []
    b: list[bytes] = []
    ra = asyncio.create_task(_read(first, a))
    fed: list[float] = []
    count = lambda p, t: fed.append(t)  # noqa: E731
    await asyncio.to_thread(feed, [muxer], street_clip, clock, seconds=3.1, each=count)  # mid-GOP
    second = muxer.subscribe()
    rb = asyncio.create_task(_read(second, b))
    await asyncio.to_thread(feed, [muxer], street_clip, clock, open_stream=False, skip=len(fed), each=count)
    await asyncio.to_thread(feed, [muxer], street_clip, clock, open_stream=False, seconds=4.0, each=count,
                            end_stream="done")  # the file loops: its timestamps restart
    await asyncio.wait_for(asyncio.gather(ra, rb), 10)
    _check_live(a)
    _check_live(b)
    assert len(fed) == 400 + 102
    # The second started at the key frame at 2 s (the 51st packet), from the cache, not at the next one.
    for chunks, frames in ((a, len(fed)), (b, len(fed) - 50)):
        got = decode(b"".join(chunks))
        assert got.errors == 0 and got.frames == frames == len(chunks) - 1, (got.frames, frames)
    assert muxer.stats().fragments == len(fed)  # one muxer: each frame muxed once for both viewers


async def test_a_slow_viewer_skips_to_the_next_key_frame_and_never_blocks_the_camera(street_clip, clock):
    """A viewer that does not read overflows its bounded queue: its fragments are dropped (counted) up
    to the next key frame; the camera's thread never waits; a fast viewer gets everything."""
    muxer = LiveMuxer(CAMERA, asyncio.get_running_loop(), clock=clock)
    slow = muxer.subscribe(max_fragments=30)
    fast = muxer.subscribe()
    got_fast: list[bytes] = []
    reader = asyncio.create_task(_read(fast, got_fast))
    worst: list[float] = []

    class Timed:
        def stream_opened(self, s):
            muxer.stream_opened(s)

        def stream_ended(self, r):
            muxer.stream_ended(r)

        def packet(self, p):
            t = time.perf_counter()
            muxer.packet(p)
            worst.append(time.perf_counter() - t)

    fed: list[float] = []
    await asyncio.to_thread(feed, [Timed()], street_clip, clock, seconds=9.0, end_stream="done",
                            each=lambda p, t: fed.append(t))
    await asyncio.wait_for(reader, 10)
    assert len(got_fast) - 1 == len(fed) and fast.dropped == 0
    assert slow.skips >= 3 and slow.dropped > 100
    assert max(worst) < 0.5  # never waits for a viewer (a generous bound for a loaded machine)
    rest: list[bytes] = []
    await asyncio.wait_for(_read(slow, rest), 5)
    _check_live(rest)  # what it still gets starts at a key frame
    got = decode(b"".join(rest))
    assert got.errors == 0 and 0 < got.frames <= 30


@pytest.mark.browser
async def test_live_fmp4_plays_in_chromium(street_clip):
    """Chromium's <video> plays the live fMP4 straight from an HTTP response (no MSE), at 1280x720, joining
    a stream that has been running for a while (its first fragment is a key frame seconds in)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"no browser at {chromium} (apt-get install chromium)")
    from aiohttp import web

    from tests.servers import free_port

    loop = asyncio.get_running_loop()
    muxer = LiveMuxer(CAMERA, loop)
    stop = threading.Event()

    def paced() -> None:  # the street clip at its real pace, looped, as a camera's demuxer thread
        with av.open(str(street_clip)) as c:
            s = c.streams.video[0]
            muxer.stream_opened(s)
            tb = float(s.time_base)
            t0 = time.monotonic()
            offset = 0.0
            while not stop.is_set():
                last = 0.0
                for p in c.demux(s):
                    if not p.size:
                        continue
                    last = p.dts * tb
                    delay = t0 + offset + last - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    muxer.packet(p)
                offset += last + 0.04
                c.seek(0)

    async def live(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4", "Cache-Control": "no-store"})
        await resp.prepare(request)
        viewer = muxer.subscribe()
        try:
            async for chunk in viewer:
                await resp.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            viewer.close()
        return resp

    async def page(request: web.Request) -> web.Response:
        return web.Response(text='<video id="v" muted autoplay playsinline src="/live.mp4"></video>',
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/live.mp4", live)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    feeder = threading.Thread(target=paced, daemon=True)
    feeder.start()
    early = muxer.subscribe()  # someone already watching: the page joins a running stream, mid-GOP
    drain = asyncio.create_task(_read(early, []))
    await asyncio.sleep(3.1)
    try:
        async with async_playwright() as pw:
            args = ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"]
            browser = await pw.chromium.launch(executable_path=str(chromium), args=args)
            try:
                p = await browser.new_page()
                await p.goto(f"http://127.0.0.1:{port}/")
                can = "document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.640028\"')"
                if not await p.evaluate(can):
                    pytest.skip("this chromium has no H.264 decoder")
                await p.wait_for_function("() => { const v = document.getElementById('v');"
                                          " return v.videoWidth === 1280 && v.currentTime > 1.5; }", timeout=60_000)
                size = await p.evaluate("() => { const v = document.getElementById('v');"
                                        " return [v.videoWidth, v.videoHeight, v.error]; }")
                assert size[:2] == [1280, 720] and size[2] is None
            finally:
                await browser.close()
    finally:
        early.close()
        await drain
        stop.set()
        feeder.join(5)
        await runner.cleanup()


def test_recordings_are_private_whatever_the_umask(tmp_path, street_clip, clock):
    """Recordings show what the cameras saw: folders 0700 and files 0600 (index, its WAL, segments), also
    under the usual umask 022."""
    old = os.umask(0o022)
    try:
        store = _store(tmp_path / "rec", clock)
        try:
            rec = store.recorder(CAMERA, CONTINUOUS)
            feed([rec], street_clip, clock, seconds=3.0)
            store.flush()
            assert store.timeline(CAMERA, T0, clock()).segments
        finally:
            store.close()
    finally:
        os.umask(old)
    seen = [tmp_path / "rec", *sorted((tmp_path / "rec").rglob("*"))]
    assert any(p.suffix == ".mp4" for p in seen) and any(p.name.endswith(".sqlite3") for p in seen)
    loose = [f"{p.relative_to(tmp_path)} {stat.S_IMODE(p.stat().st_mode):o}" for p in seen
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)]
    assert loose == []
