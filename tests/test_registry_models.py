"""Camera models: strict bodies, bounds, node normalisation, patches, redacted views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.bulk import BULK_MAX_ROWS, BulkError, parse_bulk_csv, parse_bulk_json
from registry.models import (
    AnalyticsPatch,
    AnalyticsSettings,
    Camera,
    CameraCreate,
    CameraPatch,
    Location,
    QualityPatch,
    error_details,
    validate_sources,
)
from registry.urls import SourceError

SECRET = "Hik-S3cret"
URL = f"rtsp://admin:{SECRET}@127.0.0.1:554/Streaming/Channels/101"
CID = "45010200001320000001"


def body(**over):
    base = {"name": "North gate", "node": "450102", "url": URL}
    base.update(over)
    return base


def locs(exc: ValidationError) -> list[str]:
    return [e["loc"] for e in error_details(exc)]


def make_camera(**over) -> Camera:
    return Camera.from_create(CameraCreate.model_validate(body(**over)), camera_id=CID, now=1000.0)


# --------------------------------------------------------------------------- create


def test_minimal_create_has_defaults():
    c = CameraCreate.model_validate(body())
    assert c.id is None and c.enabled is True and c.location is None and c.substream_url is None
    assert c.analytics == AnalyticsSettings(fps=5, labels=None, min_score=0.4, motion_threshold=None)


@pytest.mark.parametrize(("given", "normal"), [("450100", "4501"), ("450000", "45"), ("450102", "450102"),
                                              (" 4501 ", "4501"), ("450102001000", "450102001")])
def test_node_normalised(given, normal):
    assert CameraCreate.model_validate(body(node=given)).node == normal


@pytest.mark.parametrize("node", ["4", "45x1", "00", "4501020", "", "4" * 17])
def test_bad_node_refused(node):
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(body(node=node))
    assert locs(info.value) == ["node"]


def test_name_stripped_and_bounded():
    assert CameraCreate.model_validate(body(name="  Gate 1  ")).name == "Gate 1"
    for bad in ("", "   ", "x" * 129, "bad\nname", 5):
        with pytest.raises(ValidationError) as info:
            CameraCreate.model_validate(body(name=bad))
        assert locs(info.value) == ["name"]


def test_id_validated():
    assert CameraCreate.model_validate(body(id=CID)).id == CID
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(body(id="45010200002000000001"))
    (err,) = error_details(info.value)
    assert err["loc"] == "id" and "type code 200" in err["msg"]


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"colour": "red"}, "colour"),
        ({"analytics": {"fsp": 3}}, "analytics.fsp"),
        ({"location": {"lat": 1, "lon": 2, "alt": 3}}, "location.alt"),
        ({"created_at": 5}, "created_at"),
    ],
)
def test_unknown_keys_refused_with_their_path(extra, path):
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(body(**extra))
    details = error_details(info.value)
    assert [d["loc"] for d in details] == [path]
    assert details[0]["type"] == "extra_forbidden"
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("analytics", "path"),
    [
        ({"fps": 0.05}, "analytics.fps"),
        ({"fps": 31}, "analytics.fps"),
        ({"fps": float("nan")}, "analytics.fps"),
        ({"min_score": 0.01}, "analytics.min_score"),
        ({"min_score": 1.0}, "analytics.min_score"),
        ({"motion_threshold": -0.1}, "analytics.motion_threshold"),
        ({"motion_threshold": 1.5}, "analytics.motion_threshold"),
        ({"labels": [""]}, "analytics.labels.0"),
        ({"labels": ["person", "x" * 65]}, "analytics.labels.1"),
        ({"labels": [f"l{i}" for i in range(81)]}, "analytics.labels"),
        ({"labels": "person"}, "analytics.labels"),
    ],
)
def test_analytics_bounds(analytics, path):
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(body(analytics=analytics))
    assert locs(info.value) == [path]


def test_analytics_edges_accepted_and_labels_deduped():
    a = AnalyticsSettings(fps=0.1, min_score=0.99, motion_threshold=0, labels=[" person ", "car", "person"])
    assert a.labels == ["person", "car"]
    assert AnalyticsSettings(fps=30, min_score=0.05, motion_threshold=1).fps == 30
    assert len(AnalyticsSettings(labels=[f"l{i}" for i in range(80)]).labels) == 80


@pytest.mark.parametrize(("loc", "path"), [({"lat": 91, "lon": 0}, "location.lat"),
                                           ({"lat": 0, "lon": -180.5}, "location.lon"),
                                           ({"lat": 0}, "location.lon")])
def test_location_bounds(loc, path):
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(body(location=loc))
    assert locs(info.value) == [path]
    assert Location(lat=-90, lon=180).lat == -90


@pytest.mark.parametrize("url", ["http://cam/x", "rtsp://", "javascript:alert(1)", "x" * 2049, ""])
def test_url_syntax_checked_in_model(url):
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(body(url=url))
    assert locs(info.value) == ["url"]


def test_validation_errors_never_show_the_password():
    bad = body(url=f"rtsp://admin:{SECRET}@cam:70000/x", substream_url=f"ftp://u:{SECRET}@h/", name="")
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(bad)
    assert SECRET not in str(info.value)
    assert SECRET not in json.dumps(error_details(info.value))
    assert sorted(locs(info.value)) == ["name", "substream_url", "url"]


# --------------------------------------------------------------------------- stored record


def test_camera_from_create_and_json_round_trip():
    cam = make_camera(location={"lat": 22.8, "lon": 108.3}, analytics={"labels": ["person"]})
    assert cam.id == CID and cam.created_at == cam.updated_at == 1000.0
    again = Camera.from_json(cam.to_json())
    assert again == cam
    assert SECRET in cam.to_json()  # storage keeps credentials


def test_body_id_wins_and_missing_id_refused():
    assert Camera.from_create(CameraCreate.model_validate(body(id=CID)), camera_id="x").id == CID
    with pytest.raises(ValueError, match="id"):
        Camera.from_create(CameraCreate.model_validate(body()))


def test_public_dict_redacts_and_is_json():
    cam = make_camera(substream_url=f"rtsp://admin:{SECRET}@127.0.0.1/sub?token=tk123")
    out = cam.public_dict()
    text = json.dumps(out)
    assert SECRET not in text and "tk123" not in text
    assert out["url"] == "rtsp://admin:***@127.0.0.1:554/Streaming/Channels/101"
    assert list(out)[0] == "id"
    assert SECRET not in repr(cam) and SECRET not in str(cam)


def test_camera_is_frozen_and_strict():
    cam = make_camera()
    with pytest.raises(ValidationError):
        cam.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Camera.model_validate({**cam.model_dump(), "id": "123"})
    with pytest.raises(ValidationError):
        Camera.model_validate({**cam.model_dump(), "extra": 1})


# --------------------------------------------------------------------------- patch


def test_patch_changes_only_given_keys():
    cam = make_camera(substream_url="rtsp://cam/sub", location={"lat": 1, "lon": 2},
                      analytics={"fps": 2, "labels": ["person"]})
    new = CameraPatch.model_validate({"name": "Renamed", "analytics": {"min_score": 0.6}}).apply(cam, now=2000.0)
    assert new.name == "Renamed" and new.analytics.min_score == 0.6
    assert new.analytics.fps == 2 and new.analytics.labels == ["person"]  # nested keys kept
    assert new.substream_url == "rtsp://cam/sub" and new.location == cam.location
    assert new.created_at == 1000.0 and new.updated_at == 2000.0
    assert cam.name == "North gate"  # the original is untouched


def test_patch_null_clears_optional_fields():
    cam = make_camera(substream_url="rtsp://cam/sub", location={"lat": 1, "lon": 2},
                      analytics={"labels": ["person"], "motion_threshold": 0.2})
    patch = CameraPatch.model_validate(
        {"substream_url": None, "location": None, "analytics": {"labels": None, "motion_threshold": None}}
    )
    new = patch.apply(cam)
    assert new.substream_url is None and new.location is None
    assert new.analytics.labels is None and new.analytics.motion_threshold is None


def test_patch_normalises_node_and_moves_camera():
    new = CameraPatch.model_validate({"node": "450100"}).apply(make_camera())
    assert new.node == "4501"


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"id": "45010200001320000002"}, "id"),
        ({"created_at": 1}, "created_at"),
        ({"name": None}, "name"),
        ({"node": None}, "node"),
        ({"url": None}, "url"),
        ({"enabled": None}, "enabled"),
        ({"analytics": None}, "analytics"),
        ({"analytics": {"fps": None}}, "analytics.fps"),
        ({"analytics": {"fps": 100}}, "analytics.fps"),
        ({"analytics": {"bogus": 1}}, "analytics.bogus"),
        ({"url": "http://x/"}, "url"),
        ({"location": {"lat": 100, "lon": 0}}, "location.lat"),
    ],
)
def test_patch_refusals(patch, path):
    with pytest.raises(ValidationError) as info:
        CameraPatch.model_validate(patch)
    assert locs(info.value) == [path]


@pytest.mark.parametrize("model", [CameraPatch, AnalyticsPatch, QualityPatch])
def test_patch_schemas_allow_null_exactly_where_null_is_accepted(model):
    # The API description is these schemas: a client generated from it must not send a null that is refused.
    props = model.model_json_schema()["properties"]
    for key, prop in props.items():
        nullable = {"type": "null"} in prop.get("anyOf", [])
        try:
            model.model_validate({key: None})
            accepted = True
        except ValidationError:
            accepted = False
        assert nullable == accepted, key
        assert "default" not in prop, key  # a key left out is unchanged, not set to a default


def test_patch_never_moves_updated_at_backwards():
    cam = make_camera()
    assert CameraPatch.model_validate({"enabled": False}).apply(cam, now=10.0).updated_at == cam.updated_at


def test_patch_repr_is_redacted():
    assert SECRET not in repr(CameraPatch.model_validate({"url": URL}))


# --------------------------------------------------------------------------- sources


def test_validate_sources_names_the_field(tmp_path: Path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    ok = CameraCreate.model_validate(body(url="file:clip.mp4", substream_url=URL))
    validate_sources(ok, [tmp_path])
    bad_main = CameraCreate.model_validate(body(url="file:../etc/passwd"))
    with pytest.raises(SourceError, match=r"^url: .*outside"):
        validate_sources(bad_main, [tmp_path])
    bad_sub = CameraCreate.model_validate(body(substream_url="file:missing.mp4"))
    with pytest.raises(SourceError, match=r"^substream_url: .*not found"):
        validate_sources(bad_sub, [tmp_path])


# --------------------------------------------------------------------------- bulk


def test_bulk_json():
    rows = parse_bulk_json(json.dumps([body(), body(name="b")]).encode())
    assert [r["name"] for r in rows] == ["North gate", "b"]
    assert [CameraCreate.model_validate(r).name for r in rows] == ["North gate", "b"]
    # A body the web layer already decoded is accepted as is.
    assert parse_bulk_json([body()]) == [body()]
    with pytest.raises(BulkError, match="array"):
        parse_bulk_json({"cameras": []})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("{}", "array"),
        ('{"a": 1', "invalid JSON"),
        ("[1]", "row 1: must be a JSON object"),
        ('[{"a": 1}, "x"]', "row 2"),
        ("[NaN]", "NaN"),
        (b"\xff\xfe", "UTF-8"),
        ("[" * 100_000, "invalid JSON"),
        ('[{"lat": ' + "1" * 5000 + "}]", "number too long"),
        (json.dumps([{}] * (BULK_MAX_ROWS + 1)), "at most 5000"),
    ],
)
def test_bulk_json_refusals(data, reason):
    with pytest.raises(BulkError, match=reason):
        parse_bulk_json(data)


def test_bulk_json_error_does_not_echo_the_body():
    with pytest.raises(BulkError) as info:
        parse_bulk_json(f'[{{"url": "rtsp://a:{SECRET}@h/x"')
    assert SECRET not in str(info.value)


CSV = (
    "\ufeffid,Name,node,url,substream_url,enabled,lat,lon,fps,labels,min_score\n"
    f"{CID},Gate,450102,{URL},,yes,22.8,108.3,2,person;car | bus,0.5\n"
    "\n"
    ',Yard,4501,"rtsp://cam/x",,0,,,,,\n'
    ",Lane,45,rtsp://cam/y,,maybe,abc,1,,,\n"
)


def test_bulk_csv_rows():
    rows = parse_bulk_csv(CSV)
    assert rows[0] == {
        "id": CID, "name": "Gate", "node": "450102", "url": URL, "enabled": True,
        "location": {"lat": 22.8, "lon": 108.3},
        "analytics": {"fps": 2.0, "labels": ["person", "car", "bus"], "min_score": 0.5},
    }
    assert rows[1] == {"name": "Yard", "node": "4501", "url": "rtsp://cam/x", "enabled": False}
    assert CameraCreate.model_validate(rows[0]).analytics.labels == ["person", "car", "bus"]
    assert CameraCreate.model_validate(rows[1]).id is None
    # Bad values are a row error for CameraCreate, not a malformed body.
    with pytest.raises(ValidationError) as info:
        CameraCreate.model_validate(rows[2])
    assert sorted(locs(info.value)) == ["enabled", "location.lat"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("name,colour\nx,red\n", "unknown column 'colour'"),
        ("name,name\nx,y\n", "twice"),
        ("name,node\na,45,extra\n", "row 1: 3 cells"),
        ('name,node\n"a,45\n', "malformed CSV"),
        ("name,node\na\x00,45\n", "NUL"),
        ("name\n" + "x\n" * (BULK_MAX_ROWS + 1), "at most 5000"),
    ],
)
def test_bulk_csv_refusals(text, reason):
    with pytest.raises(BulkError, match=reason):
        parse_bulk_csv(text)
