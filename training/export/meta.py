"""The bundle's ``meta.json``: schema, tasks, classes and palette, input/output contract,
file checksums, parity report and provenance (config, metrics, code version, checkpoint)."""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mbmt_ros
from mbmt_ros.runtime.bundle import (
    INPUT_NAME,
    MODEL_FILE,
    MODEL_FP16_FILE,
    REFERENCE_FILE,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    output_names,
    sha256_file,
)
from mbmt_ros.runtime.trt_readiness import OPSET_RANGE, READINESS_RULES
from mbmt_ros.tasks import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALS,
    NYU13_CLASSES,
    SEGMENTATION,
    default_palette,
)
from training.errors import CheckpointError, ExportError
from training.export.checks import PARITY_TOLERANCES
from training.provenance import git_state

__all__ = ["resolve_class_names", "bundle_meta", "load_metrics"]


def resolve_class_names(model: nn.Module, names: list[str] | None) -> list[str]:
    count = int(model.num_classes)
    if names:
        if len(names) != count:
            raise ExportError(f"{len(names)} class names given for a model with {count} classes")
        return [str(n) for n in names]
    if count == len(NYU13_CLASSES):
        return list(NYU13_CLASSES)
    return [f"class_{i}" for i in range(count)]


def _code_version() -> dict[str, Any]:
    return {"mbmt_ros": mbmt_ros.__version__, "torch": torch.__version__, **git_state()}


def bundle_meta(model: nn.Module, config: dict[str, Any], tasks: tuple[str, ...],
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
