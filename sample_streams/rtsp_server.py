#!/usr/bin/python3
"""Serve MP4 (H.264) files as RTSP cameras with GStreamer's RTSP server.

Run with the *system* Python, which has PyGObject and Debian's gir1.2-gst-rtsp-server-1.0
(the project's virtual environment has no ``gi``)::

    /usr/bin/python3 sample_streams/rtsp_server.py --port 8554 --mount street=/path/street.mp4 [--mount ...]

Each file is served at ``rtsp://HOST:PORT/NAME``. Every client gets its own pipeline that plays
the file from the start in real time and ends at the end of the file (RTCP BYE), like a camera
that hangs up. Prints ``READY rtsp://HOST:PORT`` on stdout once it listens; exits 0 on
SIGTERM/SIGINT, 2 on a bad argument, a missing file or a busy port (reason on stderr).
With ``--exit-with-parent`` it also exits when the process that started it goes away.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"rtsp_server: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_mount(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if not NAME_RE.match(name):
        raise argparse.ArgumentTypeError(f"mount name {name!r}: letters, digits, '.', '_', '-' only")
    return name, path


def launch_line(path: str) -> str:
    quoted = path.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{quoted}" ! qtdemux ! h264parse ! '
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve MP4 (H.264) files over RTSP.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mount", type=parse_mount, action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process exits")
    parser.add_argument("-v", "--verbose", action="store_true", help="log client connections on stderr")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    if not 0 < args.port < 65536:
        fail(f"bad port {args.port}")
    names = [name for name, _ in args.mount]
    if len(set(names)) != len(names):
        fail(f"duplicate mount name in {names}")
    for name, path in args.mount:
        if not os.path.isfile(path):
            fail(f"mount {name}: no such file {path}")
        if not os.access(path, os.R_OK):
            fail(f"mount {name}: cannot read {path}")

    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        fail(f"GStreamer RTSP server not available ({exc}); install python3-gi gir1.2-gst-rtsp-server-1.0")

    Gst.init(None)
    for element in ("filesrc", "qtdemux", "h264parse", "rtph264pay"):
        if Gst.ElementFactory.find(element) is None:
            fail(f"GStreamer element {element} missing (gstreamer1.0-plugins-good/-bad)")

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name, path in args.mount:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(os.path.abspath(path)))
        factory.set_shared(False)  # each client: its own pipeline from the start of the file
        mounts.add_factory(f"/{name}", factory)

    if args.verbose:
        def on_client(_server, client):
            conn = client.get_connection()
            peer = conn.get_ip() if conn else "?"
            print(f"rtsp_server: client connected from {peer}", file=sys.stderr, flush=True)

        server.connect("client-connected", on_client)

    try:
        source = server.create_source(None)
    except GLib.Error as exc:
        fail(f"cannot listen on {args.host}:{args.port}: {exc.message}")
    source.attach(None)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda *_: (loop.quit(), GLib.SOURCE_REMOVE)[1])

    def cleanup() -> bool:
        server.get_session_pool().cleanup()  # drop sessions of clients that went away
        return GLib.SOURCE_CONTINUE

    GLib.timeout_add_seconds(2, cleanup)

    if args.exit_with_parent:
        parent = os.getppid()

        def watch_parent() -> bool:
            if os.getppid() != parent:
                loop.quit()
                return GLib.SOURCE_REMOVE
            return GLib.SOURCE_CONTINUE

        GLib.timeout_add(500, watch_parent)

    print(f"READY rtsp://{args.host}:{args.port}", flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    source.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
