"""Serve sample files as RTSP cameras from the project's Python (tests, demos).

The server itself (:mod:`sample_streams.rtsp_server`) runs under the *system* Python, which has
PyGObject and Debian's GStreamer RTSP server; this module starts and controls it::

    reason = find_rtsp_support()          # None when the machine can serve RTSP
    with RtspServer().start(8554, {"street": Path("street.mp4")}) as server:
        url = server.url("street")        # rtsp://127.0.0.1:8554/street
        server.kill()                     # the camera dies mid-stream
        server.restart()                  # ... and comes back on the same port
        server.freeze(); server.thaw()    # the camera stalls (SIGSTOP) and resumes
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
READY_TIMEOUT = 15.0

_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('filesrc', 'qtdemux', 'h264parse', 'rtph264pay') if Gst.ElementFactory.find(e) is None]; "
    "print('missing GStreamer elements: ' + ', '.join(missing) if missing else 'OK')"
)


class RtspServerError(RuntimeError):
    """The RTSP server could not be started."""


@functools.lru_cache(maxsize=4)
def find_rtsp_support(python: str = SYSTEM_PYTHON, timeout: float = 30.0) -> str | None:
    """``None`` when this machine can run the RTSP server, else the reason it cannot.

    Checks that ``python`` exists and imports ``gi`` with GstRtspServer (Debian packages
    python3-gi, gir1.2-gst-rtsp-server-1.0) and that the GStreamer elements of the pipeline are
    installed (gstreamer1.0-plugins-good, -bad). The answer is cached per process.
    """
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        return f"no system Python at {python} (the RTSP server runs under it with PyGObject)"
    if not SERVER_SCRIPT.is_file():
        return f"server script missing: {SERVER_SCRIPT}"
    try:
        proc = subprocess.run(
            [python, "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"{python} took over {timeout:.0f} s to import GStreamer"
    except OSError as exc:
        return f"cannot run {python}: {exc}"
    out = proc.stdout.strip()
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"GStreamer RTSP server not usable from {python} ({last}); "
            "install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
        )
    if out != "OK":
        return f"{out} (install gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
    return None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RtspServer:
    """A GStreamer RTSP server process serving MP4 (H.264) files, one mount per file.

    Each client gets its own pipeline from the start of the file, played in real time; the
    stream ends at the end of the file. Use as a context manager (stops on exit).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        python: str = SYSTEM_PYTHON,
        ready_timeout: float = READY_TIMEOUT,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.python = python
        self.ready_timeout = ready_timeout
        self.verbose = verbose
        self.port: int | None = None
        self.mounts: dict[str, Path] = {}
        self.proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int | None = None, mounts: Mapping[str, str | os.PathLike] | None = None) -> RtspServer:
        """Start serving ``mounts`` (name → file) on ``port`` (a free one when None or 0).

        Waits until the server prints READY (``ready_timeout`` seconds); raises
        :class:`RtspServerError` with the server's message when it fails (missing file, busy port).
        Returns ``self``.
        """
        if self.running:
            raise RtspServerError(f"already running on port {self.port}")
        if mounts is not None:
            self.mounts = {str(name): Path(path) for name, path in mounts.items()}
        if not self.mounts:
            raise ValueError("RtspServer.start: no mounts")
        self.port = port or self.port or _free_port(self.host)
        cmd = [self.python, "-u", str(SERVER_SCRIPT), "--port", str(self.port), "--host", self.host, "--exit-with-parent"]
        if self.verbose:
            cmd.append("--verbose")
        for name, path in self.mounts.items():
            cmd += ["--mount", f"{name}={Path(path).resolve()}"]
        self._stderr.clear()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.proc = proc
        ready = threading.Event()
        threading.Thread(target=self._read_stdout, args=(proc, ready), daemon=True, name="rtsp-server-stdout").start()
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True, name="rtsp-server-stderr").start()
        deadline = time.monotonic() + self.ready_timeout
        while not ready.wait(0.05):
            if proc.poll() is not None:
                ready.wait(0.2)  # let the reader threads catch the last lines
                if ready.is_set():
                    break
                self.proc = None
                raise RtspServerError(f"RTSP server exited with code {proc.returncode}: {self.stderr or 'no message'}")
            if time.monotonic() > deadline:
                self._terminate(proc)
                self.proc = None
                raise RtspServerError(f"RTSP server not ready within {self.ready_timeout:.0f} s: {self.stderr}")
        if proc.poll() is not None:
            self.proc = None
            raise RtspServerError(f"RTSP server exited with code {proc.returncode}: {self.stderr or 'no message'}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM), wait, SIGKILL if it does not go. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self._terminate(proc, timeout)

    def kill(self) -> None:
        """SIGKILL the server: it dies mid-stream, connections drop without a goodbye."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open but no data flows (a stalled camera)."""
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> RtspServer:
        """Stop (if running) and start again on the same port with the same mounts."""
        if self.port is None:
            raise RtspServerError("restart() before start()")
        self.stop()
        return self.start(self.port, self.mounts)

    # ------------------------------------------------------------------ info

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RtspServerError("not started")
        return f"rtsp://{self.host}:{self.port}"

    def url(self, name: str) -> str:
        """``rtsp://HOST:PORT/NAME`` (any name: an unknown one is how to test a missing mount)."""
        return f"{self.base_url}/{name}"

    @property
    def stderr(self) -> str:
        """What the server wrote on stderr lately (error messages, --verbose client log)."""
        return "".join(self._stderr).strip()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RtspServer {self.host}:{self.port} {state} mounts={sorted(self.mounts)}>"

    # ------------------------------------------------------------------ internals

    # The reader threads own the pipes: they read to EOF (the process exited) and close them.

    def _read_stdout(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        with proc.stdout:
            for line in proc.stdout:
                if line.startswith("READY "):
                    ready.set()

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        with proc.stderr:
            for line in proc.stderr:
                self._stderr.append(line)

    def _terminate(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGCONT)  # a frozen server must run to handle SIGTERM
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


__all__ = ["RtspServer", "RtspServerError", "find_rtsp_support", "SYSTEM_PYTHON", "SERVER_SCRIPT"]
