"""Analytics rules on known motion: line crossings (direction, once, jitter, round the end) and zones."""

from __future__ import annotations

import numpy as np

from analytics.rules import Line, RuleEngine, TrackPoint, Zone, inside, polygon_error, side
from analytics.tracker import IouTracker
from analytics.types import Detection, Frame

LINE = Line("bridge", (0.2, 0.5), (0.8, 0.5))  # drawn left to right: "in" is from above it to below it
SQUARE = ((0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6))


def at(x: float, y: float, tid: int = 1, label: str = "person") -> TrackPoint:
    """A track whose box stands with its bottom centre at (x, y)."""
    return TrackPoint(tid, label, 0.8, (x - 0.03, y - 0.1, x + 0.03, y))


def walk(engine: RuleEngine, points: list[tuple[float, float]], tid: int = 1, label: str = "person",
         t0: float = 0.0, dt: float = 0.2) -> list[tuple[str, str, str | None]]:
    hits = []
    for i, (x, y) in enumerate(points):
        hits += engine.update(t0 + i * dt, [at(x, y, tid, label)])
    return [(h.kind, h.rule, h.direction or h.phase) for h in hits]


def test_side_is_right_of_a_to_b_as_seen_in_the_image():
    assert side(LINE.a, LINE.b, (0.5, 0.7)) > 0  # below a left-to-right line: its right
    assert side(LINE.a, LINE.b, (0.5, 0.3)) < 0
    assert side((0.5, 0.2), (0.5, 0.8), (0.3, 0.5)) > 0  # a downward line's right is the image's left


def test_a_crossing_counts_once_with_its_direction():
    e = RuleEngine(lines=[LINE])
    assert walk(e, [(0.5, 0.3), (0.5, 0.4), (0.5, 0.6), (0.5, 0.7), (0.5, 0.8)]) == [("line", "bridge", "in")]
    e = RuleEngine(lines=[LINE])
    assert walk(e, [(0.5, 0.8), (0.5, 0.6), (0.5, 0.45), (0.5, 0.2)]) == [("line", "bridge", "out")]


def test_there_and_back_is_two_crossings():
    e = RuleEngine(lines=[LINE])
    assert walk(e, [(0.5, 0.3), (0.5, 0.7), (0.5, 0.3)]) == [("line", "bridge", "in"), ("line", "bridge", "out")]


def test_jitter_on_the_line_counts_nothing():
    e = RuleEngine(lines=[LINE])
    jitter = [(0.5, 0.3)] + [(0.5, 0.5 + (0.006 if i % 2 else -0.006)) for i in range(20)] + [(0.5, 0.3)]
    assert walk(e, jitter) == []
    # ... and a real crossing after dithering on the line still counts once
    assert walk(e, [(0.5, 0.505), (0.5, 0.495), (0.5, 0.7)], t0=10) == [("line", "bridge", "in")]


def test_walking_round_the_end_of_a_line_is_no_crossing():
    e = RuleEngine(lines=[LINE])
    assert walk(e, [(0.1, 0.3), (0.1, 0.7), (0.9, 0.7), (0.9, 0.3)]) == []


def test_labels_filter_a_rule():
    e = RuleEngine(lines=[Line("road", LINE.a, LINE.b, frozenset({"car"}))])
    assert walk(e, [(0.5, 0.3), (0.5, 0.7)], label="person") == []
    assert walk(e, [(0.5, 0.3), (0.5, 0.7)], tid=2, label="car") == [("line", "road", "in")]


def test_zone_enter_loiter_and_leave():
    e = RuleEngine(zones=[Zone("atm", SQUARE, loiter_s=1.0)])
    path = [(0.2, 0.5), (0.5, 0.5), (0.5, 0.5)] + [(0.5, 0.5)] * 8 + [(0.8, 0.5), (0.8, 0.5)]
    assert walk(e, path) == [("zone", "atm", "enter"), ("zone", "atm", "loiter"), ("zone", "atm", "leave")]
    assert e.occupancy() == {"atm": 0}


def test_one_odd_box_neither_enters_nor_leaves():
    e = RuleEngine(zones=[Zone("gate", SQUARE)])
    assert walk(e, [(0.2, 0.5), (0.5, 0.5), (0.2, 0.5), (0.2, 0.5)]) == []
    e = RuleEngine(zones=[Zone("gate", SQUARE)])
    assert walk(e, [(0.5, 0.5), (0.5, 0.5), (0.8, 0.5), (0.5, 0.5), (0.5, 0.5)]) == [("zone", "gate", "enter")]
    assert e.occupancy() == {"gate": 1}


def test_a_track_that_ends_inside_leaves_the_zone():
    e = RuleEngine(zones=[Zone("gate", SQUARE)])
    walk(e, [(0.5, 0.5), (0.5, 0.5)])
    hits = e.update(1.0, [], ended=[1])
    assert [(h.rule, h.phase, h.track.track_id) for h in hits] == [("gate", "leave", 1)]
    assert e.flush() == []


def test_polygon_validation():
    assert polygon_error(SQUARE) is None
    assert "3 to 32" in polygon_error(SQUARE[:2])
    assert "3 to 32" in polygon_error([(0.1 + 0.01 * i, 0.1 + 0.02 * (i % 2)) for i in range(33)])
    assert "0 <= x, y <= 1" in polygon_error([(0.1, 0.1), (1.2, 0.1), (0.5, 0.5)])
    assert "no area" in polygon_error([(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)])
    assert "cross" in polygon_error([(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)])  # a bow tie
    assert inside(SQUARE, (0.5, 0.5)) and not inside(SQUARE, (0.7, 0.5))


def test_a_walker_crossing_before_its_track_is_confirmed_counts():
    """At 5 fps a person first found just above the line may be below it when the tracker confirms them
    (its second sighting): the tracker tells where it first saw them, and the crossing counts, once."""
    tracker, engine = IouTracker(), RuleEngine(lines=[LINE])
    image = np.zeros((72, 128, 3), np.uint8)
    hits = []
    for i, y in enumerate((0.46, 0.56, 0.66, 0.76)):  # 0.1 of the picture a frame: 0.2 s apart
        box = (0.47, y - 0.2, 0.53, y)
        tracker.update(Frame("cam", image, i * 0.2, i * 0.2, i), [Detection("person", 0.9, box)])
        hits += engine.update(i * 0.2, tracker.seen, tracker.ended)
    assert [(h.rule, h.direction) for h in hits] == [("bridge", "in")]
    # Without where it was first seen, its first known side is already below the line: nothing counted.
    e = RuleEngine(lines=[LINE])
    assert walk(e, [(0.5, 0.56), (0.5, 0.66), (0.5, 0.76)]) == []
