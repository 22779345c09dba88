"""Post-training INT8 quantization of a model bundle, calibrated on the user's own data.

``quantize_bundle`` turns a bundle's ``model.onnx`` into ``model_int8.onnx`` with ONNX
Runtime's static QDQ quantization (``onnxruntime.quantization.quantize_static``): weights int8
per output channel (symmetric), activations uint8 per tensor, on the convolutions and matrix
products; the input cast, normalisation, argmax / softmax and normal normalisation stay in
float. A QDQ graph is plain ONNX, so the one file runs INT8 on both CPU backends: ONNX Runtime
fuses it into integer kernels and OpenVINO's low-precision transformations into its own INT8
kernels (VNNI / AMX). NNCF was not used: it pulls in about fifteen packages (scikit-learn,
scipy, rich, pydot, ninja, ...) and its OpenVINO-only IR would need a second file for ONNX
Runtime.

Calibration frames come from the dataset's ``train`` split (evenly spaced, resized to the
bundle size exactly as the predictor does). The INT8 graph is then run through the real
runtime (``open_predictor(..., precision="int8")`` on a staging copy of the bundle) on the
``val`` split and scored with the project's metrics next to ONNX Runtime FP32 on the same
frames. The delta (mIoU points lost, relative increase of the depth abs error) is checked
against user-settable limits *before* anything is written: over a limit, the call raises
:class:`AccuracyLimitError` and the bundle is untouched. Otherwise the INT8 graph and then
``meta.json`` (its checksum and the ``quantization.int8`` record: calibration set, metrics,
deltas, limits) are replaced atomically.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import mbmt_ros
from mbmt_ros.io import atomic_path, atomic_write_json
from mbmt_ros.runtime.bundle import META_FILE, MODEL_INT8_FILE, Bundle, sha256_file
from mbmt_ros.runtime.processing import resize_images
from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION
from training.data.layout import detect_layout, list_indices, read_image, sample_path
from training.data.manifest import open_manifest
from training.errors import MbmtError

__all__ = ["QuantizeError", "AccuracyLimitError", "Limits", "CALIBRATION_METHODS",
           "quantize_bundle", "measure_precisions", "exceeded", "evenly_spaced", "int8_backends",
           "reference_figures"]

_log = logging.getLogger(__name__)

#: Calibration methods of ONNX Runtime (``minmax`` is fast; the others cost more memory).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]
METHOD = ("onnxruntime.quantization.quantize_static: QDQ, weights int8 per-channel symmetric, "
          "activations uint8 per-tensor, ops " + "/".join(_QUANTIZED_OPS))


class QuantizeError(MbmtError, RuntimeError):
    """The bundle cannot be quantized (read-only bundle, no data, quantization failed)."""


class AccuracyLimitError(QuantizeError):
    """The INT8 graph loses more accuracy than the limits allow; nothing was written."""


@dataclass(frozen=True)
class Limits:
    """Largest accepted accuracy loss of INT8 vs FP32 on the validation split."""

    max_miou_drop: float = 1.0  #: mIoU points
    max_depth_increase_pct: float = 2.0  #: relative increase of the depth abs error, percent
    max_normals_increase_deg: float = 2.0  #: increase of the normals mean angle error, degrees


def evenly_spaced(indices: list[int], count: int | None) -> list[int]:
    """``count`` of ``indices`` spread evenly over the list (all of them when ``count`` is
    None or larger): a deterministic, reproducible pick that covers a recording end to end."""
    if count is None or count >= len(indices):
        return list(indices)
    picks = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return [indices[i] for i in dict.fromkeys(picks.tolist())]


def int8_backends() -> list[str]:
    """The CPU backends installed here that run the INT8 graph (ONNX Runtime, OpenVINO)."""
    from mbmt_ros.runtime.registry import BACKENDS

    return [name for name in ("onnxruntime", "openvino")
            if BACKENDS[name].availability("cpu") is None]


def quantize_bundle(bundle_dir: str | os.PathLike[str], data: str | os.PathLike[str], *,
                    frames: int = 64, calib_split: str = "train", val_split: str = "val",
                    val_frames: int | None = None, limits: Limits = Limits(),
                    calibration: str = "minmax", backends: list[str] | None = None,
                    num_threads: int | None = None) -> dict[str, Any]:
    """Write ``model_int8.onnx`` into the bundle if its accuracy delta is within ``limits``.

    Returns the ``quantization.int8`` record written to ``meta.json``; raises
    :class:`AccuracyLimitError` (nothing written) when a backend's delta exceeds a limit.
    """
    if frames < 1:
        raise QuantizeError(f"--frames must be at least 1, got {frames}")
    if calibration not in CALIBRATION_METHODS:
        raise QuantizeError(f"unknown calibration {calibration!r}; choose one of "
                            f"{list(CALIBRATION_METHODS)}")
    bundle = Bundle.load(bundle_dir, verify_checksums=True)
    if not os.access(bundle.path, os.W_OK) or not os.access(bundle.path / META_FILE, os.W_OK):
        raise QuantizeError(f"model bundle {bundle.path} is read-only; copy it somewhere "
                            f"writable and quantize the copy")
    backends = backends or int8_backends()
    if "onnxruntime" not in backends:
        backends = ["onnxruntime", *backends]  # the FP32 reference is ONNX Runtime's
    data = Path(data)
    layout = detect_layout(data, open_manifest(data).label_folder)
    calib = evenly_spaced(list_indices(layout, calib_split, tasks=()), frames)
    val = evenly_spaced(list_indices(layout, val_split, tasks=()), val_frames)
    with tempfile.TemporaryDirectory(prefix="mbmt-quantize-") as tmp:
        work = Path(tmp)
        images = resize_images(np.stack([read_image(sample_path(layout, calib_split, i))
                                         for i in calib]), bundle.input_size)
        int8 = _quantize(bundle, images, calibration, work)
        record = {
            "file": MODEL_INT8_FILE, "method": METHOD,
            "calibration": {"data": str(data.resolve()), "split": calib_split,
                            "frames": len(calib), "indices": calib, "method": calibration},
            "limits": {"max_miou_drop_points": limits.max_miou_drop,
                       "max_depth_abs_err_increase_pct": limits.max_depth_increase_pct,
                       "max_normals_mean_err_increase_deg": limits.max_normals_increase_deg},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "code_version": mbmt_ros.__version__, "onnxruntime": _ort_version(),
        }
        staging = _staging_bundle(bundle, int8, record, work / "bundle")
        record["accuracy"] = measure_precisions(
            staging, data, {name: (name, "int8") for name in backends}, split=val_split,
            indices=val, num_threads=num_threads, work=work)
        _enforce(record["accuracy"], limits)
        record["reference"] = reference_figures(staging, backends, num_threads)
        _publish(bundle, int8, record)
    return record


def reference_figures(bundle: str | os.PathLike[str], backends: list[str],
                      num_threads: int | None = None) -> dict[str, dict[str, float]]:
    """The INT8 graph's figures on the bundle's reference set (``mbmt_ros.runtime.verify``)
    per backend, measured here next to the gate: the robot's ``verify`` derives its INT8
    limits from them (a robot whose INT8 path computes differently is caught there). Empty
    for a bundle without a reference set."""
    from mbmt_ros.runtime import open_predictor
    from mbmt_ros.runtime.verify import verify_predictor

    figures: dict[str, dict[str, float]] = {}
    options = {"num_threads": num_threads} if num_threads else {}
    for name in backends:
        with open_predictor(bundle, backend=name, precision="int8", device="cpu",
                            **options) as pred:
            result = verify_predictor(pred)
        if result.status == "skipped":
            _log.warning("quantize: %s", result.summary)
            return {}
        figures[name] = result.figures
    return figures


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


class _Frames:
    """ONNX Runtime's ``CalibrationDataReader`` over a uint8 (N, h, w, 3) array, one frame per
    call; ``set_range`` lets ONNX Runtime calibrate in strides (bounded memory)."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = images
        self._next, self._end = 0, len(images)

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self._images))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return {"image": self._images[self._next - 1:self._next]}


def _stride(count: int, largest: int = 4) -> int:
    """Frames per calibration stride: the largest divisor of ``count`` up to ``largest`` (ONNX
    Runtime keeps every intermediate tensor of a stride in memory - hundreds of MB per frame
    for the paper model - and needs the count to be a multiple of the stride)."""
    return max(d for d in range(1, min(count, largest) + 1) if count % d == 0)


def _quantize(bundle: Bundle, images: np.ndarray, calibration: str, work: Path) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = work / "preprocessed.onnx"
    try:  # shape inference + graph optimisation first, as ONNX Runtime recommends
        quant_pre_process(str(bundle.model_path), str(source))
    except Exception as exc:  # best effort: quantize the exported graph as it is
        _log.warning("quantize: pre-processing %s failed (%s); quantizing it unchanged",
                     bundle.model_path, exc)
        source = bundle.model_path
    reader = type("_Reader", (_Frames, CalibrationDataReader), {})(images)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    out = work / MODEL_INT8_FILE
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # ONNX Runtime logs a line per copied bias
    try:
        quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, op_types_to_quantize=_QUANTIZED_OPS,
                        calibrate_method=method,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                       **({"CalibStridedMinMax": _stride(len(images))}
                                          if calibration == "minmax" else {})})
    except Exception as exc:  # ONNX Runtime raises many types from deep inside
        raise QuantizeError(f"ONNX Runtime could not quantize {bundle.model_path}: "
                            f"{type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)
    return out


def _staging_bundle(bundle: Bundle, int8: Path, record: dict[str, Any], folder: Path) -> Path:
    """A bundle folder linking to the original's files plus the new INT8 graph, so the INT8
    graph is measured through the very runtime path (``precision="int8"``) users will take."""
    folder.mkdir()
    for name in bundle.meta["files"]:
        (folder / name).symlink_to(bundle.path / name)
    (folder / MODEL_INT8_FILE).symlink_to(int8)
    meta = _with_int8(bundle.meta, int8, record)
    atomic_write_json(folder / META_FILE, meta)
    return folder


def _with_int8(meta: dict[str, Any], int8: Path, record: dict[str, Any]) -> dict[str, Any]:
    meta = dict(meta)
    meta["files"] = {**meta["files"], MODEL_INT8_FILE: {"sha256": sha256_file(int8),
                                                        "size": int8.stat().st_size}}
    meta["quantization"] = {**meta.get("quantization", {}), "int8": record}
    return meta


def measure_precisions(bundle: str | os.PathLike[str], data: str | os.PathLike[str],
                       variants: dict[str, tuple[str, str]], *, split: str = "val",
                       indices: list[int] | None = None, num_threads: int | None = None,
                       work: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Accuracy of lower-precision runs of a bundle next to ONNX Runtime FP32 on the frames
    ``indices`` (default: all) of ``data``'s ``split``.

    ``variants``: label -> (backend, precision), e.g. ``{"openvino bf16": ("openvino",
    "bf16")}``. Each is opened through :func:`open_predictor`, must run the precision asked
    for (:class:`QuantizeError` otherwise), and is scored against the ground truth with the
    project's metrics; ``delta`` holds the mIoU points lost and the depth abs error increase
    (percent), ``agreement`` the share of pixels with the FP32 class and the mean relative
    depth difference to FP32.
    """
    from mbmt_ros.runtime import open_predictor
    from training.commands.score import score_folder

    data = Path(data)
    manifest = open_manifest(data)
    layout = detect_layout(data, manifest.label_folder)
    indices = list_indices(layout, split, tasks=()) if indices is None else indices
    options = {"num_threads": num_threads} if num_threads else {}
    runs = {"fp32": open_predictor(bundle, backend="onnxruntime", precision="fp32",
                                   device="cpu", **options)}
    # equal pixels, pixels, depth rel diff, normals angle diff (degrees), both summed over pixels
    sums = {label: np.zeros(4) for label in variants}
    with tempfile.TemporaryDirectory(prefix="mbmt-measure-", dir=work) as tmp:
        out = Path(tmp)
        try:
            for label, (backend, precision) in variants.items():
                runs[label] = open_predictor(bundle, backend=backend, precision=precision,
                                             device="cpu", allow_fallback=True, **options)
                if runs[label].precision != precision:
                    raise QuantizeError(f"{label}: {backend} ran {runs[label].precision}, not "
                                        f"{precision}, on this machine; see the log above")
            for index in indices:
                image = read_image(sample_path(layout, split, index))
                ref = runs["fp32"].predict(image)
                for label, pred in runs.items():
                    result = ref if label == "fp32" else pred.predict(image)
                    folder = out / str(list(runs).index(label))
                    folder.mkdir(exist_ok=True)
                    np.savez(folder / f"{index}.npz", **{k: v for k, v in result.items()
                                                        if k in (SEGMENTATION, DEPTH, "normals")})
                    if label != "fp32":
                        sums[label] += _agreement(result, ref)
        finally:
            for pred in runs.values():
                pred.close()
        classes = (manifest.num_classes if manifest.file is not None
                   else len(runs["fp32"].class_names) or None)
        scores = {label: score_folder(out / str(i), data, split, classes, only=indices)
                  for i, label in enumerate(runs)}
    report: dict[str, Any] = {"split": split, "frames": len(indices),
                              "reference": "onnxruntime fp32", "fp32": scores["fp32"],
                              "variants": {}, "delta": {}, "agreement": {}}
    for label in variants:
        report["variants"][label] = scores[label]
        report["delta"][label] = _delta(scores["fp32"], scores[label])
        equal, pixels, rel, angle = sums[label]
        report["agreement"][label] = {
            "segmentation_pct": 100.0 * equal / pixels if pixels else None,
            "depth_mean_rel_diff_pct": 100.0 * rel / pixels if pixels else None,
            "normals_mean_angle_diff_deg": angle / pixels if pixels else None}
    _log.info("accuracy vs fp32 on %d %s frames: %s", len(indices), split, report["delta"])
    return report


def _agreement(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> np.ndarray:
    pixels = next(iter(ref.values())).shape[0] * next(iter(ref.values())).shape[1]
    equal = (np.count_nonzero(out[SEGMENTATION] == ref[SEGMENTATION])
             if SEGMENTATION in ref else 0)
    rel = (float(np.sum(np.abs(out[DEPTH] - ref[DEPTH]) / np.maximum(np.abs(ref[DEPTH]), 1e-6)))
           if DEPTH in ref else 0.0)
    angle = 0.0
    if NORMALS in ref:
        cos = np.sum(out[NORMALS].astype(np.float64) * ref[NORMALS], axis=-1)
        angle = float(np.sum(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return np.array([equal, pixels, rel, angle])


def _delta(fp32: dict[str, dict[str, float]],
           int8: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """mIoU points lost, depth abs error increase (percent of FP32's) and normals mean angle
    error increase (degrees); None = not scored."""
    delta: dict[str, float | None] = {"miou_drop_points": None,
                                      "depth_abs_err_increase_pct": None,
                                      "normals_mean_err_increase_deg": None}
    if SEGMENTATION in fp32 and SEGMENTATION in int8:
        delta["miou_drop_points"] = fp32[SEGMENTATION]["miou"] - int8[SEGMENTATION]["miou"]
    if DEPTH in fp32 and DEPTH in int8:
        base = fp32[DEPTH]["abs_err"]
        delta["depth_abs_err_increase_pct"] = (
            100.0 * (int8[DEPTH]["abs_err"] - base) / base if base > 0 else 0.0)
    if NORMALS in fp32 and NORMALS in int8:
        delta["normals_mean_err_increase_deg"] = int8[NORMALS]["mean"] - fp32[NORMALS]["mean"]
    return delta


def exceeded(delta: dict[str, float | None], limits: Limits) -> list[str]:
    """The limits a :func:`measure_precisions` ``delta`` entry exceeds (empty: within)."""
    problems = []
    miou, depth = delta["miou_drop_points"], delta["depth_abs_err_increase_pct"]
    if miou is not None and (math.isnan(miou) or miou > limits.max_miou_drop):
        problems.append(f"mIoU -{miou:.2f} points > {limits.max_miou_drop:g} (--max-miou-drop)")
    if depth is not None and (math.isnan(depth) or depth > limits.max_depth_increase_pct):
        problems.append(f"depth abs err +{depth:.2f} % > {limits.max_depth_increase_pct:g} % "
                        f"(--max-depth-increase)")
    normals = delta.get("normals_mean_err_increase_deg")
    if normals is not None and (math.isnan(normals) or normals > limits.max_normals_increase_deg):
        problems.append(f"normals mean angle err +{normals:.2f} deg > "
                        f"{limits.max_normals_increase_deg:g} deg (--max-normals-increase)")
    return problems


def _enforce(report: dict[str, Any], limits: Limits) -> None:
    problems = [f"{name}: {problem}" for name, delta in report["delta"].items()
                for problem in exceeded(delta, limits)]
    if problems:
        raise AccuracyLimitError(
            f"INT8 graph refused, nothing was written: on {report['frames']} "
            f"{report['split']} frames " + "; ".join(problems) + ". Calibrate with more "
            "--frames or --calibration entropy/percentile, or raise the limits")
    if all(v is None for d in report["delta"].values() for v in d.values()):
        raise QuantizeError(f"the {report['split']} split has no segmentation, depth or normals "
                            f"ground "
                            f"truth, so the INT8 accuracy cannot be measured; pass a --val-split "
                            f"with labels")


def _publish(bundle: Bundle, int8: Path, record: dict[str, Any]) -> None:
    """INT8 graph first, then ``meta.json`` (each atomic): a crash in between leaves the old
    bundle valid (an unlisted file is ignored) and re-running replaces both."""
    target = bundle.path / MODEL_INT8_FILE
    with atomic_path(target) as tmp:
        shutil.copyfile(int8, tmp)
    target.chmod(0o644)
    atomic_write_json(bundle.path / META_FILE, _with_int8(bundle.meta, target, record))
    (bundle.path / META_FILE).chmod(0o644)
