"""Property-based tests (hypothesis): whatever arrives on the node's inputs - arbitrary sizes,
steps, encodings, byte lengths, compressed payloads, camera_info and parameter values - the
conversion and validation code either produces a well-formed result or raises the package's
own error (which the node counts as a rejected frame / a failed configure); it never crashes
with anything else."""
from __future__ import annotations

import array
import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")
from message_strategies import U32, image_messages  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from mbmt_ros.errors import MbmtError  # noqa: E402
from mbmt_ros.imaging.compressed import decode_compressed  # noqa: E402
from mbmt_ros.imaging.encodings import image_to_numpy, to_rgb8  # noqa: E402
from mbmt_ros.imaging.errors import ImageConversionError  # noqa: E402
from mbmt_ros.ros.errors import NodeParameterError  # noqa: E402
from mbmt_ros.ros.params import PARAMETERS, NodeParams, field_name, validate_params  # noqa: E402
from mbmt_ros.ros.pointcloud import intrinsics_from_camera_info  # noqa: E402

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

@SETTINGS
@given(image_messages())
def test_any_image_message_converts_or_raises_image_conversion_error(msg: Image) -> None:
    try:
        pixels = image_to_numpy(msg)
    except ImageConversionError:
        pass
    else:
        assert pixels.shape[:2] == (msg.height, msg.width)
    try:
        rgb = to_rgb8(msg)
    except ImageConversionError:
        return
    assert rgb.shape == (msg.height, msg.width, 3) and rgb.dtype == np.uint8


def _encoded(fmt: str, height: int, width: int, seed: int) -> bytes:
    from PIL import Image as PILImage

    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def compressed_payloads(draw: st.DrawFn) -> bytes:
    """Random bytes, or a real PNG/JPEG that is truncated or has bytes flipped."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(_encoded(draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP"])),
                              draw(st.integers(1, 24)), draw(st.integers(1, 24)),
                              draw(st.integers(0, 3))))
    cut = draw(st.integers(0, len(data)))
    for pos in draw(st.lists(st.integers(0, max(len(data) - 1, 0)), max_size=4)):
        data[pos] ^= draw(st.integers(1, 255))
    return bytes(data[:cut] if draw(st.booleans()) else data)


@SETTINGS
@given(compressed_payloads(), st.text(max_size=30))
def test_any_compressed_payload_decodes_or_raises_image_conversion_error(data: bytes,
                                                                         fmt: str) -> None:
    msg = CompressedImage()
    msg.format = fmt
    msg.data = array.array("B", data)
    try:
        rgb = decode_compressed(msg)
    except ImageConversionError:
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and rgb.size > 0


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@SETTINGS
@given(st.lists(finite_or_not, min_size=9, max_size=9), st.integers(0, U32), st.integers(0, U32))
def test_any_camera_info_gives_usable_intrinsics_or_raises(k: list[float], width: int,
                                                           height: int) -> None:
    info = CameraInfo()
    info.k = k
    info.width, info.height = width, height
    try:
        cam = intrinsics_from_camera_info(info)
    except ImageConversionError:
        return
    # intrinsics the node accepts must be usable for back-projection
    assert all(math.isfinite(v) for v in (cam.fx, cam.fy, cam.cx, cam.cy))
    assert cam.fx > 0 and cam.fy > 0


any_value = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), finite_or_not,
                      st.text(max_size=20), st.lists(st.text(max_size=12), max_size=4))


@SETTINGS
@given(st.fixed_dictionaries({}, optional={s.name: any_value for s in PARAMETERS}),
       st.booleans())
def test_any_parameter_values_validate_or_raise_node_parameter_error(values: dict,
                                                                     real_bundle: bool) -> None:
    if real_bundle:
        values = {**values, "bundle": _BUNDLE}
    try:
        params = validate_params(values)
    except NodeParameterError:
        return
    assert isinstance(params, NodeParams)
    # every numeric parameter that passed validation lies inside its declared range
    for spec in PARAMETERS:
        if spec.min is None:
            continue
        value = getattr(params, field_name(spec.name))
        assert math.isfinite(value) and spec.min <= value <= spec.max, (spec.name, value)


_BUNDLE = ""


@pytest.fixture(autouse=True, scope="module")
def _fake_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A folder that passes the node's bundle *path* check (meta.json present); opening it is
    not part of parameter validation."""
    global _BUNDLE
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "meta.json").write_text("{}")
    _BUNDLE = str(folder)


def test_errors_are_the_packages_own() -> None:
    assert issubclass(ImageConversionError, MbmtError)
    assert issubclass(NodeParameterError, MbmtError)
