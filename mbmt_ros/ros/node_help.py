"""``perception_node --help``: how to start the node, printed without starting it.

rclpy ignores ``--help``, so without this ``ros2 run mbmt_ros perception_node --help`` would
start a node (and fail for want of a bundle). The text names the installed parameter file and
launch file (found like every data file, :func:`mbmt_ros.resources.share_file`), so it also
shows which installation runs.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from mbmt_ros.resources import ResourceNotFoundError, share_file

__all__ = ["wants_help", "print_help"]

_HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    """True when a help flag comes before ``--ros-args`` in ``argv`` (``argv[0]`` = program)."""
    user = list(argv[1:])
    if "--ros-args" in user:
        user = user[:user.index("--ros-args")]
    return any(arg in _HELP_FLAGS for arg in user)


def _installed(*parts: str) -> str:
    try:
        return str(share_file(*parts))
    except ResourceNotFoundError as exc:
        return f"(not installed: {exc})"


def print_help(stream: TextIO | None = None) -> int:
    """Print the usage to ``stream`` (stdout); returns the exit code 0."""
    out = stream if stream is not None else sys.stdout
    out.write(
        "usage: ros2 run mbmt_ros perception_node --ros-args -p bundle:=/path/to/bundle "
        "[-r image:=/camera/color/image_raw] [-p NAME:=VALUE ...] [--params-file FILE]\n"
        "   or: ros2 launch mbmt_ros perception.launch.py bundle:=/path/to/bundle "
        "image:=/camera/color/image_raw [rviz:=true]\n\n"
        "The managed (lifecycle) perception node: camera images in; segmentation, depth and\n"
        "normals out. It configures and activates itself (autostart) and exits with 1 when\n"
        "that fails (the reason is logged).\n\n"
        f"parameters (defaults): {_installed('config', 'perception.yaml')}\n"
        f"launch file:           {_installed('launch', 'perception.launch.py')}\n"
        "topics, parameters, diagnostics: docs/node.md\n")
    out.flush()
    return 0
