"""Generate the rviz2 config of the perception node for its namespace, remappings and frame.

``config/perception.rviz.template`` names the node's topics as the node does (``image``,
``~/depth``, ...); :func:`rviz_config` resolves them with
:func:`mbmt_ros.topics.resolve_topic` under the same namespace and remappings the launch
file gives the node, so every display shows a topic the node really uses. The launch file
calls :func:`write_rviz_config` (through an ``OpaqueFunction``); on the command line::

    python -m mbmt_ros.ros.rviz_config --namespace /robot1 --image /robot1/cam/image_raw \\
        --fixed-frame cam_optical_frame --out perception.rviz && rviz2 -d perception.rviz

Pure Python (PyYAML): importable and testable without ROS.
"""
from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mbmt_ros.io import atomic_write_text
from mbmt_ros.resources import share_file
from mbmt_ros.ros.errors import NodeParameterError
from mbmt_ros.topics import (
    CAMERA_INFO,
    IMAGE,
    IMAGE_COMPRESSED,
    NODE_NAME,
    POINTS,
    resolve_topic,
)

__all__ = ["DEFAULT_FIXED_FRAME", "TEMPLATE", "launch_remaps", "node_parameters", "rviz_config",
           "rviz_topics", "write_rviz_config", "main"]

DEFAULT_FIXED_FRAME = "camera_color_optical_frame"
#: The template, relative to the package's share folder.
TEMPLATE = ("config", "perception.rviz.template")
_FIXED_FRAME_KEY = "<fixed_frame>"


def launch_remaps(image: str, camera_info: str) -> list[tuple[str, str]]:
    """The remappings the launch file gives the node: its inputs to the camera's topics
    (``<image>/compressed`` feeds ``image/compressed``)."""
    return [(IMAGE, image), (IMAGE_COMPRESSED, f"{image.rstrip('/')}/compressed"),
            (CAMERA_INFO, camera_info)]


def node_parameters(params_file: str | Path, namespace: str = "",
                    node_name: str = NODE_NAME) -> dict[str, Any]:
    """The ``ros__parameters`` a params YAML gives this node: the ``/**`` section, then the
    sections named after the node (``perception_node``, ``/ns/perception_node``), later ones
    winning, as ``--params-file`` applies them (nested keys stay nested)."""
    path = Path(params_file)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise NodeParameterError(f"params_file {path}: cannot read it ({exc})") from exc
    if not isinstance(loaded, dict):
        raise NodeParameterError(f"params_file {path}: expected a mapping of node names")
    full_name = resolve_topic(node_name, namespace)
    merged: dict[str, Any] = {}
    for key in ("/**", node_name, full_name.lstrip("/"), full_name):
        section = loaded.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            merged.update(section["ros__parameters"])
    return merged


def _template(template: str | Path | None) -> dict[str, Any]:
    path = Path(template) if template is not None else share_file(*TEMPLATE)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise NodeParameterError(f"rviz template {path}: cannot read it ({exc})") from exc


def rviz_config(namespace: str = "", remaps: Iterable[tuple[str, str]] = (),
                fixed_frame: str = DEFAULT_FIXED_FRAME, node_name: str = NODE_NAME,
                parameters: Mapping[str, Any] | None = None,
                template: str | Path | None = None) -> dict[str, Any]:
    """The rviz config (a dict) for the node ``node_name`` in ``namespace`` with ``remaps``.

    ``parameters`` (e.g. :func:`node_parameters` of the params file) decide the optional
    parts: without ``pointcloud: true`` the point-cloud display is left out, and
    ``max_depth`` sets the depth display's range.
    """
    params = dict(parameters or {})
    remaps = list(remaps)
    config = copy.deepcopy(_template(template))
    manager = config["Visualization Manager"]
    displays = []
    for display in manager["Displays"]:
        topic = display.get("Topic")
        if topic is not None:
            if topic["Value"] == POINTS and not params.get("pointcloud", False):
                continue
            topic["Value"] = resolve_topic(topic["Value"], namespace, node_name, remaps)
        if "Max Value" in display and "max_depth" in params:
            display["Max Value"] = float(params["max_depth"])
        displays.append(display)
    manager["Displays"] = displays
    options = manager["Global Options"]
    if options.get("Fixed Frame") == _FIXED_FRAME_KEY:
        options["Fixed Frame"] = fixed_frame or DEFAULT_FIXED_FRAME
    return config


def rviz_topics(config: Mapping[str, Any]) -> set[str]:
    """Every topic a generated config shows."""
    return {d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"] if "Topic" in d}


def write_rviz_config(path: str | Path, **options: Any) -> Path:
    """Write :func:`rviz_config` (``options`` as there) as an rviz YAML file, atomically."""
    path = Path(path)
    text = yaml.safe_dump(rviz_config(**options), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, "# generated by mbmt_ros.ros.rviz_config - edit the template\n" + text)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m mbmt_ros.ros.rviz_config``: write the rviz config for a namespace/remaps."""
    parser = argparse.ArgumentParser(prog="python -m mbmt_ros.ros.rviz_config",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="", help="namespace of the node (default: none)")
    parser.add_argument("--node-name", default=NODE_NAME)
    parser.add_argument("--image", default="/camera/image_raw", help="camera image topic")
    parser.add_argument("--camera-info", default="/camera/camera_info")
    parser.add_argument("--fixed-frame", default=DEFAULT_FIXED_FRAME,
                        help="the camera's optical frame (frame_id of its images)")
    parser.add_argument("--params-file", type=Path, default=None,
                        help="node parameters (pointcloud, max_depth); default: the installed ones")
    parser.add_argument("--out", type=Path, default=Path("perception.rviz"))
    args = parser.parse_args(argv)
    try:
        params_file = args.params_file or share_file("config", "perception.yaml")
        params = node_parameters(params_file, args.namespace, args.node_name)
        out = write_rviz_config(args.out, namespace=args.namespace, node_name=args.node_name,
                                remaps=launch_remaps(args.image, args.camera_info),
                                fixed_frame=args.fixed_frame, parameters=params)
    except (NodeParameterError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
