"""The perception node's parameters: one table (name, default, description, range, choices,
live or not), the validated :class:`NodeParams`, and QoS profiles by name.

Everything the node does with a parameter comes from :data:`PARAMETERS`: its ROS type and
``FloatingPointRange`` / ``IntegerRange`` descriptor (:func:`descriptor`, shown by
``ros2 param describe``), the check of one value on every set (:func:`check_value`, used by
the node's set-parameters callback to refuse a bad value with a reason) and whether a new
value applies at once (``live``) or at the next configure. Adding a parameter group is adding
rows here and fields (named by :func:`field_name`) to :class:`NodeParams`.
:func:`validate_params` checks a whole set (missing values take their default) for
``configure``; the rules are ROS-free apart from the descriptor message, so every one is
unit-tested.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from mbmt_ros.ros.errors import NodeParameterError
from mbmt_ros.tasks import validate_tasks

__all__ = ["ParamSpec", "PARAMETERS", "SPECS", "LIVE_PARAMETERS", "NodeParams", "validate_params",
           "check_value", "coerce_value", "descriptor", "field_name", "qos_profile", "BACKENDS",
           "PRECISIONS", "DEVICES", "QOS_PRESETS", "POINTCLOUD_COLORS"]

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
#: ``gpu`` and ``auto`` are OpenVINO device names; the runtime refuses a device its backend lacks.
DEVICES = ("cuda", "cpu", "gpu", "auto")
QOS_PRESETS = ("sensor_data", "reliable", "best_effort")
POINTCLOUD_COLORS = ("segmentation", "image", "depth")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter. Its ROS type is that of ``default`` (None: a string array, unset by
    default); ``min``/``max`` give the range, ``choices`` the allowed strings; ``live``: a new
    value applies to the next frame, otherwise at the next configure."""

    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    live: bool = False


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("bundle", "", "Model bundle directory (model.onnx + meta.json) made by `mbmt-train export`."),
    ParamSpec("backend", "auto", "Inference backend (auto: TensorRT, else ONNX Runtime on CUDA, else OpenVINO, else ONNX Runtime on the CPU, else torch).", choices=BACKENDS),
    ParamSpec("precision", "auto", "Inference precision; auto: the best the bundle and the device support (INT8 graph on VNNI/AMX CPUs with OpenVINO, fp16 on GPUs), checked against the bundle's reference set; an explicit one that does not run here fails configure unless allow_fallback.", choices=PRECISIONS),
    ParamSpec("device", "auto", "Device: auto, cuda or cpu (OpenVINO also gpu); an explicit one that is not available fails configure unless allow_fallback.", choices=DEVICES),
    ParamSpec("allow_fallback", False, "Accept a precision/device other than the explicit one requested (then a WARN line and the diagnostics field 'fallback'); false: configure fails naming both."),
    ParamSpec("verify", True, "At configure, run the chosen path on the bundle's reference set and refuse to activate it when a figure (segmentation agreement, depth relative error, normals angle error) is outside its precision's limit."),
    ParamSpec("num_threads", 0, "CPU backends: intra-op threads (0 = the library's default, all cores).", 0, 1024),
    ParamSpec("workspace_mb", 1024, "TensorRT (and the ONNX Runtime TensorRT EP): builder workspace limit in MiB (0 = no limit, TensorRT's own default).", 0, 1048576),
    ParamSpec("tasks", None, "Tasks to publish (segmentation, depth, normals); unset = every task of the bundle."),
    ParamSpec("overlay_alpha", 0.5, "Opacity of class colours over the input in ~/segmentation/color (1 = colours only).", 0.0, 1.0, live=True),
    ParamSpec("palette_file", "", "JSON/YAML list of [r, g, b] per class; empty = the bundle's palette."),
    ParamSpec("min_confidence", 0.0, "Pixels whose class confidence is below this are 255 (no prediction).", 0.0, 1.0, live=True),
    ParamSpec("pointcloud", False, "Publish ~/points (needs camera_info)."),
    ParamSpec("pointcloud_stride", 2, "Use every n-th pixel (in x and y) for ~/points.", 1, 64, live=True),
    ParamSpec("pointcloud_color", "segmentation", "Point colours.", choices=POINTCLOUD_COLORS, live=True),
    ParamSpec("max_depth", 10.0, "Depth (m) at the end of the depth colour scale; farther points are left out of ~/points.", 0.01, 1000.0, live=True),
    ParamSpec("use_compressed", False, "Subscribe image/compressed (JPEG/PNG) instead of image."),
    ParamSpec("qos.input", "sensor_data", "QoS of image/camera_info subscriptions.", choices=QOS_PRESETS),
    ParamSpec("qos.input_depth", 1, "History depth of the input subscriptions.", 1, 100),
    ParamSpec("qos.output", "reliable", "QoS of the output publishers.", choices=QOS_PRESETS),
    ParamSpec("qos.output_depth", 1, "History depth of the output publishers.", 1, 100),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", 0.1, 60.0),
    ParamSpec("diagnostics_window", 1000, "Processed frames over which /diagnostics gives the p50/p99 of each timing segment.", 10, 100000),
    ParamSpec("release_on_deactivate", False, "Close the backend (free GPU memory) on deactivate, reopen on activate."),
    ParamSpec("autostart", True, "Configure and activate at start-up (false: wait for a lifecycle manager)."),
    # capture of uncertain frames (mbmt_ros.ros.capture; docs/node.md "Capturing uncertain frames")
    ParamSpec("capture.enabled", False, "Write frames the model is unsure about (and a baseline) to rosbag2 mcap segments in capture.dir."),
    ParamSpec("capture.dir", "~/.ros/mbmt_capture", "Folder of the capture segments (one node per folder)."),
    ParamSpec("capture.min_confidence", 0.5, "A pixel is uncertain when its segmentation confidence is below this.", 0.0, 1.0),
    ParamSpec("capture.uncertain_fraction", 0.2, "Capture a frame when more than this fraction of its pixels is uncertain.", 0.0, 1.0),
    ParamSpec("capture.every_s", 0.0, "Baseline: also capture one frame every this many seconds (camera time: header stamps) whatever its confidence (0 = none).", 0.0, 86400.0),
    ParamSpec("capture.min_interval_s", 1.0, "Rate limit: at least this many seconds (camera time: header stamps) between two captured frames.", 0.0, 3600.0),
    ParamSpec("capture.max_mb", 1024.0, "Disk budget of capture.dir in MB; when reached, capturing stops (nothing is overwritten).", 0.001, 1e7),
    ParamSpec("capture.topics", None, "Extra topics written with each captured frame (nearest header stamp); unset = [depth, camera_info]."),
    ParamSpec("capture.segment_frames", 100, "Frames per bag segment (a segment is closed and renamed into place when full).", 1, 100000),
    ParamSpec("capture.segment_s", 30.0, "Longest time a segment stays open (a killed node loses at most this much).", 0.1, 3600.0),
    ParamSpec("capture.queue_size", 8, "Frames waiting for the disk; a frame that finds the queue full is dropped and counted.", 1, 1000),
)
#: The table by name.
SPECS: dict[str, ParamSpec] = {s.name: s for s in PARAMETERS}
#: Parameters whose new value applies to the next frame (the rest: at the next configure).
LIVE_PARAMETERS: frozenset[str] = frozenset(s.name for s in PARAMETERS if s.live)


@dataclass(frozen=True)
class NodeParams:
    """Validated parameter values (``tasks`` empty = all of the bundle's tasks)."""

    bundle: Path
    backend: str
    precision: str
    device: str
    num_threads: int
    workspace_mb: int
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
    diagnostics_window: int
    release_on_deactivate: bool
    autostart: bool
    allow_fallback: bool = False
    verify: bool = True
    capture_enabled: bool = False
    capture_dir: str = "~/.ros/mbmt_capture"
    capture_min_confidence: float = 0.5
    capture_uncertain_fraction: float = 0.2
    capture_every_s: float = 0.0
    capture_min_interval_s: float = 1.0
    capture_max_mb: float = 1024.0
    capture_topics: tuple[str, ...] = ("depth", "camera_info")
    capture_segment_frames: int = 100
    capture_segment_s: float = 30.0
    capture_queue_size: int = 8


def coerce_value(name: str, value: Any) -> Any:
    """``value`` as the parameter's type where that loses nothing: an integer for a float
    parameter (``ros2 param set ... max_depth 20``, ``max_depth: 20`` in YAML) becomes a float."""
    spec = SPECS.get(name)
    if (spec is not None and isinstance(spec.default, float) and isinstance(value, int)
            and not isinstance(value, bool)):
        return float(value)
    return value


def _number(spec: ParamSpec, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NodeParameterError(f"parameter {spec.name}={value!r} must be a number")
    if not math.isfinite(value):
        raise NodeParameterError(f"parameter {spec.name}={value!r} must be a finite number")
    if isinstance(spec.default, int) and value != int(value):
        raise NodeParameterError(f"parameter {spec.name}={value!r} must be an integer")
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        raise NodeParameterError(f"parameter {spec.name}={value!r} is out of range [{spec.min}, {spec.max}]")
    return int(value) if isinstance(spec.default, int) else float(value)


def _bundle(value: Any) -> Path:
    bundle = str(value or "")
    if not bundle:
        raise NodeParameterError("parameter bundle is empty: set it to a model bundle directory "
                                 "(made by `mbmt-train export`), e.g. -p bundle:=/path/to/bundle")
    path = Path(bundle).expanduser()
    if not path.is_dir() or not (path / "meta.json").is_file():
        raise NodeParameterError(f"parameter bundle={bundle!r}: not a model bundle directory "
                                 "(no meta.json there); export one with `mbmt-train export`")
    return path


def _tasks(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise NodeParameterError(f"parameter tasks={value!r} must be a list of task names, "
                                 "e.g. [segmentation, depth]")
    try:
        return validate_tasks(list(value))
    except ValueError as exc:
        raise NodeParameterError(f"parameter tasks={list(value)!r}: {exc}") from exc


def _topic_list(value: Any) -> tuple[str, ...]:
    """capture.topics: unset -> depth and camera_info; empty names are left out (``['']``:
    the image alone)."""
    if value is None:
        return ("depth", "camera_info")
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise NodeParameterError(f"parameter capture.topics={value!r} must be a list of topic "
                                 "names, e.g. [depth, camera_info]")
    return tuple(t for t in value if t)


def _palette(value: Any) -> Path | None:
    palette = str(value or "")
    if palette and not Path(palette).expanduser().is_file():
        raise NodeParameterError(f"parameter palette_file={palette!r}: file not found")
    return Path(palette).expanduser() if palette else None


def check_value(name: str, value: Any) -> Any:
    """One parameter's value, checked and normalised (a Path, a float, a task tuple ...);
    NodeParameterError naming the parameter, the value and what is allowed."""
    spec = SPECS.get(name)
    if spec is None:
        raise NodeParameterError(f"unknown parameter {name!r}; see docs/node.md")
    if name == "bundle":
        return _bundle(value)
    if name == "tasks":
        return _tasks(value)
    if name == "capture.topics":
        return _topic_list(value)
    if name == "palette_file":
        return _palette(value)
    if spec.choices:
        if value not in spec.choices:
            raise NodeParameterError(f"parameter {name}={value!r} is invalid; use one of {list(spec.choices)}")
        return value
    if isinstance(spec.default, bool):
        if not isinstance(value, bool):
            raise NodeParameterError(f"parameter {name}={value!r} must be true or false")
        return value
    if isinstance(spec.default, (int, float)):
        return _number(spec, value)
    if not isinstance(value, str):
        raise NodeParameterError(f"parameter {name}={value!r} must be a string")
    return value


#: NodeParams field of a parameter whose name is not simply its field with "." -> "_".
_FIELDS = {"qos.input": "input_qos", "qos.input_depth": "input_depth",
           "qos.output": "output_qos", "qos.output_depth": "output_depth"}


def field_name(name: str) -> str:
    """The :class:`NodeParams` field of parameter ``name`` (``capture.rate`` -> ``capture_rate``)."""
    return _FIELDS.get(name, name.replace(".", "_"))


def validate_params(values: dict[str, Any]) -> NodeParams:
    """Check every value (missing ones take their default); raise NodeParameterError naming
    the parameter, the value and what is allowed."""
    values = {**{s.name: s.default for s in PARAMETERS}, **values}
    return NodeParams(**{field_name(s.name): check_value(s.name, values[s.name]) for s in PARAMETERS})


_ROS_TYPES = ((bool, ParameterType.PARAMETER_BOOL), (int, ParameterType.PARAMETER_INTEGER),
              (float, ParameterType.PARAMETER_DOUBLE), (str, ParameterType.PARAMETER_STRING))


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of ``spec``: its type (a string array without a default is
    dynamically typed, so that it can stay unset), description, choices and
    ``FloatingPointRange`` / ``IntegerRange``."""
    desc = ParameterDescriptor(name=spec.name, description=spec.description)
    ros_type = next((t for py, t in _ROS_TYPES if isinstance(spec.default, py)), None)
    if ros_type is None:
        desc.dynamic_typing = True
    else:
        desc.type = ros_type
    if spec.choices:
        desc.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.min is not None and isinstance(spec.default, float):
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    elif spec.min is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)]
    if not spec.live and spec.name != "autostart":
        desc.additional_constraints = " ".join(filter(None, [
            desc.additional_constraints, "(applies at the next configure)"]))
    return desc


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
