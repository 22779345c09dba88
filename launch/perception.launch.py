"""Launch the mbmt_ros perception node on a camera, and optionally rviz2.

    ros2 launch mbmt_ros perception.launch.py bundle:=/path/to/bundle \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info rviz:=true

Arguments: ``namespace``, ``image`` and ``camera_info`` (remaps of the node's inputs;
``<image>/compressed`` feeds ``image/compressed``), ``params_file`` (default: the installed
``config/perception.yaml``), ``bundle`` and ``backend`` (override the params file when not
empty) and ``rviz`` (start rviz2 with ``config/perception.rviz``). See docs/node.md.
"""
from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "mbmt_ros"


def _share(*parts: str) -> PathJoinSubstitution:
    return PathJoinSubstitution([FindPackageShare(PACKAGE), *parts])


def _arguments() -> list[DeclareLaunchArgument]:
    return [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="camera_info topic (for ~/points)"),
        DeclareLaunchArgument("params_file", default_value=_share("config", "perception.yaml"),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("bundle", default_value="",
                              description="model bundle directory; overrides params_file when set"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | tensorrt | onnxruntime | torch; overrides params_file when set"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 with config/perception.rviz"),
    ]


def _perception_node(context, *args, **kwargs) -> list[Node]:
    overrides = {key: LaunchConfiguration(key).perform(context) for key in ("bundle", "backend")}
    overrides = {key: value for key, value in overrides.items() if value}
    image = LaunchConfiguration("image").perform(context)
    return [Node(
        package=PACKAGE,
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), *([overrides] if overrides else [])],
        remappings=[("image", image), ("image/compressed", f"{image}/compressed"),
                    ("camera_info", LaunchConfiguration("camera_info"))],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", _share("config", "perception.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*_arguments(), OpaqueFunction(function=_perception_node), rviz])
