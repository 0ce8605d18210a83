import asyncio, shutil, time, socket, os, logging
import aiohttp
import pytest

async def test_probe(redis_server, make_gateway, tmp_path):
    async with make_gateway(redis_server.url, media_dirs=[tmp_path]) as gw:
        R = gw.request
        print(await R("POST", "/api/v1/cameras", data=b"[" * 100000 + b"]" * 100000, headers={"Content-Type": "application/json"}))
        print(await R("POST", "/api/v1/cameras/bulk", data=b"[" * 100000 + b"]" * 100000, headers={"Content-Type": "application/json"}))
        print(await R("POST", "/api/v1/cameras", data=b'{"name": NaN}', headers={"Content-Type": "application/json"}))
        print(await R("POST", "/api/v1/cameras", data=b'\xff\xfe', headers={"Content-Type": "application/json"}))
        async def gen():
            for _ in range(10):
                yield b" " * (1 << 20)
        print(await R("POST", "/api/v1/cameras", data=gen(), headers={"Content-Type": "application/json"}))
        async def gen2():
            yield b'{"name": "x", "node": "450102", "url": "rtsp://h/x", "pad": "' + b"a" * (2 << 20) + b'"}'
        print(await R("POST", "/api/v1/cameras", data=gen2(), headers={"Content-Type": "application/json"}))
        print(await R("POST", "/api/v1/cameras/bulk", data=b"x" * (9 << 20), headers={"Content-Type": "text/csv"}))
        print(await R("POST", "/api/v1/cameras/bulk", data=b"name,node,url\nx,450102,rtsp://h/x\n", headers={"Content-Type": "text/plain"}))
        print(await R("POST", "/api/v1/cameras/bulk", json={"a": 1}))
        for q in ["since=garbage", "type=bogus"]:
            try:
                ws = await gw.session.ws_connect(gw.url(f"/api/v1/events/ws?{q}"))
                print("ws connected", q); await ws.close()
            except aiohttp.WSServerHandshakeError as e:
                print("ws", q, e.status, e.message)
            print("sse", q, await R("GET", f"/api/v1/events/stream?{q}"))
        print(await R("GET", "/api/v1/events/garbage"), await R("GET", "/api/v1/events/450102-1-0"), await R("GET", "/api/v1/events/450102-1-0/snapshot.jpg"))
        print(await R("GET", "/api/v1/events?limit=abc"), await R("GET", "/api/v1/events?min_score=nan"), await R("GET", "/api/v1/events?min_score=abc"))
        print(await R("GET", "/api/v1/cameras?limit=abc"), await R("GET", "/api/v1/cameras?cursor=450102/12345678901234567890"))
        print(await R("PUT", "/api/v1/cameras"), await R("GET", "/api/v1/nothing"))
        print(await R("GET", "/healthz"))
