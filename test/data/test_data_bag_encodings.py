"""``extract-bag`` decodes camera images with the node's decoder: a YUV 4:2:2 camera (and every
other camera encoding the node accepts) is extracted, not rejected."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import run_cli

from training.data.bag import IMAGE, RgbdBagWriter, _typestore, decode_color, decode_depth
from training.data.synth import render_frame
from training.errors import DataError

MS = 1_000_000
TOPICS = ["--rgb", "/camera/color/image_raw", "--depth", "/camera/depth/image_raw",
          "--camera-info", "/camera/color/camera_info"]


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_extract_bag_reads_a_yuv422_camera(tmp_path: Path, encoding: str) -> None:
    frames = [render_frame(5, i, 24, 32) for i in range(3)]
    # 4:2:2 shares chroma between pixel pairs: equal pairs survive up to rounding
    rgbs = [np.repeat(f.sample.rgb[:, ::2], 2, axis=1) for f in frames]
    with RgbdBagWriter(tmp_path / "bag") as w:
        for i, (f, rgb) in enumerate(zip(frames, rgbs, strict=True)):
            stamp = 1_000_000_000 + i * 100 * MS
            w.write_rgb(stamp, rgb, encoding=encoding)
            w.write_depth(stamp, f.sample.depth)
            w.write_info(stamp, f.camera)
    out = tmp_path / "data"
    proc = run_cli("extract-bag", str(tmp_path / "bag"), *TOPICS, "--out", str(out))
    assert "3 frames" in proc.stdout
    for i, rgb in enumerate(rgbs):
        image = np.load(out / "train" / "image" / f"{i}.npy")
        assert image.shape == rgb.shape and image.dtype == np.uint8
        assert np.abs(image.astype(int) - rgb).max() <= 3
        depth = np.load(out / "train" / "depth" / f"{i}.npy")
        assert np.abs(depth - frames[i].sample.depth).max() <= 0.0005 + 1e-6


def _rosbags_image(pixels: np.ndarray, encoding: str):
    """A rosbags Image message, through CDR like one read from a bag."""
    store = _typestore()
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    h, w = pixels.shape[:2]
    msg = store.types[IMAGE](header=header, height=h, width=w, encoding=encoding,
                             is_bigendian=0, step=pixels[0].nbytes,
                             data=np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))
    return store.deserialize_cdr(store.serialize_cdr(msg, IMAGE), IMAGE)


def test_bag_decoder_handles_bayer_mono16_and_depth_encodings() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50  # a flat colour demosaics exactly
    mosaic = np.empty((4, 6), np.uint8)
    mosaic[0::2, 0::2], mosaic[1::2, 1::2] = 200, 50  # rggb
    mosaic[0::2, 1::2] = mosaic[1::2, 0::2] = 100
    np.testing.assert_array_equal(decode_color(_rosbags_image(mosaic, "bayer_rggb8"), IMAGE), rgb)
    mono16 = np.full((2, 3), 0xAB12, "<u2")
    np.testing.assert_array_equal(decode_color(_rosbags_image(mono16, "mono16"), IMAGE),
                                  np.full((2, 3, 3), 0xAB, np.uint8))
    metres = np.array([[0.0, 1.5, np.nan]], "<f4")
    np.testing.assert_array_equal(decode_depth(_rosbags_image(metres, "32FC1"), IMAGE),
                                  [[0.0, 1.5, 0.0]])
    with pytest.raises(DataError, match="is this the depth topic"):
        decode_color(_rosbags_image(metres, "32FC1"), IMAGE, "bag /depth @ 1")
    with pytest.raises(DataError, match="not a depth encoding"):
        decode_depth(_rosbags_image(rgb, "rgb8"), IMAGE)


def test_shared_decoders_and_colours_import_without_ros() -> None:
    """extract-bag runs where ROS is not installed: the shared modules must not need it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces'):\n"
        "    sys.modules[name] = None  # importing them now fails\n"
        "import types, numpy as np\n"
        "from mbmt_ros.imaging import colorize, compressed, encodings\n"
        "from mbmt_ros import topics\n"
        "from mbmt_ros.ros import rviz_config\n"
        "import training.data.bag\n"
        "msg = types.SimpleNamespace(height=1, width=2, step=4, encoding='yuv422', is_bigendian=0,\n"
        "                            data=np.array([128, 235, 128, 235], np.uint8))\n"
        "print(encodings.to_rgb8(msg).tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[[255, 255, 255], [255, 255, 255]]]"
