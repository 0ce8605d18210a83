"""ONNX object detectors: YOLOX and ultralytics YOLOv8/YOLO11 exports, told apart by the model itself."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from analytics.types import Detection

COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

YOLOX = "yolox"
YOLOV8 = "yolov8"  # ultralytics YOLOv8 / YOLO11 export layout (same head output)

STRIDES = (8, 16, 32)
NMS_IOU = 0.45
PAD_VALUE = 114
MAX_CANDIDATES = 3000  # bounds NMS cost when min_score is set very low
MAX_DETECTIONS = 300
_DEFAULT_SIZE = {YOLOX: 416, YOLOV8: 640}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class ModelError(Exception):
    """The model file is missing, unreadable, or not a detector this module understands."""


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image was fitted into the model input, to map boxes back."""

    scale: float  # input pixels per source pixel
    pad_x: int  # left padding in input pixels
    pad_y: int  # top padding in input pixels
    src_w: int
    src_h: int


def anchor_count(width: int, height: int) -> int:
    """Number of anchor points a stride-8/16/32 head produces for an input size."""
    return sum(math.ceil(height / s) * math.ceil(width / s) for s in STRIDES)


class Detector:
    """One ONNX Runtime session plus the pre/post-processing of its model family."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        name: str,
        family: str,
        labels: tuple[str, ...],
        input_size: tuple[int, int],
        decoded: bool = False,
    ) -> None:
        self._session = session
        self.name = name
        self.family = family
        self.labels = labels
        self.input_size = input_size  # (w, h)
        # YOLOX exported with decode_in_inference: boxes are already in input pixels
        self.decoded = decoded
        inp = session.get_inputs()[0]
        self._input_name = inp.name
        self._input_dtype = _DTYPES[inp.type]
        self._label_index = {name: i for i, name in enumerate(labels)}
        self._grids, self._strides = _yolox_grids(*input_size) if family == YOLOX else (None, None)

    def __repr__(self) -> str:
        return f"Detector({self.name!r}, family={self.family!r}, input_size={self.input_size})"

    def detect(
        self, image_bgr: np.ndarray, min_score: float = 0.3, labels: frozenset[str] | None = None
    ) -> list[Detection]:
        """Find objects in a BGR image; boxes normalised to 0..1 of that image."""
        blob, lb = self.preprocess(image_bgr)
        return self.postprocess(self.infer(blob), lb, min_score, labels)

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Letterbox the image into the model input and build the NCHW blob."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.size == 0:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
        h, w = image_bgr.shape[:2]
        in_w, in_h = self.input_size
        r = min(in_w / w, in_h / h)
        if self.family == YOLOX:
            # YOLOX training code truncates and pads bottom/right only
            nw, nh = max(1, int(w * r)), max(1, int(h * r))
            top, left = 0, 0
        else:
            # ultralytics LetterBox: rounded size, padding split around the image
            nw, nh = max(1, round(w * r)), max(1, round(h * r))
            dw, dh = (in_w - nw) / 2, (in_h - nh) / 2
            top, left = round(dh - 0.1), round(dw - 0.1)
        resized = image_bgr if (nw, nh) == (w, h) else cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        padded = cv2.copyMakeBorder(
            resized, top, in_h - nh - top, left, in_w - nw - left, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
        if self.family == YOLOX:
            blob = cv2.dnn.blobFromImage(padded, 1.0, swapRB=False)
        else:
            blob = cv2.dnn.blobFromImage(padded, 1.0 / 255.0, swapRB=True)
        if self._input_dtype is not np.float32:
            blob = blob.astype(self._input_dtype)
        return blob, Letterbox(scale=r, pad_x=left, pad_y=top, src_w=w, src_h=h)

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """Run the session on a prepared blob; returns the raw first output."""
        return self._session.run(None, {self._input_name: blob})[0]

    def postprocess(
        self,
        output: np.ndarray,
        lb: Letterbox,
        min_score: float = 0.3,
        labels: frozenset[str] | None = None,
    ) -> list[Detection]:
        """Decode raw output, class-aware NMS, map boxes back to the source image."""
        if self.family == YOLOX:
            rows = output[0]
            cls_scores = rows[:, 5:] * rows[:, 4:5]  # objectness x class score
        else:
            rows = output[0].T  # [N, 4+nc]; a view, no copy
            cls_scores = rows[:, 4:]
        cls_scores = cls_scores.astype(np.float32, copy=False)

        columns = None
        if labels is not None:
            columns = np.array(sorted(self._label_index[x] for x in labels if x in self._label_index), dtype=np.intp)
            if columns.size == 0:
                return []
            cls_scores = cls_scores[:, columns]
        best = cls_scores.argmax(axis=1)
        conf = cls_scores[np.arange(len(best)), best]
        keep = np.flatnonzero(conf >= min_score)
        if keep.size == 0:
            return []
        if keep.size > MAX_CANDIDATES:
            keep = keep[np.argpartition(conf[keep], -MAX_CANDIDATES)[-MAX_CANDIDATES:]]
        conf = conf[keep]
        class_ids = best[keep] if columns is None else columns[best[keep]]

        xywh = rows[keep, :4].astype(np.float32)
        if self.family == YOLOX and not self.decoded:
            xywh[:, :2] = (xywh[:, :2] + self._grids[keep]) * self._strides[keep]
            xywh[:, 2:] = np.exp(xywh[:, 2:]) * self._strides[keep]
        # centre -> top-left, the Rect form NMSBoxes wants
        xywh[:, :2] -= xywh[:, 2:] / 2
        picked = cv2.dnn.NMSBoxesBatched(
            xywh, conf, class_ids.astype(np.int32), min_score, NMS_IOU, top_k=MAX_DETECTIONS
        )
        picked = np.asarray(picked, dtype=np.intp).reshape(-1)
        if picked.size == 0:
            return []

        sel = xywh[picked]
        x1 = (sel[:, 0] - lb.pad_x) / lb.scale
        y1 = (sel[:, 1] - lb.pad_y) / lb.scale
        x2 = x1 + sel[:, 2] / lb.scale
        y2 = y1 + sel[:, 3] / lb.scale
        boxes = np.stack(
            [
                np.clip(x1 / lb.src_w, 0.0, 1.0),
                np.clip(y1 / lb.src_h, 0.0, 1.0),
                np.clip(x2 / lb.src_w, 0.0, 1.0),
                np.clip(y2 / lb.src_h, 0.0, 1.0),
            ],
            axis=1,
        )
        out: list[Detection] = []
        for box, score, cid in zip(boxes.tolist(), conf[picked].tolist(), class_ids[picked].tolist()):
            # a box lying wholly in the padding collapses to nothing after clipping
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            out.append(Detection(label=self.labels[cid], score=score, box=tuple(box)))
        return out


def _yolox_grids(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-point grid offsets and strides in YOLOX output order (read-only, shared by threads)."""
    grids, strides = [], []
    for s in STRIDES:
        hs, ws = math.ceil(height / s), math.ceil(width / s)
        yv, xv = np.meshgrid(np.arange(hs), np.arange(ws), indexing="ij")
        grids.append(np.stack((xv, yv), axis=2).reshape(-1, 2))
        strides.append(np.full((hs * ws, 1), s))
    g = np.concatenate(grids).astype(np.float32)
    st = np.concatenate(strides).astype(np.float32)
    g.flags.writeable = False
    st.flags.writeable = False
    return g, st


def _session_options(intra_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # spinning workers would steal the cores that decoder threads need
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def _parse_names(raw: str, path: Path) -> tuple[str, ...]:
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"{path}: metadata 'names' is not a dict literal: {raw[:80]!r}") from exc
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or sorted(names) != list(range(len(names))):
        raise ModelError(f"{path}: metadata 'names' must map 0..n-1 to class names")
    return tuple(str(names[i]) for i in range(len(names)))


def _input_size(shape: list, metadata: dict[str, str], default: int) -> tuple[int, int]:
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return w, h
    # dynamic export: ultralytics records the size it was exported at
    imgsz = metadata.get("imgsz")
    if imgsz:
        try:
            val = ast.literal_eval(imgsz)
            if isinstance(val, int):
                return val, val
            if isinstance(val, (list, tuple)) and len(val) == 2:
                return int(val[1]), int(val[0])
        except (ValueError, SyntaxError, TypeError):
            pass
    return default, default


def load_detector(
    path: str | Path, *, intra_threads: int = 1, providers: list[str] | None = None
) -> Detector:
    """Load an ONNX detector, telling its family from its inputs and outputs."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=_session_options(intra_threads), providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises several pybind error types for bad files
        raise ModelError(f"cannot load model {path}: {exc}") from exc

    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected one image input, model has {len(inputs)}")
    inp = inputs[0]
    if inp.type not in _DTYPES:
        raise ModelError(f"{path}: input {inp.name!r} is {inp.type}, expected float or float16")
    if len(inp.shape) != 4 or (isinstance(inp.shape[1], int) and inp.shape[1] != 3):
        raise ModelError(f"{path}: input {inp.name!r} has shape {inp.shape}, expected [1, 3, H, W]")

    metadata = dict(session.get_modelmeta().custom_metadata_map)
    ultralytics_meta = "names" in metadata
    w, h = _input_size(inp.shape, metadata, _DEFAULT_SIZE[YOLOV8 if ultralytics_meta else YOLOX])

    # one probe run: output dims may be dynamic, and a model that loads but cannot run should fail now
    probe = np.full((1, 3, h, w), PAD_VALUE, dtype=_DTYPES[inp.type])
    try:
        out = session.run(None, {inp.name: probe})[0]
    except Exception as exc:
        raise ModelError(f"{path}: test inference at {w}x{h} failed: {exc}") from exc

    n = anchor_count(w, h)
    shape = tuple(out.shape)
    decoded = False
    if len(shape) == 3 and shape[0] == 1 and shape[1] == n and shape[2] > 5:
        family, nc = YOLOX, shape[2] - 5
        # decode_in_inference exports put box centres in input pixels (mean ~ w/2);
        # raw ones hold grid offsets (mean ~ 0.5), so the probe tells them apart
        decoded = float(np.mean(out[0, :, 0])) > w / 10
    elif len(shape) == 3 and shape[0] == 1 and shape[2] == n and shape[1] > 4:
        family, nc = YOLOV8, shape[1] - 4
    else:
        raise ModelError(
            f"{path}: output shape {list(shape)} is neither YOLOX [1, {n}, 5+nc] "
            f"nor ultralytics YOLOv8 [1, 4+nc, {n}] for a {w}x{h} input"
        )

    if ultralytics_meta:
        labels = _parse_names(metadata["names"], path)
    elif nc == len(COCO_LABELS):
        labels = COCO_LABELS
    else:
        labels = tuple(f"class{i}" for i in range(nc))
    if len(labels) != nc:
        raise ModelError(f"{path}: metadata names {len(labels)} classes but the output has {nc}")

    return Detector(
        session,
        name=f"{family}:{path.stem}",
        family=family,
        labels=labels,
        input_size=(w, h),
        decoded=decoded,
    )
