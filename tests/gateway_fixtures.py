"""An in-process gateway on a real port against a real Redis, for integration tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import build_app
from gateway.config import load_settings

TOKEN = "test-admin-token-0123456789"


class Gateway:
    """A running gateway: its app, base URL and an authorised HTTP session."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.app = server.app
        self.session = session
        self.base = str(server.make_url("")).rstrip("/")

    def url(self, path: str) -> str:
        return self.base + path

    async def request(self, method: str, path: str, **kw) -> tuple[int, Any]:
        async with self.session.request(method, self.url(path), **kw) as r:
            body = await r.read()
            try:
                return r.status, json.loads(body)
            except ValueError:
                return r.status, body

    async def add_camera(self, **body) -> dict:
        status, resp = await self.request("POST", "/api/v1/cameras", json=body)
        assert status == 201, resp
        return resp

    async def camera(self, camera_id: str) -> dict:
        status, resp = await self.request("GET", f"/api/v1/cameras/{camera_id}")
        assert status == 200, resp
        return resp

    async def wait_state(self, camera_id: str, state: str, timeout: float = 30.0) -> dict:
        """Poll the API until the camera reaches `state`."""
        deadline = time.monotonic() + timeout
        while True:
            cam = await self.camera(camera_id)
            if cam["status"]["state"] == state:
                return cam
            if time.monotonic() > deadline:
                raise AssertionError(f"camera {camera_id} not {state} after {timeout}s: {cam['status']}")
            await asyncio.sleep(0.2)

    @asynccontextmanager
    async def subscribe(self, **params) -> AsyncIterator["Subscriber"]:
        """A WebSocket subscriber collecting events in the background."""
        q = {k: str(v) for k, v in params.items() if v is not None}
        ws = await self.session.ws_connect(self.url("/api/v1/events/ws"), params=q)
        sub = Subscriber(ws)
        try:
            yield sub
        finally:
            await sub.close()


class Subscriber:
    """Collects events from a WebSocket into a list; wait_for() polls it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self.received_at: list[float] = []
        self._task = asyncio.create_task(self._read(), name="test-subscriber")

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(msg.data))
                self.received_at.append(time.time())

    async def wait_for(self, pred: Callable[[list[dict]], bool], timeout: float = 30.0, what: str = "") -> list[dict]:
        deadline = time.monotonic() + timeout
        while not pred(self.events):
            if self._task.done():
                raise AssertionError(f"subscription ended while waiting for {what}; got {len(self.events)} events")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {self.events[-5:]}")
            await asyncio.sleep(0.1)
        return self.events

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass


@pytest.fixture
def make_gateway(tmp_path):
    """Factory: `async with make_gateway(redis_url, model=..., media_dirs=[...]) as gw:`."""

    @asynccontextmanager
    async def factory(redis_url: str | None, *, model: Path | None = None, media_dirs: list[Path] | None = None,
                      node: str = "450102", **sections) -> AsyncIterator[Gateway]:
        ingest = {"stall_timeout_s": 3.0, "backoff_initial_s": 0.5, "backoff_max_s": 2.0, "open_timeout_s": 3.0}
        ingest.update(sections.pop("ingest", {}))
        settings = load_settings(
            None, node=node, redis=redis_url, data_dir=tmp_path / "gw-data", model=model,
            media_dirs=media_dirs or [], admin_token=TOKEN, gateway_id="test-gw", ingest=ingest, **sections,
        )
        app = build_app(settings, TOKEN)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            yield Gateway(server, session)
        finally:
            await session.close()
            await server.close()

    return factory



async def until(pred, timeout: float, what: str, interval: float = 0.1):
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def closed_by_server(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20.0) -> None:
    """Read a WebSocket until the server closes it, bounded; it must close for a policy violation (a token gone)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION, ws.close_code
