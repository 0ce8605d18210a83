"""The OpenAPI 3.1 description at /api/v1/openapi.json: valid, true to the router, and true to the gateway.

A client generated from the description, or a tester reading it, depends on three things: it is a valid
OpenAPI 3.1 document; it describes every route the gateway serves and nothing it does not (a route added
without its description fails here); and what the gateway answers matches it. The last is checked by
fuzzing (schemathesis): every operation, with tokens of each role (and none), valid and invalid inputs,
then sequences along the description's links (create, then read, change, watch, delete), against a real
gateway on a real port with a real Redis. No answer may be a 5xx (but the described 503 of a camera that
has no picture to give), every answer's status, content type, headers and body must be the described ones,
and the gateway may log no error. The run is seeded (the same cases each time) and bounded (about 35 s
here).

Safety: the fuzzed requests reach only this machine. Every source URL in a body (anything holding
"://") is rewritten to a closed port on 127.0.0.1 before it is sent, and checked again by the gateway's
own parsers just before sending, so no camera the fuzzer registers dials any other host.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import gc
import io
import json
import logging
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import cv2
import jsonschema
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from openapi_spec_validator import validate as validate_openapi
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from analytics.events import Event, Origin, iso_ms
from gateway import keys
from gateway.api import openapi
from gateway.app import build_app
from gateway.config import load_settings
from registry.bulk import BulkError, parse_bulk_csv
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN

NODE = "450102"
TOWNSHIP = "450102001"
CLIP = "moving_objects.mp4"
NOT_DESCRIBED = {"/", "/static"}  # the control-room page and its files (see gateway/api/openapi.py)
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
# Per operation and token: generated cases with valid inputs, and with inputs the description forbids.
POSITIVE_EXAMPLES = 25
NEGATIVE_EXAMPLES = 12
ANONYMOUS_EXAMPLES = 1  # without a token every /api/v1 answer is the same 401
SCENARIOS, SCENARIO_STEPS = 20, 8  # sequences along the description's links, and calls in each
REQUEST_TIMEOUT_S = 10.0
STREAM_READ_S = 0.2  # an event stream is read this long, then the client hangs up
# A guard against a run that grows without bound (a request that hangs until its timeout, endless retries),
# not a speed check: the same run took 60-80 s on one 2-core machine and 144 s on a slower one.
FUZZ_BUDGET_S = 300.0
URL_KEYS = ("url", "substream_url")
# Path values the router sends elsewhere: /api/v1/events/ws is not the event "ws".
ROUTED_ELSEWHERE = {"event_id": {"ws", "stream"}}
BULK = "POST /api/v1/cameras/bulk"
NDJSON = "application/x-ndjson"
# A camera's picture while the camera has none to give (disabled, starting, offline, every live view taken) is
# the described 503 with the reason: the camera's state, not the gateway failing.
PICTURES = {"/api/v1/cameras/{camera_id}/snapshot.jpg", "/api/v1/cameras/{camera_id}/live.mjpeg",
            "/api/v1/cameras/{camera_id}/live.mp4"}


@schemathesis.serializer("application/csv")
def _csv_body(ctx: Any, value: Any) -> bytes:
    """Bulk and node-name bodies may be sent as application/csv: generated as text, sent as UTF-8."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, but a camera picture's described 503 while the camera has no picture; Redis is up throughout,
    so a 503 for storage (or any other 5xx) is a fault."""
    if response.status_code == 503 and case.operation.path in PICTURES:
        if "Redis" not in response.json()["error"]["message"]:
            return True
    return not_a_server_error(ctx, response, case)


def ndjson_lines_conform(doc: dict[str, Any]) -> Callable[..., bool | None]:
    """A check: each line of a bulk import's progress stream is a described BulkLine (schemathesis reads no
    NDJSON), and the last is the result."""
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/BulkLine",
                                                 "components": doc["components"]})

    def check(ctx: Any, response: Any, case: Any) -> bool | None:
        if not response.headers.get("content-type", [""])[0].startswith(NDJSON):
            return None
        lines = response.content.decode().splitlines()
        assert lines, "an empty progress stream"
        for line in lines:
            validator.validate(json.loads(line))
        assert "result" in json.loads(lines[-1]), "the stream does not end with the result"
        return True

    return check


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def _build() -> Any:
    settings = load_settings(None, node=NODE, redis="redis://127.0.0.1:9/0", data_dir=Path("/nonexistent"),
                             admin_token=TOKEN, gateway_id="test-gw")
    return build_app(settings, TOKEN)  # not started: the router is complete once built


def routed_operations(app: Any) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app answers, but the page's; HEAD is implied by its GET."""
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    heads = {(m, p) for m, p in routes if m == "HEAD"}
    assert all(("GET", p) in routes for _, p in heads), "a HEAD route without its GET"
    return {(m, p) for m, p in routes - heads if p not in NOT_DESCRIBED}


def described_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the description."""
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def test_description_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1.")
    validate_openapi(doc)  # raises with the path of the first fault


def test_every_route_is_described_and_every_described_operation_is_routed() -> None:
    routed, described = routed_operations(_build()), described_operations(openapi.document())
    assert not routed - described, \
        f"routes the description lacks (describe them in gateway/api/openapi.py): {sorted(routed - described)}"
    assert not described - routed, f"described operations no route serves: {sorted(described - routed)}"


def test_every_operation_names_its_role_and_the_refusals_of_its_token() -> None:
    for path, item in openapi.document()["paths"].items():
        for method, op in ((m, o) for m, o in item.items() if m in METHODS):
            if op["security"]:
                assert {"401", "503"} <= set(op["responses"]), (method, path)
                assert op["x-role"] in ("viewer", "operator", "admin"), (method, path)
            if op.get("x-role") in ("operator", "admin"):
                assert "403" in op["responses"], f"{method} {path}: a lower role is refused with 403"


# ---- fuzzing ----------------------------------------------------------------------------------------------

@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nothing else takes it), never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@dataclass
class Targets:
    """What the fuzzer aims at besides random values: things that exist, so answers go past the 404."""

    safe_urls: tuple[str, ...]
    read: dict[str, list[str]] = field(default_factory=dict)  # path parameter -> values for reading
    change: dict[str, list[str]] = field(default_factory=dict)  # ... for changing (the running camera spared)
    query: dict[str, list[str]] = field(default_factory=dict)  # query parameter -> values
    spare_token: str = ""  # a token the fuzzer may revoke ...
    own_tokens: set[str] = field(default_factory=set)  # ... in place of the ones it calls with


def _jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((72, 128, 3), 90, np.uint8))
    assert ok
    return buf.tobytes()


async def _seed(gw: Any, port: int, own_tokens: set[str]) -> Targets:
    """A running file camera, an unreachable one, a disabled one, an event with a snapshot, a spare token."""
    urls = (f"rtsp://127.0.0.1:{port}/fuzz", f"rtsp://fuzz:secret@127.0.0.1:{port}/sub?token=abc")
    running = await gw.add_camera(name="running", node=NODE, url=f"file:{CLIP}", analytics={"fps": 1},
                                  recording={"mode": "continuous"})  # its recordings and event clips play back
    unreachable = await gw.add_camera(name="unreachable", node=TOWNSHIP, url=urls[1])
    disabled = await gw.add_camera(name="disabled", node=NODE, url=urls[0], enabled=False)
    await gw.wait_state(running["id"], "online")
    events = gw.app[keys.EVENTS]
    events.publish(Event(type="detection", camera_id=running["id"], node=NODE, ts=iso_ms(time.time()),
                         origin=Origin(NODE, "test-gw"), label="person", score=0.9, box=(0.1, 0.2, 0.5, 0.9),
                         track_id=1, phase="start"), _jpeg())
    assert await events.flush(timeout=5)
    status, page = await gw.request("GET", "/api/v1/events", params={"type": "detection", "limit": "1"})
    assert status == 200 and page["events"], page
    detection = page["events"][0]["id"]
    status, page = await gw.request("GET", "/api/v1/events", params={"limit": "1000"})
    oldest = page["events"][-1]["id"]  # streams resumed after it send every other event at once
    status, spare = await gw.request("POST", "/api/v1/tokens", json={"name": "spare", "role": "viewer"})
    assert status == 201, spare
    status, grant = await gw.request("POST", "/api/v1/tiers/children", json={"node": TOWNSHIP})
    assert status == 201, grant  # a child tier's credential, for its revoke to find
    cameras = [running["id"], unreachable["id"], disabled["id"]]
    nodes = [NODE, TOWNSHIP, "45", "450000", "450103"]
    return Targets(
        safe_urls=urls, spare_token=spare["id"], own_tokens=own_tokens,
        read={"camera_id": cameras, "event_id": [detection], "token_id": [spare["id"]], "code": nodes},
        change={"camera_id": cameras[1:], "event_id": [detection], "token_id": [spare["id"]], "code": nodes,
                "node": [TOWNSHIP]},
        query={"since": [oldest, detection], "before": [detection], "camera": [running["id"]],
               "start": [iso_ms(time.time() - 20)]})


async def _tokens(gw: Any) -> tuple[dict[str, str | None], set[str]]:
    """A token of each role over the tier's node, an admin of a township below it, and none; and their ids."""
    out: dict[str, str | None] = {}
    ids: set[str] = set()
    for name, role, node in (("admin", "admin", NODE), ("operator", "operator", NODE), ("viewer", "viewer", NODE),
                             ("township admin", "admin", TOWNSHIP)):
        status, body = await gw.request("POST", "/api/v1/tokens", json={"name": f"fuzz {name}", "role": role,
                                                                         "node": node})
        assert status == 201, body
        out[name] = body["token"]
        ids.add(body["id"])
    out["anonymous"] = None
    return out, ids


class EndlessStreamsHeadOnly(requests.Session):
    """Reads a live view (endless multipart JPEG, or fragmented MP4 without a length) only up to its head, then
    hangs up: its body never ends."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        resp = super().request(*args, **kwargs)
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("multipart/x-mixed-replace") or (ctype == "video/mp4"
                                                             and "Content-Length" not in resp.headers):
            resp._content = b""  # noqa: SLF001 (the parts are JPEG frames: nothing the description types)
            resp.close()  # the gateway sees the viewer leave and frees the view
        return resp


def _safe_text(value: str, urls: tuple[str, ...]) -> str:
    # Anything URL-like goes to the closed port; which of the safe forms is picked varies with the value.
    return urls[len(value) % len(urls)] if "://" in value else value


def _safe_json(value: Any, urls: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: (urls[0] if k in URL_KEYS and isinstance(v, str) else _safe_json(v, urls))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_safe_json(v, urls) for v in value]
    return _safe_text(value, urls) if isinstance(value, str) else value


def _safe_csv(text: str, urls: tuple[str, ...]) -> str:
    if "://" not in text:
        return text  # a CSV cell is contiguous in its text (quotes aside): no cell can hold a URL
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        return "name,node,url\n"  # the gateway refuses what strict parsing refuses: send nothing it could dial
    out = io.StringIO()
    csv.writer(out).writerows([[_safe_text(c, urls) for c in row] for row in rows])
    return out.getvalue()


def _assert_local(case: Any, port: int) -> None:
    """The last guard before sending: every source the gateway could read from the body is this machine's
    closed port (or not a URL it would dial)."""
    body = case.body
    rows: list[Any] = []
    if isinstance(body, str) and case.media_type and "csv" in case.media_type:
        try:
            rows = parse_bulk_csv(body)
        except BulkError:
            rows = []
    elif isinstance(body, (dict, list)):
        rows = body if isinstance(body, list) else [body]

    def strings(v: Any) -> Iterator[str]:
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)

    for s in strings(rows):
        if "://" in s:
            parts = urlsplit(s)
            assert (parts.hostname, parts.port) == ("127.0.0.1", port), f"unsafe URL would be sent: {s!r}"


def _make_safe(case: Any, targets: Targets, port: int) -> None:
    if case.path_parameters and case.path_parameters.get("token_id") in targets.own_tokens:
        # An id read from a listing: revoking the token the fuzzer calls with would leave it nothing but 401s.
        case.path_parameters = {**case.path_parameters, "token_id": targets.spare_token}
    if isinstance(case.body, (dict, list)):
        case.body = _safe_json(case.body, targets.safe_urls)
    elif isinstance(case.body, str) and case.media_type and "csv" in case.media_type:
        case.body = _safe_csv(case.body, targets.safe_urls)
    _assert_local(case, port)


def _biased(op: Any, mode: GenerationMode, values: dict[str, list[str]], query: dict[str, list[str]]) -> Any:
    """The operation's cases, half of them aimed at things that exist (path and query values, the tier's node in
    bodies)."""
    plain = op.as_strategy(generation_mode=mode)
    aimed = [op.as_strategy(generation_mode=mode, path_parameters={p.name: v})
             for p in op.path_parameters for v in values.get(p.name, [])]
    aimed += [op.as_strategy(generation_mode=mode, query={p.name: v}) for p in op.query for v in query.get(p.name, [])]
    # Both aimed at once: a recording's window of a camera that records (neither alone finds one).
    aimed += [op.as_strategy(generation_mode=mode, path_parameters={p.name: v}, query={q.name: w})
              for p in op.path_parameters for v in values.get(p.name, [])
              for q in op.query if q.is_required for w in query.get(q.name, [])]

    def in_tree(case: Any) -> Any:
        # A created camera or token needs a node in the jurisdiction, a granted tier one below this tier's:
        # random digits seldom are one.
        if isinstance(case.body, dict) and "node" in case.body:
            case.body = {**case.body, "node": TOWNSHIP if op.path.startswith("/api/v1/tiers/") else NODE}
        elif isinstance(case.body, list):
            case.body = [{**r, "node": TOWNSHIP} if isinstance(r, dict) else r for r in case.body]
        elif isinstance(case.body, str) and case.media_type and "csv" in case.media_type:
            case.body = "name,node,url,enabled,fps,labels\n" + case.body
        return case

    strategy = st.one_of(plain, *aimed) if aimed else st.one_of(plain, plain.map(in_tree))

    def routed_here(case: Any) -> bool:
        return not any(case.path_parameters.get(n) in v for n, v in ROUTED_ELSEWHERE.items())

    return strategy.filter(routed_here)


def _settings(examples: int, **extra: Any) -> settings:
    """Bounded and reproducible: the same cases on every run, no example database, no shrinking."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                    verbosity=Verbosity.quiet, **extra)


def _schema(doc: dict[str, Any]) -> Any:
    # The tokens are ours to choose: generated (or left out) Authorization headers would make most cases 401s.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_dict(doc, config=config)


def _timeout(case: Any) -> float:
    return STREAM_READ_S if case.operation.path == "/api/v1/events/stream" else REQUEST_TIMEOUT_S


Tally = collections.Counter  # (operation label, status) -> answers


def _scenarios(base: str, doc: dict[str, Any], token: str, targets: Targets, port: int, tally: Tally) -> list[str]:
    """Sequences along the description's links, as an admin: create a camera or a token, then read, change,
    watch and delete what was created."""
    headers = {"Authorization": f"Bearer {token}"}
    session = EndlessStreamsHeadOnly()

    class Scenario(_schema(doc).as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            if isinstance(case.body, dict) and case.operation.method.upper() == "POST":
                case.body = {**case.body, "node": NODE}  # created in the jurisdiction, so that its links are followed
            _make_safe(case, targets, port)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base, "session": session, "headers": headers, "timeout": _timeout(case)}

        def after_call(self, response: Any, case: Any) -> None:
            tally[case.operation.label, response.status_code] += 1

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        Scenario.run(settings=_settings(SCENARIOS, stateful_step_count=SCENARIO_STEPS))
    except FlakyStrategyDefinition:
        # Which steps can follow depends on what the live gateway answered before (a created camera, or a 409):
        # when a replayed prefix is answered differently, Hypothesis stops. What was sent had been checked.
        pass
    except (FailureGroup, Exception) as e:  # noqa: BLE001 (reported with the others)
        return [f"scenario along the links: {e}"]
    finally:
        session.close()
    return []


def _fuzz(base: str, doc: dict[str, Any], tokens: dict[str, str | None], targets: Targets, port: int,
          tally: Tally) -> list[str]:
    """Every operation with every token, valid and invalid inputs; returns the failures."""
    failures: list[str] = []
    session = EndlessStreamsHeadOnly()
    checks = [*CHECKS, ndjson_lines_conform(doc)]
    for result in _schema(doc).get_all_operations():
        op = result.ok()
        values = targets.change if op.method.upper() in ("POST", "PUT", "PATCH", "DELETE") else targets.read
        for who, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            runs = [(GenerationMode.POSITIVE, ANONYMOUS_EXAMPLES if token is None else POSITIVE_EXAMPLES)]
            if token is not None and (op.path_parameters or op.query or op.headers or op.body):
                runs.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
            for mode, examples in runs:

                @_settings(examples)
                @given(case=_biased(op, mode, values, targets.query), progress=st.booleans())
                def check(case: Any, progress: bool) -> None:
                    _make_safe(case, targets, port)
                    sent = {**headers, "Accept": NDJSON} if progress and op.label == BULK else headers
                    response = case.call(base_url=base, session=session, headers=sent, timeout=_timeout(case))
                    tally[op.label, response.status_code] += 1
                    case.validate_response(response, checks=checks, headers=sent)

                try:
                    check()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE, f"{op.label}: no valid case could be generated"
                    # Nothing of this operation's inputs can be made invalid (free-form strings): no negative run.
                except (FailureGroup, Exception) as e:  # noqa: BLE001 (every run goes on; all failures are reported)
                    failures.append(f"{op.label} as {who} ({mode.value}): {e}")
    session.close()
    return failures


def _summary(tally: Tally) -> str:
    by_op: dict[str, list[str]] = {}
    for (label, status), n in sorted(tally.items()):
        by_op.setdefault(label, []).append(f"{status}x{n}")
    return "\n".join(f"  {label}: {' '.join(answers)}" for label, answers in sorted(by_op.items()))


async def _sources(gw: Any) -> list[str]:
    """Every camera source URL of the catalog, as listed (credentials masked)."""
    urls: list[str] = []
    params = {"limit": "1000"}
    while True:
        status, page = await gw.request("GET", "/api/v1/cameras", params=params)
        assert status == 200, page
        urls += [cam[k] for cam in page["cameras"] for k in URL_KEYS if cam.get(k)]
        if not page["next_cursor"]:
            return urls
        params = {"limit": "1000", "cursor": page["next_cursor"]}


# schemathesis's strategies draw from the `random` module (Hypothesis seeds it, so runs stay reproducible).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_fuzz_every_operation_with_every_role(redis_url, make_gateway, tmp_path, caplog) -> None:
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(CLIPS_DIR / CLIP, media / CLIP)
    with closed_port() as port:
        async with make_gateway(redis_url, media_dirs=[media]) as gw:
            # The description is open, and what is served is what the module builds.
            async with aiohttp.ClientSession() as anonymous:
                async with anonymous.get(gw.url(openapi.PATH)) as r:
                    assert r.status == 200 and r.content_type == "application/json"
                    served = await r.json()
            assert served == json.loads(json.dumps(openapi.document()))
            tokens, ids = await _tokens(gw)
            targets = await _seed(gw, port, ids)
            tally: Tally = Tally()
            t0 = time.monotonic()
            failures = await asyncio.to_thread(_fuzz, gw.base, served, tokens, targets, port, tally)
            failures += await asyncio.to_thread(_scenarios, gw.base, served, tokens["admin"], targets, port, tally)
            took = time.monotonic() - t0
            print(f"\nfuzzed {len(described_operations(served))} operations with {len(tokens)} tokens: "
                  f"{sum(tally.values())} requests in {took:.1f} s\n{_summary(tally)}")
            # Still serving; and every source the fuzzed cameras were given is this machine's closed port.
            status, health = await gw.request("GET", "/healthz")
            assert status == 200 and health["redis"], health
            for url in await _sources(gw):
                assert "://" not in url or (urlsplit(url).hostname, urlsplit(url).port) == ("127.0.0.1", port), url
    assert not failures, f"{len(failures)} failing runs:\n\n" + "\n\n".join(failures)
    gc.collect()  # a task whose exception nobody took says so when it is collected
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "the gateway logged errors while fuzzed:\n" + "\n".join(errors)
    # The fuzzer got past the refusals everywhere: each operation answered a success at least once
    # (a WebSocket cannot be opened by a plain request: its operation answers 400 here).
    succeeded = {label for (label, status), _ in tally.items() if status < 300}
    missed = {f"{m} {p}" for m, p in described_operations(served)} - succeeded - {"GET /api/v1/events/ws"}
    assert not missed, f"operations never answered with success: {sorted(missed)}\n{_summary(tally)}"
    assert took < FUZZ_BUDGET_S, f"the fuzz run took {took:.0f} s"
