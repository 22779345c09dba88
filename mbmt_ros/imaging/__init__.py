"""Images without ROS: camera encodings <-> NumPy, compressed colour and depth, colouring.

The floor below both the node (:mod:`mbmt_ros.ros`) and training (``extract-bag``, the result
plots): every function reads only a message's fields (``encoding``, ``data``, ...), so rclpy
messages and ``rosbags`` messages decode alike, and nothing here imports ROS. Building ROS
messages from arrays is the node's job (:mod:`mbmt_ros.ros.image_messages`).

- :mod:`.encodings` - raw ``sensor_msgs/Image`` layouts (RGB/BGR(A), mono8/16, YUV 4:2:2,
  Bayer, 16UC1/32FC1 depth) to NumPy and back to bytes;
- :mod:`.compressed` - JPEG/PNG colour and ``compressedDepth`` depth, the one image encoder;
- :mod:`.colorize` - class colours, normals and depth colour maps for people and rviz;
- :mod:`.errors` - :class:`ImageConversionError`, :class:`PaletteError`;
- :mod:`.messages` - the message fields the decoders read (typing protocols).
"""
from __future__ import annotations

from .errors import ImageConversionError, PaletteError

__all__ = ["ImageConversionError", "PaletteError"]
