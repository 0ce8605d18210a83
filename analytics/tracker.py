"""Tracker: turns per-frame detections into appear / update / leave reports per object.

Built to hold a crowd at a low analysis rate (docs/rules.md, "Tracking in a crowd"), after SORT and
ByteTrack:

* every track carries a constant-velocity Kalman filter on its box (centre, width, height, each with a
  speed), in seconds rather than frames, so that 5, 10 or 25 analysed frames a second, or frames
  dropped under load, predict alike; detections are matched against the predicted boxes;
* association runs in stages: confirmed tracks take the confident boxes by IoU, then by nearness within
  a gate that widens with the time since the track was last seen, those seen on the last frame first
  (DeepSORT's cascade); what is left of the confirmed tracks may take the weak boxes (below
  `high_score`) at a stricter IoU, and only then may tentative tracks take what is left. Weak boxes
  never start a track;
* a tentative track that misses a frame is dropped (a flicker is not an object);
* a box whose bottom edge lies inside a nearer object's box has its feet hidden (`feet_hidden`): the
  rules are told (`TrackPoint.feet_seen`), and do not take its bottom for where the person stands;
* what the rules see (`seen`) is where the track is: the filtered box from the third sighting on, and a
  half-hidden person's box given their height back (`_complete`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.rules import TrackPoint
from analytics.types import Detection, Frame, TrackUpdate

Box = tuple[float, float, float, float]

MAX_PREDICT_S = 1.0  # extrapolate a lost object's motion at most this long; then it stands still
# Kalman noise, in shares of the box's height (so a near, big person and a far, small one alike):
MEASURE_STD = 0.1  # a detector's box edges jitter by about this in a crowd (parts of neighbours, partial views)
POSITION_NOISE = 0.05  # per sqrt(second): how far a box wanders beyond its speed
SPEED_NOISE = 1.0  # per sqrt(second) per second: a walker's speed changes this fast (stop, turn)
SIZE_NOISE = 0.5  # per sqrt(second): a box grows as its object comes into view over an edge, or nearer
INITIAL_SPEED_STD = 1.0  # a new track's speed is unknown: about a body height a second either way
NEAR_FULL_S = 0.25  # the nearness gate opens to `near_factor` box diagonals after this long unseen
LOW_IOU = 0.5  # a weak box must overlap a predicted box this much to extend its track
PARTIAL = 0.8  # a box less than this share of its track's height is someone partly hidden (see _complete)
EDGE = 0.005  # a box this close to the picture's edge is cut by it, not hidden by someone
TOP_AGREES = 0.15  # ...and its top within this share of the track's height of the predicted top
HIDDEN_ABOVE = 0.05  # of a box's height: a bottom edge at least this far above a nearer box's is hidden by it
NEAR_WIDTH = (0.6, 1.6)  # a box this many times the predicted width may be the track's (widths: legs hidden
#                         behind someone halve a box's height, not its width)
SPARSE_S = 0.08  # analysed frames at least this far apart (<= 12.5 fps) are sparse: see _near_pairs
WIDEN_AFTER_S = 0.5  # ...where the nearness gate keeps widening for a track unseen longer than this


@dataclass(slots=True)
class _Track:
    """Mutable state of one tracked object (private to the tracker)."""

    label: str
    box: Box  # last matched detection's box (what `seen` reports)
    last_seen: float
    hits: int
    best: Detection  # highest-score detection so far, reported on leave
    best_frame: Frame
    track_id: int = 0  # assigned on confirmation, so reported ids run 1, 2, 3 ...
    reported_score: float = 0.0  # score last sent in appear/update
    last_score: float = 0.0  # score of the last matched detection
    # Kalman state per coordinate (centre x, centre y, width, height): position, speed per second, and
    # the 2x2 covariance [[pp, pv], [pv, vv]]; each coordinate filtered on its own (cheap, and enough).
    pos: list[float] | None = None
    vel: list[float] | None = None
    cov: list[list[float]] | None = None
    at: float = 0.0  # time the state refers to
    first_box: Box | None = None  # where it was first seen (told to the rules on the frame it is confirmed)
    feet_hidden: bool = False  # the last matched box's bottom lies behind a nearer object's box

    def predicted(self, now: float) -> Box:
        """Where the box should be now if the object keeps its speed."""
        if self.pos is None or self.vel is None:
            return self.box
        dt = min(max(now - self.at, 0.0), MAX_PREDICT_S)
        cx, cy, w, h = (p + v * dt for p, v in zip(self.pos, self.vel))
        w, h = max(w, 1e-4), max(h, 1e-4)
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)

    def correct(self, box: Box, now: float) -> None:
        """Fold a matched detection into the filter (predict to `now`, then update)."""
        z = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1])
        scale = max(z[3], 1e-3)
        r = (MEASURE_STD * scale) ** 2
        if self.pos is None or self.vel is None or self.cov is None:
            self.pos, self.vel = list(z), [0.0, 0.0, 0.0, 0.0]
            self.cov = [[r, 0.0, (INITIAL_SPEED_STD * scale) ** 2] for _ in range(4)]
            self.at = now
            return
        dt = min(max(now - self.at, 0.0), MAX_PREDICT_S)
        qp, qv = (POSITION_NOISE * scale) ** 2 * dt, (SPEED_NOISE * scale) ** 2 * dt
        qs = (SIZE_NOISE * scale) ** 2 * dt
        for i in range(4):
            if i >= 2:  # sizes: a random walk, no speed (a box that grows while it comes into view must not overshoot)
                pp = self.cov[i][0] + qs
                kp = pp / (pp + r)
                self.pos[i] += kp * (z[i] - self.pos[i])
                self.cov[i] = [(1 - kp) * pp, 0.0, 0.0]
                continue
            pp, pv, vv = self.cov[i]
            p, v = self.pos[i] + self.vel[i] * dt, self.vel[i]
            pp, pv, vv = pp + 2 * dt * pv + dt * dt * vv + qp, pv + dt * vv, vv + qv  # predict
            s = pp + r
            kp, kv = pp / s, pv / s
            y = z[i] - p
            self.pos[i], self.vel[i] = p + kp * y, v + kv * y
            self.cov[i] = [(1 - kp) * pp, (1 - kp) * pv, vv - kv * pv]
        self.at = now


def _complete(t: _Track, box: Box, now: float) -> Box:
    """The box a person partly hidden from below would have if we saw all of them.

    In a crowd seen from above, a nearer person hides the lower part of one further away: the detector
    then boxes their upper part, its top where the track's top is but much shorter, and its bottom (the
    feet, where line rules stand) jumps up by half a body. Such a box is given the track's height back.
    Boxes cut by the picture's edge are what they are.
    """
    if t.pos is None or t.vel is None or box[1] <= EDGE or box[3] >= 1.0 - EDGE:
        return box
    h = t.pos[3]
    top = t.pos[1] + t.vel[1] * min(max(now - t.at, 0.0), MAX_PREDICT_S) - h / 2
    if box[3] - box[1] >= PARTIAL * h or abs(box[1] - top) > TOP_AGREES * h:
        return box
    return (box[0], box[1], box[2], min(box[1] + h, 1.0))


def feet_hidden(detections: list[Detection]) -> set[int]:
    """Indices of the boxes whose bottom edge (the feet) lies inside a nearer object's box.

    Seen from above at an angle, whoever is nearer stands lower in the picture and hides the legs of whoever
    is behind: the detector then boxes what it sees, and that box's bottom is the nearer one's outline, not
    where the person stands (a line rule must not take it for the feet: docs/rules.md).
    """
    out: set[int] = set()
    if len(detections) < 2:
        return out
    b = np.array([d.box for d in detections], dtype=np.float64)
    fx = (b[:, 0] + b[:, 2]) / 2
    fy = b[:, 3]
    h = b[:, 3] - b[:, 1]
    inside_x = (fx[:, None] > b[None, :, 0]) & (fx[:, None] < b[None, :, 2])
    inside_y = (fy[:, None] > b[None, :, 1]) & (fy[:, None] < b[None, :, 3] - HIDDEN_ABOVE * h[:, None])
    nearer = inside_x & inside_y
    np.fill_diagonal(nearer, False)
    return set(np.nonzero(nearer.any(axis=1))[0].tolist())


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [N, 4] and b [M, 4] in x1, y1, x2, y2 form."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def greedy_pairs(ious: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Best overlap first, each row and column used once, pairs at or above threshold."""
    pairs: list[tuple[int, int]] = []
    if ious.size == 0:
        return pairs
    used_r: set[int] = set()
    used_c: set[int] = set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        r, c = divmod(int(flat), ious.shape[1])
        if ious[r, c] < threshold:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class IouTracker:
    """Per-label tracking by predicted-box overlap; one appear and one leave per object, updates only on real gains."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        min_hits: int = 2,
        max_age_s: float = 2.0,
        update_gain: float = 0.15,
        near_factor: float = 1.0,
        high_score: float | None = None,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.min_hits = max(1, min_hits)
        self.max_age_s = max_age_s
        self.update_gain = update_gain
        self.near_factor = near_factor  # nearness pass: centre within this many box diagonals (at most)
        # Boxes scoring below this only extend tracks (ByteTrack's second stage); None: every box may
        # start one (what the caller hands over is already above its own threshold).
        self.high_score = high_score
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._previous = float("-inf")  # time of the frame before this one
        # After each update: the confirmed tracks seen in that frame, where, and the ids that ended
        # (what zone and line rules evaluate, analytics/rules.py).
        self.seen: list[TrackPoint] = []
        self.ended: list[int] = []

    @property
    def active(self) -> int:
        """Number of confirmed tracks alive now."""
        return sum(1 for t in self._tracks if t.track_id)

    def update(self, frame: Frame, detections: list[Detection]) -> list[TrackUpdate]:
        """Feed one analysed frame (with no detections too, so that tracks can age out)."""
        now = frame.captured_at
        out: list[TrackUpdate] = []
        matched: set[int] = set()  # indices into self._tracks
        seen: list[_Track] = []
        new_tracks: list[_Track] = []

        hidden = feet_hidden(detections)
        by_label: dict[str, list[int]] = {}
        for i, d in enumerate(detections):
            by_label.setdefault(d.label, []).append(i)
        for label, det_idx in by_label.items():
            pairs, spawn = self._associate(now, label, det_idx, detections)
            for ti, di in pairs:
                matched.add(ti)
                self._tracks[ti].feet_hidden = di in hidden
                upd = self._hit(self._tracks[ti], detections[di], frame)
                if upd is not None:
                    out.append(upd)
                seen.append(self._tracks[ti])
            for di in spawn:
                t = _Track(label=label, box=detections[di].box, last_seen=now, hits=0,
                           best=detections[di], best_frame=frame,  # where it stands, if its feet are seen:
                           first_box=None if di in hidden else detections[di].box, feet_hidden=di in hidden)
                upd = self._hit(t, detections[di], frame)
                if upd is not None:
                    out.append(upd)
                new_tracks.append(t)
                seen.append(t)

        alive: list[_Track] = []
        self.ended = []
        for i, t in enumerate(self._tracks):
            if i not in matched and (not t.track_id or now - t.last_seen > self.max_age_s):
                if t.track_id:
                    out.append(TrackUpdate("leave", t.track_id, t.best, t.best_frame))
                    self.ended.append(t.track_id)
                continue  # a tentative track that missed a frame is dropped: it was a flicker
            alive.append(t)
        self._tracks = alive + new_tracks
        self._previous = now
        self.seen = [TrackPoint(t.track_id, t.label, t.last_score, t.box,
                                first_box=t.first_box if t.hits == self.min_hits and t.hits > 1 else None,
                                feet_seen=not t.feet_hidden)
                     for t in seen if t.track_id]
        return out

    def _associate(self, now: float, label: str, det_idx: list[int],
                   detections: list[Detection]) -> tuple[list[tuple[int, int]], list[int]]:
        """(track, detection) pairs of one label in stages, and the detections that start new tracks."""
        high = self.high_score
        strong = [d for d in det_idx if high is None or detections[d].score >= high]
        weak = [d for d in det_idx if high is not None and detections[d].score < high]
        confirmed = [i for i, t in enumerate(self._tracks) if t.label == label and t.track_id]
        tentative = [i for i, t in enumerate(self._tracks) if t.label == label and not t.track_id]
        pairs: list[tuple[int, int]] = []

        def stage(trk: list[int], dets: list[int], threshold: float, near: bool) -> tuple[list[int], list[int]]:
            if not trk or not dets:
                return trk, dets
            pred = np.array([self._tracks[i].predicted(now) for i in trk], dtype=np.float64)
            boxes = np.array([detections[d].box for d in dets], dtype=np.float64)
            got = [(trk[r], dets[c]) for r, c in greedy_pairs(iou_matrix(pred, boxes), threshold)]
            used_t, used_d = {t for t, _ in got}, {d for _, d in got}
            if near:
                got += self._near_pairs(now, [t for t in trk if t not in used_t], [d for d in dets if d not in used_d],
                                        detections)
            pairs.extend(got)
            used_t, used_d = {t for t, _ in got}, {d for _, d in got}
            return [t for t in trk if t not in used_t], [d for d in dets if d not in used_d]

        # Tracks seen on the last frame choose first (DeepSORT's matching cascade): a track lost a
        # while ago predicts loosely, and must not take the box of someone tracked all along.
        fresh = [i for i in confirmed if self._tracks[i].last_seen >= self._previous]
        lost = [i for i in confirmed if self._tracks[i].last_seen < self._previous]
        fresh, strong = stage(fresh, strong, self.iou_threshold, near=True)
        lost, strong = stage(lost, strong, self.iou_threshold, near=True)
        confirmed = fresh + lost
        confirmed, weak = stage(confirmed, weak, LOW_IOU, near=False)
        tentative, strong = stage(tentative, strong, self.iou_threshold, near=True)
        return pairs, strong

    def _near_pairs(self, now: float, trk: list[int], dets: list[int],
                    detections: list[Detection]) -> list[tuple[int, int]]:
        """Association for what IoU left: a similar-sized box close to the predicted one.

        A fast object seen at a low analysis rate (or under load, when frames drop) may not overlap
        its last box at all; without this it would become a new object, and a new event, each frame.
        The gate widens with the time since the track was last seen: at 25 frames a second a walker
        moves a few pixels between frames, and a box a body's width away is someone else.

        Where frames are sparse (SPARSE_S apart or more: 12.5 fps and below) it keeps widening past
        WIDEN_AFTER_S unseen: someone hidden in a crowd for a second or two comes out well away from where
        they went in, and at 5 fps there are few frames to catch them in. At higher rates a person is
        re-found as soon as they show, near where they went in, and a wider gate would only let in a
        neighbour (crowd clips: 25 fps counts drift to +13 % with it, 5 fps ones from -20 % to -12 % without).
        """
        sparse = now - self._previous >= SPARSE_S
        cands: list[tuple[float, int, int]] = []
        for t_i in trk:
            t = self._tracks[t_i]
            tb = t.predicted(now)
            tw, th = tb[2] - tb[0], tb[3] - tb[1]
            diag = max((tw * tw + th * th) ** 0.5, 1e-6)
            unseen = now - t.last_seen
            gate = self.near_factor * min(1.0, unseen / NEAR_FULL_S)
            if sparse:
                gate *= 1.0 + max(0.0, unseen - WIDEN_AFTER_S)
            for d_i in dets:
                db = detections[d_i].box
                if not NEAR_WIDTH[0] <= (db[2] - db[0]) / max(tw, 1e-9) <= NEAR_WIDTH[1]:
                    continue
                dist = (((db[0] + db[2]) - (tb[0] + tb[2])) ** 2 + ((db[1] + db[3]) - (tb[1] + tb[3])) ** 2) ** 0.5 / 2
                if dist < gate * diag:
                    cands.append((dist / diag, t_i, d_i))
        pairs = []
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, t_i, d_i in sorted(cands):
            if t_i in used_t or d_i in used_d:
                continue
            used_t.add(t_i)
            used_d.add(d_i)
            pairs.append((t_i, d_i))
        return pairs

    def _hit(self, t: _Track, det: Detection, frame: Frame) -> TrackUpdate | None:
        t.hits += 1
        box = _complete(t, det.box, frame.captured_at)
        t.correct(box, frame.captured_at)
        t.box = box
        if t.hits > 2 and t.pos is not None:
            # Where it is: the filtered box, once the filter has a speed to go by. A detector's box
            # edges jitter, and in a crowd a line rule would count every jitter across the line.
            cx, cy, w, h = t.pos
            t.box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        t.last_score = det.score
        t.last_seen = frame.captured_at
        if det.score > t.best.score:
            t.best, t.best_frame = det, frame
        if not t.track_id:
            if t.hits < self.min_hits:
                return None
            t.track_id = self._next_id
            self._next_id += 1
            t.reported_score = det.score
            return TrackUpdate("appear", t.track_id, det, frame)
        if det.score - t.reported_score >= self.update_gain - 1e-9:  # 0.5 + 0.15 is not 0.65 in floats
            t.reported_score = det.score
            return TrackUpdate("update", t.track_id, det, frame)
        return None

    def flush(self, now: float | None = None) -> list[TrackUpdate]:
        """End every track (the stream stopped): a leave for each confirmed one."""
        # `now` is the stop time; a leave reports the best sighting, so it is not needed
        out = [TrackUpdate("leave", t.track_id, t.best, t.best_frame) for t in self._tracks if t.track_id]
        self.seen, self.ended = [], [t.track_id for t in self._tracks if t.track_id]
        self._tracks = []
        return out
