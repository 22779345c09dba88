"""ROS tests only ever run inside a private network namespace with loopback up."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.mark.ros
def test_ros_tests_see_only_loopback_and_localhost_discovery():
    # /proc/self/net/dev lists the interfaces of this process's network namespace
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    interfaces = sorted(line.split(":")[0].strip() for line in lines)
    assert interfaces == ["lo"], f"not isolated: interfaces {interfaces}"
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 0 < int(os.environ["ROS_DOMAIN_ID"]) < 100


@pytest.mark.ros
def test_rclpy_round_trip_over_loopback():
    import rclpy
    from std_msgs.msg import String

    with rclpy.init():
        node = rclpy.create_node("isolation_probe")
        received: list[str] = []
        node.create_subscription(String, "probe", lambda m: received.append(m.data), 10)
        pub = node.create_publisher(String, "probe", 10)
        for _ in range(50):
            pub.publish(String(data="ping"))
            rclpy.spin_once(node, timeout_sec=0.05)
            if received:
                break
        node.destroy_node()
    assert received and received[0] == "ping"
