"""The layering of docs/architecture.md, checked on the source: no import cycle among the
project's modules (imports inside functions included), and no arrow that runs the wrong way.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import cycles, import_edges, wrong_arrows

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mbmt_ros", "training", "benchmarks")
#: ROS client libraries and message packages (not rosbags: it reads bags without ROS).
ROS = ("rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "diagnostic_msgs",
       "lifecycle_msgs", "rcl_interfaces", "rosidl_runtime_py", "launch", "launch_ros")
#: (importer, imported) pairs that must not occur; see docs/architecture.md "Floors".
FORBIDDEN = (
    ("training", "mbmt_ros.ros"),           # training uses imaging, never the node's room
    ("mbmt_ros", "training"),               # the robot's package never needs training
    ("mbmt_ros", "benchmarks"),
    ("training", "benchmarks"),
    *((room, "mbmt_ros.ros") for room in ("mbmt_ros.imaging", "mbmt_ros.runtime",
                                          "mbmt_ros.models")),
    *((room, ros) for room in ("mbmt_ros.imaging", "mbmt_ros.runtime", "mbmt_ros.models")
      for ros in ROS),
)


@pytest.fixture(scope="module")
def edges():
    return import_edges(REPO, PACKAGES)


def test_no_import_cycle(edges):
    assert cycles(edges) == []


def test_no_arrow_runs_the_wrong_way(edges):
    assert wrong_arrows(edges, FORBIDDEN) == []


def test_the_checks_can_fail(tmp_path):
    """A package with a cycle hidden in a function and a wrong arrow is caught."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "low" / "c.py").write_text("import rclpy\nfrom ..a import x\n")
    found = import_edges(tmp_path, ["pkg"])
    assert cycles(found) == [["pkg.a", "pkg.b"]]
    assert wrong_arrows(found, [("pkg.low", "rclpy"), ("pkg.low", "pkg.a")]) == [
        "pkg.low.c -> pkg.a", "pkg.low.c -> rclpy"]
