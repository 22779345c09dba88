"""The perception node's names, in one place: node name, input and output topics, and how a
ROS 2 name resolves under a namespace and remappings.

The node creates its publishers and subscriptions with these names, and the launch file and
the generated rviz config (:mod:`mbmt_ros.ros.rviz_config`) resolve the same names with
:func:`resolve_topic`, so rviz shows exactly what the node publishes under any namespace and
remapping. Pure Python: importable without ROS.
"""
from __future__ import annotations

from collections.abc import Iterable

from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION

__all__ = [
    "NODE_NAME", "IMAGE", "IMAGE_COMPRESSED", "CAMERA_INFO", "DIAGNOSTICS", "SEG", "SEG_COLOR",
    "DEPTH_TOPIC", "NORMALS_TOPIC", "NORMALS_COLOR", "POINTS", "OUTPUT_TOPICS", "TOPICS_BY_TASK",
    "resolve_topic",
]

#: Default node name (``ros2 run``, the launch file, the demo).
NODE_NAME = "perception_node"
#: Inputs, relative to the node's namespace (remap them to the camera).
IMAGE, IMAGE_COMPRESSED, CAMERA_INFO = "image", "image/compressed", "camera_info"
DIAGNOSTICS = "/diagnostics"
#: Outputs, in the node's private namespace.
SEG, SEG_COLOR, DEPTH_TOPIC, NORMALS_TOPIC, NORMALS_COLOR, POINTS = (
    "~/segmentation", "~/segmentation/color", "~/depth", "~/normals", "~/normals/color",
    "~/points")
#: Every output topic of the node (relative to its private namespace).
OUTPUT_TOPICS: tuple[str, ...] = (SEG, SEG_COLOR, DEPTH_TOPIC, NORMALS_TOPIC, NORMALS_COLOR, POINTS)
#: The image topics each task feeds (``~/points`` needs depth and is optional).
TOPICS_BY_TASK: dict[str, tuple[str, ...]] = {
    SEGMENTATION: (SEG, SEG_COLOR), DEPTH: (DEPTH_TOPIC,), NORMALS: (NORMALS_TOPIC, NORMALS_COLOR),
}


def _namespace(namespace: str) -> str:
    ns = "/" + namespace.strip("/")
    return ns if ns != "/" else ""


def _expand(name: str, namespace: str, node_name: str) -> str:
    """rcl's name expansion: ``~`` -> ``<ns>/<node>``, relative -> ``<ns>/name``."""
    ns = _namespace(namespace)
    if name.startswith("/"):
        full = name
    elif name == "~" or name.startswith("~/"):
        full = f"{ns}/{node_name}{name[1:]}"
    else:
        full = f"{ns}/{name}"
    return "/" + "/".join(part for part in full.split("/") if part)


def resolve_topic(name: str, namespace: str = "", node_name: str = NODE_NAME,
                  remaps: Iterable[tuple[str, str]] = ()) -> str:
    """The fully qualified topic a node called ``node_name`` in ``namespace`` uses for
    ``name``, after ``remaps`` (``(from, to)`` pairs as in ``-r from:=to`` or a launch
    ``remappings=`` list). As in rcl, both sides of a rule are expanded in the node's
    namespace and the first rule whose ``from`` matches wins."""
    full = _expand(name, namespace, node_name)
    for source, target in remaps:
        if _expand(source, namespace, node_name) == full:
            return _expand(target, namespace, node_name)
    return full
