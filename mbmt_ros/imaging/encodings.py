"""sensor_msgs/Image <-> NumPy without cv_bridge: the one image decoder of the project.

The perception node (rclpy messages) and ``mbmt-train extract-bag`` (``rosbags`` messages)
both decode camera and depth images here: every function reads only the message fields
(``height``, ``width``, ``step``, ``encoding``, ``is_bigendian``, ``data``), so any message
object with those fields works, and nothing here imports ROS (the node builds its messages
with :func:`mbmt_ros.ros.image_messages.numpy_to_image`).

:func:`image_to_numpy` returns a *view* of the message buffer (no copy) for every encoding,
padded row steps included; :func:`to_rgb8` turns any supported camera encoding into the
network's ``(H, W, 3)`` uint8 RGB input (a view for rgb8/rgba8/bgr8/bgra8, a computed array
for mono8/mono16, Bayer and YUV 4:2:2); :func:`to_depth_m` turns a 16UC1/mono16 (millimetres)
or 32FC1 (metres) depth image into float32 metres.

Encoding names follow ROS ``sensor_msgs/image_encodings.hpp`` (matched case-insensitively):
``yuv422`` is UYVY (also ``uyvy``), ``yuv422_yuy2`` is YUYV (also ``yuyv``). YUV is decoded
with the ITU-R BT.601 video-range matrix, as OpenCV (and hence cv_bridge) does; Bayer
mosaics (``bayer_rggb8`` ... ``bayer_grbg16``) are demosaiced bilinearly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbmt_ros.imaging.errors import ImageConversionError
from mbmt_ros.imaging.messages import ImageMessage

__all__ = [
    "ENCODINGS", "INPUT_ENCODINGS", "DEPTH_ENCODINGS", "EncodingInfo", "canonical_encoding",
    "image_to_numpy", "encoding_info", "to_rgb8", "to_depth_m", "rgb8_to_yuv422",
    "yuv422_to_rgb8", "demosaic",
]


@dataclass(frozen=True)
class EncodingInfo:
    """Memory layout of one encoding: element type, channels per pixel, YUV byte order."""

    dtype: str
    channels: int
    #: "uyvy" / "yuyv" for packed 4:2:2 (2 bytes a pixel, shape (H, W, 2)); "" otherwise.
    yuv: str = ""
    #: Bayer mosaic, the colours of the top-left 2x2 block ("rggb", "bggr", "gbrg", "grbg").
    bayer: str = ""

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
    **{f"bayer_{p}{bits}": EncodingInfo(dtype, 1, bayer=p)
       for p in ("rggb", "bggr", "gbrg", "grbg") for bits, dtype in (("8", "u1"), ("16", "u2"))},
}
#: Encodings accepted as camera (colour) input by the node and ``extract-bag``.
INPUT_ENCODINGS: tuple[str, ...] = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "uyvy", "yuv422_yuy2",
    "yuyv", *sorted(e for e, i in ENCODINGS.items() if i.bayer),
)
#: Depth encodings and their scale to metres (REP 118: 16UC1 millimetres, 32FC1 metres).
DEPTH_ENCODINGS: dict[str, float] = {"16UC1": 1e-3, "mono16": 1e-3, "32FC1": 1.0}
_BY_LOWER = {name.lower(): name for name in ENCODINGS}


def canonical_encoding(encoding: str) -> str:
    """The ROS spelling of ``encoding`` (``"16uc1"`` -> ``"16UC1"``); unknown names unchanged."""
    return encoding if encoding in ENCODINGS else _BY_LOWER.get(str(encoding).lower(), encoding)


def encoding_info(encoding: str) -> EncodingInfo:
    """The memory layout of ``encoding`` (case-insensitive ROS name); unknown names raise."""
    try:
        return ENCODINGS[canonical_encoding(encoding)]
    except KeyError:
        raise ImageConversionError(
            f"unknown image encoding {encoding!r}; supported: {sorted(ENCODINGS)}") from None


def image_to_numpy(msg: ImageMessage) -> np.ndarray:
    """View the pixels of ``msg`` as ``(H, W)`` or ``(H, W, C)`` (YUV 4:2:2: ``(H, W, 2)`` bytes).

    The result shares memory with ``msg.data`` (rows may be padded: the array is then not
    C-contiguous). Raises :class:`ImageConversionError` for a zero size, an unknown encoding,
    a step shorter than a row, a data length other than ``step * height`` or an odd YUV width.
    """
    info = encoding_info(msg.encoding)
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


def to_rgb8(msg: ImageMessage) -> np.ndarray:
    """The image as ``(H, W, 3)`` uint8 RGB, the network input; a view where the layout allows.

    mono16 and 16-bit Bayer keep their 8 most significant bits.
    """
    encoding = canonical_encoding(msg.encoding)
    if encoding not in INPUT_ENCODINGS:
        raise ImageConversionError(
            f"encoding {msg.encoding!r} is not a camera input encoding; use one of {list(INPUT_ENCODINGS)}")
    pixels = image_to_numpy(msg)
    info = ENCODINGS[encoding]
    if encoding in ("rgb8", "rgba8"):
        return pixels[..., :3]
    if encoding in ("bgr8", "bgra8"):
        return pixels[..., 2::-1]
    if pixels.dtype.itemsize == 2:  # mono16, bayer_*16
        pixels = (pixels >> 8).astype(np.uint8)
    if info.bayer:
        return demosaic(pixels, info.bayer)
    if info.channels == 1:  # mono8, mono16
        return np.repeat(pixels[..., None], 3, axis=2)
    return yuv422_to_rgb8(pixels, info.yuv)


def to_depth_m(msg: ImageMessage) -> np.ndarray:
    """A depth image as ``(H, W)`` float32 metres (a new array); 0 marks invalid pixels
    (0, negative or non-finite in the message). 16UC1/mono16 are millimetres, 32FC1 metres."""
    encoding = canonical_encoding(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"encoding {msg.encoding!r} is not a depth encoding; use 16UC1 (millimetres) or "
            "32FC1 (metres)")
    depth = image_to_numpy(msg).astype(np.float32) * np.float32(DEPTH_ENCODINGS[encoding])
    depth[~(np.isfinite(depth) & (depth > 0))] = 0.0
    return depth


_BILINEAR = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)


def demosaic(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaicing of an ``(H, W)`` uint8 Bayer mosaic to ``(H, W, 3)`` uint8 RGB.

    ``pattern`` names the colours of the top-left 2x2 block (``rggb``, ``bggr``, ``gbrg``,
    ``grbg``). Each missing colour is the weighted mean of the samples of that colour in the
    3x3 neighbourhood (normalised convolution, so borders and any size work).
    """
    if len(pattern) != 4 or sorted(pattern) != ["b", "g", "g", "r"]:
        raise ImageConversionError(f"unknown Bayer pattern {pattern!r} (rggb, bggr, gbrg or grbg)")
    h, w = raw.shape
    values = np.zeros((h + 2, w + 2, 3), dtype=np.float32)
    mask = np.zeros((h + 2, w + 2, 3), dtype=np.float32)
    for k, colour in enumerate(pattern):
        c = "rgb".index(colour)
        dy, dx = divmod(k, 2)
        values[1 + dy:h + 1:2, 1 + dx:w + 1:2, c] = raw[dy::2, dx::2]
        mask[1 + dy:h + 1:2, 1 + dx:w + 1:2, c] = 1.0
    total = np.zeros((h, w, 3), dtype=np.float32)
    weight = np.zeros((h, w, 3), dtype=np.float32)
    for (i, j), k in np.ndenumerate(_BILINEAR):
        total += k * values[i:i + h, j:j + w]
        weight += k * mask[i:i + h, j:j + w]
    rgb = np.where(mask[1:-1, 1:-1] > 0, values[1:-1, 1:-1], total / np.maximum(weight, 1.0))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


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
