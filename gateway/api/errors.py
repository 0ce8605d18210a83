"""JSON errors and an access log that never prints query strings."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pydantic import ValidationError
from redis.exceptions import RedisError

from registry.urls import scrub

log = logging.getLogger(__name__)

JSON_BODY_MAX = 1 << 20  # a JSON request body, unless the handler allows more
PAGE_DEFAULT, PAGE_MAX = 100, 1000  # items per page of a listing: when not asked, and at most


def error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error body: {"error": {"status", "message", ...}}."""
    body = {"error": {"status": status, "message": message, **extra}}
    return web.json_response(body, status=status)


def validation_error(e: ValidationError, prefix: str = "") -> web.Response:
    """422 listing each failing field by its path."""
    fields = []
    for err in e.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        fields.append({"field": f"{prefix}{path}" if path else prefix.rstrip(".") or "(body)", "message": scrub(msg)})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return error(422, f"invalid camera: {summary}", fields=fields)


async def read_json(request: web.Request, max_bytes: int = JSON_BODY_MAX) -> Any:
    """Parse the body as JSON or raise a 400/413 with the reason."""
    if request.content_length and request.content_length > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=request.content_length)
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON body: {e}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON body: nested too deeply") from None


def query_int(request: web.Request, name: str, default: int | None, lo: int, hi: int, *, why: str = "") -> int | None:
    """An integer query parameter within [lo, hi]; absent or empty gives `default`; otherwise a 400 naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}{why}")
    return value


class ApiError(Exception):
    """Raised by handlers to answer with a JSON error."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class AccessDenied(ApiError):
    """A refusal on role or jurisdiction (a 403, or a 404 that hides what lies elsewhere); it is audited.

    `node` is the node the caller tried to reach, when there is one: the audit entry belongs to the
    admins over that node, so a hidden 404 does not tell the caller's own admins what exists elsewhere.
    """

    def __init__(self, status: int, message: str, *, why: str, node: str | None = None) -> None:
        super().__init__(status, message)
        self.why = why  # "role" | "jurisdiction"
        self.node = node


def hash_token(token: str) -> bytes:
    """Tokens are kept only as their SHA-256."""
    return hashlib.sha256(token.encode()).digest()


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Turn every failure into a JSON error; never a bare 500 page, never a secret."""
    try:
        return await handler(request)
    except ApiError as e:
        return error(e.status, e.message, **e.extra)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        return error(e.status, e.reason)
    except ValidationError as e:
        return validation_error(e)
    except (RedisError, ConnectionError) as e:
        log.warning("storage unavailable for %s %s: %s", request.method, request.path, type(e).__name__)
        return error(503, "storage (Redis) unavailable; retry shortly", retry_after=2)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error(500, "internal error")


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query: it may hold a token), status, size, time.

    Each line's level follows its status, so the default level (INFO) keeps what an operator needs
    without a line per thumbnail: refused requests (4xx, 401s included: they are not audited) at
    INFO, failures (5xx) at WARNING, successful ones at DEBUG.
    """

    @staticmethod
    def level(status: int) -> int:
        if status >= 500:
            return logging.WARNING
        if status >= 400:
            return logging.INFO
        return logging.DEBUG

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        level = self.level(response.status)
        if self.logger.isEnabledFor(level):
            self.logger.log(level, '%s "%s %s" %s %s %.3fs', request.remote, request.method, request.path,
                            response.status, response.body_length, time)
