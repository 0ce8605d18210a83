"""Fixtures for a real RTSP camera: GStreamer's RTSP server (system Python) serving sample files.

Registered in tests/conftest.py. Usage::

    @pytest.mark.rtsp
    def test_camera(rtsp_server, street_clip):
        server = rtsp_server({"street": street_clip})   # started, on a free port
        url = server.url("street")                       # rtsp://127.0.0.1:PORT/street
        server.kill(); server.restart()                  # camera dies / comes back, same URL

Tests that use them are skipped, with the reason, on a machine without the server
(``sample_streams.rtsp.find_rtsp_support``); CI installs it, so nothing is skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from sample_streams.rtsp import RtspServer, RtspServerError, find_rtsp_support
from tests.servers import free_port, missing

#: FFmpeg/PyAV options for reading the test server: TCP (no UDP port juggling), 5 s socket timeout.
RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}

RtspServerFactory = Callable[..., RtspServer]


@pytest.fixture(scope="session")
def rtsp_support() -> None:
    """Skips the test, printing why, when this machine cannot run GStreamer's RTSP server."""
    reason = find_rtsp_support()
    if reason:
        missing(f"RTSP server unavailable: {reason}")


@pytest.fixture
def rtsp_server(rtsp_support) -> Iterator[RtspServerFactory]:
    """Factory: ``rtsp_server(mounts, port=None, **kw) -> RtspServer``, started and stopped after the test.

    ``mounts`` maps a mount name to an MP4 (H.264) file; the server listens on 127.0.0.1 on a
    free port unless ``port`` is given; keyword arguments go to :class:`RtspServer` (for example
    ``verbose=True`` to log client connections into ``server.stderr``).
    """
    servers: list[RtspServer] = []

    def start(mounts: Mapping[str, str | os.PathLike], port: int | None = None, **kwargs) -> RtspServer:
        attempts = 1 if port else 3  # a free port can be taken between picking and binding it
        for attempt in range(attempts):
            server = RtspServer(**kwargs)
            servers.append(server)
            try:
                return server.start(port or free_port(), {name: Path(p) for name, p in mounts.items()})
            except RtspServerError as exc:
                if attempt + 1 == attempts or "Address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def rtsp_street(rtsp_server, street_clip) -> RtspServer:
    """A running RTSP server serving the 720p street clip at mount ``street`` (``rtsp_street.url("street")``)."""
    return rtsp_server({"street": street_clip})
