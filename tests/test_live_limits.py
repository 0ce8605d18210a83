"""Live views cannot be hoarded: per-token and per-address limits, and clients that stop reading are dropped.

Security review, Medium 6: one operator token opened all 32 live views and never read them, locking every
other operator out for minutes. Against a real gateway, Redis and a file camera: a token over its limit gets
a 429 with the reason while another token still gets a view; an address over its limit likewise; a client
that opens a view over a raw socket and never reads is dropped within live.stall_timeout_s and its slot
serves the next view.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from urllib.parse import urlsplit

import aiohttp

from gateway import keys
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, until
from tests.test_live import Mjpeg, _online_camera, _token


async def _open(s: aiohttp.ClientSession, gw, cid: str, token: str) -> aiohttp.ClientResponse:
    return await s.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?width=160"),
                       headers={"Authorization": f"Bearer {token}"})


async def test_one_token_cannot_take_every_live_view(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR],
                            live={"max_views": 32, "max_per_token": 2, "max_per_address": 3}) as gw:
        cid = await _online_camera(gw)
        live = gw.app[keys.LIVE]
        _, other = await _token(gw, "operator", "450102")
        async with aiohttp.ClientSession() as s:
            mine = [await _open(s, gw, cid, TOKEN) for _ in range(2)]
            assert [r.status for r in mine] == [200, 200]
            for r in mine:
                assert await Mjpeg(r).next()

            # The same token once more: refused with the reason, while the gateway has room.
            refused = await _open(s, gw, cid, TOKEN)
            assert refused.status == 429, refused.headers  # (a 200 body is an endless stream: never read it)
            err = (await refused.json())["error"]
            assert err["status"] == 429 and "live.max_per_token" in err["message"], err
            assert err["retry_after"] > 0
            assert live.viewers == 2 and live.refused == 1

            # Another operator still gets a view ...
            theirs = await _open(s, gw, cid, other)
            assert theirs.status == 200
            assert await Mjpeg(theirs).next()
            # ... until this client address holds its limit (3) across tokens.
            again = await _open(s, gw, cid, other)
            assert again.status == 429
            assert "live.max_per_address" in (await again.json())["error"]["message"]
            assert live.viewers == 3

            # Closing a view frees its slot for the token that held it.
            mine[0].close()
            await until(lambda: _viewers(live, 2), 10, "the closed view's slot to be freed")
            reopened = await _open(s, gw, cid, TOKEN)
            assert reopened.status == 200
            assert await Mjpeg(reopened).next()
            for r in (mine[1], theirs, reopened):
                r.close()
        await until(lambda: _viewers(live, 0), 10, "every view released")
        assert not live.by_token and not live.by_address


async def _viewers(live, n: int) -> bool:
    return live.viewers == n


async def test_a_client_that_never_reads_is_dropped_and_its_slot_reused(redis_url, make_gateway):
    stall = 2.0
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR],
                            live={"max_per_token": 1, "stall_timeout_s": stall}) as gw:
        cid = await _online_camera(gw, analytics={"fps": 10})
        live = gw.app[keys.LIVE]
        url = urlsplit(gw.base)
        # A small receive window, as a client that stops reading soon leaves: the kernel buffers fill at once.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write((f"GET /api/v1/cameras/{cid}/live.mjpeg?fps=10&width=640 HTTP/1.1\r\n"
                          f"Host: {url.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").encode())
            await writer.drain()
            await until(lambda: _viewers(live, 1), 10, "the view to open")
            t0 = time.monotonic()
            # The token's only slot is held: a second view is refused meanwhile.
            status, body = await gw.request("GET", f"/api/v1/cameras/{cid}/live.mjpeg?width=160")
            assert status == 429, body
            # Never read: the view is dropped within the stall bound, plus the time its capped send buffer
            # (live.send_buffer_bytes) takes to fill: about 2.5 s at 10 fps of 640 px here.
            await until(lambda: _viewers(live, 0), stall + 8, "the stalled view to be dropped")
            assert time.monotonic() - t0 < stall + 8
            assert live.dropped_slow == 1

            # The server hung up on it: reading now ends (after whatever was buffered) rather than blocking.
            async def drain_to_eof() -> None:
                while await reader.read(1 << 16):
                    pass
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(drain_to_eof(), 10)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

        # Its slot is free: the same token gets a view that plays.
        async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?width=160")) as r:
            assert r.status == 200
            assert await Mjpeg(r).next()
        await until(lambda: _viewers(live, 0), 10, "the view released")
        assert live.dropped_slow == 1  # a reader that reads is never dropped
