"""Launch the mbmt_ros perception node (a lifecycle node) on a camera, and optionally rviz2.

    ros2 launch mbmt_ros perception.launch.py bundle:=/path/to/bundle \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info rviz:=true

Arguments: ``namespace``, ``image`` and ``camera_info`` (remaps of the node's inputs;
``<image>/compressed`` feeds ``image/compressed``), ``params_file`` (default: the installed
``config/perception.yaml``), ``bundle`` and ``backend`` (override the params file when not
empty), ``autostart`` (configure + activate at start-up; ``false`` leaves the transitions to a
lifecycle manager), ``use_sim_time``, ``rviz`` (also start rviz2), ``fixed_frame`` (rviz's
fixed frame: the camera's optical frame) and ``dds_profile`` (the node process's Fast DDS
profile: empty = the shipped ``config/fastdds_profile.xml`` unless the user chose another
middleware or their own profile, a path = that file, ``none`` = no profile; the decision is
:func:`mbmt_ros.dds_profile.node_transport_env`). rviz2 gets a config generated for this launch
(:mod:`mbmt_ros.ros.rviz_config`: the template's topics resolved under the same namespace and
remappings as the node), so every display shows a topic the node uses. See docs/node.md.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from mbmt_ros.dds_profile import node_transport_env
from mbmt_ros.ros.rviz_config import (
    DEFAULT_FIXED_FRAME,
    TEMPLATE,
    launch_remaps,
    node_parameters,
    write_rviz_config,
)
from mbmt_ros.topics import NODE_NAME

PACKAGE = "mbmt_ros"


def _share(*parts: str) -> PathJoinSubstitution:
    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def _arguments() -> list[DeclareLaunchArgument]:
    return [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (true when replaying a bag with --clock)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at start-up (false: wait for "
                                          "a lifecycle manager)"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="camera_info topic (for ~/points)"),
        DeclareLaunchArgument("params_file", default_value=_share("config", "perception.yaml"),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("bundle", default_value="",
                              description="model bundle directory; overrides params_file when set"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | tensorrt | onnxruntime | openvino | torch; "
                                          "overrides params_file when set"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 (needs the rviz2 package)"),
        DeclareLaunchArgument("fixed_frame", default_value=DEFAULT_FIXED_FRAME,
                              description="rviz fixed frame: the camera's optical frame"),
        DeclareLaunchArgument("dds_profile", default_value="",
                              description="Fast DDS profile of the node process: empty = the "
                                          "shipped config/fastdds_profile.xml with asynchronous "
                                          "publishing (unless another middleware or a user "
                                          "profile is set), a path, or none"),
    ]


def _flag(context, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"launch argument {name}:={value!r}: use true or false")
    return value in ("true", "1")


def _actions(context, *args, **kwargs) -> list:
    value = {key: LaunchConfiguration(key).perform(context)
             for key in ("namespace", "image", "camera_info", "params_file", "bundle", "backend",
                         "fixed_frame", "dds_profile")}
    shipped = Path(FindPackageShare(PACKAGE).perform(context)) / "config" / "fastdds_profile.xml"
    transport = node_transport_env(os.environ, value["dds_profile"], shipped)
    overrides = {key: value[key] for key in ("bundle", "backend") if value[key]}
    overrides.update(use_sim_time=_flag(context, "use_sim_time"),
                     autostart=_flag(context, "autostart"))
    remaps = launch_remaps(value["image"], value["camera_info"])
    actions = [LogInfo(msg=f"perception_node transport: {transport.reason}"), LifecycleNode(
        package=PACKAGE,
        executable="perception_node",
        name=NODE_NAME,
        namespace=value["namespace"],
        parameters=[value["params_file"], overrides],
        remappings=remaps,
        output="screen",
        emulate_tty=True,
        additional_env=transport.env,
    )]
    if _flag(context, "rviz"):
        params = {**node_parameters(value["params_file"], value["namespace"]), **overrides}
        template = Path(FindPackageShare(PACKAGE).perform(context)).joinpath(*TEMPLATE)
        rviz_file = write_rviz_config(
            Path(tempfile.mkdtemp(prefix="mbmt_ros_rviz_")) / "perception.rviz",
            namespace=value["namespace"], remaps=remaps, fixed_frame=value["fixed_frame"],
            parameters=params, template=template)
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", str(rviz_file)],
                            parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*_arguments(), OpaqueFunction(function=_actions)])
