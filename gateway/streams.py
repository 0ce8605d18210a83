"""Reading a Redis stream newest first through a filter: event history and the audit trail share it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")
PAGE = 500


async def scan_newest(redis: aioredis.Redis, stream: str, decode: Callable[[bytes, dict], tuple[str, T]],
                      match: Callable[[T], bool], *, upper: str = "+", lower: str = "-", limit: int = 100,
                      scan_cap: int = 20_000) -> tuple[list[T], str | None]:
    """Up to `limit` matching items between the XREVRANGE bounds `upper` and `lower`, newest first.

    Returns (items, cursor): the cursor is the entry id to continue below (exclusive), or None when the
    range is exhausted. At most `scan_cap` entries are read per call, so a narrow filter over a long
    stream answers in bounded time and hands back a cursor instead of scanning everything.
    """
    out: list[T] = []
    scanned = 0
    while len(out) < limit and scanned < scan_cap:
        rows = await redis.xrevrange(stream, max=upper, min=lower, count=PAGE)
        if not rows:
            return out, None
        for raw_id, fields in rows:
            scanned += 1
            entry_id, item = decode(raw_id, fields)
            upper = f"({entry_id}"
            if match(item):
                out.append(item)
                if len(out) >= limit:
                    return out, entry_id
        if len(rows) < PAGE:
            return out, None
    return out, upper[1:]
