"""Camera URLs: credential redaction and source parsing with media-folder confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from registry.urls import Source, SourceError, check_url, parse_source, redact_url, scrub, url_secrets

SECRET = "S3cr3t!pw"


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://user:pass@host/x", "rtsp://user:***@host/x"),
        (f"rtsp://admin:{SECRET}@127.0.0.1:554/Streaming/Channels/101",
         "rtsp://admin:***@127.0.0.1:554/Streaming/Channels/101"),
        ("rtsp://admin:p@ss@cam.local/live", "rtsp://admin:***@cam.local/live"),  # "@" in the password
        ("rtsp://admin:@cam/x", "rtsp://admin:***@cam/x"),
        ("rtsp://cam/live?token=abc123&channel=1", "rtsp://cam/live?token=***&channel=1"),
        ("rtsps://cam/live?Password=x;pwd=y&passwd=z&auth=q&user=bob",
         "rtsps://cam/live?Password=***;pwd=***&passwd=***&auth=***&user=bob"),
        ("rtsp://cam/live", "rtsp://cam/live"),
        ("rtsp://viewer@cam/live", "rtsp://viewer@cam/live"),
        ("file:clips/a.mp4", "file:clips/a.mp4"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        "", "::::", "@@@", "rtsp://[::1/", "rtsp://a:b@[zz]:99999/",
        f"rtsp://admin:{SECRET} with space@host/x", f"\x00\x1b[31m rtsp://admin:{SECRET}@h",
        f"admin:{SECRET}@127.0.0.1/stream", f"rtsp:admin:{SECRET}@h/x", "x" * 100_000,
        None, 12, b"rtsp://a:b@c",
    ],
)
def test_redact_url_never_raises_and_never_leaks(garbage):
    out = redact_url(garbage)  # type: ignore[arg-type]
    assert isinstance(out, str)
    assert SECRET not in out
    assert "\x00" not in out and "\x1b" not in out
    assert len(out) <= 4100


def test_redact_url_survives_a_hostile_str_subclass():
    class Evil(str):
        def startswith(self, *a):  # noqa: ARG002
            raise RuntimeError("boom")

        def __str__(self):
            raise RuntimeError("boom")

    assert isinstance(redact_url(Evil("rtsp://a:b@c")), str)


def test_scrub_ffmpeg_error_text():
    text = (
        "[rtsp @ 0x55d0c8a4a2c0] method DESCRIBE failed: 401 Unauthorized\n"
        f"rtsp://admin:{SECRET}@127.0.0.1:554/Streaming/Channels/101?token=tk-999: "
        "Server returned 401 Unauthorized (authorization failed)"
    )
    out = scrub(text)
    assert SECRET not in out and "tk-999" not in out
    assert "rtsp://admin:***@127.0.0.1:554/Streaming/Channels/101" in out
    assert "method DESCRIBE failed: 401 Unauthorized\n" in out  # the rest is untouched


def test_scrub_quoted_url_and_known_secrets():
    url = "rtsp://cam:pa%40ss%20word@h/x"
    text = f"Error opening input '{url}': Connection refused; tried password pa@ss word"
    out = scrub(text, secrets=url_secrets(url))
    assert "pa%40ss" not in out and "pa@ss word" not in out
    assert "Connection refused" in out


def test_scrub_never_raises():
    assert isinstance(scrub(None), str)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rtsp parsing


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://127.0.0.1/stream",
        "rtsp://admin:pw@127.0.0.1:554/Streaming/Channels/101?transportmode=unicast",
        "rtsps://cam.example.org:322/live",
        "RTSP://cam/live",
        "rtsp://[fe80::1]:8554/x",
    ],
)
def test_rtsp_accepted(url):
    src = parse_source(url, [])
    assert src == Source(kind="rtsp", url=url, path=None)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("rtsp:///x", "no host"),
        ("rtsp://", "no host"),
        ("rtsp:cam/x", "must start with rtsp://"),
        ("rtsp://cam:0/x", "port"),
        ("rtsp://cam:65536/x", "port"),
        ("rtsp://cam:abc/x", "port"),
        ("rtsp://cam:/x", "port"),
        ("rtsp://ca m/x", "whitespace"),
        ("rtsp://cam/x\r\nInjected: 1", "whitespace or control"),
        ("rtsp://cam/\x00", "control"),
        ("rtsp://cam/\u3000x", "whitespace"),
        ("rtsp://c_a!m/x", "host"),
        ("rtsp://[zz::1]/x", "host"),
        ("rtsp://[::1/x", "host"),
        ("rtsp://cam/" + "a" * 2048, "limit is 2048"),
        ("", "empty"),
    ],
)
def test_rtsp_refused(url, reason):
    with pytest.raises(SourceError, match=reason):
        parse_source(url, [])


@pytest.mark.parametrize(
    "url",
    [
        f"rtsp://admin:{SECRET}@cam:99999/x",
        f"rtsp://admin:{SECRET}@[::1/x",
        f"rtsp://admin:{SECRET}@/x",
        f"http://admin:{SECRET}@cam/x",
        f"rtsp://admin:{SECRET}@ca m/x",
    ],
)
def test_errors_never_contain_the_password(url):
    with pytest.raises(SourceError) as info:
        parse_source(url, [])
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://cam/x", "unsupported scheme 'http'"),
        ("https://cam/x", "unsupported scheme 'https'"),
        ("rtmp://cam/live", "unsupported scheme 'rtmp'"),
        ("javascript:alert(1)", "unsupported scheme 'javascript'"),
        ("data:text/plain,hi", "unsupported scheme"),
        ("/etc/passwd", "not a URL"),
        ("clip.mp4", "not a URL"),
        ("file://evilhost/x", "host"),
        ("file://evilhost/srv/media/clip.mp4", "host"),
        ("file:", "no path"),
        ("file://", "no path"),
    ],
)
def test_unknown_schemes_and_remote_files_refused(url, reason, tmp_path):
    with pytest.raises(SourceError, match=reason):
        parse_source(url, [tmp_path])


def test_non_string_refused():
    with pytest.raises(SourceError, match="string"):
        parse_source(None, [])  # type: ignore[arg-type]


def test_check_url_does_not_touch_the_file_system():
    assert check_url("file:no/such/file.mp4") == "file:no/such/file.mp4"
    with pytest.raises(SourceError):
        check_url("file://evil/x")


# --------------------------------------------------------------------------- file parsing


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (root / "sub" / "my clip.mp4").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def test_file_relative_accepted(media):
    src = parse_source("file:clip.mp4", [media])
    assert src.kind == "file" and src.path == (media / "clip.mp4").resolve()
    assert src.url == "file:clip.mp4"


def test_file_absolute_accepted(media):
    clip = (media / "clip.mp4").resolve()
    for url in (f"file:{clip}", f"file://{clip}", f"file://localhost{clip}"):
        assert parse_source(url, [media]).path == clip


def test_file_percent_encoded_and_subfolder(media):
    assert parse_source("file:sub/my%20clip.mp4", [media]).path == (media / "sub" / "my clip.mp4").resolve()
    assert parse_source("file:sub/my clip.mp4", [media]).path == (media / "sub" / "my clip.mp4").resolve()


def test_file_searched_in_each_media_dir_in_turn(tmp_path, media):
    other = tmp_path / "other"
    other.mkdir()
    (other / "only-here.mp4").write_bytes(b"x")
    assert parse_source("file:only-here.mp4", [media, other]).path == (other / "only-here.mp4").resolve()
    assert parse_source("file:clip.mp4", [media, other]).path == (media / "clip.mp4").resolve()


@pytest.mark.parametrize(
    "rel",
    ["../secret.txt", "sub/../../secret.txt", "%2e%2e/secret.txt", "./../secret.txt"],
)
def test_file_dotdot_escape_refused(media, rel):
    with pytest.raises(SourceError, match="outside"):
        parse_source(f"file:{rel}", [media])


def test_file_absolute_outside_refused(media, tmp_path):
    for url in (f"file:{tmp_path / 'secret.txt'}", "file:///etc/passwd", f"file://{media}/../secret.txt"):
        with pytest.raises(SourceError, match="outside"):
            parse_source(url, [media])


def test_file_absolute_outside_refused_even_when_missing(media):
    # Same answer for files that exist and files that do not: no probing outside the folders.
    with pytest.raises(SourceError, match="outside"):
        parse_source("file:///nonexistent/x.mp4", [media])


def test_file_symlink_pointing_outside_refused(media, tmp_path):
    (media / "escape.mp4").symlink_to(tmp_path / "secret.txt")
    (media / "escape-dir").symlink_to(tmp_path)
    for url in ("file:escape.mp4", f"file:{media / 'escape.mp4'}", "file:escape-dir/secret.txt"):
        with pytest.raises(SourceError, match="outside"):
            parse_source(url, [media])


def test_file_symlink_inside_accepted(media):
    (media / "alias.mp4").symlink_to(media / "clip.mp4")
    assert parse_source("file:alias.mp4", [media]).path == (media / "clip.mp4").resolve()


def test_file_via_symlinked_media_dir(tmp_path, media):
    link = tmp_path / "media-link"
    link.symlink_to(media)
    assert parse_source("file:clip.mp4", [link]).path == (media / "clip.mp4").resolve()
    assert parse_source(f"file:{link / 'clip.mp4'}", [link]).path == (media / "clip.mp4").resolve()


def test_file_symlink_loop_refused(media):
    (media / "loop.mp4").symlink_to(media / "loop.mp4")
    with pytest.raises(SourceError, match="cannot be resolved"):
        parse_source("file:loop.mp4", [media])


def test_file_directory_refused(media):
    with pytest.raises(SourceError, match="not a regular file"):
        parse_source("file:sub", [media])
    with pytest.raises(SourceError, match="not a regular file"):
        parse_source(f"file:{media}", [media])


def test_file_fifo_refused(media):
    os.mkfifo(media / "pipe.mp4")
    with pytest.raises(SourceError, match="not a regular file"):
        parse_source("file:pipe.mp4", [media])


def test_file_missing_refused(media):
    with pytest.raises(SourceError, match="not found"):
        parse_source("file:nope.mp4", [media])


def test_file_control_characters_refused(media):
    for url in ("file:clip.mp4\x00.txt", "file:clip%00.mp4", "file:clip\n.mp4"):
        with pytest.raises(SourceError, match="control"):
            parse_source(url, [media])


def test_file_bad_percent_encoding_refused(media):
    with pytest.raises(SourceError, match="UTF-8"):
        parse_source("file:%ff.mp4", [media])


def test_file_without_media_dirs_refused(media):
    with pytest.raises(SourceError, match="no media folders"):
        parse_source("file:clip.mp4", [])


def test_source_repr_is_redacted():
    src = parse_source(f"rtsp://admin:{SECRET}@cam/x", [])
    assert SECRET not in repr(src) and SECRET not in src.redacted
    assert SECRET in src.url  # kept for the ingest itself


def test_file_playlists_refused_by_name(media):
    # Playlists make FFmpeg open what they name; the check when the file is opened is the boundary
    # (tests/test_file_containers.py), this one answers early and clearly.
    for name in ("feed.m3u8", "FEED.M3U8", "list.ffconcat", "files.txt", "manifest.mpd"):
        (media / name).write_text("#EXTM3U\n")
        with pytest.raises(SourceError, match="playlists"):
            parse_source(f"file:{name}", [media])
    (media / "alias.mp4").symlink_to(media / "feed.m3u8")  # a name that lies
    with pytest.raises(SourceError, match="playlists"):
        parse_source("file:alias.mp4", [media])
