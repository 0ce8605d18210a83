"""A control-room stand-in: a WebSocket subscriber in its own process, stamping each event on receipt.

    python -m bench.subscriber URL TOKEN OUTFILE

Writes "READY" once the socket is open, then one line per event: `<receive time.time()> <event JSON>`.
Runs until the socket closes or it gets SIGTERM/SIGINT. Being a separate process, its receive
time is not delayed by the gateway's event loop or GIL, and its CPU is not the gateway's.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aiohttp


async def main(url: str, token: str, outfile: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open(outfile, "w", buffering=1) as out:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
            async with session.ws_connect(url, heartbeat=30) as ws:
                out.write("READY\n")

                async def read() -> None:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            out.write(f"{time.time():.6f} {msg.data}\n")

                reader = asyncio.create_task(read())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in (reader, stopper):
                    t.cancel()
                await asyncio.gather(reader, stopper, return_exceptions=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
