"""Round trips Image <-> NumPy for every encoding (packed and padded rows), zero-copy views,
camera-input conversion to RGB and rejection of malformed messages."""
from __future__ import annotations

import array

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mbmt_ros.imaging.encodings import (
    ENCODINGS,
    INPUT_ENCODINGS,
    image_to_numpy,
    rgb8_to_yuv422,
    to_rgb8,
    yuv422_to_rgb8,
)
from mbmt_ros.imaging.errors import ImageConversionError
from mbmt_ros.ros.image_messages import numpy_to_image

RNG = np.random.default_rng(0)


def _random_pixels(encoding: str, height: int = 5, width: int = 6) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    dtype = np.dtype(info.dtype)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    return RNG.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3, 16])
def test_round_trip_every_encoding(encoding: str, pad: int) -> None:
    pixels = _random_pixels(encoding)
    row = pixels.shape[1] * ENCODINGS[encoding].bytes_per_pixel
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image(pixels, encoding, header, step=row + pad)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 6, row + pad, encoding)
    assert len(msg.data) == msg.step * msg.height
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    back = image_to_numpy(msg)
    assert back.dtype == pixels.dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)
    # a view of the message buffer, never a copy - also for padded rows
    assert np.shares_memory(back, np.frombuffer(msg.data, dtype=np.uint8))
    assert back.flags.c_contiguous == (pad == 0)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 9), width=st.integers(1, 9), pad=st.integers(0, 9),
       encoding=st.sampled_from(["rgb8", "bgra8", "mono8", "16UC1", "32FC1", "32FC3"]))
def test_round_trip_any_size(height: int, width: int, pad: int, encoding: str) -> None:
    pixels = _random_pixels(encoding, height, width)
    row = width * ENCODINGS[encoding].bytes_per_pixel
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(pixels, encoding, step=row + pad)), pixels)


def test_big_endian_data_is_read_correctly() -> None:
    values = np.array([[1, 256, 65535]], dtype=">u2")
    msg = Image(height=1, width=3, encoding="16UC1", step=6, is_bigendian=1,
                data=array.array("B", values.tobytes()))
    np.testing.assert_array_equal(image_to_numpy(msg), [[1, 256, 65535]])


def test_rgb_family_to_rgb8_are_views() -> None:
    rgb = _random_pixels("rgb8")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    cases = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": rgba, "bgra8": rgba[..., [2, 1, 0, 3]]}
    for encoding, pixels in cases.items():
        msg = numpy_to_image(np.ascontiguousarray(pixels), encoding, step=rgb.shape[1] * pixels.shape[2] + 4)
        out = to_rgb8(msg)
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)
        assert np.shares_memory(out, np.frombuffer(msg.data, dtype=np.uint8)), encoding


def test_mono8_to_rgb8_repeats_the_channel() -> None:
    mono = _random_pixels("mono8")
    out = to_rgb8(numpy_to_image(mono, "mono8"))
    assert out.shape == mono.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], mono)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv422_to_rgb8(encoding: str) -> None:
    order = ENCODINGS[encoding].yuv
    # pixel pairs share chroma, so an image with equal pairs survives 4:2:2 up to rounding
    rgb = np.repeat(_random_pixels("rgb8", 4, 5), 2, axis=1)
    msg = numpy_to_image(rgb8_to_yuv422(rgb, order), encoding, step=rgb.shape[1] * 2 + 6)
    out = to_rgb8(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= 3


def test_yuv_reference_values() -> None:
    # BT.601 video range: Y=235 white, Y=16 black; (Y, U, V) = (81, 90, 240) is pure red.
    uyvy = np.array([[[128, 235], [128, 235], [128, 16], [128, 16], [90, 81], [240, 81]]], np.uint8)
    rgb = yuv422_to_rgb8(uyvy.reshape(1, 6, 2), "uyvy")
    np.testing.assert_allclose(rgb[0].astype(int), [[255] * 3, [255] * 3, [0] * 3, [0] * 3,
                                                    [255, 0, 0], [255, 0, 0]], atol=2)
    yuyv = uyvy.reshape(1, 3, 4)[..., [1, 0, 3, 2]].reshape(1, 6, 2)
    np.testing.assert_array_equal(yuv422_to_rgb8(yuyv, "yuyv"), rgb)


def _msg(**fields: object) -> Image:
    msg = numpy_to_image(np.zeros((4, 6, 3), np.uint8), "rgb8")
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize("fields, match", [
    ({"step": 10}, "shorter than one row"),
    ({"data": array.array("B", bytes(71))}, "data holds 71 bytes"),
    ({"encoding": "bayer_rggb42"}, "not a camera input encoding"),
    ({"height": 0, "data": array.array("B")}, "zero size"),
    ({"width": 0}, "zero size"),
])
def test_malformed_messages_raise(fields: dict, match: str) -> None:
    with pytest.raises(ImageConversionError, match=match):
        to_rgb8(_msg(**fields))


def test_non_input_encoding_and_odd_yuv_width_are_rejected() -> None:
    with pytest.raises(ImageConversionError, match="not a camera input encoding"):
        to_rgb8(numpy_to_image(np.zeros((2, 2), np.float32), "32FC1"))
    odd = Image(height=1, width=3, encoding="yuyv", step=6, data=array.array("B", bytes(6)))
    with pytest.raises(ImageConversionError, match="even width"):
        to_rgb8(odd)
    assert set(INPUT_ENCODINGS) <= set(ENCODINGS)


def test_numpy_to_image_checks_shape_and_dtype() -> None:
    with pytest.raises(ImageConversionError, match="shape"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="dtype"):
        numpy_to_image(np.zeros((2, 2), np.float64), "32FC1")


def test_unknown_encoding_in_image_to_numpy() -> None:
    with pytest.raises(ImageConversionError, match="unknown image encoding 'bayer_rggb42'"):
        image_to_numpy(_msg(encoding="bayer_rggb42"))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_to_rgb8_is_bilinear_demosaicing(pattern: str, bits: int) -> None:
    # bilinear interpolation is exact on linear ramps away from the border
    yy, xx = np.mgrid[0:8, 0:10].astype(np.float64)
    rgb = np.stack([10 + 8 * xx, 20 + 5 * yy, 200 - 6 * xx - 4 * yy], axis=-1).astype(np.uint8)
    mosaic = np.empty((8, 10), np.uint8)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    pixels = mosaic if bits == 8 else mosaic.astype(np.uint16) << 8 | 0x7F
    out = to_rgb8(numpy_to_image(pixels, f"bayer_{pattern}{bits}"))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out[1:-1, 1:-1].astype(int) - rgb[1:-1, 1:-1]).max() <= 1
    assert f"bayer_{pattern}{bits}" in INPUT_ENCODINGS


def test_encodings_match_case_insensitively_and_depth_converts_to_metres() -> None:
    from mbmt_ros.imaging.encodings import to_depth_m

    mm = np.array([[0, 1500, 65535]], np.uint16)
    msg = numpy_to_image(mm, "16UC1")
    msg.encoding = "16uc1"
    np.testing.assert_allclose(to_depth_m(msg), [[0.0, 1.5, 65.535]], rtol=1e-6)
    with pytest.raises(ImageConversionError, match="not a depth encoding"):
        to_depth_m(numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))
