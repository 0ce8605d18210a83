"""Settings: TOML file < SHARP_EYES_* environment < command-line flags, and errors that name the key.

An operator who mistypes a setting must be told which one, by its full key path, and the
gateway must refuse to start (exit status 2) rather than run with a guess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, load_settings
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No SHARP_EYES_* from the machine running the tests leaks into these."""
    for name in list(os.environ):
        if name.startswith("SHARP_EYES_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(config: Path | None = None, **flags) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(config, **flags)
    return str(exc.value)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARP_EYES_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


# ---- load_settings ---------------------------------------------------------------------------------
def test_toml_errors_name_every_bad_key_path(tmp_path):
    config = write(tmp_path, """
node = "12345"
colour = "red"

[detector]
workers = 99
threads = 2

[ingest]
stall_timeout_s = 0

[events]
buffer_size = "many"
""")
    msg = error_of(config)
    lines = msg.splitlines()
    assert str(config) in lines[0], "the message says which file"

    def line_for(path: str) -> str:
        found = [ln for ln in lines if ln.strip().startswith(f"{path}:")]
        assert found, f"{path} not named in:\n{msg}"
        return found[0]

    assert "unknown key" in line_for("colour")
    assert "unknown key" in line_for("detector.threads")
    assert "16" in line_for("detector.workers"), "the limit is given"
    assert "12345" in line_for("node")
    line_for("ingest.stall_timeout_s")
    line_for("events.buffer_size")
    assert len([ln for ln in lines[1:] if ln.strip()]) == 6, msg


@pytest.mark.parametrize("text, key", [
    ('node = "abc"', "node"),
    ('node = "0045"', "node"),
    ('http = "localhost"', "http"),
    ('http = "127.0.0.1:99999"', "http"),
    ('redis = "http://127.0.0.1:6379"', "redis"),
    ('log_level = "TRACE"', "log_level"),
    ('gateway_id = "has space"', "gateway_id"),
    ("[detector]\nintra_threads = 0", "detector.intra_threads"),
    ("[detector]\nproviders = []", "detector.providers"),
    ("[ingest]\nmax_width = 10", "ingest.max_width"),
    ("[ingest]\nopen_timeout_s = 1e9", "ingest.open_timeout_s"),
    ("[events]\nretention = -1", "events.retention"),
    ("[uplink]\nredis = 'redis://x'", "uplink"),
])
def test_each_bad_value_is_named(tmp_path, text, key):
    msg = error_of(write(tmp_path, text + "\n"))
    assert any(ln.strip().startswith(f"{key}:") for ln in msg.splitlines()), msg


def test_a_valid_file_loads_and_normalises(tmp_path):
    media = tmp_path / "media"
    config = write(tmp_path, f"""
node = "450100"
http = "0.0.0.0:9090"
redis = "redis://127.0.0.1:6390/2"
media_dirs = ["{media}"]
log_level = "DEBUG"

[detector]
workers = 3

[ingest]
stall_timeout_s = 7.5

[events]
buffer_size = 500
""")
    s = load_settings(config)
    assert s.node == "4501", "the padded national form is normalised"
    assert (s.http_host, s.http_port) == ("0.0.0.0", 9090)
    assert s.redis == "redis://127.0.0.1:6390/2"
    assert s.media_dirs == [media]
    assert s.detector.workers == 3 and s.detector.intra_threads == 1, "unset keys keep their defaults"
    assert s.ingest.stall_timeout_s == 7.5 and s.ingest.open_timeout_s == 10.0
    assert s.events.buffer_size == 500
    assert s.log_level == "DEBUG"


def test_missing_or_malformed_file_is_a_config_error(tmp_path):
    msg = error_of(tmp_path / "nope.toml")
    assert "nope.toml" in msg and "does not exist" in msg
    msg = error_of(write(tmp_path, 'node = "450102\n[detector\n'))
    assert "gateway.toml" in msg


def test_environment_overrides_toml_and_flags_override_environment(tmp_path, monkeypatch):
    config = write(tmp_path, """
node = "450102"
http = "127.0.0.1:8001"
log_level = "WARNING"

[detector]
workers = 2
intra_threads = 2
""")
    s = load_settings(config)
    assert (s.node, s.http, s.detector.workers) == ("450102", "127.0.0.1:8001", 2)

    monkeypatch.setenv("SHARP_EYES_NODE", "450103")
    monkeypatch.setenv("SHARP_EYES_HTTP", "127.0.0.1:8002")
    monkeypatch.setenv("SHARP_EYES_DETECTOR__WORKERS", "3")
    s = load_settings(config)
    assert s.node == "450103" and s.http == "127.0.0.1:8002"
    assert s.detector.workers == 3, "nested key from the environment"
    assert s.detector.intra_threads == 2, "the rest of the TOML section is kept"
    assert s.log_level == "WARNING", "keys the environment does not set come from the file"

    s = load_settings(config, node="450104", http="127.0.0.1:8003", detector={"workers": 4})
    assert s.node == "450104" and s.http == "127.0.0.1:8003" and s.detector.workers == 4
    assert s.detector.intra_threads == 2
    # A flag given as None means "not given": the environment still applies.
    s = load_settings(config, node=None)
    assert s.node == "450103"

    # A bad value in the environment is named like one in the file, and a flag can override it.
    monkeypatch.setenv("SHARP_EYES_DETECTOR__WORKERS", "0")
    assert "detector.workers" in error_of(config)
    assert load_settings(config, detector={"workers": 5}).detector.workers == 5
    monkeypatch.setenv("SHARP_EYES_NODE", "12345")
    assert "node" in error_of(config, detector={"workers": 5})
    assert load_settings(config, node="45", detector={"workers": 5}).node == "45"


def test_the_admin_token_is_never_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARP_EYES_ADMIN_TOKEN", "very-secret-admin-token")
    s = load_settings(None)
    assert s.admin_token.get_secret_value() == "very-secret-admin-token"
    assert "very-secret-admin-token" not in repr(s) and "very-secret-admin-token" not in str(s)
    msg = error_of(None, node="1")
    assert "very-secret-admin-token" not in msg
    assert isinstance(s, Settings)


# ---- the command line ---------------------------------------------------------------------------------
def test_serve_with_a_bad_node_exits_2_naming_the_key(tmp_path):
    r = run_cli("serve", "--node", "12345", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "node" in r.stderr and "12345" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists(), "nothing is started or written for a refused configuration"


def test_serve_reports_every_bad_key_of_a_config_file_and_env(tmp_path):
    config = write(tmp_path, "[detector]\nworkers = 99\n[ingest]\nspeed = 1\n")
    r = run_cli("serve", "--config", str(config), cwd=tmp_path, SHARP_EYES_NODE="4x")
    assert r.returncode == 2, (r.stdout, r.stderr)
    for key in ("detector.workers", "ingest.speed", "node"):
        assert key in r.stderr, (key, r.stderr)
    assert "Traceback" not in r.stderr
    r = run_cli("serve", "--log-level", "TRACE", cwd=tmp_path)
    assert r.returncode == 2 and "log-level" in r.stderr


def test_serve_flag_beats_a_bad_environment_value_and_stops_on_sigterm(tmp_path, redis_url):
    """SHARP_EYES_NODE is wrong, --node is right: the flag wins and the gateway starts."""
    port = free_port()
    config = write(tmp_path, 'node = "45"\nlog_level = "INFO"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--node", "450102",
         "--http", f"127.0.0.1:{port}", "--redis", redis_url, "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, env=cli_env(SHARP_EYES_NODE="12345", SHARP_EYES_ADMIN_TOKEN="cli-token-123"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "node 450102" in line and f"127.0.0.1:{port}" in line, (line, proc.poll())
        assert "cli-token-123" not in line
        # It answers on the port it was given.
        import urllib.request

        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = r.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert '"node": "450102"' in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _, err = proc.communicate()
    assert "Traceback" not in err
    assert "cli-token-123" not in err


def test_a_mistyped_environment_variable_is_refused(monkeypatch):
    monkeypatch.setenv("SHARP_EYES_NDOE", "450102")
    monkeypatch.setenv("SHARP_EYES_DETECTOR__WORKRES", "2")
    with pytest.raises(ConfigError) as err:
        load_settings(None)
    assert "SHARP_EYES_NDOE: unknown setting" in str(err.value)
    assert "SHARP_EYES_DETECTOR__WORKRES: unknown setting" in str(err.value)
