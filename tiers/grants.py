"""Per-child uplink credentials: a Redis ACL user for each child tier, that reaches its own inbox only.

A grant makes user ``se-child-<node>`` on this tier's Redis with a random password, allowed the
commands a bridge needs (push a request, wait for its reply, pop frame requests, answer them) on the
keys under ``se:child:<node>:`` and nothing else: not the tokens, catalog, audit, events or another
child's keys. The password is shown once, inside the uplink URL; only its SHA-256 is kept (in
``se:grants``), from which the user is made again after a Redis restart (ACL users live in memory
unless the server has an aclfile). Revoking deletes the user and closes its connections at once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tiers.connect import is_sentinel_url, with_credentials
from tiers.contract import TierKeys
from tiers.nodes import NodeCodeError, normalize_node

__all__ = ["ACL_USER_PREFIX", "CHILD_COMMANDS", "Grant", "GrantError", "Grants", "uplink_url"]

ACL_USER_PREFIX = "se-child-"
# What a bridge sends: its request (DEL + RPUSH + EXPIRE of its inbox, BLPOP of the reply) and frame
# requests (BLPOP) with their replies (RPUSH + EXPIRE); stream requests (BLPOP), their reply items (RPUSH +
# EXPIRE) and the asker's acknowledgements (BLPOP) (tiers/relay.py). PING for health checks; AUTH/HELLO to log in.
CHILD_COMMANDS = ("ping", "auth", "hello", "select", "client|setname", "del", "rpush", "expire", "blpop")
PASSWORD_BYTES = 32


class GrantError(Exception):
    """A grant that cannot be made or found; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One child's credential, as kept (the password itself is never kept)."""

    node: str
    user: str
    granted_at: float
    by: str

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "user": self.user, "granted_at": self.granted_at, "by": self.by}


def uplink_url(base: str, user: str, password: str) -> str:
    """`base` (the URL children reach this tier's Redis at) with the child's user and password in it.

    A sentinel base (``redis+sentinel://h1:p1,h2:p2/<master>/<db>``) gets them as the master's credential; its
    query (the sentinels' own, discovery-only credential, if any) is kept."""
    if is_sentinel_url(base):
        return with_credentials(base, user, password)
    u = urlsplit(base)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path or "/0", u.query, ""))


class Grants:
    """Grant, list and revoke children's uplink credentials on this tier's Redis."""

    def __init__(self, redis: aioredis.Redis, node: str, prefix: str = "se") -> None:
        self.redis = redis
        self.node = node
        self.keys = TierKeys(prefix)

    def child_node(self, code: Any) -> str:
        """`code` normalised, when it lies strictly below this tier; else GrantError."""
        try:
            node = normalize_node(code)
        except NodeCodeError as e:
            raise GrantError(str(e)) from None
        if node == self.node or not node.startswith(self.node):
            raise GrantError(f"node {node} is not below this tier ({self.node}): only tiers below it can be granted")
        return node

    def _acl_rules(self, node: str, sha256: str) -> list[str]:
        return ["reset", "on", f"#{sha256}", f"~{self.keys.child_prefix(node)}*", "resetchannels", "-@all",
                *(f"+{c}" for c in CHILD_COMMANDS)]

    async def grant(self, code: Any, by: str) -> tuple[Grant, str]:
        """Make (or replace) the child's credential; returns it and the password, which is not kept."""
        node = self.child_node(code)
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        sha = hashlib.sha256(password.encode()).hexdigest()
        g = Grant(node, ACL_USER_PREFIX + node, time.time(), by)
        try:
            await self.redis.execute_command("ACL", "SETUSER", g.user, *self._acl_rules(node, sha))
        except ResponseError as e:
            raise GrantError(f"this tier's Redis refused to make the ACL user ({e}); Redis 6 or later is needed") \
                from None
        await self._kill(g.user)  # a replaced credential stops working at once
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.grants, node, json.dumps({**g.as_dict(), "sha256": sha}))
            p.sadd(self.keys.children, node)
            await p.execute()
        return g, password

    async def list(self) -> list[Grant]:
        """Every grant, by node."""
        raw = await self.redis.hgetall(self.keys.grants)
        out = []
        for _node, body in sorted(raw.items()):
            d = _record(body)
            if d is not None:
                out.append(Grant(d["node"], d["user"], float(d.get("granted_at", 0)), str(d.get("by", ""))))
        return out

    async def revoke(self, code: Any) -> Grant:
        """Delete the child's credential and close its connections; GrantError when there is none."""
        node = self.child_node(code)
        d = _record(await self.redis.hget(self.keys.grants, node))
        if d is None:
            raise GrantError(f"node {node} has no grant here")
        user = d["user"]
        try:
            await self.redis.execute_command("ACL", "DELUSER", user)
        except ResponseError:
            pass  # already gone (a Redis restart without an aclfile)
        await self._kill(user)
        k = self.keys
        async with self.redis.pipeline(transaction=True) as p:
            p.hdel(k.grants, node)
            p.srem(k.children, node)
            p.delete(k.child_inbox(node), k.rpc_queue(node), k.stream_queue(node))
            await p.execute()
        return Grant(node, user, float(d.get("granted_at", 0)), str(d.get("by", "")))

    async def restore(self) -> int:
        """Make every granted user that is missing again from its kept hash (after a Redis restart); how many."""
        raw = await self.redis.hgetall(self.keys.grants)
        n = 0
        for _node, body in raw.items():
            d = _record(body)
            if d is None or not d.get("sha256"):
                continue
            try:
                if await self.redis.execute_command("ACL", "GETUSER", d["user"]) is not None:
                    continue  # still there: left alone, its connections with it
                await self.redis.execute_command("ACL", "SETUSER", d["user"], *self._acl_rules(d["node"], d["sha256"]))
                n += 1
            except ResponseError:
                return n  # no ACLs on this server: nothing to restore
        return n

    async def acl_children(self) -> list[str]:
        """Nodes that have an ACL user on this Redis (granted, whether or not se:grants still says so)."""
        try:
            users = await self.redis.execute_command("ACL", "USERS")
        except ResponseError:
            return []  # a server without ACLs
        out = []
        for u in users:
            name = u.decode() if isinstance(u, bytes) else str(u)
            if name.startswith(ACL_USER_PREFIX):
                out.append(name[len(ACL_USER_PREFIX):])
        return out

    async def _kill(self, user: str) -> None:
        try:
            await self.redis.execute_command("CLIENT", "KILL", "USER", user)
        except ResponseError:
            pass  # no such user, or no connection of it


def _record(body: Any) -> dict[str, Any] | None:
    if body is None:
        return None
    try:
        d = json.loads(body)
    except ValueError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("node"), str) or not isinstance(d.get("user"), str):
        return None
    return d
