"""CompressedImage decoding (JPEG/PNG) and rejection of empty, corrupt or foreign data."""
from __future__ import annotations

import array
import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage

from mbmt_ros.imaging.compressed import decode_compressed
from mbmt_ros.imaging.errors import ImageConversionError
from mbmt_ros.ros.image_messages import encode_compressed

RGB = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_png_round_trip_is_exact() -> None:
    msg = encode_compressed(RGB, "png")
    assert "png" in msg.format
    np.testing.assert_array_equal(decode_compressed(msg), RGB)


def test_jpeg_round_trip_is_close() -> None:
    y, x = np.mgrid[0:24, 0:32]
    smooth = np.stack([x * 8, y * 10, 255 - x * 4], axis=-1).astype(np.uint8)  # JPEG-friendly
    out = decode_compressed(encode_compressed(smooth, "jpeg", quality=95))
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).mean() < 3


def _raw(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    return CompressedImage(format=fmt, data=array.array("B", data))


def test_corrupt_truncated_empty_and_other_formats_are_rejected() -> None:
    jpeg = bytes(encode_compressed(RGB, "jpeg").data)
    with pytest.raises(ImageConversionError, match="cannot decode"):
        decode_compressed(_raw(jpeg[: len(jpeg) // 2]))
    with pytest.raises(ImageConversionError, match="cannot decode"):
        decode_compressed(_raw(b"\xff\xd8\xff" + bytes(200)))
    with pytest.raises(ImageConversionError, match="empty"):
        decode_compressed(_raw(b""))
    bmp = io.BytesIO()
    PILImage.fromarray(RGB).save(bmp, format="BMP")
    with pytest.raises(ImageConversionError, match="BMP"):
        decode_compressed(_raw(bmp.getvalue(), "bmp"))


def test_encode_checks_its_input() -> None:
    with pytest.raises(ImageConversionError, match="jpeg' or 'png"):
        encode_compressed(RGB, "webp")
    with pytest.raises(ImageConversionError, match="uint8 RGB"):
        encode_compressed(RGB.astype(np.float32), "png")
