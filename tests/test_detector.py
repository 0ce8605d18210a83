"""Detector tests: the real YOLOX-Nano on the real street clip, and a constructed YOLOv8-layout model."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from analytics.detector import COCO_LABELS, YOLOV8, YOLOX, ModelError, anchor_count, load_detector
from analytics.snapshot import encode_jpeg, render_snapshot
from analytics.tracker import iou_matrix
from analytics.types import Detection

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.model

FPS = 25
WANTED = {1.0: 25, 6.0: 150, 14.0: 350}  # seconds -> frame index


@pytest.fixture(scope="module")
def frames(street_clip) -> dict[float, np.ndarray]:
    """BGR frames of the street clip at the seconds the tests look at."""
    out: dict[float, np.ndarray] = {}
    by_index = {i: t for t, i in WANTED.items()}
    with av.open(str(street_clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in by_index:
                out[by_index[i]] = frame.to_ndarray(format="bgr24")
            if len(out) == len(WANTED):
                break
    assert len(out) == len(WANTED)
    return out


@pytest.fixture(scope="module")
def yolox(model_path):
    return load_detector(model_path)


def _check_boxes(dets: list[Detection]) -> None:
    for d in dets:
        x1, y1, x2, y2 = d.box
        assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0, d


def test_family_and_metadata(yolox):
    assert yolox.family == YOLOX
    assert yolox.name == "yolox:yolox_nano"
    assert yolox.labels == COCO_LABELS and len(COCO_LABELS) == 80
    assert yolox.labels[5] == "bus" and yolox.labels[7] == "truck"
    assert yolox.input_size == (416, 416)
    assert not yolox.decoded


@pytest.mark.parametrize(
    "t, label, at_least",
    [(1.0, "car", 2), (6.0, "bus", 1), (14.0, "person", 1)],
)
def test_real_clip_content(yolox, frames, t, label, at_least):
    dets = yolox.detect(frames[t], min_score=0.3)
    _check_boxes(dets)
    strong = [d for d in dets if d.label == label and d.score >= 0.45]
    assert len(strong) >= at_least, dets


def test_label_filter(yolox, frames):
    dets = yolox.detect(frames[14.0], min_score=0.3, labels=frozenset({"person"}))
    assert dets and {d.label for d in dets} == {"person"}
    assert yolox.detect(frames[14.0], labels=frozenset({"giraffe", "no-such-label"})) == []


def _padded_ious(detector, img, top, bottom, left, right) -> tuple[np.ndarray, np.ndarray]:
    """Best same-label IoU of each clear object with the detections on a padded copy, mapped back and not."""
    h, w = img.shape[:2]
    padded = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    ph, pw = padded.shape[:2]
    # clear, not tiny objects: faint small ones may come and go when the picture is rescaled
    ref = [d for d in detector.detect(img, min_score=0.6) if (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) > 0.01]
    moved = detector.detect(padded, min_score=0.3)
    assert len(ref) >= 2 and moved
    raw = np.array([d.box for d in moved])
    back = (raw * [pw, ph, pw, ph] - [left, top, left, top]) / [w, h, w, h]
    mapped = iou_matrix(np.array([d.box for d in ref]), back)
    naive = iou_matrix(np.array([d.box for d in ref]), raw)
    best_mapped, best_naive = [], []
    for i, d in enumerate(ref):
        same = [j for j, m in enumerate(moved) if m.label == d.label]
        assert same, (d, moved)
        best_mapped.append(mapped[i, same].max())
        best_naive.append(naive[i, same].max())
    return np.array(best_mapped), np.array(best_naive)


@pytest.mark.parametrize("t", list(WANTED))
def test_letterbox_maps_back_shift(yolox, frames, t):
    """A border on top keeps the scale and shifts the picture: boxes come back to the same place."""
    mapped, naive = _padded_ious(yolox, frames[t], 160, 0, 0, 0)
    assert mapped.min() >= 0.85, mapped
    assert mapped.mean() > naive.mean() + 0.1  # the check has teeth: unmapped boxes are off


@pytest.mark.parametrize("t", list(WANTED))
def test_letterbox_maps_back_rescaled(yolox, frames, t):
    """Borders left and right change scale and offset; the network sees a smaller picture, so looser."""
    mapped, naive = _padded_ious(yolox, frames[t], 0, 0, 200, 100)
    assert np.median(mapped) >= 0.85 and mapped.min() >= 0.5, mapped
    assert mapped.mean() > naive.mean() + 0.1


def test_detect_is_split_into_stages(yolox, frames):
    img = frames[1.0]
    blob, lb = yolox.preprocess(img)
    assert blob.shape == (1, 3, 416, 416) and blob.dtype == np.float32
    # YOLOX: bottom/right padding only, BGR 0..255
    assert (lb.pad_x, lb.pad_y) == (0, 0) and lb.scale == pytest.approx(416 / 1280)
    assert blob[0, :, -1, -1].tolist() == [114.0, 114.0, 114.0]
    assert blob.max() > 1.0
    out = yolox.infer(blob)
    assert out.shape == (1, anchor_count(416, 416), 85) == (1, 3549, 85)
    assert yolox.postprocess(out, lb, 0.3) == yolox.detect(img, 0.3)


def test_bad_image_rejected(yolox):
    with pytest.raises(ValueError):
        yolox.detect(np.zeros((10, 10), np.uint8))


def test_snapshot_renders(frames, yolox):
    img = frames[14.0]
    before = img.copy()
    d = yolox.detect(img)[0]
    jpg = render_snapshot(img, d.box, d.label, d.score)
    dec = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert dec.shape == (360, 640, 3)  # scaled down to render_snapshot's default width (events.snapshot_width)
    assert np.array_equal(img, before)  # the caller's frame is not drawn on
    thumb = cv2.imdecode(np.frombuffer(encode_jpeg(img, 320, 70), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (180, 320, 3)


# --- constructed models ------------------------------------------------------------------------
# No real ultralytics export exists on this machine and none can be downloaded, so these tests
# build real ONNX graphs with onnx.helper: a constant head output plus 0 * ReduceMean(input), so
# ONNX Runtime really consumes the image, in the exact layout an ultralytics YOLOv8/YOLO11 export
# (or a YOLOX decode_in_inference export) produces.


def _constant_model(path: Path, head: np.ndarray, *, size: int, names: str | None = None) -> Path:
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["head", "nothing"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(head.astype(np.float32), "head"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    graph = helper.make_graph(nodes, "constant_head", [images], [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": names, "task": "detect"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _set_v8(head: np.ndarray, anchor: int, cxcywh: tuple[float, ...], cls: int, score: float) -> None:
    head[0, :4, anchor] = cxcywh
    head[0, 4 + cls, anchor] = score


@pytest.fixture(scope="module")
def v8_model(tmp_path_factory) -> Path:
    head = np.zeros((1, 4 + 3, 8400), np.float32)
    # a 1280x720 frame letterboxes into 640x640 at scale 0.5 with 140 px centred padding above/below
    # person at (200,100)-(400,500) in the frame -> input cx 150, cy 50+140+100, w 100, h 200
    _set_v8(head, 10, (150, 290, 100, 200), 0, 0.90)
    _set_v8(head, 11, (152, 292, 100, 200), 0, 0.70)  # duplicate: NMS removes it
    _set_v8(head, 12, (150, 290, 100, 200), 1, 0.60)  # same place, other class: class-aware NMS keeps it
    # dog at (800,300)-(1100,600) -> input cx 475, cy 365, w 150, h 150
    _set_v8(head, 5000, (475, 365, 150, 150), 2, 0.80)
    _set_v8(head, 6000, (300, 300, 50, 50), 2, 0.20)  # below min_score
    return _constant_model(tmp_path_factory.mktemp("v8") / "yolov8n.onnx", head, size=640,
                           names="{0: 'person', 1: 'car', 2: 'dog'}")  # fmt: skip


def test_yolov8_family(v8_model):
    det = load_detector(v8_model)
    assert det.family == YOLOV8
    assert det.name == "yolov8:yolov8n"
    assert det.labels == ("person", "car", "dog")
    assert det.input_size == (640, 640)

    img = np.zeros((720, 1280, 3), np.uint8)
    blob, lb = det.preprocess(img)
    # RGB 0..1, padding centred: grey bands above and below the picture
    assert (lb.pad_x, lb.pad_y, lb.scale) == (0, 140, 0.5)
    assert blob[0, :, 0, 0] == pytest.approx([114 / 255] * 3)
    assert blob[0, :, 320, 320].tolist() == [0.0, 0.0, 0.0]
    assert blob[0, :, 639, 0] == pytest.approx([114 / 255] * 3)

    dets = sorted(det.detect(img, min_score=0.3), key=lambda d: -d.score)
    assert [(d.label, round(d.score, 2)) for d in dets] == [("person", 0.9), ("dog", 0.8), ("car", 0.6)]
    assert dets[0].box == pytest.approx((200 / 1280, 100 / 720, 400 / 1280, 500 / 720), abs=1e-4)
    assert dets[1].box == pytest.approx((800 / 1280, 300 / 720, 1100 / 1280, 600 / 720), abs=1e-4)
    assert dets[2].box == pytest.approx(dets[0].box, abs=1e-6)

    assert [d.label for d in det.detect(img, labels=frozenset({"dog"}))] == ["dog"]
    assert len(det.detect(img, min_score=0.1)) == 4  # the weak dog shows up only when asked


def test_yolox_decoded_variant(tmp_path):
    """A YOLOX export with decode_in_inference: boxes already in input pixels, no grid decode."""
    n = anchor_count(416, 416)
    head = np.zeros((1, n, 85), np.float32)
    # background anchors hold their own grid centres, as a decoded export does
    cells = []
    for s in (8, 16, 32):
        g = 416 // s
        yv, xv = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        cells.append(np.stack([(xv.ravel() + 0.5) * s, (yv.ravel() + 0.5) * s], 1))
    head[0, :, :2] = np.concatenate(cells)
    head[0, :, 2:4] = 16
    # bus at (0.25..0.75, 0.25..0.5) of a 416x416 frame
    head[0, 100, :6] = (208, 156, 208, 104, 0.9, 0.0)
    head[0, 100, 5 + 5] = 1.0
    det = load_detector(_constant_model(tmp_path / "yolox_s_decoded.onnx", head, size=416))
    assert det.family == YOLOX and det.decoded and det.labels == COCO_LABELS
    dets = det.detect(np.zeros((416, 416, 3), np.uint8), min_score=0.5)
    assert len(dets) == 1 and dets[0].label == "bus" and dets[0].score == pytest.approx(0.9)
    assert dets[0].box == pytest.approx((0.25, 0.25, 0.75, 0.5), abs=1e-4)


def test_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_detector(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelError, match="cannot load"):
        load_detector(garbage)
    # a valid ONNX model whose output is not a detection head
    with pytest.raises(ModelError, match="output shape"):
        load_detector(_constant_model(tmp_path / "classifier.onnx", np.zeros((1, 1000), np.float32), size=224))
    with pytest.raises(ModelError, match="names"):
        load_detector(_constant_model(tmp_path / "badnames.onnx", np.zeros((1, 7, 8400), np.float32),
                                      size=640, names="{0: 'person', 1: 'car'}"))  # fmt: skip
