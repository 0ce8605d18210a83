"""File sources are read as plain recordings only (review: trust between tiers, M5).

An HLS playlist inside a media folder made FFmpeg open a clip outside it (the playlist names it);
an ffconcat list does the same whatever the file is called. FFmpeg may now use only its `file`
protocol and a short list of container formats for `file:` sources, checked after the probe and
before the format reads anything. Real gateway, real Redis, real FFmpeg (PyAV).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest

from gateway.ingest import StreamError, open_source
from registry.urls import Source
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import until

CLIP = CLIPS_DIR / "moving_objects.mp4"


def hls_playlist(segment: Path) -> str:
    return ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:10.0,\n{segment}\n#EXT-X-ENDLIST\n")


def concat_list(target: Path) -> str:
    return f"ffconcat version 1.0\nfile '{target}'\n"


@pytest.fixture
def folders(tmp_path):
    """A media folder with playlists naming a clip outside it, and a genuine clip inside it."""
    media, outside = tmp_path / "media", tmp_path / "outside"
    media.mkdir()
    outside.mkdir()
    secret = outside / "secret.mp4"
    shutil.copyfile(CLIP, secret)
    shutil.copyfile(CLIP, media / "genuine.mp4")
    (media / "feed.m3u8").write_text(hls_playlist(secret))
    (media / "hls.mp4").write_text(hls_playlist(secret))  # a playlist that says it is an MP4
    (media / "list.mp4").write_text(concat_list(secret))  # an ffconcat list that says it is an MP4
    return media, secret


def test_ffmpeg_would_follow_the_playlist_out_of_the_folder_but_not_with_the_file_options(folders):
    media, secret = folders
    playlist = media / "feed.m3u8"
    # The hazard is real: left to itself FFmpeg plays the clip outside the folder through the playlist.
    with av.open(str(playlist)) as c:
        assert "hls" in c.format.name and c.streams.video
    source = Source(kind="file", url=f"file:{playlist}", path=playlist)
    with pytest.raises(StreamError, match="container format hls is not allowed for file sources"):
        open_source(source, str(playlist), source.file_options())
    # A genuine recording opens as before.
    genuine = media / "genuine.mp4"
    ok = Source(kind="file", url=f"file:{genuine}", path=genuine)
    with open_source(ok, str(genuine), ok.file_options()) as c:
        assert "mp4" in c.format.name.split(",") and c.streams.video


async def test_playlists_in_a_media_folder_never_go_online(redis_url, make_gateway, folders):
    media, secret = folders
    async with make_gateway(redis_url, media_dirs=[media]) as gw:
        # Named as a playlist: refused when registered.
        status, body = await gw.request("POST", "/api/v1/cameras", json={
            "name": "playlist", "node": "450102", "url": "file:feed.m3u8"})
        assert status == 422 and "playlists" in body["error"]["message"], body

        genuine = await gw.add_camera(name="genuine", node="450102", url="file:genuine.mp4")
        liars = {name: await gw.add_camera(name=name, node="450102", url=f"file:{name}")
                 for name in ("hls.mp4", "list.mp4")}
        await gw.wait_state(genuine["id"], "online", 30)

        async def refused():
            cams = {name: await gw.camera(c["id"]) for name, c in liars.items()}
            return cams if all(c["status"].get("last_error") for c in cams.values()) else None

        cams = await until(refused, 30, "both playlists to be refused")
        for name, cam in cams.items():
            status = cam["status"]
            assert status["state"] != "online", (name, status)
            assert str(secret) not in status["last_error"]
        # The ffconcat list is recognised by its content: refused by the format check.
        assert "container format concat is not allowed for file sources" in cams["list.mp4"]["status"]["last_error"]
        # This FFmpeg takes a playlist for HLS only under a playlist's name, so the one called .mp4 is no
        # video at all; either way it plays nothing.
        assert cams["hls.mp4"]["status"]["last_error"]
        # And they stay so: a retry is refused the same way.
        for c in liars.values():
            assert (await gw.camera(c["id"]))["status"]["state"] != "online"
