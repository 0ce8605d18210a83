"""Access tokens stored hashed in Redis, each with a role and a jurisdiction. (Being built: issue 3.)"""

from __future__ import annotations

import redis.asyncio as aioredis

from tiers.access import Principal


class TokenStore:
    """Creates, lists, verifies and revokes tokens; only SHA-256 hashes are stored."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "se") -> None:
        self.redis = redis
        self.prefix = prefix

    async def verify(self, raw: str) -> Principal | None:
        """The principal for a raw token, or None when unknown or revoked."""
        return None
