"""Export a trained model to a model bundle: ``model.onnx``, ``meta.json``, ``weights.safetensors``.

The ONNX graph is :class:`mbmt_ros.runtime.torch_graph.BundleGraph`: uint8 NHWC RGB in at the
bundle size, normalisation, argmax + max-confidence and the task outputs inside the graph, a
dynamic batch axis. Beside it an FP16 variant ``model_fp16.onnx`` (same inputs and outputs)
serves TensorRT 11's strongly typed FP16 builds. Before anything is published, ONNX Runtime's
outputs are compared with PyTorch's on sample inputs (the *parity check*, stored in
``meta.json``); the bundle is written to a temporary folder and renamed into place, so a
failed export never leaves a half-written bundle.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import mbmt_ros
from mbmt_ros.io import atomic_directory, atomic_write_json
from mbmt_ros.models import (
    load_model,
    read_checkpoint_metadata,
    resolve_checkpoint_path,
    save_model,
)
from mbmt_ros.runtime.bundle import (
    INPUT_NAME,
    META_FILE,
    MODEL_FILE,
    MODEL_FP16_FILE,
    REFERENCE_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    output_names,
    sha256_file,
)
from mbmt_ros.runtime.errors import TensorRTReadinessError
from mbmt_ros.runtime.torch_graph import BundleGraph
from mbmt_ros.runtime.trt_readiness import OPSET_RANGE, READINESS_RULES, assert_tensorrt_ready
from mbmt_ros.runtime.verify import reference_frames, save_reference
from mbmt_ros.tasks import (
    DEPTH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALS,
    NYU13_CLASSES,
    SEGMENTATION,
    default_palette,
    validate_tasks,
)
from training.errors import CheckpointError, MbmtError
from training.provenance import git_state

__all__ = ["ExportError", "DEFAULT_INPUT_SIZE", "EXPORTERS", "PARITY_TOLERANCES",
           "export_bundle", "export_model", "parity_check", "sample_images", "load_metrics"]

_log = logging.getLogger(__name__)

#: Input size (height, width) when neither the caller nor the checkpoint names one (NYUv2/MTAN).
DEFAULT_INPUT_SIZE = (288, 384)
#: ONNX exporters: ``torchscript`` (opset 17, fast, TensorRT 8.6+), ``dynamo``
#: (torch.export based, opset 18), ``auto`` = torchscript where this torch still has it.
EXPORTERS = ("auto", "torchscript", "dynamo")
#: FP32 ONNX Runtime vs PyTorch bounds; an export outside them fails.
PARITY_TOLERANCES = {"segmentation_agreement_min": 0.999, "segmentation_confidence_max_abs": 1e-3,
                     "depth_max_abs": 1e-3, "depth_max_rel": 1e-3, "normals_max_abs": 1e-3}


class ExportError(MbmtError, RuntimeError):
    """The model cannot be exported, or the exported graph disagrees with PyTorch."""


def export_bundle(ckpt: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  input_size: tuple[int, int] | None = None, tasks: list[str] | None = None,
                  metrics: dict[str, Any] | None = None, exporter: str = "auto",
                  fp16: bool = True, overwrite: bool = False) -> Path:
    """Export the checkpoint ``ckpt`` (a ``model.safetensors`` or a folder holding one)."""
    _check_destination(Path(out), overwrite)
    path = resolve_checkpoint_path(ckpt)
    metadata = read_checkpoint_metadata(path)
    model = load_model(path)
    provenance = {"checkpoint": str(path.resolve()), "checkpoint_sha256": sha256_file(path),
                  "data": metadata.get("data"), "stage": metadata.get("stage"),
                  "checkpoint_metadata": metadata}
    size = input_size or metadata.get("input_size") or DEFAULT_INPUT_SIZE
    return export_model(model, out, input_size=(int(size[0]), int(size[1])), tasks=tasks,
                        metrics=metrics if metrics is not None else metadata.get("metrics"),
                        class_names=metadata.get("class_names"), provenance=provenance,
                        exporter=exporter, fp16=fp16, overwrite=overwrite)


def export_model(model: nn.Module, out: str | os.PathLike[str], *,
                 input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
                 tasks: list[str] | None = None, metrics: dict[str, Any] | None = None,
                 class_names: list[str] | None = None, provenance: dict[str, Any] | None = None,
                 exporter: str = "auto", fp16: bool = True, overwrite: bool = False) -> Path:
    """Write the bundle of an in-memory model (built by ``build_model``) to ``out``."""
    config = dict(getattr(model, "config", None) or {})
    if not config:
        raise ExportError("the model has no .config; build it with mbmt_ros.models.build_model")
    if getattr(model, "extra_channels", 0):
        raise ExportError(f"a {config.get('arch')!r} model needs an extra input (depth or "
                          f"segmentation) and cannot run on a robot's RGB camera; export the "
                          f"RGB-only student instead")
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {list(EXPORTERS)}")
    height, width = _check_size(input_size)
    own = tuple(model.tasks)
    try:
        chosen = validate_tasks(tasks) if tasks else own
    except ValueError as exc:
        raise ExportError(f"--tasks: {exc}") from exc
    if any(t not in own for t in chosen):
        raise ExportError(f"--tasks {list(chosen)} asks for tasks the model lacks; the model "
                          f"has {list(own)}")
    _check_destination(Path(out), overwrite)
    model = model.eval().float().cpu()
    names = _class_names(model, class_names) if SEGMENTATION in chosen else []
    out = Path(out)
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            samples = sample_images(height, width)
            graph = BundleGraph(model, chosen).eval()
            used = _export_onnx(graph, tmp / MODEL_FILE, samples, exporter)
            _check_tensorrt_ready(tmp / MODEL_FILE)
            parity = {"fp32": parity_check(graph, tmp / MODEL_FILE, samples)}
            _enforce(parity["fp32"])
            reference = write_reference_set(tmp / MODEL_FILE, tmp / REFERENCE_FILE,
                                            (height, width))
            if fp16:
                half = BundleGraph(copy.deepcopy(model).half(), chosen, dtype=torch.float16)
                _export_onnx(half.eval(), tmp / MODEL_FP16_FILE, samples, exporter)
                _check_tensorrt_ready(tmp / MODEL_FP16_FILE)
                parity["fp16"] = _fp16_parity(graph, tmp / MODEL_FP16_FILE, samples)
            save_model(tmp / WEIGHTS_FILE, model, {"exported_tasks": list(chosen),
                                                   "input_size": [height, width]})
            meta = _meta(model, config, chosen, (height, width), names, tmp, used, parity,
                         metrics, provenance or {})
            meta["reference"] = reference
            atomic_write_json(tmp / META_FILE, meta)
            _publishable(tmp)
    except FileExistsError as exc:
        raise ExportError(f"{out} already exists; pass --overwrite or choose another --out") \
            from exc
    _log.info("exported %s model (%s) to %s: seg agreement %s", config.get("arch"),
              ", ".join(chosen), out,
              parity["fp32"].get("segmentation_agreement", "n/a"))
    return out


def _check_tensorrt_ready(path: Path) -> None:
    """The static TensorRT-readiness check (no TensorRT needed): a graph TensorRT could not
    build fails the export here, before anything is published, instead of on the robot."""
    try:
        assert_tensorrt_ready(path, name=path.name)
    except TensorRTReadinessError as exc:
        raise ExportError(f"{exc}. Nothing was written; see docs/deployment.md "
                          f"(TensorRT readiness)") from exc


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite or choose another --out")


def _publishable(folder: Path) -> None:
    """World-readable bundle (temp files are created private): the node may run as another
    user than the one who exported."""
    for file in folder.iterdir():
        file.chmod(0o644)
    folder.chmod(0o755)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"--input-size must be two integers H W, got {size!r}") from exc
    if height < 32 or width < 32 or height % 32 or width % 32:
        raise ExportError(f"--input-size {height} {width}: height and width must be multiples "
                          f"of 32 (the backbones' output stride), at least 32")
    return height, width


def _class_names(model: nn.Module, names: list[str] | None) -> list[str]:
    count = int(model.num_classes)
    if names:
        if len(names) != count:
            raise ExportError(f"{len(names)} class names given for a model with {count} classes")
        return [str(n) for n in names]
    if count == len(NYU13_CLASSES):
        return list(NYU13_CLASSES)
    return [f"class_{i}" for i in range(count)]


def sample_images(height: int, width: int, count: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 RGB test inputs: smooth random fields (image-like) and noise."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        if i % 2 == 0:
            coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 6, 8)).astype(np.float32))
            smooth = torch.nn.functional.interpolate(coarse, size=(height, width),
                                                     mode="bicubic", align_corners=False)
            images[i] = smooth[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()
        else:
            images[i] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return images


def _export_onnx(graph: BundleGraph, path: Path, samples: np.ndarray, exporter: str) -> str:
    """Export ``graph`` to ``path`` with a dynamic batch axis; returns the exporter used.

    ``auto`` tries the TorchScript exporter (seconds, opset 17) and falls back to the
    torch.export one (slower, opset 18) where the former is gone or fails.
    """
    import onnx

    order = {"auto": ("torchscript", "dynamo")}.get(exporter, (exporter,))
    errors: list[str] = []
    for kind in order:
        try:
            _run_exporter(graph, path, samples, kind)
            _declare_output_shapes(path, samples.shape[1:3])
            onnx.checker.check_model(str(path), full_check=True)
            return kind
        except Exception as exc:  # torch.onnx / onnx raise many unrelated types
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            if kind != order[-1]:
                _log.warning("ONNX export with %s failed (%s); trying %s", kind, exc, order[-1])
    raise ExportError(f"ONNX export of {path.name} failed: " + " | ".join(errors))


def _declare_output_shapes(path: Path, size: tuple[int, int]) -> None:
    """Write the contract's static output shapes (batch stays symbolic) into the graph, which
    the TorchScript exporter leaves symbolic; TensorRT and readers of the bundle rely on them."""
    import onnx

    model = onnx.load(str(path))
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        static = [3, *size] if output.name == NORMALS else list(size)
        if len(dims) != 1 + len(static):
            raise ExportError(f"output {output.name} has rank {len(dims)}, expected "
                              f"{1 + len(static)}")
        dims[0].dim_param = "batch"
        for dim, value in zip(dims[1:], static, strict=True):
            dim.dim_value = value
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    _shapes_from_the_cast(model)
    onnx.save(model, str(path))


def _shapes_from_the_cast(model: Any) -> None:
    """Let ``Shape``/``Size`` nodes that read the uint8 input read its Cast instead.

    The torch.export exporter takes the batch size from ``image`` directly; TensorRT wants
    a uint8 input to feed only a Cast. The graph casts first (same shape), so reading the
    Cast's output is equivalent.
    """
    nodes = model.graph.node
    cast = next((n for n in nodes if n.op_type == "Cast" and INPUT_NAME in n.input), None)
    if cast is None:
        return
    for node in nodes:
        if node.op_type in ("Shape", "Size"):
            node.input[:] = [cast.output[0] if n == INPUT_NAME else n for n in node.input]
    order = [cast] + [n for n in nodes if n is not cast]  # the Cast reads only the input
    copies = [type(cast)() for _ in order]
    for copy_, node in zip(copies, order, strict=True):
        copy_.CopyFrom(node)
    del nodes[:]
    nodes.extend(copies)


def _run_exporter(graph: BundleGraph, path: Path, samples: np.ndarray, kind: str) -> None:
    example = (torch.from_numpy(samples),)
    names = list(output_names(graph.tasks))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)  # shape asserts
        if kind == "torchscript":
            torch.onnx.export(graph, example, str(path), input_names=[INPUT_NAME],
                              output_names=names, opset_version=17, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"},
                                            **{n: {0: "batch"} for n in names}})
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(graph, example, input_names=[INPUT_NAME],
                                        output_names=names, opset_version=18, dynamo=True,
                                        dynamic_shapes=({0: batch},), verbose=False)
            program.save(str(path))


def parity_check(graph: BundleGraph, onnx_path: Path, samples: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime (CPU) on ``onnx_path`` vs PyTorch FP32 ``graph`` on ``samples``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {INPUT_NAME: samples}), strict=True))
    with torch.no_grad():
        ref = dict(zip(output_names(graph.tasks),
                       (t.numpy() for t in graph(torch.from_numpy(samples))), strict=True))
    report: dict[str, Any] = {"samples": int(len(samples)), "backend": "onnxruntime-cpu",
                              "reference": "pytorch-fp32-cpu"}
    if SEGMENTATION in ref:
        report["segmentation_agreement"] = float(np.mean(got[SEGMENTATION] == ref[SEGMENTATION]))
        report["segmentation_confidence_max_abs"] = _max_abs(got, ref, "segmentation_confidence")
    if DEPTH in ref:
        report["depth_max_abs"] = _max_abs(got, ref, DEPTH)
        report["depth_max_rel"] = report["depth_max_abs"] / max(1.0, float(np.abs(ref[DEPTH]).max()))
    if NORMALS in ref:
        report["normals_max_abs"] = _max_abs(got, ref, NORMALS)
    return report


#: Frames in the bundle's reference set (``mbmt-engine verify``, the node's configure check).
REFERENCE_FRAMES = 3


def write_reference_set(onnx_path: Path, out: Path, size: tuple[int, int],
                        count: int = REFERENCE_FRAMES) -> dict[str, Any]:
    """Write the bundle's reference set: ``count`` image-like frames at the bundle size and
    the outputs of the exported FP32 graph (ONNX Runtime, CPU) on them; returns its record
    for ``meta.json["reference"]`` (see :mod:`mbmt_ros.runtime.verify`)."""
    import onnxruntime as ort

    frames = reference_frames(*size, count=count)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {INPUT_NAME: frames}), strict=True))
    save_reference(out, frames, outputs)
    return {"file": REFERENCE_FILE, "frames": count, "producer": "onnxruntime CPU fp32, "
            + onnx_path.name, "bytes": out.stat().st_size}


def _fp16_parity(graph: BundleGraph, path: Path, samples: np.ndarray) -> dict[str, Any]:
    """The FP16 graph's parity report; reported, not enforced (FP16 error depends on the
    weights), and an ONNX Runtime CPU build lacking an FP16 kernel is recorded, not fatal."""
    try:
        return parity_check(graph, path, samples)
    except Exception as exc:  # onnxruntime raises its own exception types
        _log.warning("FP16 parity check skipped: ONNX Runtime (CPU) cannot run %s: %s",
                     path.name, exc)
        return {"skipped": f"onnxruntime CPU cannot run {path.name}: {exc}"}


def _max_abs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], name: str) -> float:
    return float(np.abs(got[name].astype(np.float64) - ref[name].astype(np.float64)).max())


def _enforce(report: dict[str, Any]) -> None:
    tol = PARITY_TOLERANCES
    failures = []
    if report.get("segmentation_agreement", 1.0) < tol["segmentation_agreement_min"]:
        failures.append(f"segmentation agreement {report['segmentation_agreement']:.5f} < "
                        f"{tol['segmentation_agreement_min']}")
    for key in ("segmentation_confidence_max_abs", "depth_max_rel", "normals_max_abs"):
        if report.get(key, 0.0) > tol[key]:
            failures.append(f"{key} {report[key]:.3g} > {tol[key]}")
    if failures:
        raise ExportError("the exported ONNX graph disagrees with PyTorch: " + "; ".join(failures)
                          + ". Check the model for export-unsafe operations")


def _code_version() -> dict[str, Any]:
    return {"mbmt_ros": mbmt_ros.__version__, "torch": torch.__version__, **git_state()}


def _meta(model: nn.Module, config: dict[str, Any], tasks: tuple[str, ...],
          size: tuple[int, int], class_names: list[str], folder: Path, exporter: str,
          parity: dict[str, Any], metrics: dict[str, Any] | None,
          provenance: dict[str, Any]) -> dict[str, Any]:
    files = {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
             for name in (MODEL_FILE, MODEL_FP16_FILE, WEIGHTS_FILE, REFERENCE_FILE)
             if (folder / name).is_file()}
    outputs = []
    for name in output_names(tasks):
        dtype = "int32" if name == SEGMENTATION else "float32"
        shape = ["N", 3, size[0], size[1]] if name == NORMALS else ["N", size[0], size[1]]
        outputs.append({"name": name, "dtype": dtype, "shape": shape})
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "mbmt_ros.bundle",
        "tasks": list(tasks),
        "arch": config.get("arch"),
        "num_classes": len(class_names),
        "class_names": class_names,
        "palette": [list(c) for c in default_palette(len(class_names))],
        "input_size": [size[0], size[1]],
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "color": "RGB",
                  "shape": ["N", size[0], size[1], 3],
                  "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                                    "in_graph": True}},
        "outputs": outputs,
        "depth_units": "metres",
        "depth_min": 0.0,
        "depth_negative": "clamped to 0 in the graph (never negative; REP 118 metres)",
        "tensorrt_ready": {"checked": True, "rules": dict(READINESS_RULES),
                           "opset_range": list(OPSET_RANGE)},
        "normals_frame": "camera optical frame (x right, y down, z forward), unit vectors",
        "dynamic_batch": True,
        "onnx": {"exporter": exporter, "opset": 17 if exporter == "torchscript" else 18,
                 "fp16_variant": MODEL_FP16_FILE if MODEL_FP16_FILE in files else None},
        "files": files,
        "model_config": config,
        "parity": {"tolerances": PARITY_TOLERANCES, **parity},
        "provenance": {"config": config, "metrics": metrics, "code_version": _code_version(),
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       **provenance},
    }


def load_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a metrics JSON file for the bundle's provenance."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"--metrics {path} is not a readable JSON file ({exc})") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"--metrics {path} must hold a JSON object")
    return value
