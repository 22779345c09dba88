"""Export a trained model to a model bundle: ``model.onnx``, ``meta.json``, ``weights.safetensors``.

The ONNX graph is :class:`mbmt_ros.runtime.torch_graph.BundleGraph`: uint8 NHWC RGB in at the
bundle size, normalisation, argmax + max-confidence and the task outputs inside the graph, a
dynamic batch axis. Beside it an FP16 variant ``model_fp16.onnx`` (same inputs and outputs)
serves TensorRT 11's strongly typed FP16 builds. Before anything is published, ONNX Runtime's
outputs are compared with PyTorch's on sample inputs (the *parity check*, stored in
``meta.json``); the bundle is written to a temporary folder and renamed into place, so a
failed export never leaves a half-written bundle.

The steps live in their own modules: :mod:`training.export.graph` (the ONNX graph and its
TensorRT-readiness check), :mod:`training.export.checks` (parity, reference set) and
:mod:`training.export.meta` (``meta.json``); this module runs them in order.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mbmt_ros.io import atomic_directory, atomic_write_json
from mbmt_ros.models import (
    load_model,
    read_checkpoint_metadata,
    resolve_checkpoint_path,
    save_model,
)
from mbmt_ros.runtime.bundle import (
    META_FILE,
    MODEL_FILE,
    MODEL_FP16_FILE,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    sha256_file,
)
from mbmt_ros.runtime.torch_graph import BundleGraph
from mbmt_ros.tasks import SEGMENTATION, validate_tasks
from training.errors import ExportError
from training.export.checks import (
    PARITY_TOLERANCES,
    REFERENCE_FRAMES,
    enforce_parity,
    fp16_parity,
    parity_check,
    write_reference_set,
)
from training.export.graph import EXPORTERS, check_tensorrt_ready, export_onnx, sample_images
from training.export.meta import bundle_meta, load_metrics, resolve_class_names

__all__ = ["ExportError", "DEFAULT_INPUT_SIZE", "EXPORTERS", "PARITY_TOLERANCES",
           "REFERENCE_FRAMES", "export_bundle", "export_model", "parity_check", "sample_images",
           "write_reference_set", "load_metrics"]

_log = logging.getLogger(__name__)

#: Input size (height, width) when neither the caller nor the checkpoint names one (NYUv2/MTAN).
DEFAULT_INPUT_SIZE = (288, 384)


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
    names = resolve_class_names(model, class_names) if SEGMENTATION in chosen else []
    out = Path(out)
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            samples = sample_images(height, width)
            graph = BundleGraph(model, chosen).eval()
            used = export_onnx(graph, tmp / MODEL_FILE, samples, exporter)
            check_tensorrt_ready(tmp / MODEL_FILE)
            parity = {"fp32": parity_check(graph, tmp / MODEL_FILE, samples)}
            enforce_parity(parity["fp32"])
            reference = write_reference_set(tmp / MODEL_FILE, tmp / REFERENCE_FILE,
                                            (height, width))
            if fp16:
                half = BundleGraph(copy.deepcopy(model).half(), chosen, dtype=torch.float16)
                export_onnx(half.eval(), tmp / MODEL_FP16_FILE, samples, exporter)
                check_tensorrt_ready(tmp / MODEL_FP16_FILE)
                parity["fp16"] = fp16_parity(graph, tmp / MODEL_FP16_FILE, samples)
            save_model(tmp / WEIGHTS_FILE, model, {"exported_tasks": list(chosen),
                                                   "input_size": [height, width]})
            meta = bundle_meta(model, config, chosen, (height, width), names, tmp, used,
                               parity, metrics, provenance or {})
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
