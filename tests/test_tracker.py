"""IouTracker on synthetic detection sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics.tracker import IouTracker, iou_matrix
from analytics.types import Detection, Frame

IMAGE = np.zeros((4, 4, 3), np.uint8)
FPS = 5
T0 = 1_700_000_000.0


def frame(i: int) -> Frame:
    return Frame(camera_id="cam", image=IMAGE, captured_at=T0 + i / FPS, media_ts=i / FPS, seq=i)


def frame_at(t: float) -> Frame:
    return Frame(camera_id="cam", image=IMAGE, captured_at=T0 + t, media_ts=t, seq=int(t * 100))


def det(x: float, y: float, score: float, label: str = "person", w: float = 0.1, h: float = 0.2) -> Detection:
    return Detection(label=label, score=score, box=(x, y, x + w, y + h))


def run(tracker: IouTracker, seq: list[list[Detection]], start: int = 0):
    out = []
    for i, dets in enumerate(seq, start):
        out.extend(tracker.update(frame(i), dets))
    return out


def test_iou_matrix():
    a = np.array([[0, 0, 2, 2], [5, 5, 6, 6]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [0, 0, 0, 0]], float)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])
    assert m[1].tolist() == [0.0, 0.0, 0.0]


def test_one_object_one_appear_one_leave():
    tr = IouTracker()
    scores = [0.6 + 0.1 * math.sin(math.pi * i / 59) for i in range(60)]  # peaks mid-way, gain < 0.15
    seq = [[det(0.1 + 0.005 * i, 0.3, scores[i])] for i in range(60)] + [[] for _ in range(15)]
    out = run(tr, seq)
    assert [u.kind for u in out] == ["appear", "leave"]
    appear, leave = out
    assert appear.track_id == leave.track_id == 1
    assert appear.frame.seq == 1  # confirmed on the second hit (min_hits=2)
    assert appear.detection.score == pytest.approx(scores[1])
    best = int(np.argmax(scores))
    assert leave.detection.score == pytest.approx(max(scores))
    assert leave.frame.seq == best and leave.detection.box[0] == pytest.approx(0.1 + 0.005 * best)
    # the leave comes once the object has been gone longer than max_age_s (2 s = 10 frames)
    assert tr.active == 0


def test_leave_timing():
    tr = IouTracker(max_age_s=2.0)
    assert run(tr, [[det(0.1, 0.1, 0.5)], [det(0.1, 0.1, 0.5)]])[0].kind == "appear"
    # last seen at frame 1 (t=0.2 s); frames up to t=2.2 s are within max_age
    assert run(tr, [[] for _ in range(10)], start=2) == []
    assert [u.kind for u in run(tr, [[]], start=12)] == ["leave"]


def test_short_gap_keeps_the_track():
    tr = IouTracker(max_age_s=2.0)
    seq = [[det(0.2, 0.2, 0.5)]] * 5 + [[]] * 7 + [[det(0.21, 0.2, 0.5)]] * 5
    out = run(tr, seq)
    assert [u.kind for u in out] == ["appear"]
    assert [u.kind for u in tr.flush(T0 + 10)] == ["leave"]


def test_crossing_objects_keep_their_ids():
    tr = IouTracker()
    n = 40
    seq = []
    for i in range(n):
        xa = 0.05 + 0.02 * i  # left to right
        xb = 0.85 - 0.02 * i  # right to left, a little lower: the boxes overlap while crossing
        sa = 0.9 if i == n - 3 else 0.6  # each one's best moment is on the far side of the crossing
        sb = 0.9 if i == n - 5 else 0.6
        seq.append([det(xa, 0.2, sa), det(xb, 0.3, sb)])
    out = run(tr, seq + [[]] * 12)
    kinds = [u.kind for u in out]
    assert kinds.count("appear") == 2 and kinds.count("leave") == 2
    assert kinds.count("update") == 2  # the 0.9 moments are real gains over 0.6
    appear = {u.track_id: u for u in out if u.kind == "appear"}
    leave = {u.track_id: u for u in out if u.kind == "leave"}
    assert set(appear) == set(leave) == {1, 2}
    for tid in (1, 2):
        started_left = appear[tid].detection.box[0] < 0.5
        ended_right = leave[tid].detection.box[0] > 0.5
        assert started_left == ended_right, (appear[tid], leave[tid])
        assert leave[tid].detection.score == pytest.approx(0.9)


def test_single_frame_flicker_says_nothing():
    tr = IouTracker()
    out = run(tr, [[det(0.5, 0.5, 0.95)]] + [[]] * 20)
    assert out == []
    assert tr.flush(T0 + 100) == []


def test_update_only_on_real_gain():
    tr = IouTracker(update_gain=0.15)
    scores = [0.5, 0.5, 0.6, 0.64, 0.65, 0.7, 0.79, 0.8, 0.3, 0.95]
    out = run(tr, [[det(0.4, 0.4, s)] for s in scores])
    assert [(u.kind, u.detection.score) for u in out] == [
        ("appear", 0.5),
        ("update", 0.65),
        ("update", 0.8),
        ("update", 0.95),
    ]
    assert len({u.track_id for u in out}) == 1


def test_labels_do_not_match_each_other_and_ids_count_up():
    tr = IouTracker(min_hits=1)
    out = run(tr, [[det(0.1, 0.1, 0.5, "person"), det(0.1, 0.1, 0.5, "car")], [det(0.6, 0.6, 0.5, "dog")]])
    assert [(u.kind, u.track_id, u.detection.label) for u in out] == [
        ("appear", 1, "person"),
        ("appear", 2, "car"),
        ("appear", 3, "dog"),
    ]
    ends = tr.flush(T0 + 1)
    assert sorted(u.track_id for u in ends) == [1, 2, 3] and {u.kind for u in ends} == {"leave"}
    assert tr.flush(T0 + 2) == [] and tr.active == 0


def test_unconfirmed_tracks_do_not_leave_on_flush():
    tr = IouTracker(min_hits=3)
    out = run(tr, [[det(0.1, 0.1, 0.5)], [det(0.1, 0.1, 0.5)]])
    assert out == [] and tr.flush(T0 + 1) == []


def test_fast_object_at_low_rate_stays_one_track():
    # 0.08 of the frame per analysed frame with a 0.1-wide box: consecutive boxes overlap with
    # IoU ~0.11, below the IoU threshold. Prediction and the nearness pass keep it one object.
    tracker = IouTracker()
    reports = []
    for i in range(10):
        x = 0.05 + 0.08 * i
        reports += tracker.update(frame_at(i * 0.66), [Detection("car", 0.8, (x, 0.4, x + 0.1, 0.5))])
    reports += tracker.update(frame_at(10 * 0.66 + 3.0), [])
    kinds = [(r.kind, r.track_id) for r in reports]
    assert kinds == [("appear", 1), ("leave", 1)]


def test_two_side_by_side_objects_are_not_merged_by_the_nearness_pass():
    tracker = IouTracker()
    reports = []
    for i in range(6):
        dets = [Detection("person", 0.8, (0.30, 0.3, 0.36, 0.6)), Detection("person", 0.8, (0.38, 0.3, 0.44, 0.6))]
        reports += tracker.update(frame_at(i * 0.2), dets)
    assert sorted(r.track_id for r in reports if r.kind == "appear") == [1, 2]


def test_seen_lists_the_confirmed_tracks_of_each_frame_and_ended_their_ends():
    # What the zone and line rules evaluate (analytics/rules.py): every confirmed track seen in the
    # frame just analysed, where it is now, and the tracks that ended with it.
    t = IouTracker(min_hits=2, max_age_s=0.5)
    t.update(frame(0), [det(0.1, 0.1, 0.9)])
    assert t.seen == []  # not confirmed yet
    t.update(frame(1), [det(0.12, 0.1, 0.8)])
    assert [(p.track_id, p.box, p.score) for p in t.seen] == [(1, (0.12, 0.1, 0.22, 0.30000000000000004), 0.8)]
    t.update(frame(2), [])
    assert t.seen == [] and t.ended == []
    t.update(frame(5), [])  # past max_age_s
    assert t.ended == [1]
