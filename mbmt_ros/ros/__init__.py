"""The ROS 2 side of mbmt_ros: what talks to ROS - the lifecycle perception node, its
outputs, diagnostics, capture, image messages (:mod:`.image_messages`) and ``mbmt-replay``.
Images themselves are decoded and coloured in :mod:`mbmt_ros.imaging` (no ROS). Import the
sub-modules directly: the node and its helpers need rclpy and the message packages, while
``topics`` and ``rviz_config`` import no ROS (the launch file uses them); nothing here
imports torch."""
from __future__ import annotations

__all__: list[str] = []
