"""Node names and the node tree: node files, `se:nodes`, and /api/v1/nodes against real gateways.

What a control room depends on: every node of its subtree is named and placed in its tier,
camera counts by state and the online and intact rates add up over the whole subtree and match
the cameras' real state, a token sees its own jurisdiction only, and a bad node file is refused
with the line at fault.
"""

from __future__ import annotations

import json
import pytest

from gateway import keys
from gateway.app import NAMES_RECHECK_S, build_app
from gateway.config import load_settings
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, until
from tests.test_cli import cli
from tests.servers import free_port
from tiers.access import Principal, Role
from tiers.contract import TIER_SCRIPTS
from tiers.names import NodeFileError, bundled_node_file, load_node_file, parse_nodes

CLIP = "file:moving_objects.mp4"

GUANGXI_CITIES = {
    "4501": "南宁市", "4502": "柳州市", "4503": "桂林市", "4504": "梧州市", "4505": "北海市", "4506": "防城港市",
    "4507": "钦州市", "4508": "贵港市", "4509": "玉林市", "4510": "百色市", "4511": "贺州市", "4512": "河池市",
    "4513": "来宾市", "4514": "崇左市",
}


# ---- node files ------------------------------------------------------------------------------------
def test_bundled_file_names_guangxi_region_its_14_cities_and_nanning_counties():
    entries = {e.code: e.name for e in load_node_file(bundled_node_file())}
    assert entries["45"] == "广西壮族自治区"
    assert {c: n for c, n in entries.items() if len(c) == 4} == GUANGXI_CITIES
    nanning = {c: n for c, n in entries.items() if c.startswith("4501") and len(c) == 6}
    assert nanning["450102"] == "兴宁区" and nanning["450103"] == "青秀区" and nanning["450110"] == "武鸣区"
    assert len(nanning) >= 7
    assert any(c.startswith("4502") and len(c) == 6 for c in entries)  # Liuzhou's districts
    assert any(c.startswith("4503") and len(c) == 6 for c in entries)  # Guilin's districts
    assert all(c.startswith("45") for c in entries)
    # Demo-only townships and villages are not in the file every deployment loads.
    assert not any(len(c) > 6 for c in entries)


def test_csv_rows_normalised_and_each_bad_row_named_by_its_line():
    text = ("code,name\n"
            "450000,广西壮族自治区\n"       # line 2: padded national form
            "450100,南宁市\n"
            "\n"                            # line 4: blank, skipped
            "# a comment line\n"            # line 5
            "4501X2,bad code\n"             # line 6
            "450103,\n"                     # line 7: empty name
            "4501,柳州市\n"                 # line 8: same code, another name
            "450102001,示范街道\n"
            "12345,five digits\n")          # line 10
    parsed = parse_nodes(text, "csv")
    assert {(e.code, e.name) for e in parsed.entries} == {("45", "广西壮族自治区"), ("4501", "南宁市"),
                                                          ("450102001", "示范街道")}
    errs = {e.where: e.message for e in parsed.errors}
    assert set(errs) == {"line 6", "line 7", "line 8", "line 10"}, errs
    assert "digits only" in errs["line 6"]
    assert "empty" in errs["line 7"]
    assert "南宁市" in errs["line 8"] and "line 3" in errs["line 8"]
    assert "5 digits" in errs["line 10"]


def test_csv_header_and_body_problems_are_refused_whole():
    with pytest.raises(NodeFileError, match="header must name the columns code and name"):
        parse_nodes("id,title\n45,x\n", "csv")
    with pytest.raises(NodeFileError, match="empty"):
        parse_nodes("\n\n", "csv")
    with pytest.raises(NodeFileError, match="not UTF-8"):
        parse_nodes("code,name\n45,广西\n".encode("gbk"), "csv")
    # A byte-order mark (Excel's "CSV UTF-8") and extra columns are fine.
    parsed = parse_nodes("\ufeffname,code,note\n广西壮族自治区,45,x\n".encode(), "csv")
    assert [(e.code, e.name) for e in parsed.entries] == [("45", "广西壮族自治区")] and not parsed.errors


def test_json_list_and_object_forms():
    parsed = parse_nodes(json.dumps([{"code": "45", "name": "广西"}, {"code": 4501, "name": "南宁市"},
                                     ["4502", "柳州市"], {"code": "4503"}]), "json")
    assert [(e.code, e.name) for e in parsed.entries] == [("45", "广西"), ("4501", "南宁市")]
    assert {e.where for e in parsed.errors} == {"entry 3", "entry 4"}
    assert "missing name" in {e.where: e.message for e in parsed.errors}["entry 4"]
    parsed = parse_nodes('{"450100": "南宁市", "9": "x"}', "json")
    assert [e.code for e in parsed.entries] == ["4501"] and parsed.errors[0].where == "key '9'"
    with pytest.raises(NodeFileError, match="line 2"):
        parse_nodes('[\n{"code": }]', "json")
    with pytest.raises(NodeFileError, match="expected a JSON list"):
        parse_nodes('"45"', "json")
    # JSON can spell a lone surrogate, which is not text (and which Redis cannot store): a bad row, not a 500.
    parsed = parse_nodes('{"45": "\\ud800", "4501": "\\ud83d\\ude00"}', "json")
    assert [(e.code, e.name) for e in parsed.entries] == [("4501", "\U0001f600")]
    assert "surrogate" in parsed.errors[0].message
    with pytest.raises(NodeFileError, match="number too long"):  # past Python's int conversion limit
        parse_nodes('{"45": ' + "1" * 5000 + "}", "json")


def test_load_node_file_names_every_bad_line(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_text("code,name\n45,广西\n450A,x\n4501,\n")
    with pytest.raises(NodeFileError) as e:
        load_node_file(path)
    msg = str(e.value)
    assert str(path) in msg and "2 bad rows" in msg and "line 3" in msg and "line 4" in msg
    with pytest.raises(NodeFileError, match="cannot read"):
        load_node_file(tmp_path / "missing.csv")


# ---- start-up and the names API ------------------------------------------------------------------------
async def test_names_loaded_at_start_up_into_the_tiers_redis(redis_url, make_gateway, tmp_path):
    import redis.asyncio as aioredis

    async with make_gateway(redis_url, node="4501") as gw:
        # Default: the bundled Guangxi file.
        r = aioredis.Redis.from_url(redis_url)
        try:
            async def loaded():
                return await r.hget("se:nodes", "4501")
            assert (await until(loaded, 15, "names in se:nodes")).decode() == "南宁市"
            assert (await r.hget("se:nodes", "450102")).decode() == "兴宁区"
        finally:
            await r.aclose()
    own = tmp_path / "own.json"
    own.write_text(json.dumps([{"code": "450102001", "name": "测试街道"}]))
    async with make_gateway(redis_url, node="450102", nodes_file=own) as gw:
        async def named():
            return (await gw.app[keys.NODE_NAMES].get("450102001")) == "测试街道"
        await until(named, 15, "the configured file's names")
        # Names another deployment of the tier loaded before stay (the hash is shared and merged).
        assert await gw.app[keys.NODE_NAMES].get("4501") == "南宁市"
        # The tier's Redis emptied under the running gateway: the file's names come back by themselves.
        await gw.app[keys.REDIS].flushdb()
        await until(named, 2 * NAMES_RECHECK_S + 5, "the file's names reloaded into the emptied Redis")


async def test_a_bad_node_file_stops_the_start_up_naming_the_line(redis_url, tmp_path):
    bad = tmp_path / "nodes.csv"
    bad.write_text("code,name\n45,广西\n4501,南宁市\n45019,x\n")
    settings = load_settings(None, node="45", redis=redis_url, data_dir=tmp_path / "d", admin_token=TOKEN,
                             nodes_file=bad)
    with pytest.raises(NodeFileError, match="line 4"):
        build_app(settings, TOKEN)  # before anything is started

    # From the command line: one clear line, exit status 2, no embedded redis-server left behind.
    data = tmp_path / "data"
    config = tmp_path / "tier.toml"
    config.write_text(f'nodes_file = "{bad}"\n')
    rc, out, err = await cli("serve", "--config", str(config), "--http", f"127.0.0.1:{free_port()}",
                             "--data-dir", str(data))
    assert rc == 2 and "line 4" in err and "45019" in err and "Traceback" not in err, err
    assert not (data / "redis").exists()


async def test_put_names_per_row_errors_admin_only_and_jurisdiction(redis_url, make_gateway):
    async with make_gateway(redis_url, node="4501") as gw:
        body = "code,name\n450102001,示范街道\n450102001001,示范社区\n4502001,bad\n4502,柳州\n"
        status, resp = await gw.request("PUT", "/api/v1/nodes/names", data=body.encode(),
                                        headers={"Content-Type": "text/csv"})
        assert status == 200, resp
        # The bootstrap token's jurisdiction is the tier's node (Nanning): Liuzhou is outside it.
        assert resp["rows"] == 4 and resp["stored"] == 2 and resp["failed"] == 2
        errs = {e["where"]: e["error"] for e in resp["errors"]}
        assert set(errs) == {"line 4", "code 4502"}
        assert "7 digits" in errs["line 4"] and "jurisdiction" in errs["code 4502"]
        assert await gw.app[keys.NODE_NAMES].get("4502") == "柳州市"
        assert await gw.app[keys.NODE_NAMES].get("450102001001") == "示范社区"

        tokens = gw.app[keys.TOKENS]
        boot = Principal("bootstrap", "test", Role.ADMIN, "4501")
        _, county_admin = await tokens.create("county admin", Role.ADMIN, "450102", boot)
        _, viewer = await tokens.create("viewer", Role.VIEWER, "4501", boot)
        h = {"Content-Type": "application/json"}
        status, resp = await gw.request("PUT", "/api/v1/nodes/names", data=json.dumps({"450102": "x"}),
                                        headers={**h, "Authorization": f"Bearer {viewer}"})
        assert status == 403, resp
        # A county admin names nodes of its county only.
        status, resp = await gw.request("PUT", "/api/v1/nodes/names",
                                        data=json.dumps({"450102002": "第二街道", "450103": "改名"}),
                                        headers={**h, "Authorization": f"Bearer {county_admin}"})
        assert status == 200 and resp["stored"] == 1, resp
        assert resp["errors"][0]["where"] == "code 450103" and "jurisdiction" in resp["errors"][0]["error"]
        assert await gw.app[keys.NODE_NAMES].get("450103") == "青秀区"
        # replace=true drops the county's names not given, and only those; refused whole on any bad row.
        status, resp = await gw.request("PUT", "/api/v1/nodes/names?replace=true",
                                        data=json.dumps({"450102002": "第二街道", "4501": "x"}),
                                        headers={**h, "Authorization": f"Bearer {county_admin}"})
        assert status == 422 and "nothing replaced" in resp["error"]["message"], resp
        status, resp = await gw.request("PUT", "/api/v1/nodes/names?replace=true",
                                        data=json.dumps({"450102002": "第二街道"}),
                                        headers={**h, "Authorization": f"Bearer {county_admin}"})
        assert status == 200 and resp["replaced"], resp
        names = gw.app[keys.NODE_NAMES]
        assert await names.get("450102001") is None and await names.get("450102") is None
        assert await names.get("450102002") == "第二街道" and await names.get("450103") == "青秀区"

        status, resp = await gw.request("PUT", "/api/v1/nodes/names", data=b"[1,",
                                        headers={"Content-Type": "application/json"})
        assert status == 400 and "invalid JSON" in resp["error"]["message"]
        status, resp = await gw.request("PUT", "/api/v1/nodes/names", data=json.dumps([{"code": "x", "name": "y"}]),
                                        headers={"Content-Type": "application/json"})
        assert status == 422 and resp["error"]["errors"][0]["where"] == "entry 1"


# ---- the tree ----------------------------------------------------------------------------------------
def find(tree: dict, code: str) -> dict | None:
    if tree["code"] == code:
        return tree
    for c in tree["children"]:
        got = find(c, code)
        if got:
            return got
    return None


async def test_tree_counts_rates_and_names_match_the_cameras_real_state(redis_url, make_gateway):
    async with make_gateway(redis_url, node="4501", media_dirs=[CLIPS_DIR]) as gw:
        online = await gw.add_camera(name="a", node="450102", url=CLIP, analytics={"fps": 3})
        dead = await gw.add_camera(name="b", node="450102001001", url=f"rtsp://127.0.0.1:{free_port()}/x")
        await gw.add_camera(name="c", node="450103", url=CLIP, enabled=False)
        await gw.wait_state(online["id"], "online")
        await gw.wait_state(dead["id"], "offline")

        status, tree = await gw.request("GET", "/api/v1/nodes")
        assert status == 200, tree
        assert tree["code"] == "4501" and tree["name"] == "南宁市" and tree["tier"] == "city"
        assert tree["cameras"] == {"total": 3, "enabled": 2, "online": 1, "offline": 1, "connecting": 0,
                                   "disabled": 1, "intact": 1}
        assert tree["online_rate"] == 0.5 and tree["intact_rate"] == 0.5
        # Named counties of the file are in the tree even without cameras; codes outside the tier are not.
        codes = {c["code"] for c in tree["children"]}
        assert {"450102", "450103", "450105", "450110"} <= codes and not any(not c.startswith("4501") for c in codes)
        xingning = find(tree, "450102")
        assert xingning["name"] == "兴宁区" and xingning["tier"] == "county"
        assert xingning["cameras"]["total"] == 2 and xingning["cameras"]["online"] == 1
        assert xingning["online_rate"] == 0.5
        # The village's camera brings its township in as an unnamed ancestor.
        town = find(tree, "450102001")
        assert town["name"] is None and town["tier"] == "township"
        village = find(tree, "450102001001")
        assert village["tier"] == "village" and village["cameras"]["offline"] == 1 and village["online_rate"] == 0.0
        qingxiu = find(tree, "450103")
        assert qingxiu["cameras"]["disabled"] == 1 and qingxiu["online_rate"] is None
        empty = find(tree, "450105")
        assert empty["cameras"]["total"] == 0 and empty["online_rate"] is None and empty["children"] == []
        # Every node's figures are the sum of its own cameras and its children's.
        def check(n: dict) -> None:
            for c in n["children"]:
                check(c)
            kids = sum(c["cameras"]["total"] for c in n["children"])
            assert n["cameras"]["total"] >= kids
        check(tree)

        status, one = await gw.request("GET", "/api/v1/nodes/450102?depth=1")
        assert status == 200 and one["code"] == "450102" and one["cameras"]["total"] == 2
        assert [c["code"] for c in one["children"]] == ["450102001"] and one["children"][0]["children"] == []
        status, padded = await gw.request("GET", "/api/v1/nodes/450102000000")
        assert status == 200 and padded["code"] == "450102"
        assert (await gw.request("GET", "/api/v1/nodes/4502"))[0] == 404  # not in this tier
        assert (await gw.request("GET", "/api/v1/nodes/450108001"))[0] == 404  # nothing there
        assert (await gw.request("GET", "/api/v1/nodes/45019"))[0] == 400
        assert (await gw.request("GET", "/api/v1/nodes?depth=9"))[0] == 400

        # A change of state shows in the next read.
        await gw.request("PATCH", f"/api/v1/cameras/{dead['id']}", json={"enabled": False})
        _, tree = await gw.request("GET", "/api/v1/nodes?depth=0")
        assert tree["children"] == []
        assert tree["cameras"]["enabled"] == 1 and tree["online_rate"] == 1.0 and tree["intact_rate"] == 1.0


async def test_a_token_sees_the_tree_of_its_jurisdiction_only(redis_url, make_gateway):
    async with make_gateway(redis_url, node="4501", media_dirs=[CLIPS_DIR]) as gw:
        await gw.add_camera(name="a", node="450102", url=CLIP, enabled=False)
        await gw.add_camera(name="b", node="450103", url=CLIP, enabled=False)
        boot = Principal("bootstrap", "test", Role.ADMIN, "4501")
        _, county = await gw.app[keys.TOKENS].create("qingxiu viewer", Role.VIEWER, "450103", boot)
        _, other = await gw.app[keys.TOKENS].create("liuzhou", Role.VIEWER, "4502", boot)
        auth = {"Authorization": f"Bearer {county}"}
        status, tree = await gw.request("GET", "/api/v1/nodes", headers=auth)
        assert status == 200 and tree["code"] == "450103" and tree["name"] == "青秀区"
        assert tree["cameras"]["total"] == 1
        assert (await gw.request("GET", "/api/v1/nodes/450102", headers=auth))[0] == 404
        assert (await gw.request("GET", "/api/v1/nodes/4501", headers=auth))[0] == 404
        assert (await gw.request("GET", "/api/v1/nodes/450103", headers=auth))[0] == 200
        status, _ = await gw.request("GET", "/api/v1/nodes", headers={"Authorization": f"Bearer {other}"})
        assert status == 404
        assert (await gw.request("GET", "/api/v1/nodes", headers={"Authorization": "Bearer nope"}))[0] == 401


async def test_events_of_the_last_hour_roll_up_by_type_and_label(redis_url, make_gateway):
    async with make_gateway(redis_url, node="4501", media_dirs=[CLIPS_DIR]) as gw:
        cam = await gw.add_camera(name="a", node="450102001", url=CLIP, analytics={"fps": 5})

        async def counted():
            _, tree = await gw.request("GET", "/api/v1/nodes")
            ev = tree["events_last_hour"]
            return tree if ev["by_type"].get("motion", 0) >= 1 and ev["by_type"].get("status", 0) >= 1 else None

        tree = await until(counted, 30, "motion and status events counted")
        _, history = await gw.request("GET", f"/api/v1/events?camera={cam['id']}&limit=1000")
        by_type: dict[str, int] = {}
        for e in history["events"]:
            by_type[e["type"]] = by_type.get(e["type"], 0) + 1
        # Counted per node and rolled up: the township, the county and the city hold the same figures.
        for code in ("450102001", "450102", "4501"):
            node = find(tree, code)
            assert node["events_last_hour"]["by_type"]["status"] >= 1
            assert node["events_last_hour"]["by_type"].get("motion", 0) >= 1
        assert find(tree, "450103")["events_last_hour"]["total"] == 0
        got = tree["events_last_hour"]["by_type"]
        # The history read came after the tree: it holds at least what was counted then.
        assert all(by_type.get(t, 0) >= n for t, n in got.items()), (got, by_type)


# ---- across tiers ---------------------------------------------------------------------------------------
async def test_the_region_rolls_up_the_cameras_and_events_of_the_tiers_below(tier_chain):
    from tests.test_metrics import scrape

    async with tier_chain(("45", "4501", "450102"), media_dirs=[CLIPS_DIR]) as chain:
        region, city, county = chain["45"].gw, chain["4501"].gw, chain["450102"].gw
        live = await county.add_camera(name="gate", node="450102001", url=CLIP, analytics={"fps": 3})
        dead = await city.add_camera(name="bridge", node="4501", url=f"rtsp://127.0.0.1:{free_port()}/x")
        await county.wait_state(live["id"], "online")
        await city.wait_state(dead["id"], "offline")

        async def rolled_up():
            _, tree = await region.request("GET", "/api/v1/nodes")
            c = tree["cameras"]
            motion = (find(tree, "450102001") or {}).get("events_last_hour", {}).get("by_type", {}).get("motion", 0)
            return tree if c["online"] == 1 and c["offline"] == 1 and motion >= 1 else None
        tree = await until(rolled_up, 60, "the region to see both tiers' cameras and the county's events")
        assert tree["code"] == "45" and tree["cameras"]["total"] == 2 and tree["online_rate"] == 0.5
        city_node = find(tree, "4501")
        assert city_node["cameras"]["offline"] == 1 and city_node["cameras"]["online"] == 1
        assert find(tree, "450102")["online_rate"] == 1.0 and find(tree, "450102")["name"] == "兴宁区"
        assert find(tree, "450102001")["tier"] == "township"
        # The county counts its own events; the region counts them again as they arrive forwarded.
        _, at_county = await county.request("GET", "/api/v1/nodes/450102001")
        assert at_county["events_last_hour"]["by_type"]["status"] >= 1

        # A county viewer at the region sees the county's subtree only.
        boot = Principal("bootstrap", "test", Role.ADMIN, "45")
        _, viewer = await chain["45"].app[keys.TOKENS].create("xingning", Role.VIEWER, "450102", boot)
        status, mine = await region.request("GET", "/api/v1/nodes", headers={"Authorization": f"Bearer {viewer}"})
        assert status == 200 and mine["code"] == "450102" and mine["cameras"]["total"] == 1

        # The region's metrics: node rates over the subtree, but no per-camera figures for cameras it does not run.
        m = await scrape(region)
        assert m.value("sharp_eyes_node_online_ratio", node="45") == 0.5
        assert m.value("sharp_eyes_node_cameras", node="4501", state="offline") == 1
        assert not m.has("sharp_eyes_camera_state", camera=live["id"])
        county_m = await scrape(county)
        assert county_m.value("sharp_eyes_camera_state", camera=live["id"], state="online") == 1
        # The county's bridge to the city, as /api/v1/bridge reports it.
        _, before = await county.request("GET", "/api/v1/bridge")
        county_m = await scrape(county)
        assert county_m.value("sharp_eyes_bridge_connected") == 1 and county_m.value("sharp_eyes_bridge_forwarding") == 1
        for stream in ("events", "catalog", "audit"):
            sent = county_m.value("sharp_eyes_bridge_forwarded_total", stream=stream)
            assert sent >= before["bridge"]["streams"][stream]["forwarded"], stream
            assert county_m.has("sharp_eyes_bridge_behind_entries", stream=stream)
        assert county_m.value("sharp_eyes_bridge_forwarded_total", stream="events") >= 1
        assert not m.has("sharp_eyes_bridge_connected")  # the region has no uplink


async def test_names_given_at_a_lower_tier_reach_the_region(tier_chain):
    async with tier_chain(("45", "4501", "450102")) as chain:
        region, county = chain["45"].gw, chain["450102"].gw
        csv_names = "code,name\n450102001,民主街道\n450102001001,示范社区\n"
        status, resp = await county.request("PUT", "/api/v1/nodes/names", data=csv_names.encode(),
                                            headers={"Content-Type": "text/csv"})
        assert status == 200 and resp["stored"] == 2, resp

        async def named(code: str, want: str):
            async def check():
                _, body = await region.request("GET", "/api/v1/nodes/names")
                return body["names"].get(code) == want
            return check

        # Two hops up (county -> city -> region), with no node file at the region that lists them.
        await until(await named("450102001001", "示范社区"), 20, "the village's name at the region")
        _, body = await region.request("GET", "/api/v1/nodes/names")
        assert body["names"]["450102001"] == "民主街道"
        _, node = await region.request("GET", "/api/v1/nodes/450102001001")
        assert node["name"] == "示范社区" and node["tier"] == "village"
        # The bridges report what they forward.
        _, report = await county.request("GET", "/api/v1/bridge")
        assert report["bridge"]["node_names_forwarded"] >= 3  # the county itself and the two named nodes

        # A rename below replaces the old name up the tree; a name dropped below is dropped above.
        status, resp = await county.request("PUT", "/api/v1/nodes/names?replace=true",
                                            data="code,name\n450102001,民主路街道\n".encode(),
                                            headers={"Content-Type": "text/csv"})
        assert status == 200, resp
        await until(await named("450102001", "民主路街道"), 20, "the new name at the region")
        await until(await named("450102001001", None), 20, "the dropped name gone at the region")

        # A name the region gives itself wins over the one from below: its staff set it.
        status, resp = await region.request("PUT", "/api/v1/nodes/names", data=json.dumps({"450102001": "自定"}),
                                            headers={"Content-Type": "application/json"})
        assert status == 200, resp
        _, body = await region.request("GET", "/api/v1/nodes/names")
        assert body["names"]["450102001"] == "自定"
        _, body = await chain["4501"].gw.request("GET", "/api/v1/nodes/names")
        assert body["names"]["450102001"] == "民主路街道"  # the city keeps what came from below

        # A child names its own subtree only: what its bridge sends for other codes is not stored.
        r = chain["45"].redis()
        epoch = (await r.get("se:epoch")).decode()
        keys_ = ["se:epoch", "se:nodes:below:4599", "se:nodes:ver", "se:nodes:children"]
        stored = await TIER_SCRIPTS.run(r, lambda p: TIER_SCRIPTS.call(
            p, "names_put", keys_, [epoch, "4599", "4599001", "某街道", "4502001", "冒名"]))
        assert stored == [1]
        _, body = await region.request("GET", "/api/v1/nodes/names")
        assert body["names"]["4599001"] == "某街道" and "4502001" not in body["names"]
