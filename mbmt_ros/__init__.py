"""mbmt_ros: multi-backbone multi-task dense perception (segmentation, depth, normals) for ROS 2.

Sub-packages: :mod:`mbmt_ros.models` (PyTorch networks, imports torch),
:mod:`mbmt_ros.runtime` (inference backends; no torch unless the torch backend is used),
:mod:`mbmt_ros.ros` (the ROS 2 node, image conversions, bag replay).
"""
__version__ = "0.1.0"
