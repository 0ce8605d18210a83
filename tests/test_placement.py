"""Placement's rules and its Redis contract, against a real redis-server: leases, fencing numbers, balance."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis.asyncio as aioredis

from analytics.events import Event, Origin
from gateway.events import NOT_HELD, EventLog
from tiers.placement import CameraDemand, GatewayInfo, Leases, Membership, assign, excess


def gw(gid: str, asked: float = 0.0, capacity: float = 20.0, draining: bool = False) -> GatewayInfo:
    return GatewayInfo(id=gid, node="450102", version="t", address=None, capacity_fps=capacity, asked_fps=asked,
                       analyzed_fps=0.0, cameras=0, started_at=0.0, draining=draining)


def cams(n: int, fps: float = 1.0, prefix: str = "c") -> list[CameraDemand]:
    return [CameraDemand(f"{prefix}{i:03d}", fps) for i in range(n)]


# ---- the rules -----------------------------------------------------------------------------------------
def test_new_cameras_go_where_there_is_room_in_proportion_to_capacity():
    plan = assign(cams(30), [gw("a", capacity=10), gw("b", capacity=20)])
    per = {g: list(plan.values()).count(g) for g in ("a", "b")}
    assert per == {"a": 10, "b": 20}
    # A gateway already loaded gets the new cameras last.
    plan = assign(cams(4), [gw("a", asked=10), gw("b", asked=0)])
    assert set(plan.values()) == {"b"}


def test_assignment_is_the_same_on_every_gateway_and_skips_draining_ones():
    view = [gw("b"), gw("a"), gw("c", draining=True)]
    assert assign(cams(9), view) == assign(list(reversed(cams(9))), list(reversed(view)))
    assert "c" not in assign(cams(9), view).values()


def test_pinned_cameras_go_to_their_gateway_or_nowhere():
    pinned = [CameraDemand("p1", 1.0, "b"), CameraDemand("p2", 1.0, "gone")]
    plan = assign(pinned + cams(2), [gw("a"), gw("b", asked=100)])
    assert plan["p1"] == "b"  # however loaded
    assert "p2" not in plan  # its gateway is not live: it waits for it
    assert plan["c000"] == plan["c001"] == "a"


def test_a_joining_gateway_gets_a_fair_share_and_nothing_bounces_back():
    mine = cams(12)
    view = [gw("a", asked=12), gw("b", asked=0)]
    give = excess("a", mine, view)
    assert len(give) == 6
    # After the move, neither side wants to move anything back.
    left = [c for c in mine if c.id not in give]
    moved = [c for c in mine if c.id in give]
    after = [gw("a", asked=len(left)), gw("b", asked=len(moved))]
    assert excess("a", left, after) == []
    assert excess("b", moved, after) == []


def test_balanced_or_alone_or_pinned_means_nothing_to_hand_over():
    assert excess("a", cams(5), [gw("a", asked=5), gw("b", asked=5)]) == []
    assert excess("a", cams(5), [gw("a", asked=5)]) == []
    pinned = [CameraDemand(f"p{i}", 1.0, "a") for i in range(8)]
    assert excess("a", pinned, [gw("a", asked=8), gw("b")]) == []
    # A one-camera imbalance is not worth a move (it would only swap the imbalance).
    assert excess("a", cams(5), [gw("a", asked=5), gw("b", asked=4)]) == []


# ---- the Redis contract ---------------------------------------------------------------------------------
@pytest.fixture
async def redis(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_lease_is_held_by_one_gateway_and_its_fencing_number_grows(redis):
    a, b = Leases(redis, "gw-a", ttl_s=0.5), Leases(redis, "gw-b", ttl_s=0.5)
    got = await a.take(["cam1"])
    assert got == {"cam1": "gw-a|1"}
    assert await b.take(["cam1"]) == {}  # held: refused
    assert await a.take(["cam1"]) == {"cam1": "gw-a|1"}  # ours: renewed, same number
    assert await a.holders(["cam1", "cam2"]) == {"cam1": "gw-a"}
    await a.release({"cam1": "gw-a|1"})
    assert await b.take(["cam1"]) == {"cam1": "gw-b|2"}
    assert await a.renew({"cam1": "gw-a|1"}) == {"cam1"}  # lost to gw-b
    assert await b.renew({"cam1": "gw-b|2"}) == set()


async def test_a_lapsed_lease_nobody_took_is_kept_with_its_number(redis):
    a, b = Leases(redis, "gw-a", ttl_s=0.2), Leases(redis, "gw-b", ttl_s=0.2)
    token = (await a.take(["cam1"]))["cam1"]
    await asyncio.sleep(0.35)  # lapsed (Redis away, say), nobody took it
    assert await a.renew({"cam1": token}) == set()
    assert await b.take(["cam1"]) == {}  # held again by gw-a, same number
    assert await a.holders(["cam1"]) == {"cam1": "gw-a"}


async def test_events_are_written_under_a_held_lease_only(redis):
    a, b = Leases(redis, "gw-a", ttl_s=0.3), Leases(redis, "gw-b", ttl_s=5)
    log = EventLog(redis, "450102")
    tokens = {"45010200001320000001": (await a.take(["45010200001320000001"]))["45010200001320000001"]}
    log.lease_of = lambda cid: tokens.get(cid, NOT_HELD)

    def publish(phase: str) -> None:
        log.publish(Event(type="motion", camera_id="45010200001320000001", node="450102",
                          ts="2026-11-30T12:00:00.000Z", origin=Origin("450102", "gw-a"), phase=phase))
    writer = asyncio.create_task(log.run())
    try:
        publish("start")
        assert await log.flush(3)
        assert (log.written, log.fenced) == (1, 0)
        # gw-a is cut off past its lease; gw-b takes the camera; what gw-a still had is refused.
        await asyncio.sleep(0.4)
        assert (await b.take(["45010200001320000001"]))
        publish("end")
        assert await log.flush(3)
        assert (log.written, log.fenced) == (1, 1)
        # A camera this gateway lost (placement says NOT_HELD): refused too.
        tokens.clear()
        publish("end")
        assert await log.flush(3)
        assert log.fenced == 2
        assert await redis.xlen("se:events") == 1
    finally:
        writer.cancel()


async def test_members_are_those_that_beat(redis):
    a = Membership(redis, "gw-a", ttl_s=0.3)
    b = Membership(redis, "gw-b", ttl_s=5)
    await a.beat(gw("gw-a"))
    view = await b.beat(gw("gw-b"))
    assert sorted(g.id for g in view.gateways) == ["gw-a", "gw-b"]
    await asyncio.sleep(0.4)
    view = await b.beat(gw("gw-b"))
    assert [g.id for g in view.gateways] == ["gw-b"]
    records, live = await b.records()
    assert {g.id for g in records} == {"gw-a", "gw-b"} and live == {"gw-b"}  # gone ones stay listed a while
    await b.beat(None)  # leaves at once
    _, live = await b.records()
    assert live == set()


async def test_two_processes_beating_under_one_gateway_id_see_each_other(redis):
    first, second = Membership(redis, "gw-a", ttl_s=5), Membership(redis, "gw-a", ttl_s=5)
    one, two = dataclasses.replace(gw("gw-a"), instance="one"), dataclasses.replace(gw("gw-a"), instance="two")
    assert (await first.beat(one)).replaced == ""
    assert (await first.beat(one)).replaced == "one"  # our own record: fine
    assert (await second.beat(two)).replaced == "one"  # someone else's: placement reports the duplicate id
    assert (await first.beat(one)).replaced == "two"
