import asyncio, shutil, time, socket, os
import pytest
from sample_streams import CLIPS_DIR
from tests.servers import free_port

async def test_probe(redis_server, make_gateway, tmp_path):
    redis_url = redis_server.url
    media = tmp_path / "media"; media.mkdir()
    shutil.copy(CLIPS_DIR / "moving_objects.mp4", media / "ok.mp4")
    outside = tmp_path / "outside.mp4"; shutil.copy(CLIPS_DIR / "moving_objects.mp4", outside)
    os.symlink(outside, media / "link.mp4")
    async with make_gateway(redis_url, media_dirs=[media]) as gw:
        R = gw.request
        base = {"name": "x", "node": "450102"}
        print(await R("POST", "/api/v1/cameras", data=b"{bad", headers={"Content-Type": "application/json"}))
        print(await R("POST", "/api/v1/cameras", json=[1]))
        print(await R("POST", "/api/v1/cameras", json="s"))
        print(await R("POST", "/api/v1/cameras", json={**base, "url": f"file:ok.mp4", "colour": 1}))
        print(await R("POST", "/api/v1/cameras", json={**base, "url": f"file:ok.mp4", "analytics": {"fsp": 1}}))
        print(await R("POST", "/api/v1/cameras", json={"name": "x", "node": "12345", "url": "file:ok.mp4"}))
        print(await R("POST", "/api/v1/cameras", json={"name": "x", "node": "abc", "url": "file:ok.mp4"}))
        for u in ["file:../outside.mp4", f"file:{outside}", "file:link.mp4", "file:/etc/passwd", "http://h/x", "rtmp://h/x", "javascript:alert(1)", "rtsp://u:secretpw@/x"]:
            print(u, await R("POST", "/api/v1/cameras", json={**base, "url": u}))
        for p in ["abc", "1234567890123456789", "45010200001320009999", "4501020000132000000x"]:
            print(p, await R("GET", f"/api/v1/cameras/{p}"), await R("DELETE", f"/api/v1/cameras/{p}"), await R("PATCH", f"/api/v1/cameras/{p}", json={"name": "y"}))
        for q in ["type=bogus", "min_score=2", "since=garbage", "before=garbage", "node=1", "camera=abc", "limit=0"]:
            print(q, await R("GET", f"/api/v1/events?{q}"))
        print(await R("POST", "/api/v1/cameras", data=b"{" + b" " * (20 << 20) + b"}", headers={"Content-Type": "application/json"}))
        print(await R("GET", "/api/v1/cameras?state=bogus"), await R("GET", "/api/v1/cameras?node=1"), await R("GET", "/api/v1/cameras?cursor=zzz"))
        port = free_port()
        c = await gw.add_camera(name="closed", node="450102", url=f"rtsp://admin:S3cretPw@127.0.0.1:{port}/live")
        print(c)
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(5)
        c2 = await gw.add_camera(name="silent", node="450102", url=f"rtsp://127.0.0.1:{srv.getsockname()[1]}/live")
        ok = await gw.add_camera(name="ok", node="450102", url="file:ok.mp4")
        t0 = time.monotonic()
        for _ in range(24):
            await asyncio.sleep(0.5)
            print(round(time.monotonic()-t0,1), [( (await gw.camera(i))["status"]["state"], (await gw.camera(i))["status"]["last_error"]) for i in (c["id"], c2["id"], ok["id"])])
        # PATCH disable
        print(await R("PATCH", f"/api/v1/cameras/{ok['id']}", json={"enabled": False}))
        await asyncio.sleep(1)
        st, ev = await R("GET", f"/api/v1/events?type=status&camera={ok['id']}")
        for e in ev["events"]: print(e)
        # redis down
        redis_server.stop()
        t = time.monotonic()
        print(await R("GET", "/api/v1/cameras"), time.monotonic()-t)
        t = time.monotonic()
        print(await R("GET", "/healthz"), time.monotonic()-t)
        redis_server.start()
        await asyncio.sleep(1)
        print(await R("GET", "/api/v1/cameras?limit=1"))
        srv.close()
