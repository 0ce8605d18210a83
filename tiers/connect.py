"""Redis clients from URLs, Redis Sentinel included.

Every Redis this project dials (the tier's own, ``--redis``; the parent's, ``--uplink``) is given as one URL:

- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path?db=N``: redis-py's
  ``Redis.from_url``, unchanged;
- ``redis+sentinel://[user:password@]host1:port1,host2:port2,.../<master-name>[/<db>][?query]`` and
  ``rediss+sentinel://...`` (TLS to the master): a client of whichever server the sentinels name master of
  ``<master-name>``, made by redis-py's own ``redis.asyncio.sentinel.Sentinel(hosts).master_for(name)``. It
  asks the sentinels again whenever a connection fails, so it follows a failover by itself. A sentinel
  without a port is on 26379; ``<db>`` is 0 when absent. The user and password are the master's (the same
  on its replicas). The sentinels' own credential, when they have one, and TLS to them are given in the
  query: ``sentinel_username``, ``sentinel_password``, ``sentinel_tls=true`` (TLS with the same CA as the
  master's). Nothing else is accepted in the query.

Writers that must not lose what they wrote when a replica is promoted ask ``replica_wait(client)``: for a
sentinel client it says how many replicas must acknowledge a batch (Redis ``WAIT``) before it counts as
written (see gateway/events.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from registry.urls import split_authority

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "NotReplicated",
    "ReplicaWait",
    "SENTINEL_SCHEMES",
    "SentinelRedis",
    "SentinelURL",
    "URL_SCHEMES",
    "blocking_client",
    "check_redis_url",
    "is_sentinel_url",
    "parse_sentinel_url",
    "redis_client",
    "replica_wait",
    "same_deployment",
    "strip_credentials",
    "with_credentials",
]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
URL_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_TIMEOUT_S = 5.0  # one question to one sentinel (they answer at once, or are down)
MAX_SENTINELS = 32
MAX_DB = 1_000_000
SENTINEL_QUERY = ("sentinel_username", "sentinel_password", "sentinel_tls")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")
_MASTER_NAME = re.compile(r"^[^\s\x00-\x1f\x7f/?#]{1,128}$")


# --------------------------------------------------------------------------- URLs


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def is_sentinel_url(url: str) -> bool:
    """True for ``redis+sentinel://`` and ``rediss+sentinel://`` URLs."""
    return isinstance(url, str) and _scheme(url) in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelURL:
    """A parsed sentinel URL; the passwords are kept out of repr (they end up in tracebacks)."""

    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_tls: bool = False


def _split(url: str) -> tuple[str, str, str, str, str]:
    """(scheme, userinfo, host list, path, query) the way urlsplit cuts them: the authority ends at the first
    "/", "?" or "#", and its userinfo at its last "@" (an unescaped "@" belongs to the password)."""
    scheme, _, rest = url.partition("://")
    authority, rest = split_authority(rest)
    rest, hash_, fragment = rest.partition("#")
    if hash_ and fragment:
        raise ValueError("sentinel URL must not have a #fragment")
    path, _, query = rest.partition("?")
    userinfo, _, hosts = authority.rpartition("@")
    return scheme.lower(), userinfo, hosts, path, query


def _host(item: str, n: int, total: int) -> tuple[str, int]:
    # Values are never quoted in messages: a password with an unescaped "/" would land here.
    where = f"sentinel URL: host {n} of {total}"
    if not item:
        raise ValueError(f"{where} is empty (hosts are separated by single commas)")
    if item.startswith("["):
        host, bracket, port = item[1:].partition("]")
        if not bracket:
            raise ValueError(f"{where} has an unclosed [IPv6 address]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{where} has an invalid IPv6 address") from None
        if port and not port.startswith(":"):
            raise ValueError(f"{where}: expected [IPv6]:PORT")
        port = port[1:] if port else None
    else:
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, None
        if ":" in host:
            raise ValueError(f"{where}: an IPv6 address must be written in brackets, [::1]:26379")
        if not host or not _HOSTNAME.match(host):
            raise ValueError(f"{where} is not a valid host name or IP address")
    if port is None:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{where} has a bad port (expected a number in 1..65535)")
    return host, int(port)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``redis[s]+sentinel://[user:password@]host[:port],.../<master-name>[/<db>][?query]``.

    Raises ValueError with a message that names what is wrong and never quotes the URL or its parts (they
    may hold a password).
    """
    if not isinstance(url, str) or not is_sentinel_url(url):
        raise ValueError("expected a redis+sentinel:// or rediss+sentinel:// URL")
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        raise ValueError("sentinel URL must not contain whitespace or control characters")
    scheme, userinfo, hostlist, path, query = _split(url)
    username = password = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep and pw else None
    if not hostlist:
        raise ValueError("sentinel URL has no sentinel hosts: expected host1:port1,host2:port2 after //")
    items = hostlist.split(",")
    if len(items) > MAX_SENTINELS:
        raise ValueError(f"sentinel URL has {len(items)} sentinel hosts; at most {MAX_SENTINELS}")
    hosts = tuple(_host(item, i + 1, len(items)) for i, item in enumerate(items))
    if len(set(hosts)) != len(hosts):
        raise ValueError("sentinel URL names one sentinel twice")
    parts = path.split("/")[1:] if path.startswith("/") else []
    if parts and parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]  # a trailing slash: /m/ or /m/0/
    master = unquote(parts[0]) if parts else ""
    if not master:
        raise ValueError("sentinel URL has no master name: expected .../<master-name>[/<db>] after the hosts")
    if not _MASTER_NAME.match(master):
        raise ValueError("sentinel URL master name must be 1..128 characters without spaces, control characters, "
                         "/, ? or #")
    if len(parts) > 2:
        raise ValueError("sentinel URL path has too many parts: expected /<master-name>[/<db>]")
    db = 0
    if len(parts) == 2:
        if not parts[1].isascii() or not parts[1].isdigit() or int(parts[1]) > MAX_DB:
            raise ValueError(f"sentinel URL db must be a number in 0..{MAX_DB}")
        db = int(parts[1])
    opts: dict[str, str] = {}
    if query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name not in SENTINEL_QUERY:
                raise ValueError("sentinel URL has an unknown query parameter; the query may hold only "
                                 + ", ".join(SENTINEL_QUERY))
            if name in opts:
                raise ValueError(f"sentinel URL gives {name} twice")
            opts[name] = value
    tls_opt = opts.get("sentinel_tls", "false").lower()
    if tls_opt not in _TRUE + _FALSE:
        raise ValueError("sentinel URL: sentinel_tls must be true or false")
    return SentinelURL(
        hosts=hosts, master=master, db=db, tls=scheme == "rediss+sentinel", username=username, password=password,
        sentinel_username=opts.get("sentinel_username") or None,
        sentinel_password=opts.get("sentinel_password") or None,
        sentinel_tls=tls_opt in _TRUE,
    )


def check_redis_url(url: str) -> str:
    """`url` unchanged when it is one this module can dial; else ValueError naming the problem."""
    if not isinstance(url, str) or _scheme(url) not in URL_SCHEMES:
        raise ValueError("expected a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL")
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    return url


def _hostlist(hosts: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)


def strip_credentials(url: str) -> str:
    """A sentinel URL without credentials: neither the master's user and password nor the sentinels' (the
    other query parameters, sentinel_tls, are kept)."""
    scheme, _userinfo, hostlist, path, query = _split(url)
    kept = [piece for piece in query.split("&") if piece and piece.partition("=")[0] not in
            ("sentinel_username", "sentinel_password")]
    return f"{scheme}://{hostlist}{path}" + (f"?{'&'.join(kept)}" if kept else "")


def with_credentials(url: str, user: str, password: str) -> str:
    """A sentinel URL with `user` and `password` as the master's credential (replacing any it had)."""
    scheme, _userinfo, hostlist, path, query = _split(url)
    return (f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{hostlist}{path or '/'}"
            + (f"?{query}" if query else ""))


def same_deployment(a: str | None, b: str | None) -> bool:
    """True when two URLs certainly reach the same data: the same string, or sentinel URLs that share a
    sentinel and name the same master and db (whatever the credentials)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if not (is_sentinel_url(a) and is_sentinel_url(b)):
        return False
    try:
        sa, sb = parse_sentinel_url(a), parse_sentinel_url(b)
    except ValueError:
        return False
    return sa.master == sb.master and sa.db == sb.db and bool(set(sa.hosts) & set(sb.hosts))


# --------------------------------------------------------------------------- clients


class NotReplicated(RedisError):
    """The primary took a batch but too few replicas acknowledged it in time: a failover could still lose it,
    so the writer keeps it and writes it again (idempotently)."""


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """How many replicas must acknowledge a batch (``WAIT replicas timeout_ms``) before it counts as written."""

    replicas: int
    timeout_ms: int

    def queue(self, pipe: Any) -> None:
        """Append the WAIT to a pipeline, after the batch's writes (it covers them: same connection)."""
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)

    def check(self, acked: Any) -> None:
        """Raise NotReplicated unless the WAIT's answer reached `replicas`."""
        if int(acked) < self.replicas:
            raise NotReplicated(f"{int(acked)} of {self.replicas} replicas acknowledged the batch within "
                                f"{self.timeout_ms} ms")


class SentinelRedis(aioredis.Redis):
    """A ``Sentinel.master_for`` client that also closes its sentinels' connections, and carries the WAIT
    policy of the writers that use it."""

    _se_sentinel: Sentinel | None = None
    _se_recipe: tuple[str, dict[str, Any]] | None = None
    replica_wait: ReplicaWait | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self._se_sentinel is not None:
                sentinel, self._se_sentinel = self._se_sentinel, None
                await sentinel.aclose()


def _sentinel_client(url: str, kwargs: dict[str, Any], wait_replicas: int, wait_timeout_ms: int) -> SentinelRedis:
    s = parse_sentinel_url(url)
    conn = dict(kwargs)
    ssl_opts = {k: conn[k] for k in list(conn) if k.startswith("ssl_")}
    if not s.tls:
        for k in ssl_opts:  # TLS options (the bridge's CA) mean nothing to a plain master connection
            conn.pop(k)
    timeout = conn.get("socket_timeout")
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": min(timeout, SENTINEL_TIMEOUT_S) if timeout else SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": conn.get("socket_connect_timeout") or SENTINEL_TIMEOUT_S,
    }
    if s.sentinel_username:
        sentinel_kwargs["username"] = s.sentinel_username
    if s.sentinel_password:
        sentinel_kwargs["password"] = s.sentinel_password
    if s.sentinel_tls:
        sentinel_kwargs.update(ssl=True, **ssl_opts)
    sentinel = Sentinel(list(s.hosts), sentinel_kwargs=sentinel_kwargs)
    if s.username:
        conn["username"] = s.username
    if s.password:
        conn["password"] = s.password
    if s.tls:
        conn["ssl"] = True  # SentinelConnectionPool then makes SentinelManagedSSLConnection
    client = sentinel.master_for(s.master, redis_class=SentinelRedis, db=s.db, **conn)
    client._se_sentinel = sentinel
    client._se_recipe = (url, dict(kwargs))
    client.replica_wait = ReplicaWait(wait_replicas, wait_timeout_ms) if wait_replicas > 0 else None
    return client


def redis_client(url: str, *, wait_replicas: int = 1, wait_timeout_ms: int = 1000, **kwargs: Any) -> aioredis.Redis:
    """A client for `url` (any form in the module's docstring); `kwargs` are connection options (socket_timeout,
    health_check_interval, ssl_ca_certs, ...). For a sentinel URL, writers that ask ``replica_wait(client)``
    wait for `wait_replicas` replicas (at most `wait_timeout_ms` per batch); 0: they do not wait."""
    check_redis_url(url)
    if is_sentinel_url(url):
        return _sentinel_client(url, kwargs, wait_replicas, wait_timeout_ms)
    client = aioredis.Redis.from_url(url, **kwargs)
    client._se_recipe = (url, dict(kwargs))  # type: ignore[attr-defined]
    return client


def blocking_client(client: aioredis.Redis, socket_timeout: float) -> aioredis.Redis:
    """A second client to the same Redis with its own connections and another socket timeout (for blocking
    pops, which hold a connection while they wait); for a sentinel client, one with its own sentinels too.
    Close it with ``aclose()``."""
    recipe = getattr(client, "_se_recipe", None)
    if recipe is not None:
        url, kwargs = recipe
        return redis_client(url, wait_replicas=0, **{**kwargs, "socket_timeout": socket_timeout})
    pool = client.connection_pool  # a client made elsewhere (tests): copy its pool's settings
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(
        connection_class=pool.connection_class, **{**pool.connection_kwargs, "socket_timeout": socket_timeout}))


def replica_wait(client: aioredis.Redis) -> ReplicaWait | None:
    """The WAIT a writer on `client` should append to its batches; None for clients without replicas to wait
    for (plain URLs, or wait_replicas=0)."""
    wait = getattr(client, "replica_wait", None)
    return wait if isinstance(wait, ReplicaWait) else None
