"""Sample clips (generated, bundled) and the real RTSP camera (GStreamer's RTSP server)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from sample_streams import CLIP_NAMES, CLIPS_DIR, clip_path
from sample_streams.generate import (
    FPS, SECONDS, corrupt_copy, day_night_brightness, garbage_file, generate, make_clip, moving_objects_frames,
)
from sample_streams.rtsp import RtspServer, RtspServerError, find_rtsp_support
from tests.rtsp_fixtures import RTSP_OPTIONS


def decode_gray(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray").astype(np.float32) for f in container.decode(video=0)]


# --------------------------------------------------------------------------- bundled clips


@pytest.mark.parametrize("name", CLIP_NAMES)
def test_clip_decodes_with_expected_shape(name):
    path = clip_path(name)
    assert path.stat().st_size < 400_000, f"{name} is {path.stat().st_size} bytes; keep clips under 400 KB"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (640, 360)
        assert stream.average_rate == FPS
        assert container.duration / 1e6 == pytest.approx(SECONDS, abs=0.1)
        frames, keys = 0, []
        for frame in container.decode(stream):
            assert frame.format.name == "yuv420p"
            assert (frame.width, frame.height) == (640, 360)
            if frame.key_frame:
                keys.append(frames)
            frames += 1
    assert frames == FPS * SECONDS
    assert keys == list(range(0, frames, 2 * FPS)), "one key frame every 2 s"


def test_clip_path_names():
    assert clip_path("day_night") == clip_path("day_night.mp4") == CLIPS_DIR / "day_night.mp4"
    with pytest.raises(FileNotFoundError):
        clip_path("no_such_clip")


def test_moving_objects_moves_over_a_still_background():
    frames = decode_gray(clip_path("moving_objects"))
    for a, b in [(0, 15), (60, 75), (150, 165)]:
        changed = np.abs(frames[a] - frames[b]) > 30
        assert 0.002 < changed.mean() < 0.15, (a, b, changed.mean())
    # Several separate moving things, not one: changes in at least three of the image's columns of 160 px.
    moving = np.abs(frames[30] - frames[45]) > 30
    busy_columns = [moving[:, x:x + 160].any() for x in range(0, 640, 160)]
    assert sum(busy_columns) >= 3


def test_day_night_gets_dark_and_noisy_and_light_again():
    frames = decode_gray(clip_path("day_night"))
    means = [f.mean() for f in frames]
    middle = len(frames) // 2
    assert means[0] > 90 and means[-1] > 90
    assert means[middle] < 40
    assert min(means) == pytest.approx(means[middle], abs=5)
    # Night frames are noisier than day frames (frame-to-frame change of a still scene).
    day_noise = np.abs(frames[2] - frames[3]).mean()
    night_noise = np.abs(frames[middle] - frames[middle + 1]).mean()
    assert night_noise > 2 * day_noise
    assert day_night_brightness(0) == 1.0 and day_night_brightness(SECONDS / 2) < 0.2


def test_bundled_clips_match_the_generator(tmp_path):
    """The committed clips are what `python -m sample_streams.generate` makes (regenerate after changes)."""
    lines = []
    infos = generate(tmp_path, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert [i.path.name for i in infos] == list(CLIP_NAMES)
    assert len(lines) == 2 * len(CLIP_NAMES)  # progress per clip
    for info in infos:
        fresh, bundled = decode_gray(info.path), decode_gray(clip_path(info.path.name))
        assert len(fresh) == len(bundled) == info.frames
        for i in (0, len(fresh) // 2, len(fresh) - 1):
            assert np.abs(fresh[i] - bundled[i]).mean() < 3, (info.path.name, i)


def test_generator_frames_are_deterministic():
    a = [f.tobytes() for _, f in zip(range(5), moving_objects_frames())]
    b = [f.tobytes() for _, f in zip(range(5), moving_objects_frames())]
    assert a == b


# --------------------------------------------------------------------------- helpers for faulty clips


def test_make_clip_from_gray_frames(tmp_path):
    frames = [np.full((48, 64), 10 * i, np.uint8) for i in range(16)]
    info = make_clip(tmp_path / "small.mp4", iter(frames), 10, 64, 48, gop_seconds=1)
    assert info.frames == 16 and info.duration == pytest.approx(1.6)
    decoded = decode_gray(info.path)
    assert len(decoded) == 16 and decoded[0].shape == (48, 64)
    assert decoded[15].mean() == pytest.approx(150, abs=4)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_make_clip_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        make_clip(tmp_path / "odd.mp4", [np.zeros((47, 63, 3), np.uint8)], 10, 63, 47)
    with pytest.raises(ValueError):
        make_clip(tmp_path / "empty.mp4", [], 10, 64, 48)
    assert not list(tmp_path.iterdir())


def test_corrupt_copy_breaks_the_middle_only(tmp_path):
    src = clip_path("moving_objects")
    dst = corrupt_copy(src, tmp_path / "corrupt.mp4")
    a, b = src.read_bytes(), dst.read_bytes()
    assert len(a) == len(b)
    n = len(a)
    assert a[: int(n * 0.39)] == b[: int(n * 0.39)] and a[int(n * 0.61):] == b[int(n * 0.61):]
    assert a[int(n * 0.45): int(n * 0.55)] != b[int(n * 0.45): int(n * 0.55)]
    # Still opens; decoding reports errors (or gives fewer frames) but does not crash.
    errors = good = 0
    with av.open(str(dst)) as container:
        for packet in container.demux(video=0):
            try:
                good += len(packet.decode())
            except av.FFmpegError:
                errors += 1
    assert errors > 0 or good < FPS * SECONDS


def test_garbage_file_is_not_a_video(tmp_path):
    path = garbage_file(tmp_path / "garbage.mp4", 10_000)
    assert path.stat().st_size == 10_000
    with pytest.raises(av.FFmpegError):
        av.open(str(path))


# --------------------------------------------------------------------------- RTSP camera


def open_rtsp(url: str):
    return av.open(url, options=RTSP_OPTIONS)


class Reader(threading.Thread):
    """Reads an RTSP stream in the background; records frames, sizes and how it ended."""

    def __init__(self, url: str, max_frames: int | None = None):
        super().__init__(daemon=True)
        self.url, self.max_frames = url, max_frames
        self.frames = 0
        self.sizes: set[tuple[int, int]] = set()
        self.error: Exception | None = None
        self.first = threading.Event()
        self.ended_at: float | None = None
        self.start()

    def run(self):
        try:
            with open_rtsp(self.url) as container:
                for frame in container.decode(video=0):
                    self.frames += 1
                    self.sizes.add((frame.width, frame.height))
                    if self.frames >= 5:
                        self.first.set()
                    if self.max_frames and self.frames >= self.max_frames:
                        break
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.first.set()


def assert_fails_fast(url: str, within: float = 8.0) -> Exception:
    started = time.monotonic()
    with pytest.raises(av.FFmpegError) as info:
        with open_rtsp(url) as container:
            next(container.decode(video=0))
    assert time.monotonic() - started < within
    return info.value


def test_find_rtsp_support_says_why(tmp_path):
    assert "no system Python" in find_rtsp_support(str(tmp_path / "python3"))
    reason = find_rtsp_support()
    assert reason is None or isinstance(reason, str)


@pytest.mark.rtsp
def test_rtsp_serves_the_street_clip(rtsp_street):
    reader = Reader(rtsp_street.url("street"), max_frames=50)
    reader.join(30)
    assert not reader.is_alive(), "reading 50 frames took over 30 s"
    assert reader.error is None, reader.error
    assert reader.frames >= 50
    assert reader.sizes == {(1280, 720)}


@pytest.mark.rtsp
def test_rtsp_serves_generated_clips_each_client_from_the_start(rtsp_server):
    server = rtsp_server({name.removesuffix(".mp4"): clip_path(name) for name in CLIP_NAMES})
    readers = [Reader(server.url("moving_objects"), max_frames=20), Reader(server.url("day_night"), max_frames=20)]
    for reader in readers:
        reader.join(20)
        assert reader.error is None and reader.frames == 20 and reader.sizes == {(640, 360)}
    # Not shared: a second client starts at the beginning too (first frame is a bright day frame).
    with open_rtsp(server.url("day_night")) as container:
        first = next(container.decode(video=0))
        assert first.to_ndarray(format="gray").mean() > 90


@pytest.mark.rtsp
def test_rtsp_kill_mid_stream_ends_the_reader_and_restart_serves_again(rtsp_street):
    """SIGKILL mid-stream: the reader stops at once (here FFmpeg reports it as end of stream, no
    exception, so a reader must treat EOF on a camera as a disconnect); a new connection is
    refused; after restart() the same URL serves again."""
    url = rtsp_street.url("street")
    reader = Reader(url)
    assert reader.first.wait(20) and reader.error is None and reader.frames >= 5
    killed_at = time.monotonic()
    rtsp_street.kill()
    reader.join(15)
    assert not reader.is_alive(), "reader hung after the server died"
    assert reader.ended_at - killed_at < 8
    assert reader.frames < 400, "the stream should be cut before the end of the 16 s file"
    assert not rtsp_street.running
    assert_fails_fast(url)  # nobody listening: connection refused, not a hang

    rtsp_street.restart()
    assert rtsp_street.url("street") == url
    again = Reader(url, max_frames=10)
    again.join(20)
    assert again.error is None and again.frames == 10 and again.sizes == {(1280, 720)}


@pytest.mark.rtsp
def test_rtsp_stop_and_restart_keep_the_port(rtsp_street):
    port, url = rtsp_street.port, rtsp_street.url("street")
    rtsp_street.stop()
    assert not rtsp_street.running
    rtsp_street.restart()
    assert rtsp_street.running and rtsp_street.port == port
    reader = Reader(url, max_frames=5)
    reader.join(20)
    assert reader.error is None and reader.frames == 5


@pytest.mark.rtsp
def test_rtsp_missing_mount_is_an_error_not_a_hang(rtsp_street):
    error = assert_fails_fast(rtsp_street.url("no_such_camera"))
    assert isinstance(error, av.FFmpegError)
    assert rtsp_street.running


@pytest.mark.rtsp
def test_rtsp_server_reports_bad_start(rtsp_support, rtsp_server, street_clip, tmp_path):
    with pytest.raises(RtspServerError, match="no such file"):
        RtspServer().start(None, {"cam": tmp_path / "missing.mp4"})
    running = rtsp_server({"street": street_clip})
    with pytest.raises(RtspServerError, match="already in use"):
        RtspServer().start(running.port, {"street": street_clip})
    with RtspServer() as server:
        server.start(None, {"street": street_clip})
        assert server.running and server.url("street").startswith("rtsp://127.0.0.1:")
        proc = server.proc
    assert proc.poll() == 0, "stopped cleanly by SIGTERM"


@pytest.mark.rtsp
def test_rtsp_frozen_server_times_out_the_reader(rtsp_street):
    """A stalled camera (SIGSTOP): FFmpeg's socket timeout (5 s here) ends the read with an error.

    It took about 10 s here (twice the timeout); the gateway's own stall watchdog must be quicker.
    """
    reader = Reader(rtsp_street.url("street"))
    assert reader.first.wait(20) and reader.error is None
    frozen_at = time.monotonic()
    rtsp_street.freeze()
    reader.join(25)
    assert not reader.is_alive(), "reader hung on a stalled server"
    assert isinstance(reader.error, av.FFmpegError), repr(reader.error)
    assert reader.ended_at - frozen_at < 20
    rtsp_street.thaw()
    rtsp_street.stop()  # a frozen-then-thawed server still stops on SIGTERM
