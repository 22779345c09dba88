"""sensor_msgs/CompressedImage (JPEG / PNG) <-> RGB NumPy arrays, with Pillow.

The one compressed-image decoder: the node (rclpy messages) and ``mbmt-train extract-bag``
(``rosbags`` messages) both call :func:`decode_compressed`, which reads only ``data`` and
``format``; importing this module needs no ROS (only :func:`encode_compressed` builds an
rclpy message).
"""
from __future__ import annotations

import array
import io
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage

from mbmt_ros.ros.errors import ImageConversionError

if TYPE_CHECKING:  # rclpy messages; any object with the same fields is accepted
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

__all__ = ["COMPRESSED_FORMATS", "decode_compressed", "encode_compressed"]

#: Pillow format names accepted from ``image/compressed``.
COMPRESSED_FORMATS: tuple[str, ...] = ("JPEG", "PNG")


def decode_compressed(msg: CompressedImage) -> np.ndarray:
    """Decode a JPEG or PNG message to ``(H, W, 3)`` uint8 RGB.

    The format is taken from the data's magic bytes (``msg.format`` is free text such as
    ``"rgb8; jpeg compressed bgr8"``). Empty, truncated, corrupt or other-format data raise
    :class:`ImageConversionError`.
    """
    data = memoryview(msg.data).cast("B") if len(msg.data) else b""
    if not len(data):
        raise ImageConversionError("compressed image is empty")
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            if img.format not in COMPRESSED_FORMATS:
                raise ImageConversionError(
                    f"compressed image is {img.format}, expected one of {list(COMPRESSED_FORMATS)}")
            img.load()
            rgb = np.asarray(img.convert("RGB"))
    except ImageConversionError:
        raise
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise ImageConversionError(
            f"cannot decode compressed image (format field {msg.format!r}): {exc}") from exc
    if rgb.size == 0:
        raise ImageConversionError("compressed image decodes to zero size")
    return rgb


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None,
                      quality: int = 90) -> CompressedImage:
    """Encode ``(H, W, 3)`` uint8 RGB as a JPEG or PNG CompressedImage (``fmt`` jpeg | png)."""
    from sensor_msgs.msg import CompressedImage  # only here: decoding needs no ROS

    fmt = fmt.lower()
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"need (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    buf = io.BytesIO()
    options = {"quality": int(quality)} if fmt == "jpeg" else {}
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(buf, format=fmt.upper(), **options)
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt} compressed rgb8"
    data = array.array("B")
    data.frombytes(buf.getbuffer())
    msg.data = data
    return msg
