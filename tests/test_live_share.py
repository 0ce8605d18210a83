"""The live fMP4 box parser (gateway/recording/mp4.py LiveBoxes) on real and hostile input, and the shared
relayed live stream (gateway/live_share.py) fed by a stand-in upstream: one upstream however many viewers, late
viewers start at a key frame, a malformed or ended upstream ends every viewer, the linger cancels the upstream."""

from __future__ import annotations

import asyncio
import io
import struct

import av
import pytest

from gateway import live_share as share_mod
from gateway.live_share import LiveShares
from gateway.recording.mp4 import LIVE_OPTIONS, LiveBoxes, LiveStreamError
from sample_streams import CLIPS_DIR
from tests.media_rec import decode
from tiers.relay import StreamBroken, StreamError, StreamHead, StreamRequest

MOVING = CLIPS_DIR / "moving_objects.mp4"  # 640x360 H.264, 15 fps, key frame every 2 s
CAMERA = "45010200001320000001"
MAX = 1 << 20


def _box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


@pytest.fixture(scope="module")
def live_bytes() -> bytes:
    """A few seconds of the clip remuxed as the live view is: ftyp, moov, then one moof + mdat per frame."""
    out = io.BytesIO()
    with av.open(str(MOVING)) as src, av.open(out, "w", format="mp4", options=dict(LIVE_OPTIONS)) as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        for i, p in enumerate(src.demux(vin)):
            if p.dts is None:
                continue
            if i >= 75:  # 5 s: three key frames
                break
            p.stream = vout
            dst.mux(p)
    return out.getvalue()


# ---- the parser --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 30])
def test_a_live_stream_fed_in_pieces_of_any_size_gives_the_init_then_each_fragment(live_bytes, piece):
    p = LiveBoxes(MAX)
    units = [u for i in range(0, len(live_bytes), piece) for u in p.feed(live_bytes[i:i + piece])]
    assert [k for k, _ in units[:2]] == ["init", "fragment"] and all(k == "fragment" for k, _ in units[1:])
    assert units[0][1][4:8] == b"ftyp" and b"moov" in units[0][1]
    assert len(units) - 1 == 75
    assert decode(b"".join(u for _, u in units)).frames == 75


def test_a_64_bit_largesize_box_is_read():
    p = LiveBoxes(MAX)
    body = b"x" * 20
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + len(body)) + body
    units = p.feed(_box(b"ftyp", b"isom") + _box(b"moov") + _box(b"moof") + large[:10])
    assert [k for k, _ in units] == ["init"]
    assert p.feed(large[10:]) == [("fragment", _box(b"moof") + large)]


@pytest.mark.parametrize("data, why", [
    (struct.pack(">I4s", 0, b"ftyp"), "size 0"),
    (struct.pack(">I4s", 4, b"ftyp"), "< its header"),
    (struct.pack(">I4sQ", 1, b"mdat", 12), "< its header"),  # a largesize below its 16-byte header
    (struct.pack(">I4s", 0xFFFFFFF0, b"mdat"), "over"),
    (struct.pack(">I4sQ", 1, b"mdat", 1 << 62), "over"),
    (b"\x00\x00\x00\x10\xff\xfe\x00\x01garbage!", "printable"),
    (_box(b"moof") + _box(b"mdat"), "before the init"),
    (_box(b"ftyp") + _box(b"moov") + _box(b"mdat"), "without its moof"),
    (_box(b"ftyp") + _box(b"moov") + _box(b"moof") + _box(b"moof"), "without its mdat"),
    (_box(b"ftyp") + _box(b"moov") + _box(b"ftyp"), "second init"),
])
def test_hostile_boxes_break_the_parser_at_once_and_for_good(data, why):
    p = LiveBoxes(MAX)
    with pytest.raises(LiveStreamError, match=why):
        p.feed(data)
    with pytest.raises(LiveStreamError):  # broken for good: a stream cannot be resynchronised
        p.feed(_box(b"free"))


def test_a_truncated_box_waits_and_garbage_never_grows_the_buffer_past_one_box():
    p = LiveBoxes(1024)
    assert p.feed(_box(b"ftyp", b"isom")[:5]) == []  # a torn header: wait for more
    assert p.feed(_box(b"ftyp", b"isom")[5:] + struct.pack(">I4s", 1000, b"moov")) == []  # a torn body: wait
    assert len(p._buf) == 8 and p.broken is None
    with pytest.raises(LiveStreamError):
        LiveBoxes(1024).feed(struct.pack(">I4s", 2000, b"moov"))  # refused from its header, before its body
    unknown = _box(b"free", b"....") + _box(b"ftyp") + _box(b"zzzz", b"1") + _box(b"moov")
    assert [k for k, _ in LiveBoxes(1024).feed(unknown)] == ["init"]  # unknown top-level boxes are skipped


# ---- the share ----------------------------------------------------------------------------------------------
class _Upstream:
    """A stand-in relayed stream: yields `chunks` paced by `gate` (one release per chunk), then ends or breaks."""

    def __init__(self, chunks: list[bytes], end: Exception | None = None) -> None:
        self.head = StreamHead(200, "video/mp4", hops=2)
        self.chunks, self.end = chunks, end
        self.gate: asyncio.Queue[int] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.opens = 0

    async def open(self, wait: float) -> "_Upstream":
        self.opens += 1
        return self

    async def _gen(self):
        for c in self.chunks:
            await self.gate.get()
            yield c
        await self.gate.get()
        if self.end is not None:
            raise self.end

    def __aiter__(self):
        return self._gen()

    async def aclose(self) -> None:
        self.closed.set()

    def release(self, n: int) -> None:
        for _ in range(n):
            self.gate.put_nowait(1)


async def _read(stream, n: int) -> list[bytes]:
    out = []
    it = stream.__aiter__()
    async with asyncio.timeout(5):
        while len(out) < n:
            out.append(await it.__anext__())
    return out


async def test_viewers_share_one_upstream_late_ones_start_at_a_key_frame_and_the_linger_cancels_it(
        live_bytes, monkeypatch):
    monkeypatch.setattr(share_mod, "LINGER_S", 0.2)
    units = LiveBoxes(MAX).feed(live_bytes)
    # The relay's chunks cut boxes anywhere: 1000-byte pieces.
    raw = b"".join(u for _, u in units)
    up = _Upstream([raw[i:i + 1000] for i in range(0, len(raw), 1000)])
    shares = LiveShares()
    req = StreamRequest("live", CAMERA)
    a, b = await asyncio.gather(shares.open(req, up.open, 1.0), shares.open(req, up.open, 1.0))
    assert up.opens == 1 and shares.hits == 1 and a.head.hops == 2
    up.release(len(up.chunks) // 2)
    got_a = await _read(a, 10)
    assert got_a[0] == units[0][1] and got_a[1] == units[1][1]  # the init, then the first (key) fragment
    await asyncio.sleep(0.05)
    c = await shares.open(req, up.open, 1.0)  # mid-GOP: starts at the last key frame, at once
    got_c = await _read(c, 2)
    assert got_c[0] == units[0][1] and got_c[1] in [u for _, u in units[1:]]
    assert decode(got_c[0] + got_c[1]).frames == 1  # a key frame: decodes alone
    rep = shares.report()
    assert rep["open"] == 1 and rep["viewers"] == 3 and rep["cameras"][0]["camera_id"] == CAMERA
    for s in (a, b, c):
        await s.aclose()
    await asyncio.wait_for(up.closed.wait(), 3)  # the linger passed: the upstream was cancelled
    assert shares.report()["open"] == 0
    await shares.aclose()


@pytest.mark.parametrize("tail, end", [
    (b"\x00\x00\x00\x01mdat\xff\xff\xff\xff\xff\xff\xff\xff", None),  # a huge largesize
    (b"garbage garbage garbage", None),
    (b"", StreamBroken("a tier below went silent")),
    (b"", None),  # the relayed stream ended
])
async def test_a_malformed_broken_or_ended_upstream_ends_every_viewer(live_bytes, tail, end):
    units = LiveBoxes(MAX).feed(live_bytes)
    up = _Upstream([units[0][1], units[1][1]] + ([tail] if tail else []), end)
    shares = LiveShares()
    req = StreamRequest("live", CAMERA)
    viewers = [await shares.open(req, up.open, 1.0) for _ in range(2)]
    up.release(10)
    broken = bool(tail) or end is not None
    for v in viewers:
        got = await _read(v, 2)
        assert got == [units[0][1], units[1][1]]
        with pytest.raises(StreamBroken if broken else StopAsyncIteration):  # served up: X, or E
            await asyncio.wait_for(v.__aiter__().__anext__(), 3)
    await asyncio.wait_for(up.closed.wait(), 3)
    rep = shares.report()
    assert rep["open"] == 0 and rep["broken"] == int(broken)
    await shares.aclose()


async def test_an_upstream_that_cannot_open_is_an_error_for_every_opener():
    async def refuse(wait: float):
        await asyncio.sleep(0.05)
        raise StreamError(504, "tier 450102001 did not answer")

    shares = LiveShares()
    req = StreamRequest("live", CAMERA)
    got = await asyncio.gather(*(shares.open(req, refuse, 1.0) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(e, StreamError) and e.status == 504 for e in got)
    assert shares.report()["open"] == 0 and shares.opened == 0
    await shares.aclose()
