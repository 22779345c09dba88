"""Launch file, parameter file and generated rviz config: statically everywhere, against a
real node over DDS in the isolated namespace, and for real where ``launch_ros`` is installed
(and the package is in the ament index)."""
from __future__ import annotations

import ast
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mbmt_ros.ros.params import PARAMETERS
from mbmt_ros.ros.rviz_config import (
    TEMPLATE,
    launch_remaps,
    node_parameters,
    rviz_config,
    rviz_topics,
    write_rviz_config,
)
from mbmt_ros.topics import (
    IMAGE,
    NODE_NAME,
    NORMALS_TOPIC,
    OUTPUT_TOPICS,
    POINTS,
    SEG,
    resolve_topic,
)

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LAUNCH = REPO / "launch" / "perception.launch.py"
DOCUMENTED_ARGS = {"namespace", "use_sim_time", "autostart", "image", "camera_info", "params_file",
                   "bundle", "backend", "rviz", "fixed_frame", "dds_profile"}
#: Outputs rviz cannot show as an image: class ids (mono8 0..12 looks black) and raw 32FC3
#: normals; rviz shows their colour versions instead.
NOT_DISPLAYED = {SEG, NORMALS_TOPIC}
SENSOR_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/PointCloud2"}


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
    docs = (REPO / "docs" / "node.md").read_text()
    for arg in DOCUMENTED_ARGS:
        assert f"`{arg}`" in docs, f"launch argument {arg} is not in docs/node.md"


def test_launch_file_starts_a_lifecycle_node_and_generated_rviz_config() -> None:
    text = LAUNCH.read_text()
    tree = ast.parse(text)
    [node] = _calls(tree, "LifecycleNode")
    assert _keyword(node, "executable") == "perception_node"
    assert {_keyword(c, "executable") for c in _calls(tree, "Node")} == {"rviz2"}
    setup = (REPO / "setup.py").read_text()
    assert "perception_node = mbmt_ros.ros.perception_node:main" in setup
    assert 'PACKAGE = "mbmt_ros"' in text
    # the node's remaps and the rviz config come from the one generator module
    assert {"launch_remaps", "write_rviz_config", "node_parameters"} <= \
        {c.func.id for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    files = {"/".join(a.value for a in c.args) for c in _calls(tree, "_share")}
    assert files == {"config/perception.yaml"}
    for rel in (*files, "/".join(TEMPLATE)):
        assert (REPO / rel).is_file(), rel


@pytest.mark.parametrize("name, namespace, remaps, expected", [
    ("~/depth", "", [], "/perception_node/depth"),
    ("~/depth", "/robot1/", [], "/robot1/perception_node/depth"),
    ("image", "robot1", [], "/robot1/image"),
    ("image", "/robot1", [("image", "/cam/rgb")], "/cam/rgb"),
    ("image", "/robot1", [("image", "cam/rgb")], "/robot1/cam/rgb"),  # relative target: in ns
    ("image", "/r", [("/r/image", "/x")], "/x"),  # a fully qualified rule matches too
    ("~/depth", "/r", [("~/depth", "depth_out")], "/r/depth_out"),
    ("/diagnostics", "/r", [], "/diagnostics"),
])
def test_resolve_topic_follows_ros_name_resolution(name, namespace, remaps, expected) -> None:
    assert resolve_topic(name, namespace, NODE_NAME, remaps) == expected


def _expected_topics(namespace: str, remaps: list, pointcloud: bool) -> set[str]:
    outputs = set(OUTPUT_TOPICS) - NOT_DISPLAYED - (set() if pointcloud else {POINTS})
    return {resolve_topic(t, namespace, NODE_NAME, remaps) for t in (IMAGE, *outputs)}


def test_rviz_config_follows_namespace_remaps_and_fixed_frame(tmp_path) -> None:
    remaps = launch_remaps("/robot1/front/color/image_raw", "/robot1/front/color/camera_info")
    config = rviz_config(namespace="/robot1", remaps=remaps, fixed_frame="front_optical",
                         parameters={"pointcloud": True, "max_depth": 6.0})
    assert rviz_topics(config) == {
        "/robot1/front/color/image_raw", "/robot1/perception_node/segmentation/color",
        "/robot1/perception_node/depth", "/robot1/perception_node/normals/color",
        "/robot1/perception_node/points"}
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "front_optical"
    depth = [d for d in config["Visualization Manager"]["Displays"] if d.get("Name") == "Depth"]
    assert depth[0]["Max Value"] == 6.0
    # without pointcloud the node publishes no ~/points, so rviz shows none
    plain = rviz_config(namespace="/robot1", remaps=remaps)
    assert rviz_topics(plain) == rviz_topics(config) - {"/robot1/perception_node/points"}
    # the written file is what rviz reads: plain YAML with the same topics
    path = write_rviz_config(tmp_path / "p.rviz", namespace="/robot1", remaps=remaps)
    assert rviz_topics(yaml.safe_load(path.read_text())) == rviz_topics(plain)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.rviz"]


def test_rviz_config_cli_reads_the_params_file(tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    pointcloud: false\n"
                      "/robot2/perception_node:\n  ros__parameters:\n    pointcloud: true\n")
    assert node_parameters(params, "/robot2")["pointcloud"] is True
    assert node_parameters(params, "/robot3")["pointcloud"] is False
    out = tmp_path / "r.rviz"
    subprocess.run([sys.executable, "-m", "mbmt_ros.ros.rviz_config", "--namespace", "robot2",
                    "--image", "/cam/image", "--params-file", str(params), "--out", str(out)],
                   check=True, capture_output=True, timeout=60, cwd=tmp_path)
    assert rviz_topics(yaml.safe_load(out.read_text())) == {
        "/cam/image", "/robot2/perception_node/segmentation/color",
        "/robot2/perception_node/depth", "/robot2/perception_node/normals/color",
        "/robot2/perception_node/points"}
    bad = subprocess.run([sys.executable, "-m", "mbmt_ros.ros.rviz_config", "--params-file",
                          str(tmp_path / "missing.yaml"), "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.ros
@pytest.mark.slow
def test_rviz_config_names_exactly_what_the_node_uses_in_a_namespace(tiny_bundle) -> None:
    """The real node, started with the launch file's remaps in /robot1, over DDS."""
    import rclpy
    from rclpy.context import Context

    namespace = "/robot1"
    remaps = launch_remaps("/robot1/front/image_raw", "/robot1/front/camera_info")
    config = rviz_config(namespace=namespace, remaps=remaps, parameters={"pointcloud": True})
    cmd = [str(VENV_BIN / "perception_node"), "--ros-args", "-r", f"__ns:={namespace}",
           "-p", f"bundle:={tiny_bundle}", "-p", "backend:=onnxruntime", "-p", "precision:=fp32",
           "-p", "device:=cpu", "-p", "pointcloud:=true"]
    for source, target in remaps:
        cmd += ["-r", f"{source}:={target}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("rviz_probe", context=context)
    try:
        published: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                published = {t for t, types in probe.get_publisher_names_and_types_by_node(
                    NODE_NAME, namespace) if set(types) & SENSOR_TYPES}  # not transition_event
                subscribed = {t for t, _ in probe.get_subscriber_names_and_types_by_node(
                    NODE_NAME, namespace)}
            except Exception:  # the node is not discovered yet
                published = subscribed = set()
            if f"{namespace}/{NODE_NAME}/points" in published:
                break
            time.sleep(0.2)
        node_images = {t for t in published if t.startswith(f"{namespace}/{NODE_NAME}/")}
        assert node_images, "the node published nothing"
        shown = rviz_topics(config)
        not_shown = {resolve_topic(t, namespace, NODE_NAME, remaps) for t in NOT_DISPLAYED}
        assert shown - {"/robot1/front/image_raw"} == node_images - not_shown
        assert "/robot1/front/image_raw" in subscribed
        assert shown == _expected_topics(namespace, remaps, pointcloud=True)
    finally:
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


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
                          "params_file": str(params), "namespace": "robot",
                          "autostart": "true", "use_sim_time": "false"}.items())
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
