"""GB/T 28181 20-digit device codes for cameras (DESIGN §3)."""

from __future__ import annotations

import re

from tiers.nodes import NodeCodeError, normalize_node

__all__ = [
    "CAMERA_ID_LENGTH",
    "CAMERA_ID_PATTERN",
    "CAMERA_TYPE_CODES",
    "MAX_SERIAL",
    "CameraIdError",
    "centre_code",
    "generate_camera_id",
    "id_in_node_division",
    "node_of_camera_id",
    "validate_camera_id",
]

CAMERA_ID_LENGTH = 20
# 131 = camera, 132 = network camera (GB/T 28181-2016 Annex D); other device types
# (NVR 111, DVR 118, alarm inputs 134, ...) are not streams the gateway can analyse.
CAMERA_TYPE_CODES = frozenset({"131", "132"})
# validate_camera_id as a regular expression (the API description's view of it): province digits not 00,
# the type code at digits 11-13.
CAMERA_ID_PATTERN = rf"^(?!00)[0-9]{{10}}({'|'.join(sorted(CAMERA_TYPE_CODES))})[0-9]{{7}}$"
MAX_SERIAL = 999_999

_DIGITS = re.compile(r"^[0-9]+$")


class CameraIdError(ValueError):
    """A camera id that is not a GB/T 28181 camera device code."""


def validate_camera_id(value: str) -> str:
    """Return `value` if it is a 20-digit GB/T 28181 camera code, else raise CameraIdError."""
    if not isinstance(value, str):
        raise CameraIdError("camera id must be a string of 20 digits")
    if len(value) != CAMERA_ID_LENGTH:
        # Report the length only: the value itself may be arbitrary user input.
        raise CameraIdError(f"camera id must have {CAMERA_ID_LENGTH} digits, got {len(value)} characters")
    if not _DIGITS.fullmatch(value) or not value.isascii():  # fullmatch: "$" would let a trailing "\n" by
        raise CameraIdError("camera id must contain the digits 0-9 only")
    if value[:2] == "00":
        raise CameraIdError(f"camera id {value}: centre code {value[:8]} has no province part")
    type_code = value[10:13]
    if type_code not in CAMERA_TYPE_CODES:
        raise CameraIdError(
            f"camera id {value}: type code {type_code} (digits 11-13) is not a camera; expected 131 or 132"
        )
    return value


def centre_code(node: str, base_unit: str = "00") -> str:
    """8-digit centre code for a node: its first 6 digits, zero-padded, plus the 2-digit base unit."""
    code = normalize_node(node)
    if not (isinstance(base_unit, str) and len(base_unit) == 2 and _DIGITS.match(base_unit)):
        raise CameraIdError("base unit must be 2 digits")
    # Townships and villages share their county's centre code (it has no room for them). Each tier
    # deployment counts serials in its own Redis, so deployments under one county need their own
    # base unit (setting id_base_unit) for the ids they generate to stay unique network-wide.
    return code[:6].ljust(6, "0") + base_unit


def generate_camera_id(
    node: str, serial: int, *, type_code: str = "132", industry: str = "00", network: str = "0",
    base_unit: str = "00",
) -> str:
    """Build a camera code for `node` with the given serial (0..999999)."""
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise CameraIdError("serial must be an integer")
    if not 0 <= serial <= MAX_SERIAL:
        raise CameraIdError(f"serial {serial} out of range 0..{MAX_SERIAL}")
    if type_code not in CAMERA_TYPE_CODES:
        raise CameraIdError(f"type code {type_code!r} is not a camera; expected 131 or 132")
    if not (isinstance(industry, str) and len(industry) == 2 and _DIGITS.match(industry)):
        raise CameraIdError("industry code must be 2 digits")
    if not (isinstance(network, str) and len(network) == 1 and _DIGITS.match(network)):
        raise CameraIdError("network code must be 1 digit")
    try:
        centre = centre_code(node, base_unit)
    except NodeCodeError as exc:
        raise CameraIdError(f"cannot derive a centre code: {exc}") from exc
    return validate_camera_id(f"{centre}{industry}{type_code}{network}{serial:06d}")


def node_of_camera_id(camera_id: str) -> str:
    """The most specific node (region, city or county) encoded in a camera id's centre code."""
    return normalize_node(validate_camera_id(camera_id)[:6])


def id_in_node_division(camera_id: str, node: str) -> str:
    """Return `camera_id` if its division digits lie in `node`'s subtree, else raise CameraIdError.

    The centre code carries province, city and county (digits 1-6) and a base unit: an id registered
    for a region, city or county node starts with that node's code; one for a township or village
    (which have no room in the centre code) starts with its county's code. So a tier cannot take
    an id that belongs to another division, such as a sibling county's camera.
    """
    code = normalize_node(node)
    want = code[:6]
    if camera_id[:len(want)] != want:
        raise CameraIdError(f"camera id {camera_id} lies outside node {code}'s division "
                            f"(its first {len(want)} digits must be {want})")
    return camera_id
