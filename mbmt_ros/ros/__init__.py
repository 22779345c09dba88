"""The ROS 2 side of mbmt_ros: image <-> NumPy conversions, the lifecycle perception node,
diagnostics and ``mbmt-replay``. Import the sub-modules directly (they need rclpy and the
message packages); nothing here imports torch."""
from __future__ import annotations

__all__: list[str] = []
