"""Half-open connections are closed: request heads must arrive in time, idle keep-alives end.

Security review, Low 7: 500 connections that each sent half a request head stayed open indefinitely
(slowloris). Against a gateway served exactly as `sharp-eyes serve` serves it (run_gateway), with a real
Redis: 40 such connections, one that trickles a byte at a time and one that sends nothing are each closed
within http_header_timeout_s plus a margin, while normal requests, a kept-alive connection used twice and a
long-lived event stream go on working; an idle kept-alive connection ends after http_keepalive_timeout_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest

from gateway.cli import run_gateway
from gateway.config import ConfigError, load_settings
from gateway.server import _HeadTimeoutHandler
from tests.gateway_fixtures import TOKEN
from tests.servers import free_port

HEAD_TIMEOUT = 1.5
KEEPALIVE = 4.0
MARGIN = 3.0
HALF_OPEN = 40


async def _closed_after(reader: asyncio.StreamReader, t0: float, limit: float) -> float:
    """Seconds from t0 until the server closed the connection (EOF or reset); fails past `limit`."""
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(1 << 16), limit - (time.monotonic() - t0)):
            pass
    return time.monotonic() - t0


async def test_half_sent_request_heads_are_closed_while_requests_go_on(redis_url, tmp_path):
    port = free_port()
    settings = load_settings(None, node="450102", redis=redis_url, http=f"127.0.0.1:{port}",
                             data_dir=tmp_path / "d", admin_token=TOKEN, gateway_id="test-gw",
                             http_header_timeout_s=HEAD_TIMEOUT, http_keepalive_timeout_s=KEEPALIVE)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    stop = asyncio.Event()
    closed_before = _HeadTimeoutHandler.closed_slow

    async def started(app, token) -> None:
        try:
            await _check(port, base, auth)
        finally:
            stop.set()

    await asyncio.wait_for(run_gateway(settings, started, stop), 60)
    assert _HeadTimeoutHandler.closed_slow - closed_before >= HALF_OPEN + 2


async def _check(port: int, base: str, auth: dict[str, str]) -> None:
    conns = []
    t0 = time.monotonic()
    for i in range(HALF_OPEN):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Half a head: the request line and a header, never the blank line that ends it.
        writer.write(f"GET /api/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: {i}\r\n".encode())
        conns.append((reader, writer))
    silent = await asyncio.open_connection("127.0.0.1", port)  # connects and sends nothing at all

    drip_r, drip_w = await asyncio.open_connection("127.0.0.1", port)

    async def drip() -> None:  # a byte every 0.2 s: activity must not extend the head's deadline
        with contextlib.suppress(ConnectionError):
            for b in b"GET /api/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200:
                drip_w.write(bytes([b]))
                await drip_w.drain()
                await asyncio.sleep(0.2)
    dripping = asyncio.create_task(drip())

    try:
        async with aiohttp.ClientSession(headers=auth) as s:
            # Meanwhile the gateway answers, and a long-lived stream outlives the head timeout.
            async with s.get(f"{base}/api/v1/whoami") as r:
                assert r.status == 200
            async with s.get(f"{base}/api/v1/events/stream") as stream:
                assert stream.status == 200

                limit = HEAD_TIMEOUT + MARGIN
                waited = await asyncio.gather(*(_closed_after(r, t0, limit) for r, _ in conns),
                                              _closed_after(silent[0], t0, limit),
                                              _closed_after(drip_r, t0, limit))
                assert all(HEAD_TIMEOUT - 0.5 <= w < limit for w in waited), waited
                assert not stream.closed and not stream.content.at_eof(), "the open stream was cut"

            # One kept-alive connection, two requests with a pause shorter than the keep-alive: both answered
            # on the same connection (the head timer of the first does not close it).
            async with aiohttp.ClientSession(headers=auth, connector=aiohttp.TCPConnector(limit=1)) as one:
                async with one.get(f"{base}/api/v1/whoami") as r:
                    assert r.status == 200
                    first = r.connection.transport if r.connection else None
                await asyncio.sleep(HEAD_TIMEOUT + 0.5)
                async with one.get(f"{base}/api/v1/whoami") as r:
                    assert r.status == 200
                    assert r.connection is None or first is None or r.connection.transport is first

        # A kept-alive connection left idle after a whole request is closed after the keep-alive timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                     .encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        t1 = time.monotonic()
        waited = await _closed_after(reader, t1, KEEPALIVE + MARGIN)
        assert waited >= KEEPALIVE - 1.5, waited
        writer.close()
    finally:
        dripping.cancel()
        for _, w in conns + [silent, (drip_r, drip_w)]:
            w.close()


def test_the_timeouts_and_live_limits_are_bounded_settings(monkeypatch):
    s = load_settings(None)
    assert (s.http_header_timeout_s, s.http_keepalive_timeout_s) == (10.0, 15.0)
    assert (s.live.max_views, s.live.max_per_token, s.live.max_per_address, s.live.stall_timeout_s) == (32, 4, 8, 10.0)
    monkeypatch.setenv("SHARP_EYES_LIVE__MAX_PER_TOKEN", "2")
    monkeypatch.setenv("SHARP_EYES_HTTP_HEADER_TIMEOUT_S", "5")
    s = load_settings(None)
    assert s.live.max_per_token == 2 and s.http_header_timeout_s == 5.0
    for bad, key in (({"http_header_timeout_s": 0}, "http_header_timeout_s"),
                     ({"http_keepalive_timeout_s": 0.5}, "http_keepalive_timeout_s"),
                     ({"live": {"max_per_token": 0}}, "live.max_per_token"),
                     ({"live": {"stall_timeout_s": 0}}, "live.stall_timeout_s"),
                     ({"live": {"send_buffer_bytes": 100}}, "live.send_buffer_bytes")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_settings(None, **bad)
