"""Reading a Redis stream newest first through a filter: event history and the audit trail share it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")
PAGE = 500

U64_MAX = 2**64 - 1
MAX_ENTRY_ID = f"{U64_MAX}-{U64_MAX}"  # nothing lies after it: "(MAX" is no valid XRANGE start
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # ASCII digits only: str.isdigit() takes "４５" too


class StreamIdError(ValueError):
    """Not a Redis stream entry id: two unsigned 64-bit integers `ms-seq` in ASCII digits."""


def parse_entry_id(value: str) -> str:
    """A stream entry id `ms-seq` in its canonical form, or StreamIdError.

    Checked here rather than left to Redis: an id past 2**64-1 would come back as a Redis error, which
    reads like Redis being unavailable (503) instead of the caller's mistake (400).
    """
    m = _ENTRY_ID.fullmatch(value)
    if m is None:
        raise StreamIdError("is not of the form <ms>-<seq> (ASCII digits)")
    ms, seq = int(m[1]), int(m[2])
    if ms > U64_MAX or seq > U64_MAX:
        raise StreamIdError(f"has a part above {U64_MAX} (stream ids are two unsigned 64-bit integers)")
    return f"{ms}-{seq}"


async def scan_newest(redis: aioredis.Redis, stream: str, decode: Callable[[bytes, dict], tuple[str, T]],
                      match: Callable[[T], bool], *, upper: str = "+", lower: str = "-", limit: int = 100,
                      scan_cap: int = 20_000) -> tuple[list[T], str | None]:
    """Up to `limit` matching items between the XREVRANGE bounds `upper` and `lower`, newest first.

    Returns (items, cursor): the cursor is the entry id to continue below (exclusive), or None when the
    range is exhausted. At most `scan_cap` entries are read per call, so a narrow filter over a long
    stream answers in bounded time and hands back a cursor instead of scanning everything.
    """
    out: list[T] = []
    if upper == "(0-0" or lower == f"({MAX_ENTRY_ID}":
        return out, None  # nothing lies below 0-0 or above the largest id (and Redis refuses such bounds)
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
