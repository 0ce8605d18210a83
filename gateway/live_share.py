"""One relayed live stream per remote camera, however many viewers: live.mp4 of a camera another gateway of this
tier runs, or a tier below, pulled once and fanned out here (as cascaded video platforms pull a camera once per
platform).

The first viewer of such a camera opens ONE relayed live stream (tiers/relay.py, kind "live"); its bytes are cut
into top-level MP4 boxes (mp4.LiveBoxes: sizes checked, 64-bit sizes read, boxes bounded, anything malformed ends
the share) -> the init segment (ftyp + moov) and fragments (moof + mdat), which feed a `LiveFanout`, the same
fan-out a camera run here uses (gateway/recording/live.py): every further viewer subscribes to it and starts at
once with the init segment and the fragments since the last key frame; each viewer has a bounded queue and a
slow one skips to the next key frame (counted) without holding the others or the stream back.

Viewers are this gateway's live.mp4 clients AND the live streams this gateway serves to its parent tier or a
peer gateway for a camera that is not its own (the relay opens them through the share too), so M requests from
above for one camera cost one stream from below, on every hop.

The shared stream is read at the camera's own rate (the pump never waits for a viewer); the relay's credit
window still holds on the hop below (the pump acknowledges as it reads). When the last viewer leaves, the share
lingers LINGER_S (a reload starts at once), then cancels the relayed stream (the owning tier unsubscribes). If
the relayed stream breaks or ends, every viewer's stream ends (they reconnect, as for a local stream restart).

Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from redis.exceptions import RedisError

from gateway.recording.live import (
    LINGER_S as MUXER_LINGER_S, VIEWER_QUEUE_BYTES, VIEWER_QUEUE_FRAGMENTS, LiveFanout, LiveViewer,
)
from gateway.recording.mp4 import LiveBoxes, LiveStreamError
from tiers.relay import Stream, StreamBroken, StreamError, StreamHead, StreamRequest

log = logging.getLogger(__name__)

LINGER_S = MUXER_LINGER_S  # as a local camera's muxer: a viewer reloading the page starts at once, no new pull
# A relayed box above this ends the share: one frame of a 4K camera is a few MiB; a bigger size is a broken or
# hostile stream, and the parser buffers at most one box.
MAX_BOX_BYTES = 16 << 20
VIEWER_BYTES = VIEWER_QUEUE_BYTES  # each viewer's bound, as a local camera's (read when a share opens)
VIEWER_FRAGMENTS = VIEWER_QUEUE_FRAGMENTS
REPORT_CAMERAS = 50  # the bridge report lists this many shares at most (the most watched first)
BROKEN_REASONS = ("the relayed live stream broke", "the relayed live stream was malformed",
                  "this tier's Redis failed", "the shared live stream failed")
BROKEN = frozenset(BROKEN_REASONS)  # a viewer's stream that ended for one of these ends as broken
RETRY_OPEN = 2  # a viewer arriving just as its share ended tries a fresh one this many times in all


@dataclass(frozen=True, slots=True)
class ShareStats:
    """One camera's shared relayed live stream (for the bridge report)."""

    camera_id: str
    viewers: int  # viewers now (live.mp4 clients here and streams served up)
    subscribed: int  # viewers since the share opened
    hits: int  # viewers that joined the open stream instead of opening one
    fragments: int  # fragments fanned out
    bytes: int  # relayed bytes read (once, however many viewers)
    skips: int  # times a slow viewer skipped to the next key frame
    hops: int  # tiers (and peer gateways) the relayed stream crossed
    seconds: float  # since it opened


class _ShareStream:
    """What a viewer of a share gets: the relayed head and its own bounded viewer of the fan-out."""

    __slots__ = ("head", "_viewer")
    relayed = True  # a tier serving it up counts it as relayed (tiers/relay.py), not as served

    def __init__(self, head: StreamHead, viewer: LiveViewer) -> None:
        self.head, self._viewer = head, viewer

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._viewer.__anext__()
        except StopAsyncIteration:
            reason = self._viewer.end_reason
            if reason in BROKEN:  # served up, the tier above hears "failed" (X), not "complete" (E)
                raise StreamBroken(reason) from None
            raise

    async def aclose(self) -> None:
        """Leave the share (the last viewer leaving starts its linger)."""
        self._viewer.close()


class _Share:
    """One remote camera's relayed live stream, parsed and fanned out."""

    def __init__(self, owner: "LiveShares", camera_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.camera_id = camera_id
        self.loop = loop
        self.fanout = LiveFanout(loop, viewer_bytes=VIEWER_BYTES, viewer_fragments=VIEWER_FRAGMENTS,
                                 on_idle=self._arm_linger)
        self.ready: asyncio.Future[StreamHead] = loop.create_future()
        self.task: asyncio.Task | None = None
        self.ended = False
        self.hits = 0
        self.bytes = 0
        self.hops = 0
        self.opened_at = time.monotonic()
        self._linger: asyncio.TimerHandle | None = None

    def start(self, upstream: Callable[[float], Awaitable[Stream]], wait: float) -> None:
        self.task = self.loop.create_task(self._run(upstream, wait), name=f"live-share:{self.camera_id}")
        self.owner._tasks.add(self.task)
        self.task.add_done_callback(self.owner._tasks.discard)

    def _arm_linger(self) -> None:
        if self.ended:
            return
        if self._linger is not None:
            self._linger.cancel()
        self._linger = self.loop.call_later(LINGER_S, self._linger_over)

    def disarm(self) -> None:
        """A viewer came: no linger."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _linger_over(self) -> None:
        self._linger = None
        if self.fanout.viewers == 0 and self.task is not None and not self.task.done():
            self.task.cancel()  # its finally cancels the relayed stream

    async def _run(self, upstream: Callable[[float], Awaitable[Stream]], wait: float) -> None:
        stream: Stream | None = None
        reason = "the relayed live stream ended"
        try:
            try:
                stream = await upstream(wait)
            except StreamError as e:
                self.ready.set_exception(e)
                return
            except (RedisError, OSError) as e:
                self.ready.set_exception(StreamError(503, f"this tier's Redis is unavailable ({type(e).__name__})"))
                return
            self.owner.opened += 1
            self.hops = stream.head.hops
            self.opened_at = time.monotonic()
            self.ready.set_result(stream.head)
            self._arm_linger()  # until its first viewer subscribes (an opener that gave up never will)
            boxes = LiveBoxes(MAX_BOX_BYTES)
            try:
                async for chunk in stream:  # read as it comes (the camera's rate); never waits for a viewer
                    self.bytes += len(chunk)
                    for kind, unit in boxes.feed(chunk):
                        if kind == "init":
                            if self.fanout.has_init:
                                raise LiveStreamError("a second init segment")
                            self.fanout.set_init(unit)
                        else:
                            self.fanout.fragment(unit)
            except StreamBroken as e:
                self.owner.broken += 1
                reason = BROKEN_REASONS[0]
                log.info("shared live stream of camera %s broke: %s", self.camera_id, e)
            except LiveStreamError as e:
                self.owner.broken += 1
                reason = BROKEN_REASONS[1]
                log.warning("shared live stream of camera %s is malformed: %s", self.camera_id, e)
            except (RedisError, OSError) as e:
                self.owner.broken += 1
                reason = BROKEN_REASONS[2]
                log.info("shared live stream of camera %s: Redis failed: %s", self.camera_id, type(e).__name__)
        except asyncio.CancelledError:
            reason = "the shared live stream stopped"
            raise
        except Exception:  # noqa: BLE001 - a bug must end the share, never leave its viewers hanging
            self.owner.broken += 1
            reason = BROKEN_REASONS[3]
            log.exception("shared live stream of camera %s failed", self.camera_id)
        finally:
            self.ended = True
            self.disarm()
            self.owner._forget(self)
            if not self.ready.done():
                self.ready.set_exception(StreamError(503, "the shared live stream stopped before it began"))
            with contextlib.suppress(BaseException):
                self.ready.exception()  # retrieved: an opener that gave up leaves no warning
            self.owner.skips_done += self.fanout.skips
            self.fanout.close(reason)  # every viewer's stream ends: they reconnect
            if stream is not None:
                with contextlib.suppress(RedisError, OSError):
                    await stream.aclose()  # cancels the relayed stream: the owning tier unsubscribes

    def stats(self) -> ShareStats:
        f = self.fanout
        return ShareStats(self.camera_id, f.viewers, f.subscribed, self.hits, f.fragments, self.bytes, f.skips,
                          self.hops, round(time.monotonic() - self.opened_at, 1))


class LiveShares:
    """The shared relayed live streams of this gateway, one per remote camera (tiers.relay.LiveShare)."""

    def __init__(self) -> None:
        self._shares: dict[str, _Share] = {}
        self.opened = 0  # relayed live streams opened (one per camera at a time)
        self.hits = 0  # viewers that joined an open stream instead of opening one
        self.broken = 0  # shares ended by a broken, malformed or failed relayed stream
        self.skips_done = 0  # slow-viewer skips of shares that have ended
        self._tasks: set[asyncio.Task] = set()  # every share's pump, until it has cancelled its relayed stream
        self._closing = False

    async def open(self, req: StreamRequest, upstream: Callable[[float], Awaitable[Stream]], wait: float) -> Stream:
        """A viewer of the camera's shared relayed live stream, opened with `upstream(wait)` if none is open.
        Raises StreamError as opening it would."""
        if self._closing:
            raise StreamError(503, "this gateway is stopping")
        loop = asyncio.get_running_loop()
        for _ in range(RETRY_OPEN):
            share = self._shares.get(req.camera_id)
            if share is None:
                share = self._shares[req.camera_id] = _Share(self, req.camera_id, loop)
                share.start(upstream, wait)
                joined = False
            else:
                joined = True
            head = await asyncio.shield(share.ready)  # many openers, one open; a cancelled opener leaves it
            if share.ended:
                continue  # it ended meanwhile (on this loop, nothing runs between this check and subscribing)
            if joined:
                share.hits += 1
                self.hits += 1
            share.disarm()
            return _ShareStream(head, share.fanout.subscribe())
        raise StreamError(503, "the relayed live stream keeps ending; try again shortly")

    def _forget(self, share: _Share) -> None:
        if self._shares.get(share.camera_id) is share:
            del self._shares[share.camera_id]

    def report(self) -> dict[str, Any]:
        """Open shares (one relayed stream each), their viewers, hits and skips; the most watched listed."""
        shares = sorted(self._shares.values(), key=lambda s: (-s.fanout.viewers, s.camera_id))
        live = [s for s in shares if s.ready.done() and not s.ended]
        return {
            "open": len(live), "viewers": sum(s.fanout.viewers for s in live), "opened": self.opened,
            "hits": self.hits, "broken": self.broken,
            "skips": self.skips_done + sum(s.fanout.skips for s in shares),
            "linger_s": LINGER_S,
            "cameras": [asdict(s.stats()) for s in live[:REPORT_CAMERAS]],
        }

    async def aclose(self) -> None:
        """End every share and its viewers (at shutdown); the relayed streams are cancelled."""
        self._closing = True
        for share in list(self._shares.values()):
            share.fanout.close("gateway stopping")
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3)


__all__ = ["LINGER_S", "LiveShares", "ShareStats"]
