"""The perception node's parameters: one table (name, default, description, range), the
validated :class:`NodeParams`, and QoS profiles by name.

:func:`validate_params` is ROS-free so every rule is unit-tested; the node declares each
:data:`PARAMETERS` entry with a descriptor built from the same table (``ros2 param describe``
shows the text) and fails ``configure`` with :class:`NodeParameterError` on a bad value.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from mbmt_ros.ros.errors import NodeParameterError
from mbmt_ros.tasks import validate_tasks

__all__ = ["ParamSpec", "PARAMETERS", "NodeParams", "validate_params", "qos_profile",
           "BACKENDS", "PRECISIONS", "QOS_PRESETS", "POINTCLOUD_COLORS"]

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
QOS_PRESETS = ("sensor_data", "reliable", "best_effort")
POINTCLOUD_COLORS = ("segmentation", "image", "depth")
_DEVICE = re.compile(r"^(cpu|cuda)$")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``default`` None means typed but unset (a string array)."""

    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("bundle", "", "Model bundle directory (model.onnx + meta.json) made by `mbmt-train export`."),
    ParamSpec("backend", "auto", f"Inference backend: {' | '.join(BACKENDS)} (auto: TensorRT, else ONNX Runtime, else torch)."),
    ParamSpec("precision", "fp16", f"Inference precision: {' | '.join(PRECISIONS)} (where the backend supports it)."),
    ParamSpec("device", "cuda", "Device: cuda or cpu."),
    ParamSpec("tasks", None, "Tasks to publish (segmentation, depth, normals); unset = every task of the bundle."),
    ParamSpec("overlay_alpha", 0.5, "Opacity of class colours over the input in ~/segmentation/color (1 = colours only).", 0.0, 1.0),
    ParamSpec("palette_file", "", "JSON/YAML list of [r, g, b] per class; empty = the bundle's palette."),
    ParamSpec("min_confidence", 0.0, "Pixels whose class confidence is below this are 255 (no prediction).", 0.0, 1.0),
    ParamSpec("pointcloud", False, "Publish ~/points (needs camera_info)."),
    ParamSpec("pointcloud_stride", 2, "Use every n-th pixel (in x and y) for ~/points.", 1, 64),
    ParamSpec("pointcloud_color", "segmentation", f"Point colours: {' | '.join(POINTCLOUD_COLORS)}."),
    ParamSpec("max_depth", 10.0, "Depth (m) at the end of the depth colour scale; farther points are left out of ~/points.", 0.01, 1000.0),
    ParamSpec("use_compressed", False, "Also subscribe image/compressed (JPEG/PNG)."),
    ParamSpec("qos.input", "sensor_data", f"QoS of image/camera_info subscriptions: {' | '.join(QOS_PRESETS)}."),
    ParamSpec("qos.input_depth", 1, "History depth of the input subscriptions.", 1, 100),
    ParamSpec("qos.output", "reliable", f"QoS of the output publishers: {' | '.join(QOS_PRESETS)}."),
    ParamSpec("qos.output_depth", 1, "History depth of the output publishers.", 1, 100),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", 0.1, 60.0),
    ParamSpec("release_on_deactivate", False, "Close the backend (free GPU memory) on deactivate, reopen on activate."),
    ParamSpec("autostart", True, "Configure and activate at start-up (false: wait for a lifecycle manager)."),
)


@dataclass(frozen=True)
class NodeParams:
    """Validated parameter values (``tasks`` empty = all of the bundle's tasks)."""

    bundle: Path
    backend: str
    precision: str
    device: str
    tasks: tuple[str, ...]
    overlay_alpha: float
    palette_file: Path | None
    min_confidence: float
    pointcloud: bool
    pointcloud_stride: int
    pointcloud_color: str
    max_depth: float
    use_compressed: bool
    input_qos: str
    input_depth: int
    output_qos: str
    output_depth: int
    diagnostics_period: float
    release_on_deactivate: bool
    autostart: bool


def _choice(values: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = values[name]
    if value not in choices:
        raise NodeParameterError(f"parameter {name}={value!r} is invalid; use one of {list(choices)}")
    return value


def _range(values: dict[str, Any], name: str) -> Any:
    spec = next(s for s in PARAMETERS if s.name == name)
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NodeParameterError(f"parameter {name}={value!r} must be a number")
    if not math.isfinite(value):
        raise NodeParameterError(f"parameter {name}={value!r} must be a finite number")
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        raise NodeParameterError(f"parameter {name}={value!r} is out of range [{spec.min}, {spec.max}]")
    return value


def validate_params(values: dict[str, Any]) -> NodeParams:
    """Check every value (missing ones take their default); raise NodeParameterError naming
    the parameter, the value and what is allowed."""
    values = {**{s.name: s.default for s in PARAMETERS}, **values}
    bundle = str(values["bundle"] or "")
    if not bundle:
        raise NodeParameterError("parameter bundle is empty: set it to a model bundle directory "
                                 "(made by `mbmt-train export`), e.g. -p bundle:=/path/to/bundle")
    bundle_path = Path(bundle).expanduser()
    if not bundle_path.is_dir() or not (bundle_path / "meta.json").is_file():
        raise NodeParameterError(f"parameter bundle={bundle!r}: not a model bundle directory "
                                 "(no meta.json there); export one with `mbmt-train export`")
    device = str(values["device"])
    if not _DEVICE.match(device):
        raise NodeParameterError(f"parameter device={device!r} is invalid; use cuda or cpu")
    tasks: tuple[str, ...] = ()
    if values["tasks"]:
        if not isinstance(values["tasks"], (list, tuple)) or not all(
                isinstance(t, str) for t in values["tasks"]):
            raise NodeParameterError(f"parameter tasks={values['tasks']!r} must be a list of "
                                     "task names, e.g. [segmentation, depth]")
        try:
            tasks = validate_tasks(list(values["tasks"]))
        except ValueError as exc:
            raise NodeParameterError(f"parameter tasks={list(values['tasks'])!r}: {exc}") from exc
    palette = str(values["palette_file"] or "")
    if palette and not Path(palette).expanduser().is_file():
        raise NodeParameterError(f"parameter palette_file={palette!r}: file not found")
    for name in ("pointcloud", "use_compressed", "release_on_deactivate", "autostart"):
        if not isinstance(values[name], bool):
            raise NodeParameterError(f"parameter {name}={values[name]!r} must be true or false")
    return NodeParams(
        bundle=bundle_path,
        backend=_choice(values, "backend", BACKENDS),
        precision=_choice(values, "precision", PRECISIONS),
        device=device,
        tasks=tasks,
        overlay_alpha=float(_range(values, "overlay_alpha")),
        palette_file=Path(palette).expanduser() if palette else None,
        min_confidence=float(_range(values, "min_confidence")),
        pointcloud=values["pointcloud"],
        pointcloud_stride=int(_range(values, "pointcloud_stride")),
        pointcloud_color=_choice(values, "pointcloud_color", POINTCLOUD_COLORS),
        max_depth=float(_range(values, "max_depth")),
        use_compressed=values["use_compressed"],
        input_qos=_choice(values, "qos.input", QOS_PRESETS),
        input_depth=int(_range(values, "qos.input_depth")),
        output_qos=_choice(values, "qos.output", QOS_PRESETS),
        output_depth=int(_range(values, "qos.output_depth")),
        diagnostics_period=float(_range(values, "diagnostics_period")),
        release_on_deactivate=values["release_on_deactivate"],
        autostart=values["autostart"],
    )


def qos_profile(preset: str, depth: int) -> QoSProfile:
    """A keep-last QoS of ``depth`` for a preset of :data:`QOS_PRESETS`."""
    if preset == "sensor_data":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)
    if preset not in QOS_PRESETS:
        raise NodeParameterError(f"unknown QoS preset {preset!r}; use one of {list(QOS_PRESETS)}")
    reliability = ReliabilityPolicy.RELIABLE if preset == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)
