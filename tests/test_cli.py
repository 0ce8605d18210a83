"""The `sharp-eyes` client commands, run as real processes against a real gateway on a real port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path


from gateway import keys
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, until
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
ID = re.compile(r"\b\d{20}\b")


async def cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run `python -m gateway.cli ARGS` without blocking the loop the gateway runs on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARP_EYES_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"sharp-eyes {' '.join(args)} did not finish in {timeout}s: {out!r} {err!r}")
    return proc.returncode, out.decode(), err.decode()



async def test_cameras_add_list_rm(redis_url, make_gateway):
    closed = free_port()
    # A region tier: its admin registers cameras in two counties (a county tier would refuse the other).
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        conn = ("--url", gw.base, "--token", TOKEN)

        rc, out, err = await cli("cameras", "add", *conn, "--name", "north gate", "--node", "450102",
                                 "--camera-url", "file:moving_objects.mp4", "--fps", "5")
        assert rc == 0, (out, err)
        ids = ID.findall(out)
        assert len(ids) == 1 and ids[0].startswith("45010200"), out
        north = ids[0]
        assert "north gate" in out and "450102" in out
        cam = await gw.camera(north)
        assert cam["name"] == "north gate" and cam["analytics"]["fps"] == 5

        given = "45010300001310000042"
        secret_url = f"rtsp://admin:Cli-S3cret@127.0.0.1:{closed}/live"
        rc, out, err = await cli("cameras", "add", *conn, "--name", "river bridge", "--node", "450103",
                                 "--camera-url", secret_url, "--id", given, "--disabled",
                                 "--labels", "person,car", "--min-score", "0.5")
        assert rc == 0, (out, err)
        assert given in out and "Cli-S3cret" not in out and "admin:***@" in out
        cam = await gw.camera(given)
        assert cam["enabled"] is False and cam["analytics"]["labels"] == ["person", "car"]
        assert cam["analytics"]["min_score"] == 0.5

        # Refused by the gateway: the reason, exit status 1, nothing created.
        rc, out, err = await cli("cameras", "add", *conn, "--name", "bad", "--node", "12345",
                                 "--camera-url", "rtsp://h/x")
        assert rc == 1 and "422" in err and "node" in err, (out, err)
        rc, out, err = await cli("cameras", "add", *conn, "--name", "dup", "--node", "450103",
                                 "--camera-url", "rtsp://h/x", "--id", given)
        assert rc == 1 and "409" in err, (out, err)

        await gw.wait_state(north, "online", timeout=15)
        rc, out, err = await cli("cameras", "list", *conn)
        assert rc == 0, err
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 2, out
        by_id = {ID.findall(ln)[0]: ln for ln in lines}
        assert set(by_id) == {north, given}
        assert "online" in by_id[north] and "north gate" in by_id[north]
        assert "disabled" in by_id[given] and "Cli-S3cret" not in out

        rc, out, err = await cli("cameras", "list", *conn, "--node", "450103")
        assert rc == 0 and ID.findall(out) == [given], out
        rc, out, err = await cli("cameras", "list", *conn, "--state", "online")
        assert rc == 0 and ID.findall(out) == [north], out
        rc, out, err = await cli("cameras", "list", *conn, "--node", "1")
        assert rc == 1 and "400" in err and "node" in err

        rc, out, err = await cli("cameras", "rm", *conn, north)
        assert rc == 0 and f"deleted {north}" in out, (out, err)
        status, _ = await gw.request("GET", f"/api/v1/cameras/{north}")
        assert status == 404
        assert north not in gw.app[keys.SUPERVISOR].workers
        rc, out, err = await cli("cameras", "rm", *conn, north)
        assert rc == 1 and "404" in err
        rc, out, err = await cli("cameras", "rm", *conn, "12345")
        assert rc == 1 and "400" in err
        rc, out, err = await cli("cameras", "list", *conn)
        assert ID.findall(out) == [given]


async def test_client_errors_are_one_clear_line(redis_url, make_gateway):
    async with make_gateway(redis_url) as gw:
        rc, out, err = await cli("cameras", "list", "--url", gw.base, "--token", "wrong")
        assert rc == 1 and "401" in err and "token" in err, err
        rc, out, err = await cli("cameras", "list", "--url", gw.base)
        assert rc != 0 and "token" in err, err
        rc, out, err = await cli("events", "tail", "--url", gw.base, "--token", "wrong", "--limit", "1", timeout=15)
        assert rc == 1 and "401" in err, err
    closed = f"http://127.0.0.1:{free_port()}"
    rc, out, err = await cli("cameras", "list", "--url", closed, "--token", TOKEN)
    assert rc == 1 and "Traceback" not in err and "127.0.0.1" in err, err


async def test_events_tail_prints_history_after_since_then_live_events(redis_url, make_gateway):
    # A city tier: cameras in two of its counties, so that --node leaves one out.
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="4501") as gw:
        conn = ("--url", gw.base, "--token", TOKEN)
        a = await gw.add_camera(name="a", node="450102", url="file:moving_objects.mp4", analytics={"fps": 5})
        b = await gw.add_camera(name="b", node="450102001", url="file:day_night.mp4", analytics={"fps": 5})
        c = await gw.add_camera(name="c", node="450103", url=f"rtsp://127.0.0.1:{free_port()}/x")

        async def history():
            _, body = await gw.request("GET", "/api/v1/events?limit=100")
            return list(reversed(body["events"])) if len(body["events"]) >= 5 else None

        stored = await until(history, 15, "five events in the history")
        since = stored[0]["id"]

        # --since: the stored events after it, oldest first, exactly --limit of them, as JSON.
        rc, out, err = await cli("events", "tail", *conn, "--since", since, "--limit", "3", "--json")
        assert rc == 0, err
        printed = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
        assert [e["id"] for e in printed] == [e["id"] for e in stored[1:4]]
        assert printed == stored[1:4]

        # Human-readable lines, with filters, from the start of the stream.
        rc, out, err = await cli("events", "tail", *conn, "--since", "4501-0-0", "--limit", "2",
                                 "--type", "status", "--node", "450102")
        assert rc == 0, err
        want = [e for e in stored if e["type"] == "status" and e["node"].startswith("450102")][:2]
        lines = out.splitlines()
        assert len(lines) == len(want) == 2, (out, stored)
        for line, ev in zip(lines, want):
            assert ev["id"] in line and "status" in line and ev["camera_id"] in line and ev["state"] in line
        assert c["id"] not in out

        # Without --since: only what happens from now on.
        hub = gw.app[keys.HUB]
        subs_before = len(hub.subs)
        proc_task = asyncio.create_task(cli("events", "tail", *conn, "--limit", "1", "--json", "--type", "status",
                                            "--camera", a["id"]))
        await until(lambda: asyncio.sleep(0, result=len(hub.subs) > subs_before), 15, "the tail to subscribe")
        status, _ = await gw.request("PATCH", f"/api/v1/cameras/{a['id']}", json={"enabled": False})
        assert status == 200
        rc, out, err = await asyncio.wait_for(proc_task, 20)
        assert rc == 0, err
        [live] = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
        assert live["camera_id"] == a["id"] and live["type"] == "status" and live["state"] == "disabled"
        assert live["id"] not in {e["id"] for e in stored}

        # A bad resume point is refused, not retried forever.
        rc, out, err = await cli("events", "tail", *conn, "--since", "garbage", "--limit", "1", timeout=15)
        assert rc == 1 and "400" in err
        assert b["id"]  # both file cameras took part in the history above


async def test_tiers_grant_list_revoke(redis_url, make_gateway):
    async with make_gateway(redis_url, node="4501") as gw:
        conn = ("--url", gw.base, "--token", TOKEN)
        rc, out, err = await cli("tiers", "grant", *conn, "450102")
        assert rc == 0, (out, err)
        uplink = re.search(r"^uplink: (\S+)$", out, re.M)
        assert uplink and uplink[1].startswith("redis://se-child-450102:"), out
        assert "cannot be shown again" in err and "SHARP_EYES_UPLINK" in err
        rc, out, err = await cli("tiers", "list", *conn)
        assert rc == 0 and re.search(r"^450102\s+not connected\s+granted by", out, re.M), (out, err)
        rc, out, err = await cli("tiers", "grant", *conn, "4502")
        assert rc == 1 and "422" in err and "not below this tier" in err, (out, err)
        rc, out, err = await cli("tiers", "revoke", *conn, "450102")
        assert rc == 0 and "revoked 450102" in out, (out, err)
        rc, out, err = await cli("tiers", "revoke", *conn, "450102")
        assert rc == 1 and "404" in err, (out, err)


async def test_an_uplink_password_on_the_command_line_is_warned_about_and_never_printed():
    secret = "Upl1nk-S3cret"
    rc, out, err = await cli("serve", "--node", "450102", "--http", "no-port",
                             "--uplink", f"redis://se-child-450102:{secret}@127.0.0.1:9/0")
    assert rc == 2, (out, err)  # the bad --http ends it after the warning
    assert "process list" in err and "SHARP_EYES_UPLINK" in err, err
    assert secret not in out + err
