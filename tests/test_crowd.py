"""The tracker in a crowd: line crossings at 5 fps analysis and the 25 fps offline reference against what was
walked, on a crowd clip made from real footage with the real model (the clip bench/crossings.py measures), and
the tracker's crowd behaviour on synthetic boxes."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.detector import load_detector
from analytics.rules import Line, RuleEngine
from analytics.tracker import IouTracker
from analytics.types import Detection, Frame
from tests.media_crowd import detect_clip, ground_truth, make_scene, people_in_view, recall, replay, write_clip

IMAGE = np.zeros((4, 4, 3), np.uint8)
CLIP_SECONDS = 40.0  # ~100 crossings, the bench's clip; the model on all 1,000 frames costs ~45 s of one core
TOLERANCE = 0.15  # issue 12: +-15 % each way


def frame_at(t: float) -> Frame:
    return Frame(camera_id="cam", image=IMAGE, captured_at=t, media_ts=t, seq=int(t * 100))


def person(cx: float, foot: float, h: float = 0.3, score: float = 0.8) -> Detection:
    """A person's box with its feet at (cx, foot)."""
    return Detection("person", score, (cx - 0.1 * h, foot - h, cx + 0.1 * h, foot))


def feed(tracker: IouTracker, engine: RuleEngine | None, frames: list[list[Detection]], fps: float = 5.0):
    """Run frames through the tracker (and rules); returns the tracker's reports and the rule hits."""
    reports, hits = [], []
    for i, dets in enumerate(frames):
        reports += tracker.update(frame_at(i / fps), dets)
        if engine is not None:
            hits += [h.direction for h in engine.update(i / fps, tracker.seen, tracker.ended)]
    return reports, hits


# ---- the crowd clip ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crowd(tmp_path_factory, street_clip, model_path):
    """The crowd scene, its clip drawn from the street clip's people, and the model's people on every frame."""
    scene = make_scene(CLIP_SECONDS)
    clip = write_clip(tmp_path_factory.mktemp("crowd") / "crowd.mp4", street_clip, scene)
    return scene, detect_clip(clip, load_detector(model_path))


@pytest.mark.model
def test_crossings_at_5_and_10_fps_are_within_15_percent_of_the_reference_and_of_what_was_walked(crowd,
                                                                                                  street_clip):
    scene, dets = crowd
    # It is a crowd, and the model sees it: 20+ people in view most of the time, most of them found.
    assert np.median(people_in_view(scene)) >= 20
    assert recall(scene, street_clip, dets) >= 0.75
    truth = ground_truth(scene)
    reference = replay(scene, street_clip, dets, 25, IouTracker()).counts  # the offline reference: every frame
    for way in ("in", "out"):
        assert truth[way] >= 40, truth  # both ways walked, enough to judge a share
        assert abs(reference[way] - truth[way]) <= TOLERANCE * truth[way], (way, reference, truth)
    for fps in (5, 10):
        got = replay(scene, street_clip, dets, fps, IouTracker()).counts
        for way in ("in", "out"):
            assert abs(got[way] - reference[way]) <= TOLERANCE * reference[way], (fps, way, got, reference)
            assert abs(got[way] - truth[way]) <= TOLERANCE * truth[way], (fps, way, got, truth)
    # (On this crowd; `bench.crossings --seeds 7,3,21,31,44` gives five other 40 s crowds, all within 15 % at
    # 5 fps: docs/rules.md has the figures. Each crowd costs the model ~45 s here, so the test keeps to one.)


# ---- the tracker's crowd behaviour on synthetic boxes --------------------------------------------------------

LINE = Line("door", (0.0, 0.6), (1.0, 0.6))  # "in": walking down across y = 0.6


def test_a_person_half_hidden_below_the_line_is_not_counted_crossing_it():
    # Standing with their feet at 0.66, below the line; for 4 frames someone in front hides their legs
    # and the detector boxes only their upper half, whose bottom is above the line.
    full = person(0.5, 0.66)
    upper = Detection("person", 0.6, (full.box[0], full.box[1], full.box[2], full.box[1] + 0.45 * 0.3))
    tr, engine = IouTracker(), RuleEngine(lines=[LINE])
    reports, hits = feed(tr, engine, [[full]] * 8 + [[upper]] * 4 + [[full]] * 8)
    assert hits == []
    assert [r.kind for r in reports] == ["appear"]
    assert tr.seen[0].foot[1] == pytest.approx(0.66, abs=0.01)


def test_a_box_jittering_across_the_line_counts_nothing():
    # Standing with their feet just below the line (0.615, past the rule's 1 % margin); the detector's
    # box jumps 3 % of the picture up and down (a tenth of the body), its bottom above the line every
    # other frame. What the rule sees is where the track is, not each box: no crossing.
    tr, engine = IouTracker(), RuleEngine(lines=[LINE])
    reports, hits = feed(tr, engine, [[person(0.5, 0.615 + (0.03 if i % 2 else -0.03))] for i in range(30)])
    assert hits == []
    assert [r.kind for r in reports] == ["appear"]


def test_a_missed_detection_is_bridged_by_the_motion_model():
    # A walks right at 0.3 of the picture a second (at 5 fps a box moves its own width each frame, so
    # boxes a frame apart hardly overlap), passes behind B standing still, unseen for 3 frames, and
    # comes out on the other side: A's track is predicted there and keeps A; B keeps B.
    frames = []
    for i in range(16):
        dets = [person(0.6, 0.7, h=0.35)]  # B
        if not 6 <= i <= 8:
            dets.append(person(0.3 + 0.06 * i, 0.6, h=0.3))  # A
        frames.append(dets)
    tr = IouTracker()
    reports, _ = feed(tr, None, frames)
    assert [(r.kind, r.track_id) for r in reports] == [("appear", 1), ("appear", 2)]
    by_id = {p.track_id: p for p in tr.seen}
    assert len(by_id) == 2
    a = min(by_id.values(), key=lambda p: p.foot[1])  # A walks higher in the picture (further away)
    assert a.foot[0] == pytest.approx(0.3 + 0.06 * 15, abs=0.03)


def test_two_people_passing_each_other_keep_their_ids_through_the_occlusion():
    # A (near, lower in the picture) walks right, B (further, higher) walks left in nearly the same
    # place; while they pass the detector sees only A for 3 frames. Afterwards each id is still on the
    # person it was on: the one walking right is A's.
    frames = []
    for i in range(20):
        ax, bx = 0.2 + 0.03 * i, 0.8 - 0.03 * i
        dets = [person(ax, 0.7, h=0.34)]
        if not 9 <= i <= 11:
            dets.append(person(bx, 0.66, h=0.3))
        frames.append(dets)
    tr = IouTracker()
    reports, _ = feed(tr, None, frames)
    first = {r.track_id: r.detection.box[0] for r in reports if r.kind == "appear"}
    assert len(first) == 2  # no new track for either when B comes out
    last = {p.track_id: (p.box[0] + p.box[2]) / 2 for p in tr.seen}
    a_id = min(first, key=first.get)  # A started on the left
    assert last[a_id] == pytest.approx(0.2 + 0.03 * 19, abs=0.03)
    b_id = next(t for t in first if t != a_id)
    assert last[b_id] == pytest.approx(0.8 - 0.03 * 19, abs=0.03)


def test_a_person_whose_legs_a_nearer_one_hides_is_not_counted_crossing_the_line_at_the_hider():
    # A stands with their feet well below the line (0.8) behind B, who is nearer (feet at 0.95) and hides
    # A's legs: the detector boxes A down to where B's outline starts, and as B shifts that edge moves
    # between 0.56 and 0.66, across the line (0.6) and back. A's feet never moved: nothing crossed.
    b = Detection("person", 0.9, (0.40, 0.50, 0.56, 0.95))
    frames = []
    for i in range(30):
        bottom = 0.56 if (i // 6) % 2 == 0 else 0.66
        frames.append([b, Detection("person", 0.7, (0.44, 0.40, 0.52, bottom))])
    tr, engine = IouTracker(), RuleEngine(lines=[LINE])
    reports, hits = feed(tr, engine, frames)
    assert hits == []
    assert sorted(r.track_id for r in reports if r.kind == "appear") == [1, 2]  # both tracked all along
    hidden = {p.track_id: p.feet_seen for p in tr.seen}
    assert sorted(hidden.values()) == [False, True]  # A's feet are hidden, B's are seen


def test_a_hidden_person_whose_visible_edge_is_past_the_line_counts_when_they_cross():
    # C walks down behind a row of nearer people (their boxes hide C's legs the whole way); C's visible
    # bottom goes from above the line to well below it. Wherever C's feet are, they are below the box's
    # bottom: once that bottom is below the line, so are the feet. One "in".
    row = [Detection("person", 0.9, (x, 0.55, x + 0.16, 1.0)) for x in (0.2, 0.36, 0.52)]
    frames = []
    for i in range(20):
        bottom = 0.45 + 0.02 * i  # 0.45 -> 0.83
        frames.append(row + [Detection("person", 0.7, (0.40, bottom - 0.25, 0.46, bottom))])
    tr, engine = IouTracker(), RuleEngine(lines=[LINE])
    _, hits = feed(tr, engine, frames)
    assert hits == ["in"]


def _walker_hidden_then_found(fps: float, turn: float) -> list[tuple[str, int]]:
    """A walks right, is unseen for 1.6 s behind others, and is found `turn` box diagonals off where they were
    heading (they turned while hidden), legs hidden then (a box of half their height)."""
    frames = []
    n = round(4 * fps)
    for i in range(n):
        t = i / fps
        if 1.0 <= t < 2.6:
            frames.append([])
            continue
        x = 0.2 + 0.05 * min(t, 2.6)  # stops where it was found (it turned)
        h = 0.3
        if t >= 2.6:
            x += turn * (0.06 ** 2 + h ** 2) ** 0.5
            frames.append([Detection("person", 0.8, (x - 0.03, 0.3, x + 0.03, 0.3 + h / 2))])
        else:
            frames.append([Detection("person", 0.8, (x - 0.03, 0.3, x + 0.03, 0.3 + h))])
    reports, _ = feed(IouTracker(), None, frames, fps=fps)
    return [(r.kind, r.track_id) for r in reports if r.kind == "appear"]


def test_at_5_fps_someone_found_well_away_after_being_hidden_keeps_their_track():
    # Hidden 1.6 s, found 1.3 diagonals from where they were heading: at 5 fps (few frames to catch them
    # in) the nearness gate has kept widening and it is the same walker; at 25 fps, where a person is
    # re-found as soon as they show, a box that far away is taken for someone else.
    assert _walker_hidden_then_found(5, 1.3) == [("appear", 1)]
    assert _walker_hidden_then_found(25, 1.3) == [("appear", 1), ("appear", 2)]
