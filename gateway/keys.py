"""Typed application keys: every long-lived resource the app holds, in one place."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from aiohttp import web

from analytics.pool import DetectorPool
from gateway.analysis import AnalysisRunner
from gateway.audit import AuditLog
from gateway.config import Settings
from gateway.events import EventHub, EventLog
from gateway.ingest import DecodePool
from gateway.placement import Placement
from gateway.recordings import Recordings
from gateway.supervisor import StreamSupervisor
from gateway.web.frames import LiveFrames
from registry.store import CameraStore
from registry.tokens import RevocationWatch, TokenStore
from tiers.access import Principal
from tiers.bridge import Bridge
from tiers.grants import Grants
from tiers.intake import Intake
from tiers.relay import Relay
from tiers.rpc import FrameFetcher
from tiers.names import NodeNames

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", CameraStore)
EVENTS = web.AppKey("events", EventLog)
HUB = web.AppKey("hub", EventHub)
POOL = web.AppKey("pool", DetectorPool)  # absent when no model is configured
SUPERVISOR = web.AppKey("supervisor", StreamSupervisor)
DECODERS = web.AppKey("decoders", DecodePool)  # decode threads sized to the cores, shared by every camera
ANALYSIS = web.AppKey("analysis", AnalysisRunner)  # the analysis scheduler and its jobs
ANALYSIS_TASK = web.AppKey("analysis_task", asyncio.Task)
PLACEMENT = web.AppKey("placement", Placement)  # which gateway of the tier runs which camera (leases)
PLACEMENT_TASKS = web.AppKey("placement_tasks", list)  # its pass loop and its channel listener
ADMIN_TOKEN_HASH = web.AppKey("admin_token_hash", bytes)
TOKENS = web.AppKey("tokens", TokenStore)
REVOCATIONS = web.AppKey("revocations", RevocationWatch)  # open streams of revoked tokens are closed
AUDIT = web.AppKey("audit", AuditLog)
NODE_NAMES = web.AppKey("node_names", NodeNames)  # se:nodes, shared by the tier
LIVE = web.AppKey("live", LiveFrames)  # thumbnails and live views: shared encodes, open views
RECORDINGS = web.AppKey("recordings", Recordings)  # the recordings' store, per camera its recorder and live fMP4
RECORDINGS_TASK = web.AppKey("recordings_task", asyncio.Task)  # retention by age
EXPORTS_TASK = web.AppKey("recordings_exports_task", asyncio.Task)  # expires kept exports (gateway/exports.py)

FETCHER = web.AppKey("fetcher", FrameFetcher)  # newest frame of any camera of the subtree, as JPEG
RELAY = web.AppKey("relay", Relay)  # recordings, clips and live.mp4 of any camera of the subtree (tiers/relay.py)
BRIDGE = web.AppKey("bridge", Bridge)  # absent when no uplink is configured (a top tier)
INTAKE = web.AppKey("intake", Intake)  # checks and applies what child tiers send (every gateway runs one)
INTAKE_TASK = web.AppKey("intake_task", asyncio.Task)
GRANTS = web.AppKey("grants", Grants)  # child tiers' uplink credentials (Redis ACL users)
INTAKE_URL = web.AppKey("intake_url", str)  # where children reach this tier's Redis ("" when they cannot)

# Per request: who is calling (set by the auth middleware).
PRINCIPAL = web.RequestKey("principal", Principal)
