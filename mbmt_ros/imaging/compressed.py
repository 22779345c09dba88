"""Compressed images (sensor_msgs/CompressedImage payloads) <-> NumPy, with Pillow.

The one compressed-image code of the project: the node (rclpy messages) and ``mbmt-train
extract-bag`` (``rosbags`` messages) both call :func:`decode_compressed` (JPEG / PNG colour)
and :func:`decode_compressed_depth` (``compressed_depth_image_transport``'s PNG depth), which
read only ``data`` and ``format``; :func:`encode_image` is the one JPEG / PNG encoder (the
node's compressed messages, the recordings ``mbmt-train synth`` writes). No ROS import.
"""
from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image as PILImage

from mbmt_ros.imaging.errors import ImageConversionError
from mbmt_ros.imaging.messages import CompressedMessage

__all__ = ["COMPRESSED_FORMATS", "JPEG_QUALITY", "decode_compressed",
           "decode_compressed_depth", "encode_image"]

#: Pillow format names accepted from ``image/compressed``.
COMPRESSED_FORMATS: tuple[str, ...] = ("JPEG", "PNG")
#: JPEG quality of every JPEG the project writes (node messages, synthetic recordings).
JPEG_QUALITY = 95


def decode_compressed(msg: CompressedMessage) -> np.ndarray:
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


def decode_compressed_depth(msg: CompressedMessage) -> np.ndarray:
    """A ``compressedDepth`` message (``compressed_depth_image_transport``) as float32 metres.

    16UC1 depth is a PNG of millimetres; 32FC1 depth is a PNG of quantised inverse depth
    after a 12-byte header holding the quantisation parameters A, B (depth = A / (q - B),
    q = 0 invalid). Invalid pixels are 0; anything else raises :class:`ImageConversionError`.
    """
    data = bytes(msg.data)
    fmt = str(msg.format)
    start = data.find(b"\x89PNG")
    if start < 0:
        raise ImageConversionError(f"compressed depth (format {fmt!r}) holds no PNG image")
    try:
        with PILImage.open(io.BytesIO(data[start:])) as img:
            png = np.asarray(img)
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise ImageConversionError(f"cannot decode compressed depth (format {fmt!r}): {exc}") \
            from exc
    if "32fc1" in fmt.lower():
        if start < 12:
            raise ImageConversionError("32FC1 compressedDepth without its 12-byte header")
        _, qa, qb = struct.unpack("<iff", data[:12])
        q = png.astype(np.float32)
        with np.errstate(divide="ignore"):
            depth = np.where(q > 0, qa / (q - qb), 0.0)
        return depth.astype(np.float32)
    return png.astype(np.float32) / 1000.0


def encode_image(rgb: np.ndarray, fmt: str = "jpeg", quality: int = JPEG_QUALITY) -> bytes:
    """``(H, W, 3)`` uint8 RGB as JPEG or PNG bytes (``fmt`` jpeg | png)."""
    fmt = fmt.lower()
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"need (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    buf = io.BytesIO()
    options = {"quality": int(quality)} if fmt == "jpeg" else {}
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(buf, format=fmt.upper(), **options)
    return buf.getvalue()
