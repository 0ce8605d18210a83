"""Camera source URLs: redaction of credentials and safe parsing of rtsp:// and file: sources."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = [
    "FILE_CONTAINERS",
    "MAX_URL_LENGTH",
    "SECRET_PARAMS",
    "Source",
    "SourceError",
    "check_url",
    "parse_source",
    "redact_url",
    "scrub",
    "split_authority",
    "url_secrets",
]

MAX_URL_LENGTH = 2048
# What FFmpeg may read a file: source as: plain recordings, by demuxer name (PyAV's `format.name`
# lists the aliases, e.g. "mov,mp4,m4a,3gp,3g2,mj2"). Playlist and reference formats (hls, concat,
# dash, imf, image2, sdp, ...) make FFmpeg open other files or URLs named inside the file, which
# would reach past the media folders; they are refused, whatever the file's name says.
FILE_CONTAINERS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "flv",
                   "h264", "hevc")
# The only protocol FFmpeg may use for a file: source, for the file itself or anything it names.
FILE_PROTOCOLS = ("file",)
# Names that say "playlist": refused at registration already (the check when the file is opened is
# the real boundary, since names lie).
_PLAYLIST_SUFFIXES = (".m3u8", ".m3u", ".hls", ".ffconcat", ".concat", ".txt", ".mpd", ".sdp", ".xml", ".cpl")
MASK = "***"
# Query/fragment parameter names whose values are credentials. Matched case-insensitively.
SECRET_PARAMS = frozenset(
    {
        "password", "passwd", "pwd", "pass", "token", "auth", "access_token", "auth_token",
        "api_key", "apikey", "secret", "signature", "sig", "key",
        "sentinel_password",  # the sentinels' own password in a redis+sentinel:// URL (tiers/connect.py)
    }
)
# Redacted output is meant for logs and API replies: keep it bounded.
_MAX_REDACTED = 4096

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]{0,31}):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
# A URL with an authority part inside free text; stops at whitespace and quoting characters
# so "... 'rtsp://u:p@h/x': Connection refused" yields just the URL.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s'\"<>`]+")
# A credential parameter anywhere in text (also outside URLs: FFmpeg prints option strings).
_PARAM_IN_TEXT = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(" + "|".join(sorted(map(re.escape, SECRET_PARAMS), key=len, reverse=True))
    + r")=([^&;#\s'\"<>]*)"
)
_BARE_USERINFO = re.compile(
    r"(?<![\w/:.@-])([A-Za-z0-9._~%!$&'()*+,;=-]{1,64}):([^\s@/]{1,256})@(?=[A-Za-z0-9\[])"
)
_LOOSE_USERINFO = re.compile(r"(://[^:/?#@]*):[^/?#]*@")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?)*\.?$")


class SourceError(ValueError):
    """A camera source URL that is malformed, unsupported or not allowed; the message is safe to show."""


@dataclass(frozen=True, repr=False)
class Source:
    """A parsed camera source; `url` keeps credentials and is for internal use only."""

    kind: Literal["rtsp", "file"]
    url: str
    path: Path | None = None

    def __repr__(self) -> str:
        # Sources end up in log lines and tracebacks; never print the password.
        return f"Source(kind={self.kind!r}, url={redact_url(self.url)!r}, path={self.path!r})"

    @property
    def redacted(self) -> str:
        """The URL with credentials masked."""
        return redact_url(self.url)

    def file_options(self) -> dict[str, str]:
        """FFmpeg options that confine a file source to its own file: the `file` protocol only (nothing
        else can be opened, not even by the probe) and only FILE_CONTAINERS (checked by FFmpeg after the
        probe and before the demuxer reads its header, so a playlist never opens what it names)."""
        return {"protocol_whitelist": ",".join(FILE_PROTOCOLS), "format_whitelist": ",".join(FILE_CONTAINERS)}


# --------------------------------------------------------------------------- redaction


def _mask_params(part: str, sep_chars: str = "&;") -> str:
    """Mask the values of credential parameters in a query or fragment string."""
    out = []
    for piece in re.split(f"([{re.escape(sep_chars)}])", part):
        if piece in sep_chars or "=" not in piece:
            out.append(piece)
            continue
        name, _, _value = piece.partition("=")
        if unquote(name).strip().lower() in SECRET_PARAMS:
            out.append(f"{name}={MASK}")
        else:
            out.append(piece)
    return "".join(out)


def _safe_chars(text: str) -> str:
    """Escape control characters so a redacted URL cannot forge log lines."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def split_authority(rest: str) -> tuple[str, str]:
    """What follows "scheme://" cut into (authority, the rest): the authority ends at the first "/", "?" or "#",
    as urlsplit cuts it (an unescaped "@" before that belongs to the password)."""
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    return rest[:end], rest[end:]


def _redact(url: str) -> str:
    scheme = _SCHEME.match(url)
    rest_start = scheme.end() if scheme else 0
    prefix, rest = url[:rest_start], url[rest_start:]
    if rest.startswith("//"):
        prefix, rest = prefix + "//", rest[2:]
        has_authority = True
    else:
        # "user:pass@host/x" without a scheme is still a credential: treat a leading
        # segment that contains "@" as an authority.
        has_authority = "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]
        if has_authority and scheme:
            # "rtsp:user:pw@host" - the parser would see no authority but a human would.
            prefix, rest = "", url
    if has_authority:
        authority, rest = split_authority(rest)
        if "@" in authority:
            # rpartition: an unescaped "@" inside the password belongs to the password.
            userinfo, _, hostport = authority.rpartition("@")
            if ":" in userinfo:
                user = userinfo.split(":", 1)[0]
                authority = f"{user}:{MASK}@{hostport}"
            elif not scheme or scheme.group(1).lower() not in {"rtsp", "rtsps", "http", "https"}:
                # A lone userinfo on an unknown scheme may itself be a token.
                authority = f"{MASK}@{hostport}"
        prefix += authority
    path, qmark, query = rest.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        rest = path + "?" + _mask_params(query) + (hash_ + _mask_params(fragment) if hash_ else "")
    else:
        path, hash_, fragment = rest.partition("#")
        rest = path + (hash_ + _mask_params(fragment) if hash_ else "")
    return prefix + rest


def _scrub_patterns(text: str) -> str:
    """Pattern-based redaction for free text: URLs with userinfo, credential params, user:pass@."""
    text = _URL_IN_TEXT.sub(lambda m: _redact(m.group()), text)
    text = _PARAM_IN_TEXT.sub(lambda m: f"{m.group(1)}={MASK}", text)
    # "user:pass@host" without a scheme, as some tools print it.
    return _BARE_USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def redact_url(url: str) -> str:
    """Return `url` with the password and credential query parameters masked; never raises."""
    try:
        if not isinstance(url, str):
            url = str(url)
        # The structured pass handles a well-formed URL exactly; the pattern pass then
        # catches what garbage around or inside it hid from the structured one.
        out = _scrub_patterns(_redact(url))
        # A single URL cannot hold whitespace, so here (unlike in free text) a password with
        # spaces or control characters in it is still a password: mask up to the last "@".
        out = _LOOSE_USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", out)
        out = _safe_chars(out)
        if len(out) > _MAX_REDACTED:
            out = out[:_MAX_REDACTED] + "..."
        return out
    except Exception:
        # Even pathological input (e.g. a str subclass whose methods raise) must not
        # propagate: callers use this in error paths and log lines.
        return "<unprintable url>"


def url_secrets(url: str) -> list[str]:
    """The credential strings in `url` (raw and percent-decoded), to pass to `scrub(secrets=...)`."""
    found: list[str] = []
    try:
        m = re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)@", url)
        if m and ":" in m.group(1):
            found.append(m.group(1).split(":", 1)[1])
        for pm in _PARAM_IN_TEXT.finditer(url):
            found.append(pm.group(2))
    except Exception:
        return []
    out: list[str] = []
    for s in found:
        for v in (s, unquote(s)):
            # Very short values would mask innocent text everywhere; they are caught by the
            # structural patterns instead.
            if len(v) >= 3 and v not in out:
                out.append(v)
    return out


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact every URL with credentials, credential parameter and known secret inside `text`."""
    try:
        if not isinstance(text, str):
            text = str(text)
        # Longest first so a secret that contains another is masked whole.
        for secret in sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True):
            text = text.replace(secret, MASK)
        text = _scrub_patterns(text)
        return text
    except Exception:
        return "<unprintable text>"


# --------------------------------------------------------------------------- parsing


def _scheme_of(url: str) -> str:
    m = _SCHEME.match(url)
    if not m:
        raise SourceError("not a URL: expected rtsp://, rtsps:// or file: followed by a path")
    return m.group(1).lower()


def _check_common(url: object) -> str:
    if not isinstance(url, str):
        raise SourceError("must be a string")
    if not url:
        raise SourceError("must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise SourceError(f"is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")
    return url


def _check_rtsp(url: str, scheme: str) -> None:
    if _WHITESPACE_OR_CONTROL.search(url):
        raise SourceError(f"{scheme} URL must not contain whitespace or control characters")
    if not url[len(scheme) + 1 :].startswith("//"):
        raise SourceError(f"{scheme} URL must start with {scheme}://")
    try:
        parts = urlsplit(url)
    except ValueError:
        # urlsplit's own message quotes the netloc, which may hold the password.
        raise SourceError(f"{scheme} URL has a malformed host part") from None
    hostport = parts.netloc.rpartition("@")[2]
    host = parts.hostname or ""
    if not host:
        raise SourceError(f"{scheme} URL has no host")
    if hostport.startswith("["):
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise SourceError(f"{scheme} URL has an invalid IPv6 address") from None
    elif not _HOSTNAME.match(host):
        raise SourceError(f"{scheme} URL host is not a valid host name or IP address")
    try:
        port = parts.port
    except ValueError:
        raise SourceError(f"{scheme} URL port must be a number in 1..65535") from None
    if port is None and hostport.endswith(":"):
        raise SourceError(f"{scheme} URL has an empty port")
    if port is not None and not 1 <= port <= 65535:
        raise SourceError(f"{scheme} URL port must be a number in 1..65535")


def _file_path(url: str) -> str:
    """The local path named by a file: URL (percent-decoded), refusing remote hosts."""
    rest = url[len("file:") :]
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if authority.lower() not in ("", "localhost"):
            raise SourceError("file URL must name a local path; a host (file://host/...) is not allowed")
        if not slash:
            raise SourceError("file URL has no path")
        rest = "/" + path
    if not rest:
        raise SourceError("file URL has no path")
    try:
        path = unquote(rest, errors="strict") if "%" in rest else rest
    except UnicodeDecodeError:
        raise SourceError("file path is not valid percent-encoded UTF-8") from None
    if _CONTROL.search(path):
        raise SourceError("file path must not contain control characters")
    return path


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _resolve_file(given: str, media_dirs: Sequence[Path]) -> Path:
    shown = repr(given if len(given) <= 200 else given[:200] + "...")
    if not media_dirs:
        raise SourceError("file sources are disabled: no media folders are configured")
    roots: list[tuple[str, str]] = []
    for d in media_dirs:
        lexical = os.path.normpath(os.path.abspath(os.fspath(d)))
        try:
            real = os.fspath(Path(d).resolve(strict=False))
        except (OSError, RuntimeError):
            continue
        roots.append((lexical, real))
    if os.path.isabs(given):
        candidates = [os.path.normpath(given)]
        # Checked before touching the file system: no probing what exists elsewhere.
        if not any(_inside(candidates[0], lex) or _inside(candidates[0], real) for lex, real in roots):
            raise SourceError(f"file {shown} is outside the configured media folders")
    else:
        candidates = []
        for lexical, _real in roots:
            joined = os.path.normpath(os.path.join(lexical, given))
            if _inside(joined, lexical):
                candidates.append(joined)
        if not candidates:
            raise SourceError(f"file {shown} is outside the configured media folders")
    real_roots = [real for _lex, real in roots]
    for cand in candidates:
        try:
            resolved = Path(cand).resolve(strict=True)
        except FileNotFoundError:
            continue
        except (OSError, RuntimeError):
            # Symlink loops, permission errors on a parent, names too long.
            raise SourceError(f"file {shown} cannot be resolved") from None
        # The first media folder that holds the name decides: a symlink pointing out of it
        # is refused rather than silently shadowed by a later folder.
        if not any(_inside(os.fspath(resolved), r) for r in real_roots):
            raise SourceError(f"file {shown} is outside the configured media folders")
        try:
            st = resolved.stat()
        except OSError:
            raise SourceError(f"file {shown} cannot be read") from None
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"file {shown} is not a regular file")
        if not os.access(resolved, os.R_OK):
            raise SourceError(f"file {shown} is not readable")
        return resolved
    raise SourceError(f"file {shown} not found in the media folders")


def check_url(url: str) -> str:
    """Check the syntax of a source URL without touching the file system; return it unchanged."""
    url = _check_common(url)
    scheme = _scheme_of(url)
    if scheme in ("rtsp", "rtsps"):
        _check_rtsp(url, scheme)
    elif scheme == "file":
        _file_path(url)
    else:
        raise SourceError(f"unsupported scheme {scheme!r}; use rtsp://, rtsps:// or file:")
    return url


def parse_source(url: str, media_dirs: Sequence[Path]) -> Source:
    """Parse and authorise a camera source; file paths must resolve inside a media folder."""
    url = check_url(url)
    if _scheme_of(url) in ("rtsp", "rtsps"):
        return Source(kind="rtsp", url=url)
    path = _file_path(url)
    resolved = _resolve_file(path, [Path(d) for d in media_dirs])  # first: "outside" says more than this
    for name in (path, os.fspath(resolved)):  # a link named .mp4 to a .m3u8 is a playlist too
        _refuse_playlist(name)
    return Source(kind="file", url=url, path=resolved)


def _refuse_playlist(path: str) -> None:
    # Early and clear; what FFmpeg may open (Source.file_options) is the boundary, since names lie.
    if path.lower().endswith(_PLAYLIST_SUFFIXES):
        raise SourceError("file sources must be video recordings; playlists and lists of files "
                          f"({', '.join(_PLAYLIST_SUFFIXES)}) are not allowed")
