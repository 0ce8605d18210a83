"""CameraStore against a private real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from registry.ids import CameraIdError, generate_camera_id
from registry.models import Camera, CameraCreate, CameraPatch
from registry.store import CameraExists, CameraNotFound, CameraStore, CursorError
from registry.urls import SourceError
from tiers.nodes import NodeCodeError

SECRET = "Hik-S3cret"


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
async def client(redis_url, request):
    r = aioredis.from_url(redis_url, decode_responses=request.param)
    yield r
    await r.aclose()


@pytest.fixture
def store(client) -> CameraStore:
    return CameraStore(client, prefix="t")


def cam(node: str, serial: int, *, name: str | None = None, now: float = 1000.0, **over) -> Camera:
    data = {"name": name or f"cam {serial}", "node": node, "url": f"rtsp://admin:{SECRET}@127.0.0.1/x"}
    data.update(over)
    return Camera.from_create(CameraCreate.model_validate(data), camera_id=generate_camera_id(node, serial), now=now)


async def test_create_get_update_delete(store, client):
    c = cam("450102", 1)
    assert await store.get(c.id) is None
    assert await store.create(c) == c
    assert await store.get(c.id) == c
    assert await store.exists(c.id)
    assert await store.count() == 1

    changed = CameraPatch.model_validate({"name": "renamed", "enabled": False}).apply(c, now=2000.0)
    assert await store.update(changed) == changed
    got = await store.get(c.id)
    assert got.name == "renamed" and got.enabled is False and got.created_at == 1000.0

    assert await store.delete(c.id) is True
    assert await store.get(c.id) is None
    assert await store.delete(c.id) is False
    assert await store.count() == 0
    assert await store.list() == ([], None)
    # Nothing left behind but the feed.
    keys = sorted(k if isinstance(k, str) else k.decode() for k in await client.keys("t:*"))
    assert keys == ["t:catalog"]


async def test_update_missing_raises(store):
    with pytest.raises(CameraNotFound):
        await store.update(cam("450102", 9))
    assert await store.get(cam("450102", 9).id) is None


async def test_duplicate_create_refused_and_original_intact(store):
    original = cam("450102", 5, name="original")
    await store.create(original)
    impostor = cam("450102", 5, name="impostor", url="rtsp://evil/x")
    with pytest.raises(CameraExists) as info:
        await store.create(impostor)
    assert info.value.camera_id == original.id
    assert await store.get(original.id) == original
    assert await store.count() == 1
    assert [ch.camera.name for ch in await store.changes()] == ["original"]


async def test_concurrent_creates_of_one_id_exactly_one_wins(redis_url):
    # Separate connections so the creates really interleave on the server.
    clients = [aioredis.from_url(redis_url) for _ in range(20)]
    try:
        stores = [CameraStore(c, prefix="t") for c in clients]
        contenders = [cam("450102", 77, name=f"contender {i}") for i in range(20)]
        results = await asyncio.gather(
            *(s.create(c) for s, c in zip(stores, contenders)), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, Camera)]
        losers = [r for r in results if isinstance(r, CameraExists)]
        assert len(winners) == 1 and len(losers) == 19
        assert await stores[0].get(winners[0].id) == winners[0]
        assert len(await stores[0].changes()) == 1
        assert await stores[0].count() == 1
    finally:
        for c in clients:
            await c.aclose()


async def test_list_subtree_and_pagination(store):
    nodes = ["45", "4501", "450102", "450102001", "450103", "4502", "46"]
    cameras = [cam(nodes[i % len(nodes)], i) for i in range(1, 253)]
    results = await store.create_many(cameras)
    assert all(isinstance(r, Camera) for r in results)
    assert await store.count() == 252

    def expected(root: str | None) -> list[str]:
        chosen = [c for c in cameras if root is None or c.node.startswith(root)]
        return [c.id for c in sorted(chosen, key=lambda c: (c.node, c.id))]

    for root, size in [(None, 100), ("4501", 30), ("450102", 7), ("450102001", 1000), ("46", 36), ("47", 10)]:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page, cursor = await store.list(node=root, page_size=size, cursor=cursor)
            pages += 1
            assert len(page) <= size
            seen += [c.id for c in page]
            if cursor is None:
                break
        assert seen == expected(root), root
        assert len(set(seen)) == len(seen)
        assert await store.count(root) == len(seen)
        assert pages == max(1, -(-len(seen) // size))

    # A node's own cameras come before its children's: order is by node string, then id.
    page, _ = await store.list(node="4501", page_size=1000)
    assert [c.node for c in page] == sorted(c.node for c in page)
    assert page[0].node == "4501"
    # Padded form accepted for the filter.
    assert await store.count("450100") == await store.count("4501")


async def test_list_returns_full_records(store):
    c = cam("450102", 3, location={"lat": 22.8, "lon": 108.3}, analytics={"labels": ["person"]})
    await store.create(c)
    page, cursor = await store.list("45")
    assert page == [c] and cursor is None


async def test_list_refuses_bad_input(store):
    await store.create_many([cam("4501", i) for i in range(1, 5)])
    _, cursor = await store.list("4501", page_size=2)
    assert cursor is not None
    with pytest.raises(CursorError):
        await store.list("4502", page_size=2, cursor=cursor)  # cursor from another listing
    with pytest.raises(CursorError):
        await store.list(page_size=2, cursor="[garbage")
    with pytest.raises(NodeCodeError):
        await store.list("45x")
    with pytest.raises(ValueError):
        await store.list(page_size=0)
    with pytest.raises(ValueError):
        await store.list(page_size=10_001)


async def test_create_many_reports_duplicates_per_row(store):
    a, b = cam("450102", 1), cam("450102", 2)
    await store.create(a)
    results = await store.create_many([a, b, b])
    assert isinstance(results[0], CameraExists)
    assert results[1] == b
    assert isinstance(results[2], CameraExists)
    assert await store.count() == 2


async def test_update_moving_node_reindexes(store):
    c = cam("450102", 1)
    await store.create(c)
    moved = CameraPatch.model_validate({"node": "4502"}).apply(c)
    await store.update(moved)
    assert await store.count("450102") == 0
    assert await store.count("4502") == 1
    assert (await store.list("4502"))[0] == [moved]
    assert (await store.list("4501"))[0] == []


async def test_feed_replays_in_order(store):
    c = cam("450102", 1)
    await store.create(c)
    c2 = CameraPatch.model_validate({"name": "second"}).apply(c, now=2000.0)
    await store.update(c2)
    other = cam("4501", 2)
    await store.create(other)
    await store.delete(c.id)

    feed = await store.changes()
    assert [(ch.op, ch.camera_id) for ch in feed] == [
        ("upsert", c.id), ("upsert", c.id), ("upsert", other.id), ("delete", c.id)
    ]
    assert feed[0].camera == c and feed[1].camera == c2 and feed[2].camera == other
    assert feed[3].camera is None and feed[3].node == "450102"
    assert feed[1].ts == 2000.0 and feed[3].ts > 0
    # Credentials are kept in the (internal) feed so a tier can rebuild the catalog.
    assert SECRET in feed[0].camera.url

    # Resuming after an entry gives the rest; paging with count works.
    assert [ch.entry_id for ch in await store.changes(after=feed[1].entry_id)] == [e.entry_id for e in feed[2:]]
    assert [ch.entry_id for ch in await store.changes(count=2)] == [e.entry_id for e in feed[:2]]
    assert await store.changes(after=feed[-1].entry_id) == []

    # Replaying the feed into an empty store reproduces the catalog.
    state: dict[str, Camera] = {}
    for ch in feed:
        if ch.op == "upsert":
            state[ch.camera_id] = ch.camera
        else:
            state.pop(ch.camera_id, None)
    page, _ = await store.list()
    assert {c.id: c for c in page} == state


async def test_feed_blocking_read(store):
    feed = await store.changes()
    last = feed[-1].entry_id if feed else "0-0"
    waiter = asyncio.create_task(store.changes(after=last, block_ms=5000))
    await asyncio.sleep(0.1)
    c = cam("45", 1)
    await store.create(c)
    got = await asyncio.wait_for(waiter, 5)
    assert [ch.camera for ch in got] == [c]
    assert await store.changes(after=got[-1].entry_id, block_ms=50) == []


async def test_feed_refuses_bad_position(store):
    for bad in ["", "abc", "1-2-3", "+", "(1-0"]:
        with pytest.raises(CursorError):
            await store.changes(after=bad)


async def test_feed_is_capped(client):
    store = CameraStore(client, prefix="cap", feed_maxlen=10)
    await store.create_many([cam("45", i) for i in range(1, 301)])
    # "~" trims whole macro-nodes only, so the length is bounded but not exact.
    assert await client.xlen(store.catalog_key) < 300


async def test_next_serial_and_add_generates_ids(store):
    assert await store.next_serial("450102") == 1
    assert await store.next_serial("450102001") == 2  # shares the county's centre code
    assert await store.next_serial("4501") == 1

    # An administrator already took the next generated id: add() skips past it.
    taken = cam("450102", 3)
    await store.create(taken)
    created = await store.add(CameraCreate.model_validate({"name": "auto", "node": "450102", "url": "rtsp://h/x"}))
    assert created.id == generate_camera_id("450102", 4)
    assert (await store.get(created.id)).name == "auto"

    explicit = await store.add(CameraCreate.model_validate(
        {"id": "45010200001310000900", "name": "given", "node": "450102", "url": "rtsp://h/x"}))
    assert explicit.id == "45010200001310000900"
    with pytest.raises(CameraExists):
        await store.add(CameraCreate.model_validate(
            {"id": "45010200001310000900", "name": "again", "node": "450102", "url": "rtsp://h/x"}))


async def test_modify_is_atomic_under_concurrency(redis_url):
    clients = [aioredis.from_url(redis_url) for _ in range(10)]
    try:
        stores = [CameraStore(c, prefix="t") for c in clients]
        c = cam("450102", 1, analytics={"labels": []})
        await stores[0].create(c)

        def add_label(i: int):
            def change(current: Camera) -> Camera:
                labels = list(current.analytics.labels or []) + [f"l{i}"]
                return CameraPatch.model_validate({"analytics": {"labels": labels}}).apply(current)
            return change

        await asyncio.gather(*(s.modify(c.id, add_label(i)) for i, s in enumerate(stores)))
        final = await stores[0].get(c.id)
        # No lost updates: every writer's label is there.
        assert sorted(final.analytics.labels) == sorted(f"l{i}" for i in range(10))
        assert len(await stores[0].changes()) == 11
    finally:
        for cl in clients:
            await cl.aclose()


async def test_modify_missing_and_aborting(store):
    assert await store.modify("45010200001320000099", lambda c: c) is None
    c = cam("450102", 1)
    await store.create(c)

    def refuse(_current: Camera) -> Camera:
        raise SourceError("url: outside the media folders")

    with pytest.raises(SourceError):
        await store.modify(c.id, refuse)
    assert await store.get(c.id) == c
    assert len(await store.changes()) == 1


async def test_modify_moves_node(store):
    c = cam("450102", 1)
    await store.create(c)
    moved = await store.modify(c.id, lambda cur: CameraPatch.model_validate({"node": "46"}).apply(cur))
    assert moved.node == "46"
    assert await store.count("450102") == 0 and await store.count("46") == 1


async def test_malformed_ids_refused(store):
    for call in (store.get, store.delete, store.exists):
        with pytest.raises(CameraIdError):
            await call("../../etc")
    with pytest.raises(CameraIdError):
        await store.get_many(["1"])


async def test_get_many(store):
    a, b = cam("45", 1), cam("45", 2)
    await store.create_many([a, b])
    assert await store.get_many([b.id, "45000000001320000099", a.id]) == [b, None, a]
    assert await store.get_many([]) == []


async def test_prefixes_are_isolated(client):
    one, two = CameraStore(client, prefix="one"), CameraStore(client, prefix="two")
    c = cam("45", 1)
    await one.create(c)
    assert await two.get(c.id) is None
    await two.create(c)  # same id, other deployment: no clash
    assert await one.count() == await two.count() == 1


def test_bad_prefix_refused(client):
    with pytest.raises(ValueError):
        CameraStore(client, prefix="bad prefix")


async def test_tiers_under_one_county_generate_distinct_ids(client):
    """A township deployment with its own base unit never generates an id its county also generates."""
    county = CameraStore(client, prefix="county")
    township = CameraStore(client, prefix="township", base_unit="01")
    data = {"name": "gate", "url": "rtsp://127.0.0.1/s"}
    a = await county.add(CameraCreate.model_validate({**data, "node": "450102001"}))
    b = await township.add(CameraCreate.model_validate({**data, "node": "450102001"}))
    assert a.id[:8] == "45010200" and b.id[:8] == "45010201"
    assert a.id[-6:] == b.id[-6:] == "000001"  # same serial, each in its own Redis; the ids still differ
    with pytest.raises(ValueError):
        CameraStore(client, base_unit="1x")
