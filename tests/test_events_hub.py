"""Event log and hub against a real redis-server: ordering, idempotence, outages, slow subscribers."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from analytics.events import Event, Origin, iso_ms
from gateway.events import EventFilter, EventHub, EventLog


def _event(i: int, camera: str = "45010200001320000001") -> Event:
    return Event(type="detection", camera_id=camera, node="450102", ts=iso_ms(time.time()),
                 origin=Origin("450102", "t"), label="car", score=0.5, box=(0.1, 0.1, 0.2, 0.2), track_id=i,
                 phase="start")


async def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)


async def test_outage_buffers_and_flushes_in_order(redis_server):
    r = await _client(redis_server.url)
    log = EventLog(r, "450102", buffer_size=1000)
    writer = asyncio.create_task(log.run(), name="writer")
    try:
        for i in range(1, 51):
            log.publish(_event(i))
        assert await log.flush(5)
        redis_server.stop()
        for i in range(51, 301):  # published while Redis is down: never blocks, never raises
            log.publish(_event(i))
        await asyncio.sleep(1.0)
        assert log.pending == 250 and not log.redis_up
        redis_server.start()
        assert await log.flush(20), f"{log.pending} events still buffered"
        rows = await log.range_after("0-0", count=1000)
    finally:
        writer.cancel()
        await r.aclose()
    assert [se.event.track_id for se in rows] == list(range(1, 301))  # none lost, none doubled, in order
    assert log.dropped == 0


async def test_buffer_overflow_drops_oldest_and_counts(redis_server):
    r = await _client(redis_server.url)
    redis_server.stop()
    log = EventLog(r, "450102", buffer_size=100)
    writer = asyncio.create_task(log.run(), name="writer")
    try:
        for i in range(1, 151):
            log.publish(_event(i))
        assert log.dropped == 50 and log.pending == 100
        redis_server.start()
        assert await log.flush(20)
        rows = await log.range_after("0-0", count=1000)
    finally:
        writer.cancel()
        await r.aclose()
    assert [se.event.track_id for se in rows] == list(range(51, 151))


async def test_retried_batch_is_not_written_twice(redis_url):
    r = await _client(redis_url)
    log = EventLog(r, "450102")
    try:
        for i in range(1, 4):
            log.publish(_event(i))
        batch = list(log._outbox)
        await log._write(batch)
        await log._write(batch)  # as after a reply lost on the wire: the same tokens again
        rows = await log.range_after("0-0")
    finally:
        await r.aclose()
    assert [se.event.track_id for se in rows] == [1, 2, 3]


async def test_slow_subscriber_gets_everything_and_never_blocks_the_writer(redis_url):
    r = await _client(redis_url)
    log = EventLog(r, "450102")
    hub = EventHub(log, queue_size=10, block_ms=200)
    tasks = [asyncio.create_task(log.run(), name="writer"), asyncio.create_task(hub.run(), name="hub")]
    try:
        await asyncio.sleep(0.3)
        slow = hub.follow(EventFilter(), None)
        first = asyncio.create_task(slow.__anext__())  # registers, then reads nothing for a while
        await asyncio.sleep(0.3)
        fast_got: list[int] = []

        async def fast() -> None:
            async for se in hub.follow(EventFilter(), None):
                fast_got.append(se.event.track_id)
                if len(fast_got) == 500:
                    return

        fast_task = asyncio.create_task(fast())
        await asyncio.sleep(0.3)
        for i in range(1, 501):
            log.publish(_event(i))
        await asyncio.wait_for(fast_task, 20)  # the fast one is not held up by the slow one
        assert log.pending == 0
        slow_sub = next(s for s in hub.subs if s.overflows)
        assert slow_sub.overflows >= 1
        got = [(await first).event.track_id]
        while len(got) < 500:
            got.append((await asyncio.wait_for(slow.__anext__(), 10)).event.track_id)
        await slow.aclose()
    finally:
        for t in tasks:
            t.cancel()
        await r.aclose()
    assert fast_got == list(range(1, 501))
    assert got == list(range(1, 501))  # the slow one caught up from Redis: all, in order, once
