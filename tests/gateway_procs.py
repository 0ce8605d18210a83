"""Gateway processes of one tier for tests and benchmarks: `sharp-eyes serve` on a shared Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.gateway_fixtures import TOKEN
from tests.servers import free_port

NODE = "450102"
ROOT = Path(__file__).resolve().parent.parent


class GatewayProc:
    """One `sharp-eyes serve` process of the tier, with its own HTTP port and data folder."""

    def __init__(self, gid: str, redis_url: str, tmp: Path, media: Path, rebalance_s: float = 2,
                 capacity_fps: float = 20) -> None:
        self.id = gid
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{gid}.log"
        cfg = tmp / f"{gid}.toml"
        cfg.write_text(f'node = "{NODE}"\nhttp = "127.0.0.1:{self.port}"\nredis = "{redis_url}"\n'
                       f'data_dir = "{tmp / gid}"\nmedia_dirs = ["{media}"]\ngateway_id = "{gid}"\n'
                       f'log_level = "INFO"\n[placement]\ncapacity_fps = {capacity_fps}\nrebalance_s = {rebalance_s}\n')
        self.cfg = cfg
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, SHARP_EYES_ADMIN_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.cfg)],
                                         cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""
