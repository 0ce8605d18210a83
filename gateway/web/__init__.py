"""The control-room page: static files served as they are (no build step, nothing from the internet)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"

# The page loads only its own files; images and sockets go to this origin alone. No `ws:`/`wss:`
# scheme sources: they would let a script send the token to a WebSocket on any host. `'self'` takes
# in this origin's own ws:/wss: URLs (CSP Level 3). Media: recordings from this origin, and the live view's
# MediaSource (a blob: URL the page makes of live.mp4's bytes).
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # media URLs carry ?token=
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    """The control-room page (open: it holds no data; everything it shows needs a token)."""
    return web.FileResponse(STATIC / "index.html", headers=_HEADERS)


async def _static_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Static files are revalidated on each load, so an upgraded gateway serves its new page at once."""
    if request.path.startswith("/static/"):
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Content-Type-Options"] = "nosniff"


def setup(app: web.Application) -> None:
    """Serve the page at / and its files under /static/."""
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.on_response_prepare.append(_static_headers)
