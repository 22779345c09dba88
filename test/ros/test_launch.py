"""Launch file, parameter file and rviz config: statically everywhere, for real where
``launch_ros`` is installed (and the package is in the ament index)."""
from __future__ import annotations

import ast
import importlib.util
import time
from pathlib import Path

import pytest
import yaml

from mbmt_ros.ros.outputs import OUTPUT_TOPICS
from mbmt_ros.ros.params import PARAMETERS

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "perception.launch.py"
DOCUMENTED_ARGS = {"namespace", "image", "camera_info", "params_file", "bundle", "backend", "rviz"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _keyword(call: ast.Call, key: str) -> object:
    for kw in call.keywords:
        if kw.arg == key and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_launch_file_parses_and_declares_the_documented_arguments() -> None:
    tree = ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
               for n in tree.body)
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert declared == DOCUMENTED_ARGS


def test_launch_file_runs_the_installed_executable_and_existing_configs() -> None:
    tree = ast.parse(LAUNCH.read_text())
    nodes = {_keyword(c, "executable"): c for c in _calls(tree, "Node")}
    assert set(nodes) == {"perception_node", "rviz2"}
    setup = (REPO / "setup.py").read_text()
    assert "perception_node = mbmt_ros.ros.perception_node:main" in setup
    assert 'PACKAGE = "mbmt_ros"' in LAUNCH.read_text()
    files = {"/".join(a.value for a in c.args) for c in _calls(tree, "_share")}
    assert files == {"config/perception.yaml", "config/perception.rviz"}
    for rel in files:
        assert (REPO / rel).is_file(), rel
    # setup.py installs launch/*.py and config/*.yaml|*.rviz into share/mbmt_ros
    assert 'glob("launch/*.py")' in setup and 'glob("config/*.rviz")' in setup


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_params_file_lists_every_parameter_with_its_default() -> None:
    params = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    values = _flatten(params["/**"]["ros__parameters"])
    expected = {s.name: s.default for s in PARAMETERS if s.default is not None}
    assert values == expected  # tasks (unset by default) is shown commented out


def test_rviz_config_shows_the_node_outputs() -> None:
    rviz = yaml.safe_load((REPO / "config" / "perception.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    node_topics = {t.replace("~", "/perception_node") for t in OUTPUT_TOPICS}
    assert topics - {"/camera/image_raw"} <= node_topics
    assert {"/perception_node/segmentation/color", "/perception_node/depth",
            "/perception_node/normals/color", "/perception_node/points"} <= topics
    classes = {d["Class"] for d in displays}
    assert {"rviz_default_plugins/Image", "rviz_default_plugins/PointCloud2"} <= classes


def _launch_ready() -> bool:
    if importlib.util.find_spec("launch_ros") is None:
        return False
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("mbmt_ros")
    except Exception:
        return False
    return True


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.skipif(not _launch_ready(), reason="launch_ros or the installed mbmt_ros package is missing")
def test_launch_starts_the_node(tiny_bundle, tmp_path) -> None:
    import asyncio

    import rclpy
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    device: cpu\n    precision: fp32\n")
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH)),
        launch_arguments={"bundle": str(tiny_bundle), "backend": "onnxruntime",
                          "params_file": str(params), "namespace": "robot"}.items())
    service = LaunchService()
    service.include_launch_description(LaunchDescription([include]))
    loop = asyncio.new_event_loop()
    task = loop.create_task(service.run_async())
    rclpy.init()
    node = rclpy.create_node("launch_probe")
    try:
        deadline = time.monotonic() + 60
        found = set()
        while time.monotonic() < deadline and "/robot/perception_node/depth" not in found:
            loop.run_until_complete(asyncio.sleep(0.5))
            found = {n for n, _ in node.get_topic_names_and_types()}
        assert "/robot/perception_node/depth" in found
    finally:
        node.destroy_node()
        rclpy.shutdown()
        loop.run_until_complete(service.shutdown())
        loop.run_until_complete(task)
        loop.close()
