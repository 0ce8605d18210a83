"""A bounded, ordered write-behind buffer to Redis: what the event log and the audit log share."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from typing import Generic, TypeVar

from redis.exceptions import RedisError

from tiers.connect import NotReplicated

log = logging.getLogger(__name__)

T = TypeVar("T")

# Longest wait between tries while Redis is away. Short: a try against a down server costs a refused connect,
# and what was buffered should reach Redis within seconds of its return (at 5 s, plus jitter, a gateway
# could sit on its buffer 7.5 s after Redis was back).
RETRY_MAX_S = 2.0


class Outbox(Generic[T]):
    """Items queued without waiting, written in order and in batches by `run()`, kept while Redis is away.

    Past `buffer_size` the oldest item is dropped and counted: memory stays bounded through any outage.
    Subclasses write a batch in `_write`; the batch must be idempotent (it is retried after a lost reply).
    """

    what = "items"  # for log lines

    def __init__(self, *, buffer_size: int, batch: int) -> None:
        self.buffer_size = buffer_size
        self.batch = batch
        self._outbox: collections.deque[T] = collections.deque()
        self._wake = asyncio.Event()
        self.written = 0
        self.dropped = 0  # lost because the buffer overflowed (oldest first)
        self.redis_up = True

    def _enqueue(self, item: T) -> None:
        if len(self._outbox) >= self.buffer_size:
            self._outbox.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%s buffer full (%d): dropped %d oldest so far", self.what, self.buffer_size,
                            self.dropped)
        self._outbox.append(item)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._outbox)

    async def _write(self, batch: list[T]) -> None:
        raise NotImplementedError

    def _on_written(self, batch: list[T]) -> None:
        """Called once a batch is in Redis (subclasses count what it held)."""

    async def run(self) -> None:
        """Write the buffer in order, in batches, retrying with jittered backoff while Redis is away."""
        delay = 0.2
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._outbox[i] for i in range(min(self.batch, len(self._outbox)))]
            try:
                await self._write(batch)
            except NotReplicated:
                # Redis is up and took the batch, but no replica confirmed it within the WAIT, which already
                # paced this attempt: keep the batch and try again soon (nothing is written twice).
                if self.redis_up:
                    log.warning("no Redis replica acknowledged; keeping %s until one does", self.what)
                self.redis_up = False
                await asyncio.sleep(0.1)
                continue
            except (RedisError, OSError) as e:
                if self.redis_up:
                    log.warning("redis unavailable, buffering %s (%s)", self.what, type(e).__name__)
                self.redis_up = False
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if not self.redis_up:
                log.info("redis back; writing %d buffered %s", len(self._outbox), self.what)
            self.redis_up = True
            delay = 0.2
            # Remove exactly what was written; _enqueue() may have dropped from the head meanwhile.
            for item in batch:
                if self._outbox and self._outbox[0] is item:
                    self._outbox.popleft()
            self.written += len(batch)
            self._on_written(batch)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the buffer is empty (or the timeout passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._outbox and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._outbox
