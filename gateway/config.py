"""Typed settings from a TOML file, SHARP_EYES_* environment variables and flags (flags win)."""

from __future__ import annotations

import contextvars
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from analytics.events import EVENT_TYPES
from analytics.pool import DEFAULT_NICE
from analytics.snapshot import SNAPSHOT_WIDTH
from gateway.exports import EXPORT_CACHE_BYTES, EXPORT_KEEP_S
from registry.models import PostS, PreS, RecordingMode, RetainDays
from tiers.connect import SENTINEL_SCHEMES, check_redis_url, is_sentinel_url, same_deployment
from tiers.nodes import NodeCodeError, normalize_node

_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("sharp_eyes_toml", default=None)


class ConfigError(Exception):
    """Settings that fail validation; the message names each bad key path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorConfig(_Section):
    """How the ONNX detector pool runs."""

    workers: int = Field(2, ge=1, le=16, description="inference sessions (one thread each) run in parallel")
    intra_threads: int = Field(1, ge=1, le=16, description="onnxruntime intra-op threads per session")
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1, max_length=4,
        description="onnxruntime execution providers in order of preference",
    )
    nice: int = Field(
        DEFAULT_NICE, ge=0, le=19,
        description="how much nicer detector threads run than decoding and the event loop: inference can be "
                    "shed, decoding cannot (0: same priority)")


class IngestConfig(_Section):
    """How camera streams are opened, watched and reopened."""

    open_timeout_s: float = Field(10.0, ge=1, le=120, description="socket timeout given to FFmpeg for RTSP")
    stall_timeout_s: float = Field(5.0, ge=1, le=120, description="no frame for this long: the stream is torn down")
    backoff_initial_s: float = Field(1.0, ge=0.1, le=60, description="first wait before reconnecting")
    backoff_max_s: float = Field(60.0, ge=1, le=3600, description="cap of the reconnect wait")
    healthy_after_s: float = Field(30.0, ge=1, le=3600, description="an online run this long resets the backoff")
    max_width: int = Field(1280, ge=160, le=7680, description="analysed frames wider than this are scaled down")
    decode_threads: int = Field(0, ge=0, le=64, description="decode pool threads; 0: one per core")


class EventsConfig(_Section):
    """Event stream retention, snapshots and the outage buffer."""

    retention: int = Field(100_000, ge=100, le=10_000_000, description="events kept in the Redis stream (approx.)")
    snapshot_ttl_s: int = Field(7 * 86400, ge=60, le=365 * 86400, description="how long snapshots are kept")
    snapshot_width: int = Field(SNAPSHOT_WIDTH, ge=160, le=1920, description=(
        "event snapshots wider than this are scaled down (on a 720p camera a 960-wide JPEG costs 2.5x the CPU "
        "of a 640-wide one, paid for every event)"))
    buffer_size: int = Field(10_000, ge=100, le=1_000_000, description="events held in memory while Redis is away")
    subscriber_queue: int = Field(1000, ge=10, le=100_000, description="live events queued per subscriber")
    index_ttl_s: int = Field(7 * 86400, ge=3600, le=365 * 86400,
                             description="how long a forwarded event's id stays resolvable and deduplicated here")


class BridgeConfig(_Section):
    """What this tier forwards to its parent tier (--uplink), and how it retries; status events always go."""

    types: list[str] | None = Field(None, max_length=8, description="event types to forward; absent: all")
    labels: list[str] | None = Field(None, max_length=200, description="detection labels to forward; absent: all")
    min_score: float | None = Field(None, ge=0, le=1, description="lowest detection score to forward; absent: all")
    batch: int = Field(256, ge=1, le=5000, description="entries per stream sent in one round trip")
    backoff_initial_s: float = Field(0.5, ge=0.05, le=60, description="first wait after the uplink failed")
    backoff_max_s: float = Field(30.0, ge=0.1, le=3600, description="cap of the wait between uplink retries")
    timeout_s: float = Field(10.0, ge=1, le=120, description="socket timeout of uplink commands")
    heartbeat_s: float = Field(5.0, ge=0.5, le=300, description="how often this tier re-registers with its parent")
    ca_file: Path | None = Field(
        None, description="CA certificate (PEM) the parent's TLS certificate is checked against, for a rediss:// "
                          "uplink; absent: the system's CAs")

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str] | None) -> list[str] | None:
        bad = [t for t in v or [] if t not in EVENT_TYPES]
        if bad:
            raise ValueError(f"unknown event types {bad}; expected among {list(EVENT_TYPES)}")
        return v


class AccessConfig(_Section):
    """Token checks on open streams and the audit trail."""

    stream_recheck_s: float = Field(2.0, ge=0.2, le=60, description="open streams re-check their token this often")
    audit_retention: int = Field(1_000_000, ge=1000, le=100_000_000, description="audit entries kept (approx.)")
    audit_buffer: int = Field(10_000, ge=100, le=1_000_000, description="audit entries held while Redis is away")
    trust_x_forwarded_for: bool = Field(
        False, description="behind a reverse proxy: audit the address it saw (last X-Forwarded-For hop)")
    thumbnail_audit_window_s: float = Field(
        60.0, ge=0, le=3600,
        description="a token's fetches of one camera's latest frame are recorded once per this window, so a page "
                    "refreshing thumbnails cannot crowd changes out of the trail; 0: every fetch")


class LiveConfig(_Section):
    """Limits on live views (live.mjpeg), so that no one token or client can take them all."""

    max_views: int = Field(32, ge=1, le=1000, description="live views open at once on this gateway")
    max_per_token: int = Field(4, ge=1, le=1000, description="live views one token may hold open at once")
    max_per_address: int = Field(
        8, ge=1, le=1000,
        description="live views one client address may hold open at once (the audited address: behind a trusted "
                    "proxy, the one it saw)")
    stall_timeout_s: float = Field(
        10.0, ge=1, le=120,
        description="a viewer that does not take a frame within this long (the send blocks) is dropped and its "
                    "view freed")
    send_buffer_bytes: int = Field(
        256 * 1024, ge=16 * 1024, le=16 * 1024 * 1024,
        description="the kernel send buffer of a live view's connection, so a viewer that stops reading is noticed "
                    "after this much, not after megabytes (enough for 10 fps at 960 px over 300 ms of round trip)")


class RecordingsConfig(_Section):
    """Video recording (issue 11): where, how much disk, and the tier's defaults for cameras' `recording`."""

    dir: Path | None = Field(None, description="where recordings and their index go (--recordings-dir); absent: "
                                                "`recordings` in the data folder")
    max_bytes: int | None = Field(None, ge=1 << 20, description="recordings may take at most this many bytes; the "
                                                               "oldest segments go first; absent: no budget")
    min_free_bytes: int = Field(1 << 30, ge=0, description=(
        "free space kept on the recordings' disk: the oldest segments go first, and when nothing is left to delete "
        "recording pauses (status event) until space returns; analysis never stops for it"))
    segment_s: float = Field(60.0, ge=0.5, le=600, description="a segment file is closed at the first key frame after "
                                                                "this long (retention removes whole segments)")
    sweep_s: float = Field(60.0, ge=1, le=3600, description="how often retention removes segments past retain_days")
    export_cache_bytes: int = Field(EXPORT_CACHE_BYTES, ge=0, description=(
        "recording.mp4 and clip.mp4 exports kept for a player's later Range requests take at most this many bytes "
        "(and at most a quarter of the free space above min_free_bytes); least recently used go first; 0: none kept"))
    export_keep_s: float = Field(EXPORT_KEEP_S, ge=1, le=600, description=(
        "an export is kept this long after its last request (a player's seeks reuse it)"))
    mode: RecordingMode = Field("off", description="cameras' default recording mode: off, events, continuous")
    retain_days: RetainDays = Field(7, description="cameras' default days to keep recordings (1..365)")
    pre_s: PreS = Field(5.0, description="cameras' default seconds kept before a track (events mode; clips) (0..30)")
    post_s: PostS = Field(10.0, description="cameras' default seconds kept after a track (events mode; clips) "
                                            "(0..120)")


class PlacementConfig(_Section):
    """Sharing the tier's cameras with the other gateways on its Redis (tiers/placement.py): leases, balance."""

    heartbeat_s: float = Field(2.0, ge=0.1, le=30, description="how often this gateway beats, renews its leases "
                                                               "and looks for cameras to take")
    lease_s: float = Field(8.0, ge=0.5, le=300,
                           description="a camera lease lapses this long after its holder's last renewal: a gateway "
                                       "that dies loses its cameras to the others after at most this long")
    capacity_fps: float | None = Field(
        None, gt=0, le=100_000,
        description="analysed frames per second this gateway advertises for balancing; absent: measured at start "
                    "(the detector's speed on this machine)")
    rebalance_s: float = Field(10.0, ge=1, le=3600,
                               description="at most one hand-over of cameras to gateways with more room per this long")
    address: str | None = Field(None, max_length=256, pattern=r"^https?://[^\s]+$",
                                description="this gateway's HTTP base URL as the others and GET /api/v1/gateways show "
                                            "it; absent: not advertised")

    @property
    def member_ttl_s(self) -> float:
        """A gateway that misses this many beats in a row is no longer a member."""
        return 3 * self.heartbeat_s

    @model_validator(mode="after")
    def _lease_outlives_beats(self) -> "PlacementConfig":
        if self.lease_s < 2 * self.heartbeat_s:
            raise ValueError("lease_s must be at least twice heartbeat_s: a lease is renewed once per beat")
        return self


class Settings(BaseSettings):
    """All settings of one gateway process."""

    model_config = SettingsConfigDict(
        env_prefix="SHARP_EYES_", env_nested_delimiter="__", extra="forbid", frozen=True,
    )

    node: str = Field("45", description="the node code this tier deployment owns (DESIGN §3)")
    http: str = Field("127.0.0.1:8080", description="HOST:PORT the HTTP API listens on")
    http_header_timeout_s: float = Field(
        10.0, ge=1, le=300,
        description="a connection that has not sent a whole request head this long after it opened (or after it "
                    "began a new request) is closed")
    http_keepalive_timeout_s: float = Field(
        15.0, ge=1, le=600, description="an idle keep-alive connection, between requests, is closed after this long")
    redis: str | None = Field(
        None, description="redis://, rediss://, unix://, or Redis Sentinel redis+sentinel://host1:port1,host2:port2/"
                          "<master-name>/<db> (rediss+sentinel:// for TLS) URL; absent: an embedded redis-server")
    redis_wait_replicas: int = Field(
        1, ge=0, le=16,
        description="with a redis+sentinel:// URL: replicas that must acknowledge each batch of events (Redis WAIT) "
                    "before it counts as written and leaves the buffer, so that a failover cannot lose it; "
                    "0: do not wait (a failover may lose the last writes the old primary acknowledged)")
    redis_wait_timeout_ms: int = Field(
        1000, ge=10, le=5000,
        description="how long one batch waits for its replica acknowledgements; none in time: the batch stays "
                    "buffered and is written again (idempotently)")
    uplink: str | None = Field(
        None, description="the parent tier's Redis URL with the credential it granted this tier (sharp-eyes tiers "
                          "grant); absent: this is a top tier. It carries a password: give it in the config file or "
                          "SHARP_EYES_UPLINK, not on the command line")
    intake_url: str | None = Field(
        None, description="the redis://, rediss:// or redis[s]+sentinel:// URL child tiers reach this tier's Redis "
                          "at, without credentials; "
                          "grants put each child's own in it. Absent: this tier's redis URL (credentials removed), "
                          "or the embedded Redis's listener")
    redis_listen: str | None = Field(
        None, description="HOST:PORT the embedded Redis also listens on for child tiers (absent: a unix socket "
                          "only); its default user then gets a password kept in the data folder")
    redis_tls_cert: Path | None = Field(None, description="certificate (PEM) of the embedded Redis's listener: TLS")
    redis_tls_key: Path | None = Field(None, description="private key (PEM) of redis_tls_cert")
    data_dir: Path = Field(Path("data"), description="where the embedded Redis keeps its AOF")
    model: Path | None = Field(None, description="ONNX detector model; absent: motion events only")
    media_dirs: list[Path] = Field(default_factory=list, max_length=64, description="folders file: sources may live in")
    nodes_file: Path | None = Field(
        None, description="node names (CSV or JSON: code, name) loaded at start-up; absent: the bundled Guangxi file")
    admin_token: SecretStr | None = Field(None, description="bearer token of the built-in admin")
    gateway_id: str = Field(
        default_factory=lambda: os.uname().nodename[:32] or "gateway",
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="this gateway instance's name",
    )
    id_base_unit: str = Field(
        "00", pattern=r"^[0-9]{2}$",
        description="base unit (centre code digits 7-8) of the camera ids this tier generates; township and "
                    "village deployments under one county each need their own, so generated ids never clash")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="logging level")
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    recordings: RecordingsConfig = Field(default_factory=RecordingsConfig)

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        try:
            return normalize_node(v)
        except NodeCodeError as e:
            raise ValueError(str(e)) from None

    @field_validator("http")
    @classmethod
    def _http(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
        return v

    @field_validator("redis", "uplink")
    @classmethod
    def _redis(cls, v: str | None) -> str | None:
        return None if v is None else check_redis_url(v)  # the message never quotes the URL (passwords)

    @field_validator("intake_url")
    @classmethod
    def _intake_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if is_sentinel_url(v):
            check_redis_url(v)
            # The query may name the sentinels' credential (sentinel_username/sentinel_password): every child
            # is given it, so it must be a discovery-only sentinel user (docs/ha.md).
            if "@" in v.partition("?")[0]:
                raise ValueError("expected a sentinel URL without the master's credentials (grants add each "
                                 "child's)")
            return v
        if not v.startswith(("redis://", "rediss://")) or "@" in v:
            raise ValueError("expected a redis://, rediss://, " + " or ".join(f"{s}://" for s in SENTINEL_SCHEMES)
                             + " URL without credentials")
        return v

    @field_validator("redis_listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError("expected HOST:PORT, e.g. 0.0.0.0:6380")
        return v

    @model_validator(mode="after")
    def _listener(self) -> "Settings":
        if (self.redis_tls_cert is None) != (self.redis_tls_key is None):
            raise ValueError("redis_tls_cert and redis_tls_key go together")
        if self.redis_tls_cert is not None and self.redis_listen is None:
            raise ValueError("redis_tls_cert is for the embedded Redis's listener: give redis_listen too")
        if self.redis_listen is not None and self.redis is not None:
            raise ValueError("redis_listen is for the embedded Redis: with --redis, configure that server instead")
        return self

    @model_validator(mode="after")
    def _uplink_not_self(self) -> "Settings":
        # Forwarding into this tier's own Redis would loop every event back into its own stream.
        if self.uplink is not None and same_deployment(self.uplink, self.redis):
            raise ValueError("uplink must be the parent tier's Redis, not this tier's own (--redis)")
        return self

    @property
    def recordings_dir(self) -> Path:
        """Where recordings go: recordings.dir, else `recordings` in the data folder."""
        return self.recordings.dir or self.data_dir / "recordings"

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0].strip("[]")

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _TOML_FILE.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def _format(err: ValidationError, origin: str) -> str:
    lines = [f"invalid settings ({origin}):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


# Read by the client commands and the tests, not by the gateway's settings.
_OTHER_ENV = {"SHARP_EYES_TOKEN", "SHARP_EYES_URL", "SHARP_EYES_TEST_ASSETS"}


def _unknown_env() -> list[str]:
    """SHARP_EYES_* variables that match no setting: a typo would otherwise be silently ignored."""
    known = set(_OTHER_ENV)
    for name, field in Settings.model_fields.items():
        key = f"SHARP_EYES_{name.upper()}"
        known.add(key)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            known.update(f"{key}__{sub.upper()}" for sub in field.annotation.model_fields)
    return sorted(k for k in os.environ if k.upper().startswith("SHARP_EYES_") and k.upper() not in known)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build Settings; raise ConfigError naming every bad key path."""
    flags = {k: v for k, v in flags.items() if v is not None}
    unknown = _unknown_env()
    if unknown:
        raise ConfigError("invalid settings (SHARP_EYES_* environment):\n"
                          + "\n".join(f"  {k}: unknown setting" for k in unknown))
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    token = _TOML_FILE.set(config_file)
    try:
        return Settings(**flags)
    except ValidationError as e:
        origin = f"flags, SHARP_EYES_* environment and {config_file}" if config_file else "flags and SHARP_EYES_* environment"
        raise ConfigError(_format(e, origin)) from None
    except ValueError as e:  # malformed TOML
        raise ConfigError(f"cannot read {config_file}: {e}") from None
    finally:
        _TOML_FILE.reset(token)


def new_token() -> str:
    """A fresh random bearer token."""
    return secrets.token_urlsafe(24)
