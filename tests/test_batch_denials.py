"""Rows of a batch reaching outside the caller's jurisdiction are audited like single requests (review L11).

A bulk camera import or a node-names upload with rows in another county used to be refused row by
row with no `access.denied` entry, so the admins over the node reached for never learnt of it, while
the same attempt as a single request was recorded. Real gateway, real Redis.
"""

from __future__ import annotations

from tests.gateway_fixtures import TOKEN, Gateway, until
from tests.test_access import HOME, OTHER, auth, new_token

FAR = "4502"  # another city


async def denials(gw: Gateway, token: str, want: int) -> list[dict]:
    async def got():
        status, body = await gw.request("GET", "/api/v1/audit?action=access.denied&limit=1000", headers=auth(token))
        assert status == 200, body
        return body["entries"] if len(body["entries"]) >= want else None

    return await until(got, 15, f"{want} access.denied entries")


async def test_bulk_rows_outside_the_jurisdiction_are_audited_for_the_nodes_reached_for(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw:
        admin_t = await new_token(gw, "home admin", "admin", HOME)
        other_t = await new_token(gw, "other admin", "admin", OTHER)
        admin = admin_t["token"]
        rows = [{"name": f"cam {i}", "node": node, "url": f"rtsp://127.0.0.1:1/c{i}", "enabled": False}
                for i, node in enumerate([HOME, OTHER, "450103001", FAR, HOME], start=1)]
        status, res = await gw.request("POST", "/api/v1/cameras/bulk", headers=auth(admin), json=rows)
        assert status == 200 and res["created"] == 2, res
        assert [r["status"] for r in res["results"]] == [201, 403, 403, 403, 201]
        # CSV takes the same path.
        csv = "name,node,url,enabled\nc6,450103,rtsp://127.0.0.1:1/c6,false\n"
        status, res = await gw.request("POST", "/api/v1/cameras/bulk", data=csv.encode(),
                                       headers={**auth(admin), "Content-Type": "text/csv"})
        assert status == 200 and res["failed"] == 1, res

        everything = await denials(gw, TOKEN, 3)
        assert len(everything) == 3, everything
        csv_entry, *json_entries = everything  # newest first
        by_node = {e["node"]: e for e in json_entries}
        assert set(by_node) == {OTHER, FAR}
        for e in everything:
            assert e["actor"]["id"] == admin_t["id"] and e["target"] == "/api/v1/cameras/bulk"
            assert e["detail"]["method"] == "POST" and e["detail"]["status"] == 403
            assert e["detail"]["why"] == "jurisdiction" and HOME in e["detail"]["reason"]
        # Rows 2 and 3 reached into the other county (one entry for its subtree), row 4 into another city.
        assert by_node[OTHER]["detail"]["refused"] == [2, 3] and by_node[OTHER]["detail"]["count"] == 2
        assert by_node[FAR]["detail"]["refused"] == [4]
        assert csv_entry["node"] == OTHER and csv_entry["detail"]["refused"] == [1]

        # The other county's admins see the attempts on their county; the caller's own admin scope does not.
        theirs = await denials(gw, other_t["token"], 2)
        assert {e["id"] for e in theirs} == {by_node[OTHER]["id"], csv_entry["id"]}
        status, mine = await gw.request("GET", "/api/v1/audit?action=access.denied", headers=auth(admin))
        assert status == 200 and mine["entries"] == []


async def test_node_names_outside_the_jurisdiction_are_audited(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw:
        admin_t = await new_token(gw, "home admin", "admin", HOME)
        other_t = await new_token(gw, "other admin", "admin", OTHER)
        body = f"code,name\n{HOME}001,Home town\n{OTHER},Other county\n{OTHER}001,Other town\n4501,Nanning\n"
        status, res = await gw.request("PUT", "/api/v1/nodes/names", data=body.encode(),
                                       headers={**auth(admin_t["token"]), "Content-Type": "text/csv"})
        assert status == 200 and res["stored"] == 1 and res["failed"] == 3, res

        everything = await denials(gw, TOKEN, 2)
        assert len(everything) == 2, everything
        by_node = {e["node"]: e for e in everything}
        # The other county and its town share one entry (for that county's admins); the city above
        # the caller's county is its own (for the city's admins).
        assert by_node[OTHER]["detail"]["refused"] == [OTHER, f"{OTHER}001"]
        assert by_node["4501"]["detail"]["refused"] == ["4501"]
        for e in everything:
            assert e["actor"]["id"] == admin_t["id"] and e["target"] == "/api/v1/nodes/names"
            assert e["detail"]["method"] == "PUT" and e["detail"]["why"] == "jurisdiction"
        theirs = await denials(gw, other_t["token"], 1)
        assert [e["id"] for e in theirs] == [by_node[OTHER]["id"]]
