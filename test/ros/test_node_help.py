"""``perception_node --help`` prints how to start the node instead of starting one (rclpy
ignores ``--help``); help flags after ``--ros-args`` belong to ROS and are left alone."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from mbmt_ros.ros.node_help import print_help, wants_help

REPO = Path(__file__).resolve().parents[2]


def test_help_flags_before_ros_args_only() -> None:
    assert wants_help(["perception_node", "--help"])
    assert wants_help(["perception_node", "-h", "--ros-args", "-p", "bundle:=/b"])
    assert not wants_help(["perception_node"])
    assert not wants_help(["perception_node", "--ros-args", "-p", "bundle:=/b"])
    assert not wants_help(["perception_node", "--ros-args", "--help"])  # rcl's own


def test_help_names_the_installed_files_and_starts_no_node() -> None:
    out = io.StringIO()
    assert print_help(out) == 0
    text = out.getvalue()
    assert f"parameters (defaults): {REPO / 'config' / 'perception.yaml'}" in text
    assert f"launch file:           {REPO / 'launch' / 'perception.launch.py'}" in text
    # the console script exits at once with 0: no rclpy.init, no node (that would fail with
    # "parameter bundle is empty" and exit 1)
    proc = subprocess.run([str(Path(sys.executable).parent / "perception_node"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ros2 run mbmt_ros perception_node")
    assert "bundle is empty" not in proc.stderr
