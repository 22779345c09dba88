"""sensor_msgs/Image <-> NumPy without cv_bridge.

:func:`image_to_numpy` returns a *view* of the message buffer (no copy) for every encoding,
padded row steps included; :func:`to_rgb8` turns any supported camera encoding into the
network's ``(H, W, 3)`` uint8 RGB input (a view for rgb8/rgba8/bgr8/bgra8, a computed array
for mono8 and YUV 4:2:2); :func:`numpy_to_image` builds a message with one buffer copy.

Encoding names follow ROS ``sensor_msgs/image_encodings.hpp``: ``yuv422`` is UYVY (also
``uyvy``), ``yuv422_yuy2`` is YUYV (also ``yuyv``). YUV is decoded with the ITU-R BT.601
video-range matrix, as OpenCV (and hence cv_bridge) does.
"""
from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mbmt_ros.ros.errors import ImageConversionError

__all__ = [
    "ENCODINGS", "INPUT_ENCODINGS", "EncodingInfo", "image_to_numpy", "numpy_to_image",
    "to_rgb8", "rgb8_to_yuv422", "yuv422_to_rgb8",
]


@dataclass(frozen=True)
class EncodingInfo:
    """Memory layout of one encoding: element type, channels per pixel, YUV byte order."""

    dtype: str
    channels: int
    #: "uyvy" / "yuyv" for packed 4:2:2 (2 bytes a pixel, shape (H, W, 2)); "" otherwise.
    yuv: str = ""

    @property
    def bytes_per_pixel(self) -> int:
        return np.dtype(self.dtype).itemsize * self.channels


ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo("u1", 3), "bgr8": EncodingInfo("u1", 3),
    "rgba8": EncodingInfo("u1", 4), "bgra8": EncodingInfo("u1", 4),
    "mono8": EncodingInfo("u1", 1), "mono16": EncodingInfo("u2", 1),
    "8UC1": EncodingInfo("u1", 1), "8UC3": EncodingInfo("u1", 3), "8UC4": EncodingInfo("u1", 4),
    "16UC1": EncodingInfo("u2", 1), "16SC1": EncodingInfo("i2", 1),
    "32SC1": EncodingInfo("i4", 1),
    "32FC1": EncodingInfo("f4", 1), "32FC3": EncodingInfo("f4", 3), "32FC4": EncodingInfo("f4", 4),
    "64FC1": EncodingInfo("f8", 1),
    "yuv422": EncodingInfo("u1", 2, "uyvy"), "uyvy": EncodingInfo("u1", 2, "uyvy"),
    "yuv422_yuy2": EncodingInfo("u1", 2, "yuyv"), "yuyv": EncodingInfo("u1", 2, "yuyv"),
}
#: Encodings the perception node accepts as camera input.
INPUT_ENCODINGS: tuple[str, ...] = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "uyvy", "yuv422_yuy2", "yuyv",
)


def _info(encoding: str) -> EncodingInfo:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unknown image encoding {encoding!r}; supported: {sorted(ENCODINGS)}") from None


def image_to_numpy(msg: Image) -> np.ndarray:
    """View the pixels of ``msg`` as ``(H, W)`` or ``(H, W, C)`` (YUV 4:2:2: ``(H, W, 2)`` bytes).

    The result shares memory with ``msg.data`` (rows may be padded: the array is then not
    C-contiguous). Raises :class:`ImageConversionError` for a zero size, an unknown encoding,
    a step shorter than a row, a data length other than ``step * height`` or an odd YUV width.
    """
    info = _info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has zero size ({width}x{height})")
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is shorter than one row of {width} {msg.encoding} pixels ({row_bytes} bytes)")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != step * height:
        raise ImageConversionError(
            f"data holds {buf.size} bytes but step*height = {step}*{height} = {step * height}")
    if info.yuv and width % 2:
        raise ImageConversionError(f"{msg.encoding} needs an even width, got {width}")
    dtype = np.dtype(info.dtype)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    rows = buf.reshape(height, step)[:, :row_bytes]
    pixels = rows.view(dtype)
    if info.channels == 1:
        return pixels
    return pixels.reshape(height, width, info.channels)


def numpy_to_image(array_: np.ndarray, encoding: str, header: Header | None = None,
                   step: int | None = None) -> Image:
    """Build an Image of ``encoding`` from ``array_`` (shape and dtype must fit the encoding).

    ``step`` (bytes a row) defaults to the packed row size; a larger step pads each row with
    zeros. The data are copied once into the message buffer.
    """
    info = _info(encoding)
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


def to_rgb8(msg: Image) -> np.ndarray:
    """The image as ``(H, W, 3)`` uint8 RGB, the network input; a view where the layout allows."""
    if msg.encoding not in INPUT_ENCODINGS:
        raise ImageConversionError(
            f"encoding {msg.encoding!r} is not a camera input encoding; use one of {list(INPUT_ENCODINGS)}")
    pixels = image_to_numpy(msg)
    encoding = msg.encoding
    if encoding in ("rgb8", "rgba8"):
        return pixels[..., :3]
    if encoding in ("bgr8", "bgra8"):
        return pixels[..., 2::-1]
    if encoding == "mono8":
        return np.repeat(pixels[..., None], 3, axis=2)
    return yuv422_to_rgb8(pixels, ENCODINGS[encoding].yuv)


# ITU-R BT.601, video range (Y in [16, 235], U/V in [16, 240]) - OpenCV's YUV 4:2:2 matrix.
_Y_SCALE = 255.0 / 219.0
_RGB_FROM_UV = np.array([[0.0, 1.596027], [-0.391762, -0.812968], [2.017232, 0.0]], dtype=np.float32)


def _yuv_planes(packed: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if order not in ("uyvy", "yuyv"):
        raise ImageConversionError(f"unknown YUV 4:2:2 byte order {order!r} (uyvy or yuyv)")
    quads = packed.reshape(packed.shape[0], -1, 4)  # one quad = two pixels
    if order == "uyvy":
        u, y0, v, y1 = (quads[..., i] for i in range(4))
    else:
        y0, u, y1, v = (quads[..., i] for i in range(4))
    y = np.stack([y0, y1], axis=-1).reshape(packed.shape[0], -1)
    return y, u, v


def yuv422_to_rgb8(packed: np.ndarray, order: str) -> np.ndarray:
    """Decode packed 4:2:2 bytes of shape ``(H, W, 2)`` (``order`` uyvy or yuyv) to RGB uint8."""
    y, u, v = _yuv_planes(packed, order)
    luma = (y.astype(np.float32) - 16.0) * _Y_SCALE
    uv = np.stack([u, v], axis=-1).astype(np.float32) - 128.0  # (H, W/2, 2)
    chroma = uv @ _RGB_FROM_UV.T  # (H, W/2, 3)
    rgb = luma[..., None] + np.repeat(chroma, 2, axis=1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb8_to_yuv422(rgb: np.ndarray, order: str = "uyvy") -> np.ndarray:
    """Encode ``(H, W, 3)`` uint8 RGB (even W) as packed 4:2:2 ``(H, W, 2)`` bytes (BT.601)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[1] % 2:
        raise ImageConversionError(f"need (H, W, 3) RGB with an even width, got {rgb.shape}")
    if order not in ("uyvy", "yuyv"):
        raise ImageConversionError(f"unknown YUV 4:2:2 byte order {order!r} (uyvy or yuyv)")
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2.0
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2.0
    parts = (u2, y[:, 0::2], v2, y[:, 1::2]) if order == "uyvy" else (y[:, 0::2], u2, y[:, 1::2], v2)
    quads = np.stack(parts, axis=-1)
    return np.clip(np.rint(quads), 0, 255).astype(np.uint8).reshape(rgb.shape[0], rgb.shape[1], 2)
