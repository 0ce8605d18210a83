"""IoU tracker: turns per-frame detections into appear / update / leave reports per object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.rules import TrackPoint
from analytics.types import Detection, Frame, TrackUpdate


@dataclass(slots=True)
class _Track:
    """Mutable state of one tracked object (private to the tracker)."""

    label: str
    box: tuple[float, float, float, float]  # last matched box, used for matching
    last_seen: float
    hits: int
    best: Detection  # highest-score detection so far, reported on leave
    best_frame: Frame
    track_id: int = 0  # assigned on confirmation, so reported ids run 1, 2, 3 ...
    reported_score: float = 0.0  # score last sent in appear/update
    last_score: float = 0.0  # score of the last matched detection
    velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # box corners, per second

    def predicted(self, now: float) -> tuple[float, float, float, float]:
        """Where the box should be now if the object keeps its speed (constant-velocity, as SORT)."""
        dt = min(max(now - self.last_seen, 0.0), 1.0)  # extrapolate at most a second
        return tuple(float(np.clip(b + v * dt, 0.0, 1.0)) for b, v in zip(self.box, self.velocity))  # type: ignore[return-value]


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


class IouTracker:
    """Greedy per-label IoU matching; one appear and one leave per object, updates only on real gains."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        min_hits: int = 2,
        max_age_s: float = 2.0,
        update_gain: float = 0.15,
        near_factor: float = 1.0,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.min_hits = max(1, min_hits)
        self.max_age_s = max_age_s
        self.update_gain = update_gain
        self.near_factor = near_factor  # second association: centre within this many box diagonals
        self._tracks: list[_Track] = []
        self._next_id = 1
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

        by_label: dict[str, list[int]] = {}
        for i, d in enumerate(detections):
            by_label.setdefault(d.label, []).append(i)

        new_tracks: list[_Track] = []
        for label, det_idx in by_label.items():
            trk_idx = [i for i, t in enumerate(self._tracks) if t.label == label]
            pairs: list[tuple[int, int]] = []
            if trk_idx:
                # Match against predicted boxes: at a low analysis rate (or when frames are dropped
                # under load) a moving object may no longer overlap where it was last seen.
                ious = iou_matrix(
                    np.array([self._tracks[i].predicted(now) for i in trk_idx], dtype=np.float64),
                    np.array([detections[j].box for j in det_idx], dtype=np.float64),
                )
                # greedy: best overlap first; each track and detection used once
                order = np.argsort(-ious, axis=None)
                used_t: set[int] = set()
                used_d: set[int] = set()
                for flat in order:
                    ti, di = divmod(int(flat), ious.shape[1])
                    if ious[ti, di] < self.iou_threshold:
                        break
                    if ti in used_t or di in used_d:
                        continue
                    used_t.add(ti)
                    used_d.add(di)
                    pairs.append((trk_idx[ti], det_idx[di]))
                pairs += self._near_pairs(now, trk_idx, det_idx, detections, used_t, used_d)
            for ti, di in pairs:
                matched.add(ti)
                upd = self._hit(self._tracks[ti], detections[di], frame)
                if upd is not None:
                    out.append(upd)
                seen.append(self._tracks[ti])
            paired = {di for _, di in pairs}
            for di in det_idx:
                if di not in paired:
                    t = _Track(label=label, box=detections[di].box, last_seen=now, hits=0,
                               best=detections[di], best_frame=frame)  # fmt: skip
                    upd = self._hit(t, detections[di], frame)
                    if upd is not None:
                        out.append(upd)
                    new_tracks.append(t)
                    seen.append(t)

        alive: list[_Track] = []
        self.ended = []
        for i, t in enumerate(self._tracks):
            if i not in matched and now - t.last_seen > self.max_age_s:
                if t.track_id:
                    out.append(TrackUpdate("leave", t.track_id, t.best, t.best_frame))
                    self.ended.append(t.track_id)
                continue
            alive.append(t)
        self._tracks = alive + new_tracks
        self.seen = [TrackPoint(t.track_id, t.label, t.last_score, t.box) for t in seen if t.track_id]
        return out

    def _near_pairs(self, now: float, trk_idx: list[int], det_idx: list[int], detections: list[Detection],
                    used_t: set[int], used_d: set[int]) -> list[tuple[int, int]]:
        """Second association for what IoU left: a similar-sized box close to the predicted one.

        A fast object seen at a low analysis rate (or under load, when frames drop) may not overlap
        its last box at all; without this it would become a new object, and a new event, each frame.
        """
        cands: list[tuple[float, int, int]] = []
        for ti, t_i in enumerate(trk_idx):
            if ti in used_t:
                continue
            tb = self._tracks[t_i].predicted(now)
            tw, th = tb[2] - tb[0], tb[3] - tb[1]
            diag = max((tw * tw + th * th) ** 0.5, 1e-6)
            for di, d_i in enumerate(det_idx):
                if di in used_d:
                    continue
                db = detections[d_i].box
                dw, dh = db[2] - db[0], db[3] - db[1]
                ratio = (dw * dh) / max(tw * th, 1e-9)
                if not 0.5 <= ratio <= 2.0:
                    continue
                dist = (((db[0] + db[2]) - (tb[0] + tb[2])) ** 2 + ((db[1] + db[3]) - (tb[1] + tb[3])) ** 2) ** 0.5 / 2
                if dist < self.near_factor * diag:
                    cands.append((dist / diag, ti, di))
        pairs = []
        for _, ti, di in sorted(cands):
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            pairs.append((trk_idx[ti], det_idx[di]))
        return pairs

    def _hit(self, t: _Track, det: Detection, frame: Frame) -> TrackUpdate | None:
        t.hits += 1
        dt = frame.captured_at - t.last_seen
        if t.hits > 1 and dt > 1e-3:
            measured = tuple((n - o) / dt for n, o in zip(det.box, t.box))
            # Smooth: one jittery box must not fling the prediction away.
            t.velocity = tuple(0.5 * v + 0.5 * m for v, m in zip(t.velocity, measured))  # type: ignore[assignment]
        t.box = det.box
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
