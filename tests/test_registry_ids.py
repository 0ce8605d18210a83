"""GB/T 28181 camera ids: validation and generation."""

from __future__ import annotations

import re

import pytest

from registry.ids import (CAMERA_ID_PATTERN, CameraIdError, centre_code, generate_camera_id, node_of_camera_id,
                          validate_camera_id)

VALID = "45010200001320000001"


@pytest.mark.parametrize("cid", [VALID, "45010200001310000042", "11000000001329999999"])
def test_valid_ids(cid):
    assert validate_camera_id(cid) == cid


@pytest.mark.parametrize(
    ("cid", "reason"),
    [
        ("4501020000132000000", "20 digits"),  # 19
        ("450102000013200000011", "20 digits"),  # 21
        ("", "20 digits"),
        ("4501020000132000000A", "digits 0-9"),
        ("45010200001320000 01", "digits 0-9"),
        ("４５010200001320000001", "digits 0-9"),  # full-width digits are str.isdigit()
        ("4501020000132000001\n", "digits 0-9"),  # "$" matches before a final newline
        ("45010200002000000001", "type code 200"),
        ("45010200001110000001", "type code 111"),  # an NVR, not a camera
        ("00010200001320000001", "province"),
    ],
)
def test_invalid_ids_give_a_specific_reason(cid, reason):
    with pytest.raises(CameraIdError, match=reason):
        validate_camera_id(cid)


@pytest.mark.parametrize("cid", [VALID, "45010200001310000042", "4501020000132000000", "45010200002000000001",
                                 "00010200001320000001", "4501020000132000001\n", "４５010200001320000001"])
def test_the_pattern_the_api_description_gives_agrees(cid):
    try:
        validate_camera_id(cid)
        valid = True
    except CameraIdError:
        valid = False
    assert valid == bool(re.fullmatch(CAMERA_ID_PATTERN, cid))


def test_non_string_refused():
    with pytest.raises(CameraIdError):
        validate_camera_id(45010200001320000001)  # type: ignore[arg-type]


def test_camera_id_error_is_a_value_error():
    assert issubclass(CameraIdError, ValueError)


@pytest.mark.parametrize(
    ("node", "centre"),
    [("45", "45000000"), ("4501", "45010000"), ("450100", "45010000"), ("450102", "45010200"),
     ("450102001", "45010200"), ("450102001001", "45010200")],
)
def test_centre_code_pads_region_and_city(node, centre):
    assert centre_code(node) == centre


@pytest.mark.parametrize("node", ["45", "4501", "450102", "450102003"])
def test_generated_ids_validate_and_encode_the_node(node):
    cid = generate_camera_id(node, 7)
    assert validate_camera_id(cid) == cid
    assert cid.startswith(centre_code(node))
    assert cid[8:10] == "00" and cid[10:13] == "132" and cid[13] == "0" and cid[14:] == "000007"
    # The id's centre code leads back to the node (or its county for deeper nodes).
    assert node.startswith(node_of_camera_id(cid))


def test_generate_options():
    cid = generate_camera_id("450102", 999999, type_code="131", industry="05", network="7")
    assert cid == "45010200051317999999"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"serial": -1}, "out of range"),
        ({"serial": 1_000_000}, "out of range"),
        ({"serial": True}, "integer"),
        ({"serial": 1, "type_code": "200"}, "not a camera"),
        ({"serial": 1, "industry": "5"}, "industry"),
        ({"serial": 1, "network": "x"}, "network"),
    ],
)
def test_generate_refuses_bad_parts(kwargs, reason):
    with pytest.raises(CameraIdError, match=reason):
        generate_camera_id("450102", **kwargs)


def test_generate_refuses_bad_node():
    with pytest.raises(CameraIdError, match="centre code"):
        generate_camera_id("45x", 1)
