"""rosbag2 (mcap or sqlite3) RGB-D recordings, read and written with the ``rosbags`` library.

Reading turns ``sensor_msgs/Image`` (every camera encoding the perception node accepts:
rgb8, bgr8, rgba8, bgra8, mono8, mono16, YUV 4:2:2 (yuv422/uyvy, yuv422_yuy2/yuyv), Bayer;
depth 16UC1/mono16 millimetres or 32FC1 metres) and ``sensor_msgs/CompressedImage``
(JPEG/PNG colour, ``compressedDepth`` PNG depth) into NumPy arrays and ``CameraInfo`` into
:class:`CameraIntrinsics`. Images are decoded by the node's own decoder
(:mod:`mbmt_ros.imaging`, the ROS-free floor below the node and training), so a camera the
node accepts is a camera ``extract-bag`` accepts. Writing records RGB (rgb8 or JPEG), 16UC1 millimetre depth and
CameraInfo, which is how ``mbmt-train synth`` produces a robot-like log.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbmt_ros.imaging.compressed import decode_compressed, decode_compressed_depth, encode_image
from mbmt_ros.imaging.encodings import (
    DEPTH_ENCODINGS,
    ENCODINGS,
    canonical_encoding,
    rgb8_to_yuv422,
    to_depth_m,
    to_rgb8,
)
from mbmt_ros.imaging.errors import ImageConversionError
from training.data.camera import CameraIntrinsics
from training.errors import DataError

__all__ = ["IMAGE", "COMPRESSED", "CAMERA_INFO", "BagMessage", "RgbdBagWriter", "open_bag",
           "topic_types", "iter_messages", "decode_color", "decode_depth", "camera_from_info",
           "stamp_ns"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


@dataclass
class BagMessage:
    """A deserialised message with its topic, type and time (header stamp, else log time)."""

    topic: str
    msgtype: str
    stamp_ns: int
    msg: object


def stamp_ns(msg: object, log_time: int) -> int:
    """The header stamp in nanoseconds; the bag's log time when the stamp is zero."""
    header = getattr(msg, "header", None)
    if header is None:
        return int(log_time)
    t = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return t if t > 0 else int(log_time)


def open_bag(path: str | Path):
    """Open a rosbag2 folder (or its .mcap/.db3 file) with rosbags' Reader; DataError if not."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if path.is_file() and path.suffix in (".mcap", ".db3"):
        path = path.parent
    if not path.exists():
        raise DataError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises its own error types
        raise DataError(f"{path} is not a readable rosbag2 folder (mcap or sqlite3): {exc}"
                        ) from exc
    return reader


def topic_types(reader) -> dict[str, str]:
    """topic -> message type of every connection in the bag."""
    return {c.topic: c.msgtype for c in reader.connections}


def iter_messages(reader, topics: dict[str, tuple[str, ...]],
                  bag: str = "bag") -> Iterator[BagMessage]:
    """Yield the messages of ``topics`` (topic -> accepted message types) in log order.

    A topic that the bag lacks, or of another type, is a DataError listing the bag's topics.
    """
    available = topic_types(reader)
    for topic, types in topics.items():
        if available.get(topic) not in types:
            have = ", ".join(f"{t} [{ty}]" for t, ty in sorted(available.items())) or "(none)"
            if topic not in available:
                problem = f"has no topic {topic}"
            else:
                problem = f"has {topic} as {available[topic]}, not {' or '.join(types)}"
            raise DataError(f"{bag} {problem}; its topics are: {have}")
    store = _typestore()
    conns = [c for c in reader.connections if c.topic in topics]
    for conn, log_time, raw in reader.messages(connections=conns):
        msg = store.deserialize_cdr(raw, conn.msgtype)
        yield BagMessage(conn.topic, conn.msgtype, stamp_ns(msg, log_time), msg)


def decode_color(msg, msgtype: str, where: str = "image") -> np.ndarray:
    """An Image / CompressedImage message as uint8 RGB (H, W, 3), decoded as the node does."""
    try:
        if msgtype == COMPRESSED:
            return decode_compressed(msg)
        if canonical_encoding(msg.encoding) in set(DEPTH_ENCODINGS) - {"mono16"}:
            raise ImageConversionError(f"colour image has depth encoding {msg.encoding!r}; "
                                       "expected a camera encoding (is this the depth topic?)")
        return np.ascontiguousarray(to_rgb8(msg))
    except ImageConversionError as exc:
        raise DataError(f"{where}: {exc}") from exc


def decode_depth(msg, msgtype: str, where: str = "depth") -> np.ndarray:
    """An Image (16UC1/mono16 mm, 32FC1 m) / compressedDepth message as float32 metres
    (H, W), 0 = invalid."""
    try:
        depth = decode_compressed_depth(msg) if msgtype == COMPRESSED else to_depth_m(msg)
    except ImageConversionError as exc:
        raise DataError(f"{where}: {exc}") from exc
    bad = ~np.isfinite(depth) | (depth < 0)
    return np.where(bad, np.float32(0), depth).astype(np.float32)


def camera_from_info(msg, where: str = "CameraInfo") -> CameraIntrinsics:
    """CameraInfo -> intrinsics (its k matrix at its width x height)."""
    return CameraIntrinsics.from_k(np.asarray(msg.k), int(msg.width), int(msg.height), where)


class RgbdBagWriter:
    """Write an RGB-D recording: ``rgb_topic`` (rgb8 Image, or JPEG CompressedImage with
    ``compressed``), ``depth_topic`` (16UC1 millimetres, registered to colour) and
    ``info_topic`` (CameraInfo), one of each per frame, all with the same header stamp."""

    def __init__(self, path: str | Path, rgb_topic: str = "/camera/color/image_raw",
                 depth_topic: str = "/camera/depth/image_raw",
                 info_topic: str = "/camera/color/camera_info", storage: str = "mcap",
                 frame_id: str = "camera_color_optical_frame", compressed: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self._store = _typestore()
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
        self._writer = Writer(Path(path), version=9, storage_plugin=plugin)
        self._writer.open()
        self.frame_id = frame_id
        self.compressed = compressed
        types = self._store.types
        self._Image, self._Compressed = types[IMAGE], types[COMPRESSED]
        self._Info, self._Header = types[CAMERA_INFO], types["std_msgs/msg/Header"]
        self._Time, self._Roi = types["builtin_interfaces/msg/Time"], \
            types["sensor_msgs/msg/RegionOfInterest"]
        self._rgb = self._writer.add_connection(rgb_topic, COMPRESSED if compressed else IMAGE,
                                                typestore=self._store)
        self._depth = self._writer.add_connection(depth_topic, IMAGE, typestore=self._store)
        self._info = self._writer.add_connection(info_topic, CAMERA_INFO, typestore=self._store)

    def _header(self, stamp: int):
        return self._Header(stamp=self._Time(sec=stamp // 1_000_000_000,
                                             nanosec=stamp % 1_000_000_000),
                            frame_id=self.frame_id)

    def write(self, stamp: int, rgb: np.ndarray, depth_m: np.ndarray,
              camera: CameraIntrinsics) -> None:
        """Record one frame (colour, depth, CameraInfo) with the same stamp."""
        self.write_rgb(stamp, rgb)
        self.write_depth(stamp, depth_m)
        self.write_info(stamp, camera)

    def write_rgb(self, stamp: int, rgb: np.ndarray, encoding: str = "rgb8") -> None:
        """Colour as an Image (or JPEG CompressedImage when ``compressed``) of ``encoding``:
        rgb8, bgr8 or packed YUV 4:2:2 (yuv422/uyvy, yuv422_yuy2/yuyv; even widths), as
        cameras publish it."""
        h, w = rgb.shape[:2]
        header = self._header(stamp)
        if self.compressed:
            msg = self._Compressed(header=header, format="rgb8; jpeg compressed rgb8",
                                   data=np.frombuffer(encode_image(rgb, "jpeg"), np.uint8))
            self._writer.write(self._rgb, stamp, self._store.serialize_cdr(msg, COMPRESSED))
            return
        encoding = canonical_encoding(encoding)
        pixels = np.asarray(rgb, np.uint8)
        if encoding == "bgr8":
            pixels = pixels[..., ::-1]
        elif encoding in ENCODINGS and ENCODINGS[encoding].yuv:
            pixels = rgb8_to_yuv422(pixels, ENCODINGS[encoding].yuv)
        elif encoding != "rgb8":
            raise ValueError(f"colour encoding {encoding!r}: use rgb8, bgr8 or a YUV 4:2:2 one")
        msg = self._Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                          step=w * pixels.shape[2], data=np.ascontiguousarray(pixels).reshape(-1))
        self._writer.write(self._rgb, stamp, self._store.serialize_cdr(msg, IMAGE))

    def write_depth(self, stamp: int, depth_m: np.ndarray, encoding: str = "16UC1") -> None:
        """Depth as 16UC1 millimetres (rounded; 0 = invalid) or 32FC1 metres."""
        if encoding == "16UC1":
            arr = np.clip(np.rint(np.nan_to_num(depth_m) * 1000.0), 0, 65535).astype("<u2")
        elif encoding == "32FC1":
            arr = np.asarray(depth_m, dtype="<f4")
        else:
            raise ValueError(f"depth encoding {encoding!r}: use 16UC1 or 32FC1")
        h, w = arr.shape
        msg = self._Image(header=self._header(stamp), height=h, width=w, encoding=encoding,
                          is_bigendian=0, step=w * arr.itemsize,
                          data=np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
        self._writer.write(self._depth, stamp, self._store.serialize_cdr(msg, IMAGE))

    def write_info(self, stamp: int, camera: CameraIntrinsics) -> None:
        """CameraInfo (plumb_bob, no distortion) of ``camera``."""
        msg = self._Info(header=self._header(stamp), height=camera.height, width=camera.width,
                         distortion_model="plumb_bob", d=np.zeros(5), k=np.array(camera.k),
                         r=np.eye(3).reshape(-1),
                         p=np.array([camera.fx, 0, camera.cx, 0, 0, camera.fy, camera.cy, 0,
                                     0, 0, 1, 0], dtype=float),
                         binning_x=0, binning_y=0,
                         roi=self._Roi(x_offset=0, y_offset=0, height=0, width=0,
                                       do_rectify=False))
        self._writer.write(self._info, stamp, self._store.serialize_cdr(msg, CAMERA_INFO))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> RgbdBagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
