"""Camera ids belong to one camera network-wide and to their division (security review, High 2).

- An id lies in the registering node's division: id[:len(node)] == node for a region, city or county
  node, id[:6] == node[:6] for a township or village (the centre code has no room for them): 422 else.
- A tier cannot register an id that a tier below already owns (its remote catalog): 409, checked in
  the create's own Lua script.
- At the parent, a child's forwarded camera whose node or id lies outside that child's subtree is
  refused (and counted in the child's `id_conflicts`), so a sibling cannot shadow another's camera.

The attack: county 450103's admin at the city registers the id of a 450102 camera that came up
through the bridge; the city then showed the impostor and 450102's operator got 404 on its own camera.
"""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from gateway import keys
from registry.ids import CameraIdError, generate_camera_id, id_in_node_division
from registry.models import Camera, CameraCreate
from registry.store import CameraExists, CameraOwnedBelow, CameraStore
from tests.gateway_fixtures import until

CITY, HOME, OTHER = "4501", "450102", "450103"
URL = "rtsp://127.0.0.1/ch1"  # a closed port: cameras here never run (and most are disabled)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- the division rule ------------------------------------------------------------------------------
@pytest.mark.parametrize("node, cid", [
    ("45", "45990000001320000001"),
    ("4501", "45010000001320000001"),
    ("4501", "45010300001320000001"),
    ("450103", "45010300001320000001"),
    ("450103", "45010399001320000001"),       # any base unit of the county
    ("450103001", "45010300011320000001"),    # township: its county's digits and any base unit
    ("450103001001", "45010300001320000001"),  # village: the same
    ("450100", "45010200001320000001"),        # padded codes are normalised (4501) first
])
def test_ids_in_the_nodes_division_are_accepted(node, cid):
    assert CameraCreate(name="x", node=node, url=URL, id=cid).id == cid
    assert id_in_node_division(cid, node) == cid


@pytest.mark.parametrize("node, cid", [
    ("450103", "45010200001320000001"),        # a sibling county
    ("450103", "45010000001320000001"),        # the city's own digits
    ("4501", "45020000001320000001"),          # another city
    ("45", "44030000001320000001"),            # another province
    ("450103001", "45010200001320000001"),     # township of 450103 with a 450102 id
    ("450102001001", "45010300001320000001"),  # village of 450102 with a 450103 id
])
def test_ids_outside_the_nodes_division_are_refused_on_the_id_field(node, cid):
    with pytest.raises(ValidationError) as e:
        CameraCreate(name="x", node=node, url=URL, id=cid)
    err = e.value.errors()[0]
    assert err["loc"] == ("id",)
    assert f"camera id {cid} lies outside node" in err["msg"] and "division" in err["msg"]
    with pytest.raises(CameraIdError):
        id_in_node_division(cid, node)


@pytest.mark.parametrize("node", ["45", "4501", "450103", "450103001", "450103001001"])
def test_generated_ids_follow_their_node(node):
    for base_unit in ("00", "07"):
        cid = generate_camera_id(node, 42, base_unit=base_unit)
        assert id_in_node_division(cid, node) == cid


async def test_the_gateway_answers_422_naming_the_id_for_one_camera_and_each_bulk_row(make_gateway, redis_url):
    async with make_gateway(redis_url, node=CITY) as gw:
        foreign = "45010200001320000007"
        status, body = await gw.request("POST", "/api/v1/cameras", json={
            "id": foreign, "name": "impostor", "node": OTHER, "url": URL, "enabled": False})
        assert status == 422, body
        assert [f["field"] for f in body["error"]["fields"]] == ["id"]
        assert f"camera id {foreign} lies outside node {OTHER}'s division" in body["error"]["message"]
        assert (await gw.request("GET", f"/api/v1/cameras/{foreign}"))[0] == 404

        own = "45010300001320000007"
        rows = [
            {"id": foreign, "name": "impostor", "node": OTHER, "url": URL, "enabled": False},
            {"id": own, "name": "fine", "node": OTHER, "url": URL, "enabled": False},
            {"id": "45010300001320000008", "name": "township", "node": "450103001", "url": URL, "enabled": False},
            {"id": "45010300001320000009", "name": "sibling township", "node": "450102001", "url": URL,
             "enabled": False},
        ]
        status, res = await gw.request("POST", "/api/v1/cameras/bulk", json=rows)
        assert status == 200, res
        assert [(r["ok"], r["status"]) for r in res["results"]] == [(False, 422), (True, 201), (True, 201),
                                                                    (False, 422)], res
        assert res["results"][0]["error"].startswith("id: ") and "division" in res["results"][0]["error"]
        assert res["results"][3]["error"].startswith("id: ") and "450102001" in res["results"][3]["error"]
        # Without an id the gateway generates one in the node's division, as before.
        gen = await gw.add_camera(name="generated", node="450103001", url=URL, enabled=False)
        assert gen["id"].startswith(OTHER)


# ---- the remote catalog at the store ----------------------------------------------------------------
async def test_the_store_refuses_an_id_of_the_remote_catalog_in_its_create_script(redis_url):
    r = aioredis.from_url(redis_url)
    try:
        store = CameraStore(r, prefix="t")
        below = "45010200001320000001"
        await r.hset("t:rcat", below, json.dumps({"id": below, "node": HOME, "owner": HOME, "via": HOME}))
        cam = Camera.from_create(CameraCreate(name="x", node=CITY, url=URL, id=below), now=1.0)
        with pytest.raises(CameraOwnedBelow) as e:
            await store.create(cam)
        assert (e.value.owner, e.value.via) == (HOME, HOME)
        assert isinstance(e.value, CameraExists)
        assert await r.exists(store.camera_key(below), "t:catalog") == 0 and not await store.exists(below)

        other = Camera.from_create(CameraCreate(name="y", node=CITY, url=URL, id="45010000001320000002"), now=1.0)
        results = await store.create_many([cam, other])
        assert isinstance(results[0], CameraOwnedBelow) and results[1] == other
        # A generated id that a tier below already uses is skipped like one taken here
        # (serial 1 is below, serial 2 is `other`'s).
        taken = generate_camera_id(CITY, 1)
        await r.hset("t:rcat", taken, json.dumps({"id": taken, "node": CITY, "owner": "450105", "via": "450105"}))
        got = await store.add(CameraCreate(name="z", node=CITY, url=URL))
        assert got.id == generate_camera_id(CITY, 3)
    finally:
        await r.aclose()


# ---- the attack, through real tiers ------------------------------------------------------------------
async def test_a_sibling_county_cannot_shadow_a_camera_forwarded_up(tier_chain):
    async with tier_chain((CITY, HOME, OTHER)) as chain:
        city, home, other = chain[CITY], chain[HOME], chain[OTHER]
        cam = await home.gw.add_camera(name="river gate", node=HOME, url=URL, enabled=False)
        cid = cam["id"]
        assert cid.startswith(HOME)
        await until(lambda: city.redis().hexists("se:rcat", cid), 20, "450102's camera at the city")

        async def make(role: str, node: str) -> str:
            status, body = await city.gw.request("POST", "/api/v1/tokens",
                                                 json={"name": f"{node} {role}", "role": role, "node": node})
            assert status == 201, body
            return body["token"]

        intruder, home_op = await make("admin", OTHER), await make("operator", HOME)
        body = {"id": cid, "name": "impostor", "node": OTHER, "url": URL, "enabled": False}
        # The sibling's admin: the id is not of its division (422 on the id), one camera or a bulk row.
        status, resp = await city.gw.request("POST", "/api/v1/cameras", json=body, headers=auth(intruder))
        assert status == 422 and resp["error"]["fields"][0]["field"] == "id", resp
        status, res = await city.gw.request("POST", "/api/v1/cameras/bulk", json=[body], headers=auth(intruder))
        assert status == 200 and res["results"][0]["status"] == 422, res
        # The city's own admin, whose division holds the id: a tier below owns it (409, naming it).
        for node in (CITY, HOME):
            status, resp = await city.gw.request("POST", "/api/v1/cameras", json={**body, "node": node})
            assert status == 409, resp
            assert cid in resp["error"]["message"] and "a tier below owns it" in resp["error"]["message"]
            assert resp["error"]["owner"] == HOME
        status, res = await city.gw.request("POST", "/api/v1/cameras/bulk", json=[{**body, "node": CITY}])
        assert status == 200 and res["results"][0]["status"] == 409, res
        assert not await city.app[keys.STORE].exists(cid)

        # 450102's operator still sees its own camera, as 450102 registered it, and reaches its picture.
        status, got = await city.gw.request("GET", f"/api/v1/cameras/{cid}", headers=auth(home_op))
        assert status == 200 and got["remote"] is True and got["owner"] == HOME and got["name"] == "river gate", got
        status, listing = await city.gw.request("GET", "/api/v1/cameras", headers=auth(home_op))
        assert [(c["id"], c["owner"]) for c in listing["cameras"]] == [(cid, HOME)], listing
        status, _ = await city.gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg", headers=auth(home_op))
        assert status == 503  # disabled at its tier: asked through the chain, not a 404

        # And a rename at 450102 still reaches the city.
        assert (await home.gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"name": "river gate 2"}))[0] == 200

        async def renamed():
            return (await city.gw.request("GET", f"/api/v1/cameras/{cid}", headers=auth(home_op)))[1].get(
                "name") == "river gate 2"

        await until(renamed, 20, "the rename at the city")

        # A sibling tier that slips the id past its own API (an old version, a direct write) is refused
        # at the city: the forwarded camera's id lies outside the sibling's subtree. So is a camera whose
        # node lies outside it. Both are counted in its bridge report and nothing at the city changes.
        other_store = other.app[keys.STORE]
        stolen = Camera.model_validate({"id": cid, "name": "impostor", "node": OTHER, "url": URL,
                                        "enabled": False, "created_at": 1.0, "updated_at": 1.0})
        await other_store.create(stolen)
        beside = generate_camera_id(HOME, 900)
        await other_store.create(Camera.model_validate({"id": beside, "name": "beside", "node": HOME, "url": URL,
                                                        "enabled": False, "created_at": 1.0, "updated_at": 1.0}))
        marker = await other.gw.add_camera(name="marker", node=OTHER, url=URL, enabled=False)
        await until(lambda: city.redis().hexists("se:rcat", marker["id"]), 20, "450103's later camera at the city")

        async def refused() -> bool:
            _, rep = await other.gw.request("GET", "/api/v1/bridge")
            return rep["bridge"]["id_conflicts"] >= 2

        await until(refused, 10, "the refusals counted at 450103's bridge")
        rec = json.loads(await city.redis().hget("se:rcat", cid))
        assert (rec["owner"], rec["via"], rec["name"]) == (HOME, HOME, "river gate 2")
        assert not await city.redis().hexists("se:rcat", beside)
        assert await city.redis().zrangebylex("se:rcat:by_node", f"[{OTHER}", f"({OTHER}:") == [
            f"{OTHER}/{marker['id']}".encode()]
        status, got = await city.gw.request("GET", f"/api/v1/cameras/{cid}", headers=auth(home_op))
        assert status == 200 and got["owner"] == HOME, got
        # The home county's own bridge saw no conflict.
        _, rep = await home.gw.request("GET", "/api/v1/bridge")
        assert rep["bridge"]["id_conflicts"] == 0
