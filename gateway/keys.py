"""Typed application keys: every long-lived resource the app holds, in one place."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from analytics.pool import DetectorPool
from gateway.config import Settings
from gateway.events import EventHub, EventLog
from gateway.supervisor import StreamSupervisor
from registry.store import CameraStore
from registry.tokens import TokenStore
from tiers.access import Principal

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", CameraStore)
EVENTS = web.AppKey("events", EventLog)
HUB = web.AppKey("hub", EventHub)
POOL = web.AppKey("pool", DetectorPool)  # absent when no model is configured
SUPERVISOR = web.AppKey("supervisor", StreamSupervisor)
ADMIN_TOKEN_HASH = web.AppKey("admin_token_hash", bytes)
TOKENS = web.AppKey("tokens", TokenStore)

# Per request: who is calling (set by the auth middleware).
PRINCIPAL = web.RequestKey("principal", Principal)
