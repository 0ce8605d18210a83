"""RFC 6381 codec strings ("avc1.64001f", "hvc1.1.6.L93.B0") of a camera's stream, from its extradata.

A browser decides whether it can play a stream from this string (`MediaSource.isTypeSupported`,
`video.canPlayType`) before it opens it: the page shows live.mp4 only when the answer is yes, and falls back to
MJPEG otherwise (H.265 in Chromium without a hardware decoder). The extradata is either the MP4 sample
description's record (avcC / hvcC, from a file) or Annex B parameter sets (from RTSP's SDP).
"""

from __future__ import annotations

AVC_SPS = 7  # H.264 nal_unit_type of a sequence parameter set
HEVC_SPS = 33  # H.265 nal_unit_type of a sequence parameter set
HEVC_PTL_BYTES = 12  # general profile_tier_level: 1 + 4 (compatibility) + 6 (constraints) + 1 (level)
_HEVC_SPACES = ("", "A", "B", "C")  # general_profile_space as RFC 6381 / ISO 14496-15 Annex E spells it


def codec_string(codec: str, extradata: bytes) -> str | None:
    """The RFC 6381 string of a stream (codec: FFmpeg's name), or None when the extradata does not tell."""
    if codec == "h264":
        return _avc(extradata)
    if codec == "hevc":
        return _hevc(extradata)
    return None


def mime_type(codecs: str | None) -> str:
    """The MIME type a browser is asked about: video/mp4 with its codecs parameter when known."""
    return f'video/mp4; codecs="{codecs}"' if codecs else "video/mp4"


def _nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes 00 00 01 or 00 00 00 01)."""
    out, i, n = [], 0, len(data)
    starts = []
    while i + 3 <= n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        out.append(data[s:end].rstrip(b"\x00"))
    return out


def _unescape(nal: bytes) -> bytes:
    """A NAL unit's payload without emulation-prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _avc(extra: bytes) -> str | None:
    if len(extra) >= 4 and extra[0] == 1:  # avcC: version, profile, compatibility, level
        return f"avc1.{extra[1]:02x}{extra[2]:02x}{extra[3]:02x}"
    for nal in _nal_units(extra):
        if len(nal) >= 4 and nal[0] & 0x1F == AVC_SPS:
            return f"avc1.{nal[1]:02x}{nal[2]:02x}{nal[3]:02x}"
    return None


def _hevc(extra: bytes) -> str | None:
    if len(extra) >= 1 + HEVC_PTL_BYTES and extra[0] == 1:  # hvcC: version, then profile_tier_level
        return _hevc_ptl(extra[1:1 + HEVC_PTL_BYTES])
    for nal in _nal_units(extra):
        if len(nal) >= 2 and (nal[0] >> 1) & 0x3F == HEVC_SPS:
            rbsp = _unescape(nal[2:])  # after the 2-byte NAL header
            if len(rbsp) >= 1 + HEVC_PTL_BYTES:  # a byte of ids and sub-layer counts, then profile_tier_level
                return _hevc_ptl(rbsp[1:1 + HEVC_PTL_BYTES])
    return None


def _hevc_ptl(ptl: bytes) -> str:
    """hvc1.<space><profile>.<compatibility, bits reversed, hex>.<tier><level>[.<constraint bytes>]."""
    space, tier, profile = ptl[0] >> 6, (ptl[0] >> 5) & 1, ptl[0] & 0x1F
    compat = int.from_bytes(ptl[1:5], "big")
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraints = list(ptl[5:11])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = ["hvc1", f"{_HEVC_SPACES[space]}{profile}", f"{reversed_compat:x}", f"{'H' if tier else 'L'}{ptl[11]}"]
    parts += [f"{b:x}".upper() for b in constraints]
    return ".".join(parts)
