"""Long work shows progress: the bulk import streams rows done, `cameras import` shows them, the demo says
what it starts as it starts it. Real gateway, real Redis, real processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway import keys
from tests.gateway_fixtures import TOKEN
from tests.servers import free_port
from tests.test_cli import cli

ROOT = Path(__file__).resolve().parent.parent
NDJSON = "application/x-ndjson"


def camera_csv(n: int, bad_rows: tuple[int, ...] = (), node: str = "450102") -> str:
    """n disabled RTSP cameras (nothing to start), rows in `bad_rows` with an invalid node."""
    lines = ["name,node,url,enabled"]
    for i in range(1, n + 1):
        lines.append(f"cam {i},{'12345' if i in bad_rows else node},rtsp://127.0.0.1/s{i},false")
    return "\n".join(lines) + "\n"


async def test_bulk_import_streams_progress_lines_then_the_result(redis_url, make_gateway):
    async with make_gateway(redis_url) as gw:
        body = camera_csv(300, bad_rows=(7, 250))
        lines: list[dict] = []
        async with gw.session.post(gw.url("/api/v1/cameras/bulk"), data=body.encode(),
                                   headers={"Content-Type": "text/csv", "Accept": NDJSON}) as r:
            assert r.status == 200 and r.content_type == NDJSON
            async for raw in r.content:
                lines.append(json.loads(raw))
        *progress, last = lines
        assert progress and all(set(p) == {"progress"} for p in progress), lines[:3]
        done = [p["progress"]["done"] for p in progress]
        assert done == sorted(done) and len(set(done)) == len(done) and done[-1] < 300
        assert len(progress) >= 5  # one line per few rows, not one at the end
        for p in progress:
            pr = p["progress"]
            assert pr["total"] == 300 and pr["created"] + pr["failed"] == pr["done"]
        after_bad = [p["progress"] for p in progress if p["progress"]["done"] >= 7]
        assert after_bad[0]["failed"] >= 1
        result = last["result"]
        assert result["rows"] == 300 and result["created"] == 298 and result["failed"] == 2
        assert [x["row"] for x in result["results"] if not x["ok"]] == [7, 250]
        assert await gw.app[keys.STORE].count() == 298

        # A plain client still gets one JSON object.
        status, plain = await gw.request("POST", "/api/v1/cameras/bulk", data=camera_csv(3, node="450102001").encode(),
                                         headers={"Content-Type": "text/csv"})
        assert status == 200 and plain["created"] == 3 and set(plain) == {"rows", "created", "failed", "results"}
        # A body refused whole is a plain JSON error even for a streaming client.
        async with gw.session.post(gw.url("/api/v1/cameras/bulk"), data=b"nope,header\n1,2\n",
                                   headers={"Content-Type": "text/csv", "Accept": NDJSON}) as r:
            assert r.status == 400 and "unknown column" in (await r.json())["error"]["message"]


async def test_cameras_import_shows_rows_done_on_stderr(redis_url, make_gateway, tmp_path):
    async with make_gateway(redis_url) as gw:
        conn = ("--url", gw.base, "--token", TOKEN)
        csv_file = tmp_path / "cameras.csv"
        csv_file.write_text(camera_csv(200, bad_rows=(120,)))
        rc, out, err = await cli("cameras", "import", *conn, str(csv_file), timeout=120)
        assert rc == 1, (out, err)  # one row failed
        progress = re.findall(r"cameras\.csv: (\d+)/200 rows \((\d+) created, (\d+) failed\)", err)
        assert len(progress) >= 3, err
        done = [int(d) for d, _, _ in progress]
        assert done == sorted(done) and done[-1] == 200
        assert progress[-1] == ("200", "199", "1")
        rows = out.splitlines()
        assert len(rows) == 200 and rows[119].startswith("row 120  error 422") and "node" in rows[119]
        assert re.fullmatch(r"row 1  \d{20}", rows[0])

        js = tmp_path / "more.json"
        js.write_text(json.dumps([{"name": f"j{i}", "node": "450102001", "url": "rtsp://127.0.0.1/s",
                                   "enabled": False} for i in range(1, 4)]))
        rc, out, err = await cli("cameras", "import", *conn, str(js))
        assert rc == 0, (out, err)
        assert "more.json: 3/3 rows (3 created, 0 failed)" in err and len(out.splitlines()) == 3

        rc, out, err = await cli("cameras", "import", *conn, str(tmp_path / "absent.csv"))
        assert rc == 2 and "cannot read" in err
        bad = tmp_path / "bad.csv"
        bad.write_text("what,ever\n1,2\n")
        rc, out, err = await cli("cameras", "import", *conn, str(bad))
        assert rc == 1 and "400" in err and "unknown column" in err


@pytest.mark.timeout(180)
def test_demo_says_what_it_starts_as_it_starts_it(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARP_EYES_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--http", f"127.0.0.1:{port}",
                                 "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Stop with Ctrl-C." not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        steps = [ln.strip()[2:] for ln in log.read_text().splitlines() if ln.startswith("  - ")]
        assert steps[0].startswith("starting Redis") and str(tmp_path / "data" / "redis") in steps[0]
        assert steps[1].startswith("Redis ready at unix://")
        assert any(s.startswith("gateway for node 450102 listening on") for s in steps)
        cams = [s for s in steps if s.startswith("starting camera ")]
        assert len(cams) == 2, steps
        # In order: Redis before the gateway, the gateway before its cameras, all before the banner.
        text = log.read_text()
        assert text.index("starting Redis") < text.index("listening on http") < text.index(cams[0]) \
            < text.index("Stop with Ctrl-C.")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, log.read_text()[-2000:]


async def test_clients_that_do_not_ask_for_ndjson_get_one_json_answer(redis_url, make_gateway):
    # Clients that ask for anything else (or */*) get the JSON answer they always got.
    async with make_gateway(redis_url) as gw:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}", "Accept": "*/*"}) as s:
            row = {"name": "x", "node": "450102", "url": "rtsp://127.0.0.1/s", "enabled": False}
            async with s.post(gw.url("/api/v1/cameras/bulk"), json=[row]) as r:
                assert r.status == 200 and r.content_type == "application/json"
                assert (await r.json())["created"] == 1
