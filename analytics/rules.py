"""Analytics rules over tracked objects: zones (enter, leave, loiter) and lines (directed crossings).

GA/T 1400's intrusion (入侵), loitering (徘徊), tripwire (绊线) and flow counting (流量统计) are built on
the tracker's per-frame positions. Everything is in 0..1 image coordinates; an object's reference
point is the bottom centre of its box (where it stands on the ground), as in every NVR's tripwire.

A line is directed a -> b. "in" is a crossing from the left of a -> b to its right *as seen in the
image* (y grows downwards): for a line drawn left to right, from above it to below it. A crossing
counts once: the reference point must settle on a side (further than LINE_MARGIN from the line)
before a change of side counts, so an object standing on the line and jittering across it counts
nothing, and the step between the two settled points must pass between a and b (walking round the
end of a line is not crossing it). A point whose feet are hidden behind someone nearer
(`TrackPoint.feet_seen` False) settles a side only when wherever its feet may be, it is on that side.

A zone is a simple polygon. An object enters when its reference point has been inside for
ZONE_CONFIRM analysed frames in a row and leaves after as many outside (one odd box neither enters
nor leaves), or when its track ends; it loiters once per visit, when it has been inside `loiter_s`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Point = tuple[float, float]

LINE_MARGIN = 0.01  # 1 % of the picture: a reference point this close to a line is on neither side
HIDDEN_REACH = 1.0  # of a box's height: feet hidden behind someone nearer are at most this far below its bottom
FIRST_SEEN_MARGIN = 0.1  # of a box's height: a raw box's feet jump about this much (a tenth of the body)
ZONE_CONFIRM = 2  # analysed frames in a row inside (outside) before an enter (leave)
MAX_POINTS = 32  # a polygon's corners at most (the API's limit too)


@dataclass(frozen=True, slots=True)
class Zone:
    """A named area; `labels` None: every label; `loiter_s` None: no loitering events."""

    name: str
    polygon: tuple[Point, ...]
    labels: frozenset[str] | None = None
    loiter_s: float | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """A named, directed tripwire from a to b."""

    name: str
    a: Point
    b: Point
    labels: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """Where a confirmed track is in the frame just analysed."""

    track_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]
    # On the frame a track is confirmed: its box when first seen, before it had an id. A walker found
    # near a line and confirmed a frame later (0.2 s at 5 fps) may have crossed in between; the rules
    # start from where it was first seen so that such a crossing counts.
    first_box: tuple[float, float, float, float] | None = None
    # False: the box's bottom lies behind someone nearer (tracker.feet_hidden); the feet are somewhere below it.
    feet_seen: bool = True

    @property
    def foot(self) -> Point:
        """The reference point: bottom centre of the box."""
        return ((self.box[0] + self.box[2]) / 2, self.box[3])


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One rule event: a zone's enter/leave/loiter or a line's in/out crossing, by one track."""

    kind: str  # "zone" | "line"
    rule: str  # the zone's or line's name
    track: TrackPoint
    phase: str | None = None  # zone: "enter" | "leave" | "loiter"
    direction: str | None = None  # line: "in" | "out"


def side(a: Point, b: Point, p: Point) -> float:
    """Signed distance of p from the line a -> b: positive on its right as seen in the image (y down)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = (dx * dx + dy * dy) ** 0.5
    if length == 0:
        return 0.0
    return (dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / length


def segments_cross(p1: Point, p2: Point, a: Point, b: Point) -> bool:
    """Whether the step p1 -> p2 passes between a and b (the endpoints count)."""
    def orient(o: Point, u: Point, v: Point) -> float:
        return (u[0] - o[0]) * (v[1] - o[1]) - (u[1] - o[1]) * (v[0] - o[0])
    d1, d2 = orient(a, b, p1), orient(a, b, p2)
    d3, d4 = orient(p1, p2, a), orient(p1, p2, b)
    return d1 * d2 <= 0 and d3 * d4 <= 0


def inside(polygon: Sequence[Point], p: Point) -> bool:
    """Point in polygon by ray casting (a point on an edge may fall either way)."""
    x, y = p
    hit = False
    n = len(polygon)
    for i in range(n):
        (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def polygon_error(polygon: Sequence[Sequence[float]]) -> str | None:
    """Why a polygon is not a usable zone (too few or many points, outside 0..1, zero area, self-crossing), or None."""
    if not 3 <= len(polygon) <= MAX_POINTS:
        return f"a polygon needs 3 to {MAX_POINTS} points, got {len(polygon)}"
    pts = [tuple(p) for p in polygon]
    if any(len(p) != 2 or not all(0.0 <= c <= 1.0 for c in p) for p in pts):
        return "every point is [x, y] with 0 <= x, y <= 1"
    n = len(pts)
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbouring edges share a corner
            if segments_cross(pts[i], pts[(i + 1) % n], pts[j], pts[(j + 1) % n]):
                return f"edges {i} and {j} cross: the polygon must be simple"
    area2 = sum(pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1] for i in range(n))
    if abs(area2) < 1e-9:
        return "the polygon has no area"
    return None


@dataclass(slots=True)
class _Visit:
    """A track's state against one zone."""

    inside: bool = False
    streak: int = 0  # analysed frames in a row on the other side of `inside`
    since: float = 0.0  # when it entered
    loitered: bool = False


@dataclass(slots=True)
class _TrackState:
    visits: dict[str, _Visit] = field(default_factory=dict)
    settled: dict[str, tuple[int, Point]] = field(default_factory=dict)  # line -> (side, where it settled)
    last: TrackPoint | None = None


class RuleEngine:
    """Zones and lines of one camera, fed the tracker's confirmed tracks after every analysed frame."""

    def __init__(self, zones: Iterable[Zone] = (), lines: Iterable[Line] = ()) -> None:
        self.zones = tuple(zones)
        self.lines = tuple(lines)
        self._tracks: dict[int, _TrackState] = {}

    @property
    def empty(self) -> bool:
        """No rules: nothing to evaluate."""
        return not self.zones and not self.lines

    def occupancy(self) -> dict[str, int]:
        """Objects inside each zone now."""
        return {z.name: sum(1 for t in self._tracks.values() if (v := t.visits.get(z.name)) and v.inside)
                for z in self.zones}

    def update(self, now: float, tracks: Iterable[TrackPoint], ended: Iterable[int] = ()) -> list[RuleHit]:
        """One analysed frame: the confirmed tracks seen in it, and the ids of tracks that ended."""
        hits: list[RuleHit] = []
        for tp in tracks:
            st = self._tracks.get(tp.track_id)
            if st is None:
                st = self._tracks[tp.track_id] = _TrackState()
                if tp.first_box is not None:
                    self._start_from(st, tp.first_box)
            st.last = tp
            foot = tp.foot
            for z in self.zones:
                if z.labels is None or tp.label in z.labels:
                    hits += self._zone(z, st, tp, foot, now)
            for ln in self.lines:
                if ln.labels is None or tp.label in ln.labels:
                    hit = self._line(ln, st, tp, foot)
                    if hit is not None:
                        hits.append(hit)
        for tid in ended:
            hits += self._end(tid)
        return hits

    def flush(self) -> list[RuleHit]:
        """Every track ends (the stream stopped): a leave for each object inside a zone."""
        hits: list[RuleHit] = []
        for tid in list(self._tracks):
            hits += self._end(tid)
        return hits

    def _zone(self, z: Zone, st: _TrackState, tp: TrackPoint, foot: Point, now: float) -> list[RuleHit]:
        v = st.visits.setdefault(z.name, _Visit())
        now_in = inside(z.polygon, foot)
        out: list[RuleHit] = []
        if now_in == v.inside:
            v.streak = 0
        else:
            v.streak += 1
            if v.streak >= ZONE_CONFIRM:
                v.inside, v.streak = now_in, 0
                if now_in:
                    v.since, v.loitered = now, False
                out.append(RuleHit("zone", z.name, tp, phase="enter" if now_in else "leave"))
        if v.inside and not v.loitered and z.loiter_s is not None and now - v.since >= z.loiter_s:
            v.loitered = True
            out.append(RuleHit("zone", z.name, tp, phase="loiter"))
        return out

    def _start_from(self, st: _TrackState, box: tuple[float, float, float, float]) -> None:
        """A new track's sides of the lines where it was first seen (tentatively, before it had an id).

        That sighting is one raw box, not yet the tracker's smoothed position: it counts only where it stood
        clearly off the line, further than a detector's jitter (FIRST_SEEN_MARGIN of the box's height).
        """
        foot = ((box[0] + box[2]) / 2, box[3])
        margin = max(LINE_MARGIN, FIRST_SEEN_MARGIN * (box[3] - box[1]))
        for ln in self.lines:
            d = side(ln.a, ln.b, foot)
            if abs(d) > margin:
                st.settled[ln.name] = (1 if d > 0 else -1, foot)

    def _line(self, ln: Line, st: _TrackState, tp: TrackPoint, foot: Point) -> RuleHit | None:
        d = side(ln.a, ln.b, foot)
        if not tp.feet_seen:
            # Its feet are between the box's bottom and HIDDEN_REACH of its height below: a side only when
            # that whole span is on it (a half-hidden person's box bottom jitters on a line it never reached).
            low = side(ln.a, ln.b, (foot[0], foot[1] + HIDDEN_REACH * (tp.box[3] - tp.box[1])))
            if (d > 0) != (low > 0) or abs(low) <= LINE_MARGIN:
                return None
        if abs(d) <= LINE_MARGIN:
            return None  # on the line: wait until it settles on a side
        now_side = 1 if d > 0 else -1
        prev = st.settled.get(ln.name)
        st.settled[ln.name] = (now_side, foot)
        if prev is None or prev[0] == now_side:
            return None
        if not segments_cross(prev[1], foot, ln.a, ln.b):
            return None  # changed side round the end of the line
        return RuleHit("line", ln.name, tp, direction="in" if now_side > 0 else "out")

    def _end(self, track_id: int) -> list[RuleHit]:
        st = self._tracks.pop(track_id, None)
        if st is None or st.last is None:
            return []
        return [RuleHit("zone", name, st.last, phase="leave") for name, v in st.visits.items() if v.inside]
