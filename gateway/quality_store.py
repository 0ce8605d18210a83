"""Occlusion baselines in the tier's Redis (analytics/quality.py BaselineStore), one key per camera.

A lens already covered when the gateway restarts, or when another gateway of the tier takes the camera
over (leases, gateway/placement.py), is reported only if the diagnoser still knows what the lens showed
uncovered; a baseline in one process's memory is gone by then. The tier's Redis is where every gateway
that may run the camera looks, so the baseline lives there (QualityKeys.baseline), not in a data
folder of one machine. It is tagged with a digest of the analysed source's URL: a camera pointed at
another stream starts afresh rather than comparing the new view with the old one's baseline.

The diagnoser runs on an analysis thread and must never wait on Redis: saves are handed to the event
loop and forgotten (a lost save costs one later restart a baseline, nothing else); the load at start
delivers its answer to the diagnoser whenever it comes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.events import EventLog
from registry.models import Camera
from tiers.contract import QualityKeys

log = logging.getLogger(__name__)

BASELINE_TTL_S = 30 * 86400  # a camera deleted, or not run for a month, leaves nothing behind
DIGEST_CHARS = 16  # hex characters of the source digest kept: enough to tell two streams apart
SEPARATOR = b"|"  # between the source digest and the baseline in the stored value


def source_digest(url: str) -> str:
    """Short SHA-256 of a source URL (credentials and all never leave the registry)."""
    return hashlib.sha256(url.encode()).hexdigest()[:DIGEST_CHARS]


class RedisBaselineStore:
    """One camera's occlusion baseline under its QualityKeys.baseline key, for the diagnoser of that camera."""

    def __init__(self, redis: aioredis.Redis, key: str, source: str, loop: asyncio.AbstractEventLoop) -> None:
        self.redis = redis
        self.key = key
        self.tag = source_digest(source).encode()
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()  # in flight: kept referenced until done
        self._warned = False  # one warning per camera while Redis is away, not one per save

    # ---- BaselineStore (any thread) ---------------------------------------------------------------
    def load(self, deliver: Callable[[bytes | None], None]) -> None:
        """Fetch the saved baseline and hand it to `deliver` from the loop (None: none, or not this source's)."""
        self._submit(lambda: self._load(deliver))

    def save(self, data: bytes) -> None:
        """Write `data` as the baseline (expiring after BASELINE_TTL_S), without waiting for Redis."""
        self._submit(lambda: self._write(data))

    def forget(self) -> None:
        """Drop the saved baseline: the camera looks at another view now."""
        self._submit(self._delete)

    async def drain(self) -> None:
        """Wait until the loads, saves and drops handed over so far are done (tests; a clean shutdown)."""
        await asyncio.sleep(0)  # let handed-over work (call_soon_threadsafe) become tasks first
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # ---- on the loop ------------------------------------------------------------------------------
    def _submit(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._spawn, make)
        except RuntimeError:
            pass  # the loop is closed: the gateway is going down, and the last baseline saved stands

    def _spawn(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._loop.create_task(make(), name=f"quality-baseline:{self.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, deliver: Callable[[bytes | None], None]) -> None:
        raw: bytes | None = None
        try:
            raw = await self.redis.get(self.key)
        except (RedisError, OSError) as e:
            self._warn("read", e)
        deliver(self.unwrap(raw))

    async def _write(self, data: bytes) -> None:
        try:
            await self.redis.set(self.key, self.tag + SEPARATOR + data, ex=BASELINE_TTL_S)
            self._warned = False
        except (RedisError, OSError) as e:
            self._warn("write", e)

    async def _delete(self) -> None:
        try:
            await self.redis.delete(self.key)
        except (RedisError, OSError) as e:
            self._warn("drop", e)

    def unwrap(self, raw: bytes | str | None) -> bytes | None:
        """The baseline in a stored value; None when there is none or it was learned from another source."""
        if raw is None:
            return None
        value = raw.encode() if isinstance(raw, str) else raw
        tag, sep, data = value.partition(SEPARATOR)
        return data if sep and tag == self.tag and data else None

    def _warn(self, what: str, e: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("could not %s the quality baseline %s: %s", what, self.key, e)


def baseline_store(camera: Camera, events: EventLog) -> RedisBaselineStore | None:
    """The store for a camera's diagnoser, in the Redis its events go to (None off an event loop)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    source = camera.substream_url or camera.url  # what analysis decodes (CameraWorker.analysis_source)
    return RedisBaselineStore(events.redis, QualityKeys(events.prefix).baseline(camera.id), source, loop)
