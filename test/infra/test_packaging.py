"""The package installs as a ROS 2 ament_python package and with pip, as the README says."""
from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "mbmt_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "sensor_msgs", "diagnostic_msgs", "launch_ros"} <= deps


def test_ament_resource_marker_and_setup_cfg_script_dir():
    assert (ROOT / "resource" / "mbmt_ros").is_file()
    cfg = (ROOT / "setup.cfg").read_text()
    # `ros2 run mbmt_ros perception_node` looks in lib/<package>
    assert "$base/lib/mbmt_ros" in cfg


def test_setup_py_installs_launch_and_config_into_share():
    tree = ast.parse((ROOT / "setup.py").read_text())
    source = ast.unparse(tree)
    for needle in ("share/{PACKAGE}/launch", "share/{PACKAGE}/config",
                   "share/ament_index/resource_index/packages"):
        assert needle in source


@pytest.mark.parametrize("script", ["mbmt-train", "mbmt-engine", "mbmt-replay", "perception_node"])
def test_console_scripts_are_installed(script):
    assert (VENV_BIN / script).exists(), f"{script} missing from {VENV_BIN}"


def test_mbmt_train_help_lists_every_stage():
    out = subprocess.run([str(VENV_BIN / "mbmt-train"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("summary", "synth", "extract-bag", "pretrain-st", "train-mbmt", "pseudo-label",
                    "train-student", "evaluate", "score", "pipeline", "export"):
        assert command in out


def test_constraints_pin_every_line():
    lines = [ln.strip() for ln in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines and all("==" in ln for ln in lines)
