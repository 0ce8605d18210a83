"""Sampler: which frames are analysed, on a media clock that never runs backwards (AVI B-frames included)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from analytics.sampler import Sampler
from tests.media_gen import SPEED, SQUARE, write_bframe_avi
from tests.servers import missing

FPS = 25.0
FRAME = 1 / FPS
RATES = (1, 5, 10)
TOLERANCE = 0.05  # the analysed rate may differ from the rate asked by this fraction


def in_order(n: int, start: float = 0.0) -> list[float]:
    return [start + k * FRAME for k in range(n)]


def avi_order(n: int, bframes: int = 2) -> list[float]:
    """Decoder times as FFmpeg gives them for an AVI: each frame, in display order, carries its decode index.

    Display I B B P B B P is decoded I P B B P B B, so the times read 0 2 3 1 5 6 4 ... frames.
    """
    decode_index = [0] * n
    k = 1
    shown = 1
    while shown < n:
        anchor = min(shown + bframes, n - 1)  # the P-frame is decoded before the B-frames shown ahead of it
        decode_index[anchor] = k
        k += 1
        for b in range(shown, anchor):
            decode_index[b] = k
            k += 1
        shown = anchor + 1
    return [i * FRAME for i in decode_index]


def shuffled(n: int, block: int = 4, seed: int = 7) -> list[float]:
    """In-order times shuffled within blocks: a decoder whose timestamps are out of order."""
    rng = random.Random(seed)
    times = in_order(n)
    for i in range(block, n, block):  # the first block stays: the stream's first frame is its first time
        part = times[i:i + block]
        rng.shuffle(part)
        times[i:i + block] = part
    return times


@dataclass
class Run:
    media: list[float]
    taken: list[float]  # media times of the analysed frames
    taken_at: list[int]  # their positions in the stream (the n-th decoded frame)


def feed(sampler: Sampler, times) -> Run:
    """Every decoded frame through the sampler, as a decoder does: clock() then take()."""
    media, taken, taken_at = [], [], []
    for k, t in enumerate(times):
        m = sampler.clock(t)
        media.append(m)
        if sampler.take(m):
            taken.append(m)
            taken_at.append(k)
    return Run(media, taken, taken_at)


def assert_monotonic(media: list[float]) -> None:
    steps = [b - a for a, b in zip(media, media[1:])]
    assert min(steps) > 0, "the media clock went backwards or stood still"


def assert_rate(taken: int, frames: int, asked: float) -> None:
    rate = taken / (frames * FRAME)
    assert abs(rate - asked) <= TOLERANCE * asked, f"analysed {rate:.2f} fps, asked {asked}"


SOURCES = {
    "in order": in_order,
    "AVI B-frame order": avi_order,
    "no timestamps": lambda n: [None] * n,
    "out of order": shuffled,
}


@pytest.mark.parametrize("asked", RATES)
@pytest.mark.parametrize("source", SOURCES)
def test_analysed_rate_matches_the_rate_asked(source, asked):
    n = 60 * int(FPS)
    run = feed(Sampler(asked, FPS), SOURCES[source](n))
    assert_rate(len(run.taken), n, asked)
    assert_monotonic(run.media)
    # About one frame per frame: the clock stays within a few frames of the frame's true position.
    assert max(abs(m - k * FRAME) for k, m in enumerate(run.media)) <= 4 * FRAME


@pytest.mark.parametrize("asked", RATES)
def test_avi_order_is_analysed_evenly(asked):
    # The old grid restarted at each backward step: analysed pictures bunched up at about twice the rate.
    run = feed(Sampler(asked, FPS), avi_order(30 * int(FPS)))
    # From the first second on: until times have stepped back once, nothing says they are reordered,
    # so the first B-frame is trusted and may be taken a frame early.
    at = [k for k in run.taken_at if k >= FPS]
    gaps = [(b - a) * FRAME for a, b in zip(at, at[1:])]
    assert all(abs(g - 1 / asked) <= FRAME + 1e-9 for g in gaps), gaps


def test_in_order_times_are_kept_exactly():
    # A live stream joined at some clock value: media time counts from its first frame.
    times = in_order(250, start=1234.5)
    run = feed(Sampler(5, FPS), times)
    assert run.media == pytest.approx([t - 1234.5 for t in times], abs=1e-9)
    assert run.taken == pytest.approx([k * 0.2 for k in range(50)], abs=1e-9)


def test_unstated_frame_rate_is_measured():
    times = [k / 30 for k in range(30 * 60)]  # 30 fps, and the stream does not say so
    run = feed(Sampler(5, None), times)
    assert run.media == pytest.approx(times, abs=1e-9)
    assert len(run.taken) == 300


def test_key_frames_only_follow_the_stream_times():
    # A decoder that outputs key frames only (one a second) must not be slowed to one frame per frame.
    times = [float(s) for s in range(60)]
    run = feed(Sampler(1, FPS), times)
    assert run.media == pytest.approx(times)
    assert len(run.taken) == 60


@pytest.mark.parametrize("order", [in_order, avi_order])
def test_gap_forward_is_kept(order):
    # A live stream that lost 3 s: the clock jumps with it and the grid restarts at the first frame after.
    times = order(500)
    times = times[:250] + [t + 3.0 for t in times[250:]]
    run = feed(Sampler(5, FPS), times)
    assert_monotonic(run.media)
    assert run.media[250] - run.media[249] == pytest.approx(3.0 + FRAME, abs=2 * FRAME)
    assert run.media[250] in run.taken
    assert_rate(len(run.taken), 500, 5)


def test_missing_timestamps_among_good_ones():
    times = [None if k % 3 == 1 else t for k, t in enumerate(in_order(1500))]
    run = feed(Sampler(5, FPS), times)
    assert run.media == pytest.approx(in_order(1500), abs=1e-9)
    assert len(run.taken) == 300


def test_first_frame_without_timestamp_starts_at_zero():
    s = Sampler(5, FPS)
    assert s.clock(None) == 0.0
    assert s.clock(50.0) == pytest.approx(FRAME)
    assert s.clock(50.0 + FRAME) == pytest.approx(2 * FRAME)


def test_clock_reset_backwards_carries_on():
    # The camera restarted and its timestamps begin again at 0: the clock goes on, one frame later.
    times = in_order(250, start=100.0) + in_order(250)
    run = feed(Sampler(5, FPS), times)
    assert_monotonic(run.media)
    assert run.media == pytest.approx(in_order(500), abs=1e-9)
    assert len(run.taken) == 100


@pytest.mark.parametrize("order", [in_order, avi_order])
def test_file_loop_continues_the_clock(order):
    s = Sampler(5, FPS)
    first = feed(s, order(100))
    s.new_pass()
    second = feed(s, order(100))
    media = first.media + second.media
    assert_monotonic(media)
    assert second.media[0] == pytest.approx(first.media[-1] + FRAME, abs=FRAME / 2)
    assert media[-1] == pytest.approx(199 * FRAME, abs=2 * FRAME)
    assert_rate(len(first.taken) + len(second.taken), 200, 5)
    assert s.frames == 200


def test_rate_zero_takes_nothing():
    s = Sampler(0, FPS)
    run = feed(s, in_order(250))
    assert run.taken == []
    s.fps = 5
    assert s.take(s.clock(250 * FRAME))  # analysis switched on: the first frame after is taken


def test_raising_the_rate_starts_the_new_grid_at_once():
    s = Sampler(1, FPS)
    run = feed(s, in_order(260))  # taken at 0, 1, ... 10 s; the next is due at 11 s
    assert run.taken[-1] == pytest.approx(10.0)
    s.fps = 10
    m = s.clock(260 * FRAME)  # 10.4 s
    assert s.take(m)
    later = feed(s, in_order(250, start=261 * FRAME))  # 10.44 s .. 20.4 s
    assert_rate(len(later.taken), 250, 10)


def test_lowering_the_rate_spaces_the_next_frames_out():
    s = Sampler(10, FPS)
    feed(s, in_order(250))
    s.fps = 1
    later = feed(s, in_order(250, start=250 * FRAME))
    assert later.taken[0] - 250 * FRAME <= 0.1 + 1e-9  # the sample already due still comes
    assert [b - a for a, b in zip(later.taken, later.taken[1:])] == pytest.approx([1.0] * (len(later.taken) - 1))


def test_due_answers_like_take_without_moving_the_grid():
    s = Sampler(5, FPS)
    for t in avi_order(500):
        m = s.clock(t)
        first = s.due(m)
        assert s.due(m) == first
        assert s.take(m) == first


def test_peek_and_frames():
    s = Sampler(5, FPS)
    feed(s, in_order(10))
    assert s.frames == 10
    guess = s.peek(10 * FRAME)
    assert s.frames == 10
    assert s.clock(10 * FRAME) == guess
    assert s.frames == 11


def test_half_a_frame_early_counts_as_on_the_grid():
    s = Sampler(1, 4.0)  # frames of 0.25 s: half a frame is 0.125 s
    assert s.take(s.clock(0.0))
    assert not s.take(s.clock(0.5))
    assert s.take(s.clock(0.875))  # 0.125 s before the grid point at 1 s
    assert not s.take(s.clock(1.125))


# --- real files, decoded packet by packet as the gateway's decoder does ---------------------------


@dataclass
class Decoded:
    times: list[float | None]  # frame.time, in output order
    b_frames: int
    fps: float
    squares: list[int | None]  # the moving square's left edge in each frame (generated AVI only)


def decode(path, find_square: bool = False) -> Decoded:
    """Every frame's time, as the gateway's decoder would see them."""
    import av
    from av.video.frame import PictureType

    times, squares, b_frames = [], [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # as the gateway decodes streams up to 1080p
        for packet in container.demux(stream):
            # The end-of-stream packet (size 0) flushes the frames the decoder still holds for reordering.
            for frame in packet.decode():
                times.append(frame.time)
                b_frames += PictureType(frame.pict_type) == PictureType.B
                squares.append(square_x(frame) if find_square else None)
        fps = float(stream.average_rate)
    return Decoded(times, b_frames, fps, squares)


def square_x(frame) -> int | None:
    """Left edge of the white square in a write_bframe_avi frame."""
    row = frame.to_ndarray(format="bgr24")[frame.height // 2]
    xs = (row.min(axis=1) > 200).nonzero()[0]
    return int(xs[0]) if len(xs) else None


def backward_steps(times) -> int:
    return sum(b < a for a, b in zip(times, times[1:]))


@pytest.fixture(scope="module")
def bframe_avi(tmp_path_factory) -> Decoded:
    try:
        path = write_bframe_avi(tmp_path_factory.mktemp("avi") / "dvr.avi", seconds=4.0, fps=25)
    except RuntimeError as e:
        missing(str(e))
    return decode(path, find_square=True)


def test_generated_avi_has_the_bug_conditions(bframe_avi):
    # Without these the tests below would pass without the fix.
    assert bframe_avi.b_frames > 0
    assert None not in bframe_avi.times
    assert backward_steps(bframe_avi.times) > 10
    # The pictures themselves come in display order: the square advances steadily (a pixel of ringing allowed).
    assert SPEED * len(bframe_avi.squares) < 320 - SQUARE  # no wrap-around, so the position is the frame number
    squares = bframe_avi.squares
    assert all(x is not None and abs(x - SPEED * k) <= 1 for k, x in enumerate(squares)), squares


@pytest.mark.parametrize("asked", RATES)
def test_avi_with_bframes_analysed_at_the_rate_asked(bframe_avi, asked):
    s = Sampler(asked, bframe_avi.fps)
    run = feed(s, bframe_avi.times)
    assert s.frames == len(bframe_avi.times) == 100
    assert_monotonic(run.media)
    assert_rate(len(run.taken), s.frames, asked)
    # Media time says which picture it is: the k-th picture shown is at k frames.
    for k, m in enumerate(run.media):
        assert m == pytest.approx(k * FRAME, abs=1.5 * FRAME)


def test_avi_loop_continues_the_clock(bframe_avi):
    s = Sampler(5, bframe_avi.fps)
    first = feed(s, bframe_avi.times)
    s.new_pass()
    second = feed(s, bframe_avi.times)
    assert_monotonic(first.media + second.media)
    assert_rate(len(first.taken) + len(second.taken), s.frames, 5)


@pytest.fixture(scope="module")
def street(street_clip) -> Decoded:
    return decode(street_clip)


@pytest.mark.parametrize("asked", RATES)
def test_mp4_with_bframes_analysed_at_the_rate_asked(street, asked):
    assert street.b_frames > 0
    assert backward_steps(street.times) == 0  # MP4 stores presentation times: in order despite B-frames
    s = Sampler(asked, street.fps)
    run = feed(s, street.times)
    assert run.media == pytest.approx([t - street.times[0] for t in street.times], abs=1e-9)
    assert_rate(len(run.taken), s.frames, asked)


def test_a_frame_drained_without_a_time_continues_the_clock():
    # PyAV stamps the frames drained at the end of a file with NaN: one frame after the previous.
    s = Sampler(5, 25)
    for i in range(10):
        s.clock(i / 25)
    assert s.clock(float("nan")) == pytest.approx(10 / 25, abs=1e-6)
    s.new_pass()
    assert s.clock(0.0) == pytest.approx(11 / 25, abs=1e-6)
