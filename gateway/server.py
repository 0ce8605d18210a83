"""The HTTP server the gateway runs: aiohttp's, with a bound on how long a request head may take to arrive.

aiohttp closes a connection idle between requests after `keepalive_timeout`, but has no timeout of its own
for a request head that trickles in (slowloris): its keep-alive timer is armed when a connection opens and
after each response, never reset by data, so a half-sent head is only closed by it. `HeadTimeoutRunner`
adds `http_header_timeout_s`: a connection that has not completed its request head within that long after
it opened, or after it began sending a new one between requests, is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.config import Settings

log = logging.getLogger(__name__)


class _HeadTimeoutHandler(RequestHandler):
    """A RequestHandler that closes its connection when a request head is not complete in time."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_at_arm = 0

    def _arm(self) -> None:
        self._heads_at_arm = self._request_count
        self._head_timer = self._loop.call_later(self.header_timeout_s, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._request_count == self._heads_at_arm and not self._request_in_progress:
            self.__class__.closed_slow += 1
            log.info("closing a connection from %s: no complete request head within %g s",
                     _peer(self.transport), self.header_timeout_s)
            self.force_close()

    closed_slow = 0  # connections closed for a late request head, over all servers of this process

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # Between requests on a kept-alive connection, the first bytes of a new head start its clock.
        if self._head_timer is None and not self._request_in_progress and not self._messages:
            self._arm()
        super().data_received(data)
        if self._request_count > self._heads_at_arm:
            self._disarm()  # a whole head arrived (or a malformed one, answered with a 400)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else "?"


class _HeadTimeoutServer(web.Server):
    header_timeout_s = 10.0

    def __call__(self) -> RequestHandler:
        return _HeadTimeoutHandler(self, loop=self._loop, header_timeout_s=self.header_timeout_s, **self._kwargs)


class HeadTimeoutRunner(web.AppRunner):
    """An AppRunner whose connections close when their request head does not arrive within `header_timeout_s`."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _HeadTimeoutServer  # same state; only the protocol factory differs
        server.header_timeout_s = self._header_timeout_s
        return server


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner `sharp-eyes serve` and the demos serve the gateway with: access log, shutdown and timeouts."""
    from gateway.api.errors import AccessLogger

    return HeadTimeoutRunner(app, header_timeout_s=settings.http_header_timeout_s,
                             keepalive_timeout=settings.http_keepalive_timeout_s, access_log_class=AccessLogger,
                             handle_signals=False, shutdown_timeout=5)
