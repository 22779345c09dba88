"""ROS image messages from NumPy arrays: the node's side of :mod:`mbmt_ros.imaging`.

Decoding is ROS-free (:mod:`mbmt_ros.imaging.encodings`, :mod:`mbmt_ros.imaging.compressed`);
building a ``sensor_msgs/Image`` or ``CompressedImage`` needs the message classes, so it
lives here, with the node.
"""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mbmt_ros.imaging.compressed import JPEG_QUALITY, encode_image
from mbmt_ros.imaging.encodings import canonical_encoding, encoding_info
from mbmt_ros.imaging.errors import ImageConversionError

__all__ = ["numpy_to_image", "encode_compressed"]


def numpy_to_image(array_: np.ndarray, encoding: str, header: Header | None = None,
                   step: int | None = None) -> Image:
    """Build an Image of ``encoding`` from ``array_`` (shape and dtype must fit the encoding).

    ``step`` (bytes a row) defaults to the packed row size; a larger step pads each row with
    zeros. The data are copied once into the message buffer.
    """
    info = encoding_info(encoding)
    encoding = canonical_encoding(encoding)
    arr = np.asarray(array_)
    expected_ndim = 2 if info.channels == 1 else 3
    if arr.ndim != expected_ndim or (expected_ndim == 3 and arr.shape[2] != info.channels):
        raise ImageConversionError(
            f"{encoding} needs an array of shape (H, W{'' if info.channels == 1 else f', {info.channels}'}),"
            f" got {arr.shape}")
    if arr.dtype.kind != np.dtype(info.dtype).kind or arr.dtype.itemsize != np.dtype(info.dtype).itemsize:
        raise ImageConversionError(f"{encoding} needs dtype {np.dtype(info.dtype)}, got {arr.dtype}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"cannot publish a zero-size image ({width}x{height})")
    row_bytes = width * info.bytes_per_pixel
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is shorter than a row ({row_bytes} bytes)")
    native = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = 1 if (native.dtype.itemsize > 1 and np.little_endian is False) else 0
    data = array.array("B")
    if step == row_bytes:
        data.frombytes(np.ascontiguousarray(native).reshape(-1).view(np.uint8).data)
    else:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = np.ascontiguousarray(native).view(np.uint8).reshape(height, row_bytes)
        data.frombytes(padded.data)
    msg.data = data
    return msg


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None,
                      quality: int = JPEG_QUALITY) -> CompressedImage:
    """``(H, W, 3)`` uint8 RGB as a JPEG or PNG CompressedImage (``fmt`` jpeg | png)."""
    payload = encode_image(rgb, fmt, quality)
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt.lower()} compressed rgb8"
    data = array.array("B")
    data.frombytes(payload)
    msg.data = data
    return msg
