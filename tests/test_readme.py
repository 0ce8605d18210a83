"""The README's commands, run as written: the demo starts, prints its lines, and they show events."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def readme_block(tag: str) -> str:
    """The shell block that follows `<!-- readme-test: TAG -->` in README.md."""
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- readme-test: {tag} -->\s*```sh\n(.*?)```", text, re.S)
    assert m, f"README has no block tagged {tag}"
    return m.group(1).strip()


def test_readme_test_command_is_what_ci_runs():
    assert readme_block("tests") == "bash .ci/run"
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'TEST_CMD=".venv/bin/python -m pytest -q"' in ci
    assert "`.venv/bin/python -m pytest -q` is the same test command" in (ROOT / "README.md").read_text()


@pytest.mark.timeout(240)
def test_readme_run_command_starts_the_demo(tmp_path):
    command = readme_block("run")
    assert command.endswith(".venv/bin/sharp-eyes demo")
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("the project's .venv does not exist (the README's run command makes it; CI has it)")
    port = free_port()
    env = dict(os.environ, SHARP_EYES_HTTP=f"127.0.0.1:{port}", SHARP_EYES_DATA_DIR=str(tmp_path / "data"),
               PYTHONUNBUFFERED="1")
    env.pop("SHARP_EYES_ADMIN_TOKEN", None)
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # includes `pip install -e .`
        while "Stop with Ctrl-C." not in log.read_text():
            assert proc.poll() is None, f"demo exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"demo did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        text = log.read_text()
        token = re.search(r"admin token : (\S+)", text).group(1)
        assert (tmp_path / "data" / "admin_token").read_text().strip() == token
        assert f"web address : http://127.0.0.1:{port}/" in text
        assert "registered camera" in text and "add a model with --model PATH".lower() in text.lower()
        curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl "))
        tail = next(line.strip() for line in text.splitlines() if " events tail " in line)

        # The printed curl line, as printed, shows events (SSE `data:` lines) arriving.
        got = subprocess.run(["bash", "-c", f"timeout 10 {curl} | head -c 4000"], capture_output=True, text=True,
                             timeout=30, cwd=ROOT)
        assert "data: {" in got.stdout and '"type":"status"' in got.stdout, got.stdout[-500:]
        # The printed tail line, run from the project folder, prints events.
        got = subprocess.run(["bash", "-c", f"{tail} --limit 3"], capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
        assert got.returncode == 0, got.stderr
        lines = got.stdout.strip().splitlines()
        assert len(lines) == 3 and all("camera 4501020000132" in line for line in lines), got.stdout
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert "shutting down" in log.read_text()
    # The embedded redis-server stopped with the gateway and kept its data (AOF) in the data folder.
    still = subprocess.run(["pgrep", "-f", "--", f"--dir {tmp_path / 'data' / 'redis'}"], capture_output=True)
    assert still.returncode == 1, f"embedded redis-server still running: {still.stdout!r}"
    assert list((tmp_path / "data" / "redis").glob("appendonly*")), "no AOF written"
