"""A token never outlives, out-ranks or out-reaches the token that made it (review: trust between tiers, M3).

A 60 s admin token used to mint permanent admin tokens that kept working after it was revoked. Now a
token's lifetime is capped at its creator's, and revoking (or the expiry of) a token ends every token
made with it, transitively, at once and on open streams too. Real gateway, real Redis.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from gateway import keys
from registry.tokens import token_hash
from tests.gateway_fixtures import TOKEN, Gateway, closed_by_server, until
from tests.test_access import HOME, OTHER, auth

FAR = "4502"  # another city


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def make(gw: Gateway, by: str, role: str, node: str = HOME, **extra) -> tuple[int, dict]:
    return await gw.request("POST", "/api/v1/tokens", headers=auth(by),
                            json={"name": f"{role} by {by[:6]}", "role": role, "node": node, **extra})


async def whoami(gw: Gateway, token: str) -> int:
    return (await gw.request("GET", "/api/v1/whoami", headers=auth(token)))[0]


async def pttl(gw: Gateway, raw: str) -> int:
    return await gw.app[keys.REDIS].pttl("se:tokh:" + token_hash(raw))


async def test_a_token_ends_no_later_than_its_creator_and_never_reaches_further(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw:
        status, short = await make(gw, TOKEN, "admin", expires_in_s=60)
        assert status == 201, short
        short_end = ts(short["expires_at"])

        # Without a lifetime, or with a longer one, a token made by it ends when it does, and says so.
        for extra in ({}, {"expires_in_s": 3600}):
            status, child = await make(gw, short["token"], "admin", **extra)
            assert status == 201, child
            assert child["expires_at"] is not None and ts(child["expires_at"]) <= short_end + 0.002, (extra, child)
            assert child["expires_capped"] is True
            assert 0 < await pttl(gw, child["token"]) <= await pttl(gw, short["token"]) + 5
        # A shorter lifetime is kept as asked.
        status, brief = await make(gw, short["token"], "viewer", expires_in_s=10)
        assert status == 201 and brief["expires_capped"] is False
        assert 9 <= ts(brief["expires_at"]) - ts(brief["created_at"]) <= 10.01

        # The built-in admin token has no end: its tokens last until revoked.
        status, forever = await make(gw, TOKEN, "admin")
        assert status == 201 and forever["expires_at"] is None and await pttl(gw, forever["token"]) == -1
        status, grand = await make(gw, forever["token"], "operator")
        assert status == 201 and grand["expires_at"] is None and grand["expires_capped"] is False

        # Not beyond its jurisdiction (beside it or above it), not above its role.
        for node in (OTHER, "4501", FAR):
            status, body = await make(gw, short["token"], "viewer", node=node)
            assert status == 403 and "jurisdiction" in body["error"]["message"], (node, body)
        status, op = await make(gw, TOKEN, "operator")
        assert status == 201
        status, body = await make(gw, op["token"], "viewer")
        assert status == 403, body


async def test_revoking_a_token_ends_the_tokens_it_made_at_once_and_their_streams(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw, make_gateway(redis_url, node="45") as peer:
        # bootstrap -> county admin -> deputy admin -> duty operator (and a sibling made by the county admin)
        status, county = await make(gw, TOKEN, "admin")
        assert status == 201
        status, deputy = await make(gw, county["token"], "admin")
        assert status == 201 and deputy["created_by"] == county["id"]
        status, duty = await make(gw, deputy["token"], "operator", node="450102001")
        assert status == 201
        status, wall = await make(gw, county["token"], "viewer")
        assert status == 201
        status, other = await make(gw, TOKEN, "admin")  # made by someone else: unaffected
        assert status == 201
        for t in (county, deputy, duty, wall, other):
            assert await whoami(gw, t["token"]) == 200

        ws = await gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"since": "45-0-0"},
                                         headers=auth(duty["token"]))
        status, body = await gw.request("DELETE", f"/api/v1/tokens/{county['id']}")
        assert status == 200 and body["revoked"] == county["id"], body
        assert sorted(body["also_revoked"]) == sorted([deputy["id"], duty["id"], wall["id"]])
        # The very next request of every token made with it, directly or not, is refused, on every process.
        for g in (gw, peer):
            for t in (county, deputy, duty, wall):
                assert await whoami(g, t["token"]) == 401, t["name"]
            assert await whoami(g, other["token"]) == 200
        # The descendant's open stream closes too.
        await closed_by_server(ws)

        # Listed as revoked, and each revocation is in the audit trail.
        _, listing = await gw.request("GET", "/api/v1/tokens?active=false")
        assert {t["id"] for t in listing["tokens"]} == {county["id"], deputy["id"], duty["id"], wall["id"]}

        async def revocations():
            _, got = await gw.request("GET", "/api/v1/audit?action=token.revoke&limit=100")
            return got["entries"] if len(got["entries"]) >= 4 else None

        entries = await until(revocations, 15, "four token.revoke entries")
        assert {e["target"] for e in entries} == {county["id"], deputy["id"], duty["id"], wall["id"]}
        assert all(e["detail"].get("with") == county["id"] for e in entries if e["target"] != county["id"])


async def test_a_token_stops_with_its_creator_even_if_its_own_record_was_never_touched(redis_url, make_gateway):
    """The chain is checked on every request: a revocation needs no cascade to take effect, and a
    creator's expiry ends its tokens at the same moment."""
    async with make_gateway(redis_url, node="45") as gw:
        status, parent = await make(gw, TOKEN, "admin")
        assert status == 201
        status, child = await make(gw, parent["token"], "admin")
        assert status == 201
        status, grandchild = await make(gw, child["token"], "viewer")
        assert status == 201
        # As if the parent were revoked by a process that died before marking its descendants.
        await gw.app[keys.REDIS].delete("se:tokh:" + token_hash(parent["token"]))
        assert await whoami(gw, child["token"]) == 401
        assert await whoami(gw, grandchild["token"]) == 401
        status, _ = await make(gw, child["token"], "viewer")
        assert status == 401

        status, brief = await make(gw, TOKEN, "admin", expires_in_s=3)
        assert status == 201
        status, made = await make(gw, brief["token"], "admin")
        assert status == 201 and ts(made["expires_at"]) <= ts(brief["expires_at"]) + 0.002
        assert await whoami(gw, made["token"]) == 200
        deadline = ts(brief["expires_at"])
        await asyncio.sleep(max(0.0, deadline - time.time()) + 0.3)
        assert await whoami(gw, brief["token"]) == 401
        assert await whoami(gw, made["token"]) == 401
