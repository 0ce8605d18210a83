"""`GET /metrics`: Prometheus text format, read from the live state at scrape time.

Nothing is counted for the scrape's sake on the hot path: a collector reads the camera workers'
own counters, the event log and hub, and the node rollup (the same figures as /api/v1/nodes)
when Prometheus asks. Access needs a bearer token with at least the viewer role, and a token
sees the cameras and nodes of its jurisdiction only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric,
                                    SummaryMetricFamily)
# The classic text format every Prometheus version reads (all names here are plain ASCII).
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from redis.exceptions import RedisError

from gateway import keys
from gateway.api.auth import authenticate
from gateway.api.errors import error
from analytics.scheduler import SkipReason
from gateway.api.nodes import camera_views, subtree_root
from gateway.camera import CameraWorker
from gateway.events import MAX_RULE_SERIES
from tiers.access import Principal
from tiers.rollup import NodeTree, build_tree, events_last_hour

log = logging.getLogger(__name__)

_P = "sharp_eyes_"
_STATES = ("connecting", "online", "offline", "disabled")
_PING_TIMEOUT_S = 5.0
_SKIP_REASONS = tuple(r.value for r in SkipReason)  # always reported (0 until one happens), so rate() has a start


def _skipped(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """Skipped frames by reason: every known reason (0 when none), then any other reason counted."""
    return tuple((r, counts.get(r, 0)) for r in _SKIP_REASONS) + \
        tuple(sorted((r, n) for r, n in counts.items() if r not in _SKIP_REASONS))


@dataclass(frozen=True, slots=True)
class _Run:
    """A running camera's figures, read on the event loop (the collector may run in a thread)."""

    fps_in: float
    fps_asked: float
    fps_analyzed: float
    shed: bool
    frames_in: int
    frames_analyzed: int
    frames_dropped: int  # the sum of skipped
    skipped: tuple[tuple[str, int], ...]  # (reason, frames) for every reason
    reconnects: int
    decode_errors: int
    decode_cpu_s: float | None
    inferences: int
    inference_s: float
    last_frame_at: float | None

    @classmethod
    def of(cls, w: CameraWorker) -> "_Run":
        st = w.status()
        return cls(st.fps_in, st.fps_asked, st.fps_analyzed, st.shed, w.frames_in, st.frames_analyzed,
                   st.frames_dropped, _skipped(st.skipped), st.reconnects, st.decode_errors, st.decode_cpu_s,
                   st.inferences, w.analysis.inference_s, w.last_frame_at)


@dataclass(frozen=True, slots=True)
class _Camera:
    """One camera this gateway owns, as the scrape saw it; `run` is None when no worker runs it here."""

    id: str
    node: str
    state: str
    quality: tuple[str, ...]
    run: _Run | None


@dataclass(frozen=True, slots=True)
class _TierFigures:
    """This tier's own machinery (audit writer, uplink bridge): for tokens over the tier's node only."""

    audit_written: int
    audit_dropped: int
    audit_buffered: int
    thumbnails_coalesced: int
    bridge: dict | None  # Bridge.report(), or None without an uplink (or when it could not be read)
    relay: dict | None = None  # RelayStats.to_dict(): recordings, clips and live.mp4 across tiers (tiers/relay.py)


@dataclass(frozen=True, slots=True)
class _AnalysisFigures:
    """This gateway's analysis load (the scheduler's figures, as /healthz shows them): for tokens over the
    tier's node only."""

    slots: int
    decode_threads: int
    asked_fps: float
    analyzed_fps: float
    capacity_fps: float | None  # None before the first job
    load: float | None
    overloaded: bool
    skipped: tuple[tuple[str, int], ...]  # (reason, frames) for every reason

    @classmethod
    def of(cls, app: web.Application) -> "_AnalysisFigures":
        st = app[keys.ANALYSIS].scheduler.stats()
        return cls(st.slots, app[keys.DECODERS].threads, st.asked_fps, st.analyzed_fps, st.capacity_fps, st.load,
                   st.overloaded, _skipped(st.skipped))


@dataclass(frozen=True, slots=True)
class _PlacementFigures:
    """This gateway's share of the tier's cameras (gateway/placement.py): for tokens over the tier's node only."""

    cameras: int
    gateways: int
    taken: int
    handed_over: int
    leases_lost: int
    events_fenced: int

    @classmethod
    def of(cls, app: web.Application) -> "_PlacementFigures":
        p = app[keys.PLACEMENT]
        return cls(len(p.held), len(p.gateways), p.taken, p.handed_over, p.lost, app[keys.EVENTS].fenced)


@dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one scrape reports, read from the live state; the collector only formats it."""

    node: str
    gateway_id: str
    detector: str | None
    redis_up: bool
    cameras: tuple[_Camera, ...]
    tree: NodeTree | None
    events_last_hour: dict[tuple[str, str], int]  # (type, label) -> count, over the tier's subtree
    events_written: dict[tuple[str, str], int]  # (type, label) -> written by this gateway, in the jurisdiction
    events_dropped: int
    events_buffered: int
    events_delivered: int
    subscribers: int
    tier: _TierFigures | None = None
    analysis: _AnalysisFigures | None = None
    placement: _PlacementFigures | None = None
    # (node, camera, type, rule, direction or phase, label) -> zone and line events this gateway wrote
    rule_events: tuple[tuple[tuple[str, str, str, str, str, str], int], ...] = ()
    rule_series_dropped: int = 0


class ScrapeCollector:
    """A prometheus_client collector over one Scrape."""

    def __init__(self, scrape: Scrape) -> None:
        self.s = scrape

    def collect(self) -> Iterator[Metric]:
        s = self.s
        yield from self._gateway(s)
        yield from self._cameras(s.cameras)
        if s.tree is not None:
            yield from self._nodes(s.tree)
            yield from self._events(s.events_last_hour)

    @staticmethod
    def _gateway(s: Scrape) -> Iterator[Metric]:
        info = InfoMetricFamily(_P + "gateway", "This gateway: its tier node, instance name and detector model.")
        info.add_metric([], {"node": s.node, "gateway": s.gateway_id, "detector": s.detector or ""})
        yield info
        yield GaugeMetricFamily(_P + "redis_up", "1 when this tier's Redis answered a PING within 5 s.",
                                value=1 if s.redis_up else 0)
        written = CounterMetricFamily(
            _P + "events_written", "Events this gateway wrote to the tier's event stream, by type and label "
            "(empty for events without one).", labels=["type", "label"])
        for (t, label), n in sorted(s.events_written.items()):
            written.add_metric([t, label], n)
        yield written
        yield CounterMetricFamily(_P + "events_dropped",
                                  "Events lost because the outage buffer overflowed while Redis was away.",
                                  value=s.events_dropped)
        yield GaugeMetricFamily(_P + "events_buffered", "Events waiting in memory to be written to Redis.",
                                value=s.events_buffered)
        yield CounterMetricFamily(_P + "events_delivered",
                                  "Stream entries the hub read and offered to live subscribers.",
                                  value=s.events_delivered)
        yield GaugeMetricFamily(_P + "event_subscribers", "Live WebSocket and SSE event subscribers.",
                                value=s.subscribers)
        if s.tier is not None:
            yield from ScrapeCollector._tier(s.tier)
        if s.analysis is not None:
            yield from ScrapeCollector._analysis(s.analysis)
        if s.placement is not None:
            yield from ScrapeCollector._placement(s.placement)
        yield from ScrapeCollector._rules(s)

    @staticmethod
    def _rules(s: Scrape) -> Iterator[Metric]:
        lab = ["camera", "node"]
        cross = CounterMetricFamily(_P + "line_crossings", "Line crossings this gateway's cameras made (events "
                                    "written), by line, direction (in, out) and label.",
                                    labels=lab + ["line", "direction", "label"])
        zone = CounterMetricFamily(_P + "zone_events", "Zone events this gateway's cameras raised (written), by "
                                   "zone, phase (enter, leave, loiter) and label.", labels=lab + ["zone", "phase", "label"])
        for (node, camera, type_, rule, what, label), n in s.rule_events:
            (cross if type_ == "line" else zone).add_metric([camera, node, rule, what, label], n)
        yield cross
        yield zone
        yield CounterMetricFamily(_P + "rule_series_dropped", "Zone and line events not broken down above: the "
                                  f"gateway keeps at most {MAX_RULE_SERIES:,} such series.", value=s.rule_series_dropped)

    @staticmethod
    def _placement(p: _PlacementFigures) -> Iterator[Metric]:
        yield GaugeMetricFamily(_P + "placement_cameras", "Cameras this gateway runs (holds the lease of).",
                                value=p.cameras)
        yield GaugeMetricFamily(_P + "placement_gateways", "Live gateways sharing this tier's cameras, this one "
                                "included.", value=p.gateways)
        yield CounterMetricFamily(_P + "placement_taken", "Camera leases this gateway took.", value=p.taken)
        yield CounterMetricFamily(_P + "placement_handed_over", "Cameras this gateway handed over (rebalance, "
                                  "shutdown, pinned elsewhere).", value=p.handed_over)
        yield CounterMetricFamily(_P + "placement_leases_lost", "Leases found taken over at renewal: this gateway "
                                  "was paused or cut off from Redis for longer than a lease.", value=p.leases_lost)
        yield CounterMetricFamily(_P + "events_fenced", "Events Redis refused because their camera's lease had "
                                  "moved to another gateway.", value=p.events_fenced)

    @staticmethod
    def _analysis(a: _AnalysisFigures) -> Iterator[Metric]:
        yield GaugeMetricFamily(_P + "analysis_slots", "Analysis slots: frames analysed at once (one per detector "
                                "session).", value=a.slots)
        yield GaugeMetricFamily(_P + "analysis_decode_threads", "Threads of the decode pool every camera shares.",
                                value=a.decode_threads)
        yield GaugeMetricFamily(_P + "analysis_asked_fps", "Frames per second the cameras ask to have analysed "
                                "(the analysis rates of those delivering frames).", value=a.asked_fps)
        yield GaugeMetricFamily(_P + "analysis_analyzed_fps", "Frames per second analysed, all cameras together.",
                                value=a.analyzed_fps)
        if a.capacity_fps is not None:
            yield GaugeMetricFamily(_P + "analysis_capacity_fps", "Frames per second the analysis slots can take "
                                    "(slots / mean job time); absent before the first job.", value=a.capacity_fps)
        if a.load is not None:
            yield GaugeMetricFamily(_P + "analysis_load", "Asked / capacity: above 1 the gateway cannot analyse "
                                    "every camera at its rate.", value=a.load)
        yield GaugeMetricFamily(_P + "analysis_overloaded", "1 while frames are being shed: newer frames replace "
                                "unanalysed ones (over 5 % of those offered in the last 5 s).",
                                value=1 if a.overloaded else 0)
        skipped = CounterMetricFamily(_P + "analysis_frames_skipped", "Sampled frames not analysed, all cameras "
                                      "together, by reason (overload, decode_behind).", labels=["reason"])
        for reason, n in a.skipped:
            skipped.add_metric([reason], n)
        yield skipped

    @staticmethod
    def _tier(t: _TierFigures) -> Iterator[Metric]:
        yield CounterMetricFamily(_P + "audit_entries_written", "Audit entries this gateway wrote to the tier's "
                                  "audit stream.", value=t.audit_written)
        yield CounterMetricFamily(_P + "audit_entries_dropped", "Audit entries lost because the outage buffer "
                                  "overflowed while Redis was away.", value=t.audit_dropped)
        yield GaugeMetricFamily(_P + "audit_entries_buffered", "Audit entries waiting in memory to be written to "
                                "Redis.", value=t.audit_buffered)
        yield CounterMetricFamily(_P + "audit_thumbnails_coalesced", "Thumbnail fetches not recorded one by one: "
                                  "the same token fetched the same camera within the window.",
                                  value=t.thumbnails_coalesced)
        if t.relay is not None:
            yield from ScrapeCollector._relay(t.relay)
        b = t.bridge
        if b is None:
            return
        yield GaugeMetricFamily(_P + "bridge_connected", "1 while the bridge to the parent tier's Redis is up.",
                                value=1 if b.get("connected") else 0)
        yield GaugeMetricFamily(_P + "bridge_forwarding", "1 when this gateway holds the tier's bridge lease "
                                "(one gateway of a tier forwards).", value=1 if b.get("forwarding") else 0)
        behind = GaugeMetricFamily(_P + "bridge_behind_entries", "Entries of this tier not yet forwarded to the "
                                   "parent tier.", labels=["stream"])
        lag = GaugeMetricFamily(_P + "bridge_behind_seconds", "Age of the oldest entry not yet forwarded.",
                                labels=["stream"])
        sent = CounterMetricFamily(_P + "bridge_forwarded", "Entries forwarded to the parent tier since start.",
                                   labels=["stream"])
        for name, st in sorted((b.get("streams") or {}).items()):
            if st.get("behind") is not None:
                behind.add_metric([name], st["behind"])
            if st.get("seconds_behind") is not None:
                lag.add_metric([name], st["seconds_behind"])
            if st.get("forwarded") is not None:
                sent.add_metric([name], st["forwarded"])
        yield from (behind, lag, sent)

    @staticmethod
    def _relay(r: dict) -> Iterator[Metric]:
        # Labels: 3 roles x 4 kinds, and 5 reasons: bounded whatever the traffic.
        nbytes = CounterMetricFamily(_P + "relay_bytes", "Body bytes of recordings, clips and live.mp4 streamed "
                                     "between tiers (or gateways of this tier): served (this gateway runs the "
                                     "camera), relayed (piped from the tier below to the one above), received "
                                     "(for a viewer here).", labels=["role", "kind"])
        streams = CounterMetricFamily(_P + "relay_streams", "Streams begun, by role and kind.",
                                      labels=["role", "kind"])
        for role, kinds in sorted(r["bytes"].items()):
            for kind, n in sorted(kinds.items()):
                nbytes.add_metric([role, kind], n)
                streams.add_metric([role, kind], r["streams"][role][kind])
        ended = CounterMetricFamily(_P + "relay_stopped", "Streams stopped or refused before their end, by reason: "
                                    "cancelled (the viewer left), gave_up (no acknowledgement), timeouts (a tier "
                                    "below silent), busy (too many at once), malformed (bad requests).",
                                    labels=["reason"])
        for reason in ("cancelled", "gave_up", "timeouts", "busy", "malformed"):
            ended.add_metric([reason], r[reason])
        yield from (nbytes, streams, ended)
        shares = r.get("live_shares")
        if shares is not None:  # no camera label: the per-camera figures are in GET /api/v1/bridge
            yield GaugeMetricFamily(_P + "relay_live_shares", "Relayed live streams open, one per camera not run "
                                    "here however many viewers.", value=shares["open"])
            yield GaugeMetricFamily(_P + "relay_live_share_viewers", "Viewers of the shared relayed live streams "
                                    "(live.mp4 clients here and live streams served up).", value=shares["viewers"])
            yield CounterMetricFamily(_P + "relay_live_share_opened", "Relayed live streams opened.",
                                      value=shares["opened"])
            yield CounterMetricFamily(_P + "relay_live_share_hits", "Viewers that joined an open relayed live "
                                      "stream instead of opening one.", value=shares["hits"])
            yield CounterMetricFamily(_P + "relay_live_share_skips", "Times a slow viewer of a shared relayed live "
                                      "stream skipped to the next key frame.", value=shares["skips"])

    @staticmethod
    def _cameras(cameras: Iterable[_Camera]) -> Iterator[Metric]:
        lab = ["camera", "node"]
        state = GaugeMetricFamily(_P + "camera_state", "1 for the camera's current state, 0 for the others.",
                                  labels=lab + ["state"])
        fault = GaugeMetricFamily(_P + "camera_quality_fault", "1 for each video quality fault active now.",
                                  labels=lab + ["fault"])
        fps_in = GaugeMetricFamily(_P + "camera_fps_in", "Frames per second received from the source.", labels=lab)
        fps_asked = GaugeMetricFamily(_P + "camera_fps_asked", "Frames per second asked to be analysed (the "
                                      "camera's analysis rate; 0 while it delivers no frames).", labels=lab)
        fps_an = GaugeMetricFamily(_P + "camera_fps_analyzed", "Frames per second analysed.", labels=lab)
        shed = GaugeMetricFamily(_P + "camera_shed", "1 while the gateway analyses fewer of this camera's frames "
                                 "than asked (frames of it skipped in the last 5 s).", labels=lab)
        frames_in = CounterMetricFamily(_P + "camera_frames_in", "Frames (packets) received from the source.",
                                        labels=lab)
        analysed = CounterMetricFamily(_P + "camera_frames_analyzed", "Frames analysed.", labels=lab)
        dropped = CounterMetricFamily(_P + "camera_frames_dropped",
                                      "Sampled frames not analysed, every reason together (the sum of "
                                      "camera_frames_skipped_total).", labels=lab)
        skipped = CounterMetricFamily(_P + "camera_frames_skipped",
                                      "Sampled frames not analysed, by reason: overload (a newer frame replaced it "
                                      "before a slot was free), decode_behind (decoding fell behind the stream).",
                                      labels=lab + ["reason"])
        reconnects = CounterMetricFamily(_P + "camera_reconnects", "Times the stream was reopened.", labels=lab)
        decode_err = CounterMetricFamily(_P + "camera_decode_errors", "Damaged packets skipped by the decoder.",
                                         labels=lab)
        decode_cpu = CounterMetricFamily(
            _P + "camera_decode_cpu_seconds",
            "CPU time the decode pool spent decoding this camera (every connection).",
            labels=lab)
        inference = SummaryMetricFamily(_P + "camera_inference_seconds",
                                        "Detector time per analysed frame, waiting for a worker included.",
                                        labels=lab)
        last_frame = GaugeMetricFamily(_P + "camera_last_frame_timestamp_seconds",
                                       "Unix time of the newest frame received.", labels=lab)
        for c in cameras:
            v = [c.id, c.node]
            for st in _STATES:
                state.add_metric(v + [st], 1 if c.state == st else 0)
            for f in c.quality:
                fault.add_metric(v + [f], 1)
            r = c.run
            if r is None:
                continue
            fps_in.add_metric(v, r.fps_in)
            fps_asked.add_metric(v, r.fps_asked)
            fps_an.add_metric(v, r.fps_analyzed)
            shed.add_metric(v, 1 if r.shed else 0)
            frames_in.add_metric(v, r.frames_in)
            analysed.add_metric(v, r.frames_analyzed)
            dropped.add_metric(v, r.frames_dropped)
            for reason, n in r.skipped:
                skipped.add_metric(v + [reason], n)
            reconnects.add_metric(v, r.reconnects)
            decode_err.add_metric(v, r.decode_errors)
            if r.decode_cpu_s is not None:
                decode_cpu.add_metric(v, r.decode_cpu_s)
            inference.add_metric(v, count_value=r.inferences, sum_value=r.inference_s)
            if r.last_frame_at is not None:
                last_frame.add_metric(v, r.last_frame_at)
        yield from (state, fault, fps_in, fps_asked, fps_an, shed, frames_in, analysed, dropped, skipped, reconnects,
                    decode_err, decode_cpu, inference, last_frame)

    @staticmethod
    def _nodes(tree: NodeTree) -> Iterator[Metric]:
        info = InfoMetricFamily(_P + "node", "A node of the tree below this tier: its name and tier.",
                                labels=["node"])
        cams = GaugeMetricFamily(_P + "node_cameras",
                                 "Cameras in the node's subtree by state (connecting, online, offline, disabled).",
                                 labels=["node", "state"])
        enabled = GaugeMetricFamily(_P + "node_cameras_enabled", "Enabled cameras in the node's subtree.",
                                    labels=["node"])
        intact = GaugeMetricFamily(_P + "node_cameras_intact",
                                   "Enabled cameras online with no video quality fault, in the node's subtree.",
                                   labels=["node"])
        online_r = GaugeMetricFamily(_P + "node_online_ratio",
                                     "Online rate (在线率): online / enabled cameras of the subtree; absent when none is "
                                     "enabled.", labels=["node"])
        intact_r = GaugeMetricFamily(_P + "node_intact_ratio",
                                     "Intact rate (完好率): intact / enabled cameras of the subtree; absent when none "
                                     "is enabled.", labels=["node"])
        for n in tree.walk():
            d = n.to_dict(0)
            info.add_metric([n.code], {"name": n.name or "", "tier": d["tier"]})
            for st in _STATES:
                cams.add_metric([n.code, st], d["cameras"][st])
            enabled.add_metric([n.code], n.enabled)
            intact.add_metric([n.code], n.intact)
            if n.online_rate is not None:
                online_r.add_metric([n.code], n.online_rate)
            if n.intact_rate is not None:
                intact_r.add_metric([n.code], n.intact_rate)
        yield from (info, cams, enabled, intact, online_r, intact_r)

    @staticmethod
    def _events(counts: dict[tuple[str, str], int]) -> Iterator[Metric]:
        ev = GaugeMetricFamily(
            _P + "events_last_hour",
            "Events of the last 60 minutes in this tier's subtree (forwarded ones included), by type and label "
            "(empty for events without one).", labels=["type", "label"])
        for (t, label), n in sorted(counts.items()):
            ev.add_metric([t, label], n)
        yield ev


async def _redis_up(app: web.Application) -> bool:
    try:
        await asyncio.wait_for(app[keys.REDIS].ping(), _PING_TIMEOUT_S)
        return True
    except (RedisError, OSError, asyncio.TimeoutError):
        return False


async def gather(app: web.Application, p: Principal) -> Scrape:
    """Read everything a scrape reports; Redis being away costs the node figures, never the scrape."""
    settings = app[keys.SETTINGS]
    sup = app[keys.SUPERVISOR]
    root = subtree_root(settings.node, p)
    redis_up = await _redis_up(app)
    tree: NodeTree | None = None
    by_pair: dict[tuple[str, str], int] = {}
    cameras: list[_Camera] = []
    seen: set[str] = set()
    if root is not None and redis_up:
        try:
            # Bounded by the client's socket timeout; not cancelled mid-command (DESIGN §7, redis-py CVEs).
            views, names, events = await asyncio.gather(
                camera_views(app, root), app[keys.NODE_NAMES].subtree(root), events_last_hour(app[keys.REDIS], root))
        except (RedisError, OSError) as e:
            log.warning("metrics: node figures unavailable (%s)", type(e).__name__)
        else:
            tree = build_tree(root, names, views, events)
            for (_node, t, label), n in events.items():
                by_pair[(t, label)] = by_pair.get((t, label), 0) + n
            for v in views:
                if v.local:
                    w = sup.workers.get(v.id)
                    cameras.append(_Camera(v.id, v.node, v.state, tuple(v.quality), _Run.of(w) if w else None))
                    seen.add(v.id)
    # Cameras running here that the catalog read did not cover (Redis away): figures from the worker alone.
    for cid, w in list(sup.workers.items()):
        if cid not in seen and p.covers(w.camera.node):
            st = w.status()
            cameras.append(_Camera(cid, w.camera.node, st.state, tuple(getattr(st, "quality", ())), _Run.of(w)))
    over_tier = p.covers(settings.node)
    tier = await _tier_figures(app) if over_tier else None
    ev, hub = app[keys.EVENTS], app[keys.HUB]
    written: dict[tuple[str, str], int] = {}
    for (node, t, label), n in list(ev.written_by.items()):
        if p.covers(node):
            written[(t, label)] = written.get((t, label), 0) + n
    rules = tuple(sorted((k, n) for k, n in list(ev.rule_written.items()) if p.covers(k[0])))
    return Scrape(
        node=settings.node, gateway_id=settings.gateway_id,
        detector=app[keys.POOL].name if keys.POOL in app else None, redis_up=redis_up,
        cameras=tuple(sorted(cameras, key=lambda c: c.id)), tree=tree, events_last_hour=by_pair,
        events_written=written, events_dropped=ev.dropped, events_buffered=ev.pending,
        events_delivered=hub.delivered, subscribers=len(hub.subs), tier=tier,
        analysis=_AnalysisFigures.of(app) if over_tier else None,
        placement=_PlacementFigures.of(app) if over_tier else None,
        rule_events=rules, rule_series_dropped=ev.rule_series_dropped if over_tier else 0,
    )


async def _tier_figures(app: web.Application) -> _TierFigures:
    audit = app[keys.AUDIT]
    report = None
    bridge = app.get(keys.BRIDGE)
    if bridge is not None:
        try:
            # Bounded by the client's socket timeout; not cancelled mid-command (DESIGN §7).
            report = await bridge.report()
        except (RedisError, OSError) as e:
            log.warning("metrics: bridge figures unavailable (%s)", type(e).__name__)
    relay = app.get(keys.RELAY)
    return _TierFigures(audit.written, audit.dropped, audit.pending, audit.views_coalesced, report,
                        relay.report() if relay is not None else None)


def render(scrape: Scrape) -> bytes:
    """The scrape in Prometheus text format (0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(scrape))
    return generate_latest(registry)


async def handle(request: web.Request) -> web.StreamResponse:
    """Prometheus scrape endpoint (token with the viewer role or above, sent as a bearer token)."""
    p = await authenticate(request)
    if p is None:
        return error(401, "missing, invalid, expired or revoked bearer token",
                     hint="scrape with 'authorization: {credentials: <token>}' (viewer role or above)")
    t0 = time.perf_counter()
    scrape = await gather(request.app, p)
    body = await asyncio.to_thread(render, scrape) if len(scrape.cameras) > 500 else render(scrape)
    log.debug("metrics: %d cameras in %.1f ms", len(scrape.cameras), 1000 * (time.perf_counter() - t0))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


__all__ = ["Scrape", "ScrapeCollector", "gather", "handle", "render"]
