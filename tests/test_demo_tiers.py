"""`sharp-eyes demo --tiers` as a user runs it: five tiers in one process, each with its own real
redis-server and HTTP port, chained by their uplinks. The village camera's events reach the region,
the region's node tree shows all five tiers, and Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import redis_binary

ROOT = Path(__file__).resolve().parent.parent
CHAIN = [("45", "region"), ("4501", "city"), ("450102", "county"), ("450102001", "township"),
         ("450102001001", "village")]


def free_ports(n: int) -> int:
    """A base port with the n ports from it free a moment ago."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def get(url: str, token: str) -> tuple[int, object]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert proc.poll() is None, f"demo exited while waiting for {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def find(tree: dict, code: str) -> dict | None:
    if tree["code"] == code:
        return tree
    return next((f for c in tree["children"] if (f := find(c, code))), None)


def redis_left(data: Path) -> list[str]:
    got = subprocess.run(["pgrep", "-f", "--", f"--dir {data}"], capture_output=True, text=True)
    return got.stdout.split()


@pytest.mark.timeout(300)
def test_five_tier_demo_chain(tmp_path):
    if not redis_binary():
        pytest.skip("no redis-server binary")
    base = free_ports(5)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARP_EYES_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--tiers", "--http",
                                 f"127.0.0.1:{base}", "--data-dir", str(data)], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: "Stop with Ctrl-C." in log.read_text(), 180, "the demo to start", proc, log)
        text = log.read_text()

        # It said what it started, as it started it: each tier's Redis, then its gateway, then its cameras.
        steps = [ln.strip()[2:] for ln in text.splitlines() if ln.startswith("  - ")]
        for node, tier in CHAIN:
            mine = [s for s in steps if s.startswith(f"{tier} {node}: ")]
            assert mine[0].startswith(f"{tier} {node}: starting Redis"), mine
            assert "gateway listening on http://127.0.0.1:" in mine[1], mine
            assert ("top tier" in mine[1]) == (tier == "region"), mine[1]
        cams = [s for s in steps if ": starting camera " in s]
        assert {s.split(":")[0] for s in cams} == {"county 450102", "township 450102001", "village 450102001001"}

        # Where each control room is: one block per tier, URL and token.
        rooms = re.findall(r"^  (\w+)\s+(\d+)\s.*?(http://127\.0\.0\.1:\d+)/\n\s+admin token (\S+)", text, re.M)
        assert [(r[0], r[1]) for r in rooms] == [(t, n) for n, t in CHAIN], rooms
        assert [r[2] for r in rooms] == [f"http://127.0.0.1:{base + i}" for i in range(5)]
        region_url, region_token = rooms[0][2], rooms[0][3]
        village_url, village_token = rooms[4][2], rooms[4][3]
        assert len({r[3] for r in rooms}) == 5, "each tier has its own admin token"
        curl = next(ln.strip() for ln in text.splitlines() if ln.strip().startswith("curl ") and "camera=" in ln)
        village_cam = re.search(r"camera=(\d{20})", curl).group(1)

        # The village camera is the village's own; its events reach the region, origin intact.
        status, cam = get(f"{village_url}/api/v1/cameras/{village_cam}", village_token)
        assert status == 200 and cam["node"] == "450102001001", cam

        def at_region():
            status, body = get(f"{region_url}/api/v1/events?camera={village_cam}&limit=50", region_token)
            return body["events"] if status == 200 and body["events"] else None
        events = wait_for(at_region, 90, "a village event at the region", proc, log)
        for ev in events:
            assert ev["camera_id"] == village_cam and ev["node"] == "450102001001"
            assert ev["origin"]["node"] == "450102001001" and ev["id"].startswith("450102001001-")
        # The printed curl line, run as printed, shows them.
        got = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert village_cam in got.stdout and '"origin"' in got.stdout, got.stdout[-500:]

        # The region's tree: all five tiers, named, each rolled up over what is below it.
        def tree_online():
            status, tree = get(f"{region_url}/api/v1/nodes", region_token)
            return tree if status == 200 and tree["cameras"]["online"] == 3 else None
        tree = wait_for(tree_online, 90, "the region's tree to show three cameras online", proc, log)
        for node, tier in CHAIN:
            n = find(tree, node)
            assert n is not None and n["tier"] == tier and n["name"], (node, tree)
        assert tree["name"] == "广西壮族自治区" and tree["online_rate"] == 1.0
        assert find(tree, "450102")["cameras"]["total"] == 3
        assert find(tree, "450102001")["cameras"]["total"] == 2
        assert find(tree, "450102001001")["cameras"]["total"] == 1
        assert "演示" in find(tree, "450102001001")["name"]
        assert tree["events_last_hour"]["total"] >= find(tree, "450102001001")["events_last_hour"]["total"] >= 1
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        left = redis_left(data)
        for pid in left:  # started in their own sessions: not reached by the group's signals
            os.kill(int(pid), signal.SIGKILL)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not left, f"redis-servers still running after Ctrl-C: {left}"
    assert "stopping the five tiers" in log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    for node, _ in CHAIN:
        assert list((data / "tiers" / node / "redis").glob("appendonly*")), f"no AOF for {node}"
