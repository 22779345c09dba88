"""The ROS 2 side of mbmt_ros: image <-> NumPy conversions, the lifecycle perception node,
diagnostics and ``mbmt-replay``. Import the sub-modules directly: the node and its helpers
need rclpy and the message packages, while the image decoders (``image_conversions``,
``compressed``), ``colorize``, ``topics`` and ``rviz_config`` import no ROS (training and the
launch file use them too); nothing here imports torch."""
from __future__ import annotations

__all__: list[str] = []
