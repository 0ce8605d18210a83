"""Which decoded frames of a stream are analysed, on a media clock that never runs backwards.

The decoder's frame times cannot be used as they come. An AVI file has no presentation times,
only a frame counter in decode order, so FFmpeg stamps each H.264 frame with its *decode* index
while it hands frames out in *display* order. A 25 fps AVI with two B-frames (display I B B P B B P)
gives, frame after frame, ``frame.pts`` 1 3 4 2 6 7 5 9 10 8 ... (time base 1/25): the pictures are
in order (a moving square advances steadily) but every third time steps back. The old sampler
restarted its grid at each backward step and analysed such a file at 15.75 fps when asked for 5.
An MP4 stores real presentation times and decodes in order (0, 0.04, 0.08 ...), B-frames or not.

FFmpeg's own cure, best_effort_timestamp (fall back on the packet dts when pts are faulty), is not
exposed by PyAV 18, and the frame's dts is no substitute: with key frames only decoded it reads
50, 75, None for the key frames at pts 1, 26, 51. A clock from the frame count alone is exact for
the AVI, but wrong whenever the decoder outputs fewer frames than the stream has (key frames only,
frames lost to damaged packets), which it does on purpose. So the clock is repaired here, from
``frame.time`` alone:

- The *envelope* is the latest decoder time seen, but advancing at least ENVELOPE_STEP of a frame
  per frame. It never runs backwards; it equals the decoder's time whenever those run forward (in-
  order streams, key frames only, a live stream that skipped 3 s: exact, gap included); on
  reordered times it rides on their leading edge.
- There it runs ahead of the true time by about the reorder depth. Its *lead*, the mean distance
  ahead of the decoder's times over the last SMOOTHING_FRAMES frames, is subtracted: reordering
  permutes times within a few frames, so their mean is right (the generated AVI: within 0.1 frame
  once a second has passed). The lead is 0 for in-order streams and moves by a fraction of a frame
  per frame, so the clock stays monotonic and advances about a frame per frame.
- A frame without a time comes one frame after the previous one.
- A time further back than any decoder reorders is a reset of the source's clock (a camera
  rebooted; a file looped without new_pass()): the clock carries on from the previous frame.
- A frame lasts what the stream states, or less when its recent timestamps, sorted, step closer:
  a frame taken too long would push the envelope's floor, and the clock, ahead of the stream.

Until times have stepped back once nothing says they are reordered, so the first B-frames of a
stream may be placed a frame late or early; the analysed rate is unaffected.
"""

from __future__ import annotations

import math
from collections import deque

DEFAULT_FPS = 25.0  # frame rate assumed for a stream that states none and has no timestamps to measure
ENVELOPE_STEP = 0.9  # the envelope's least step, in frames: below 1 so a source running up to 10 % faster
# than its stated rate is still followed by its timestamps rather than pushed ahead by the floor
MIN_STEP = 0.5  # the clock's least step, in frames: never two frames on one point of the sampling grid
SMOOTHING_FRAMES = 32  # frames over which the envelope's lead is averaged: several reorder groups, yet a
# change of decoding mode (key frames only) is followed within about a second
MAX_REORDER_FRAMES = 16  # H.264/HEVC reorder at most 16 frames: a step further back is a clock reset
MIN_RESET_S = 1.0  # nor is a step back shorter than this a reset, however short a frame was measured
RATE_WINDOW = 16  # recent timestamps from which the frame rate is measured
RATE_MIN_SAMPLES = 3  # fewer timestamps than this measure nothing yet
GRID_TOLERANCE = 0.5  # frames: a frame half a frame before a grid point counts as on it


class Sampler:
    """Chooses which decoded frames of one stream are analysed, on a monotonic media clock."""

    __slots__ = ("fps", "_stated_s", "_frame_s", "_recent", "_origin", "_media", "_envelope", "_leads",
                 "_lead_sum", "_next", "_frames")

    def __init__(self, fps: float, nominal_fps: float | None) -> None:
        self.fps = fps  # analysis rate asked; 0 takes nothing; may be changed live
        known = nominal_fps is not None and nominal_fps > 0
        self._stated_s = 1.0 / nominal_fps if known else None  # one frame's duration as the stream states it
        self._frame_s = self._stated_s  # one frame's duration as used, seconds (None: not known yet)
        self._recent: deque[float] = deque(maxlen=RATE_WINDOW)
        self._origin: float | None = None  # decoder time at media time 0 of this pass (None: not yet seen)
        self._media: float | None = None  # the last media time handed out (None: no frame yet)
        self._envelope = 0.0
        self._leads: deque[float] = deque(maxlen=SMOOTHING_FRAMES)
        self._lead_sum = 0.0
        self._next: float | None = None  # the next point of the sampling grid (None: start at the next frame)
        self._frames = 0

    @property
    def frames(self) -> int:
        """Decoded frames seen by clock()."""
        return self._frames

    def clock(self, t: float | None) -> float:
        """Media time of the next decoded frame (in output order) whose decoder time is t (None: unknown)."""
        if t is not None and not math.isfinite(t):
            t = None  # PyAV gives NaN for frames drained at the end of a file (no pts)
        media, origin, envelope, lead = self._step(t)
        self._frames += 1
        if origin != self._origin:
            self._recent.clear()  # a new pass or a clock reset: earlier timestamps measure nothing now
        self._origin, self._media, self._envelope = origin, media, envelope
        if lead is not None:
            if len(self._leads) == self._leads.maxlen:
                self._lead_sum -= self._leads[0]
            self._leads.append(lead)
            self._lead_sum += lead
        if t is None:
            self._recent.clear()  # frames without times between them would be measured as one long frame
        else:
            self._measure_rate(t)
        return media

    def peek(self, t: float | None) -> float:
        """Media time clock(t) would give, without recording the frame (for a packet not decoded yet)."""
        if t is not None and not math.isfinite(t):
            t = None
        return self._step(t)[0]

    def take(self, media_t: float) -> bool:
        """True when the frame at this media time is due for analysis (advances the grid)."""
        due, self._next = self._due(media_t)
        return due

    def due(self, media_t: float) -> bool:
        """Same answer as take(), changing nothing."""
        return self._due(media_t)[0]

    def new_pass(self) -> None:
        """A file source looped back to its start: its clock continues after the last frame."""
        self._origin = None
        if self._media is not None:
            self._envelope = self._media
        self._leads.clear()
        self._lead_sum = 0.0
        self._recent.clear()

    def _step(self, t: float | None) -> tuple[float, float | None, float, float | None]:
        """(media time, origin, envelope, lead) for the next frame, without changing state."""
        # Until a frame's duration is known the floors stay flat, so a guess cannot push the clock ahead.
        d = self._frame_s or 1.0 / DEFAULT_FPS
        floor_d = d if self._frame_s else 0.0
        last = self._media
        expected = 0.0 if last is None else last + d
        origin = self._origin
        lead = None
        if t is None:
            envelope = expected if last is None else self._envelope + d
        else:
            if origin is None:
                origin = t - expected  # the first time of a stream starts at 0; of a pass, after the last
            floor = -float("inf") if last is None else self._envelope + ENVELOPE_STEP * floor_d
            cand = t - origin
            if floor - cand > max(MAX_REORDER_FRAMES * d, MIN_RESET_S):
                origin = t - expected  # the source's clock was reset: carry on from this frame
                cand = expected
            envelope = max(cand, floor)
            lead = envelope - cand
        n = len(self._leads)
        total = self._lead_sum
        if lead is not None:
            if n == self._leads.maxlen:
                total -= self._leads[0]
            else:
                n += 1
            total += lead
        media = envelope - (total / n if n else 0.0)
        if last is not None:
            media = max(media, last + MIN_STEP * floor_d)
        return media, origin, envelope, lead

    def _due(self, media_t: float) -> tuple[bool, float | None]:
        """(due now, the grid's next point afterwards)."""
        nxt = self._next
        if self.fps <= 0:
            return False, nxt
        period = 1.0 / self.fps
        # The stream's own frame, not a measured shortest step, which may be shorter than most.
        half = GRID_TOLERANCE * (self._stated_s or self._frame_s or 1.0 / DEFAULT_FPS)
        # No grid yet, or the next point is further off than one new period: the rate was raised,
        # so the new grid starts at this frame rather than after the old, longer interval.
        if nxt is None or nxt - media_t > period + half:
            nxt = media_t
        if media_t + half < nxt:
            return False, nxt
        nxt += period
        if nxt <= media_t:
            nxt = media_t + period  # after a gap the grid restarts here instead of catching up
        return True, nxt

    def _measure_rate(self, t: float) -> None:
        """Frame duration from recent timestamps, sorted first so that reordering does not matter."""
        self._recent.append(t)
        if len(self._recent) < RATE_MIN_SAMPLES:
            return
        times = sorted(self._recent)
        steps = [b - a for a, b in zip(times, times[1:]) if b > a]
        if not steps:
            return
        # The shortest step, not a typical one: a frame taken too long pushes the envelope's floor, and
        # the clock with it, ahead of the stream's own times (a source faster than it states; the first
        # frames after key frames only, when the typical step was a GOP). Too short only loosens the floor.
        measured = min(steps)
        self._frame_s = min(measured, self._stated_s) if self._stated_s else measured
