"""The perception node's recorded outputs -> prediction files that ``mbmt-train score`` reads.

Each ``sensor_msgs/Image`` of the output bag is decoded with NumPy (``mono8`` class ids,
``32FC1`` depth in metres, ``32FC3`` normals) and matched to its dataset sample by header
stamp (the dataset's ``manifest.json`` lists each sample's ``stamp_ns``); one
``<index>.npz`` per sample is written atomically, in the layout of docs/metrics.md.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_write_bytes
from training.demo.bags import read_messages
from training.errors import DataError

__all__ = ["NO_PREDICTION", "image_array", "stamps_of_split", "write_predictions"]

#: class id the node publishes where it makes no prediction (docs/node.md)
NO_PREDICTION = 255
_DTYPES = {"mono8": ("u1", 1), "32FC1": ("f4", 1), "32FC3": ("f4", 3)}


def image_array(msg: Any, where: str) -> np.ndarray:
    """A recorded output Image as ``(H, W)`` / ``(H, W, 3)``; DataError on an unexpected one."""
    if msg.encoding not in _DTYPES:
        raise DataError(f"{where}: unexpected encoding {msg.encoding!r}; the node publishes "
                        f"{sorted(_DTYPES)}")
    kind, channels = _DTYPES[msg.encoding]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if h <= 0 or w <= 0 or step < row or data.size != step * h:
        raise DataError(f"{where}: {w}x{h} {msg.encoding} image with step {step} holds "
                        f"{data.size} bytes; the recording is corrupt")
    arr = data.reshape(h, step)[:, :row].copy().view(dtype).astype(dtype.newbyteorder("="))
    return arr.reshape(h, w) if channels == 1 else arr.reshape(h, w, channels)


def stamps_of_split(data_root: Path, split: str) -> dict[int, int]:
    """``{stamp_ns: index}`` of the dataset's ``split`` from its ``manifest.json``."""
    from training.data.manifest import open_manifest

    manifest = open_manifest(data_root)
    stamps = {}
    for entry in manifest.entries(split):
        stamp = getattr(entry, "stamp_ns", None)
        if stamp is None:
            raise DataError(f"{data_root}/manifest.json: sample {split}/{entry.index} has no "
                            "stamp_ns; frames cannot be matched to the recording")
        stamps[int(stamp)] = int(entry.index)
    return stamps


def write_predictions(output_bag: Path, topics: dict[str, str], stamps: dict[int, int],
                      out: Path) -> int:
    """Write ``out/<index>.npz`` for every sample in ``stamps`` from the node's outputs in
    ``output_bag`` (``topics``: task -> topic); returns the number of files. A sample without
    every task's output is a DataError naming it."""
    by_topic = {topic: task for task, topic in topics.items()}
    frames: dict[int, dict[str, np.ndarray]] = {}
    for topic, _type, _t, _raw, msg in read_messages(output_bag, lambda t, _m: t in by_topic):
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        if stamp not in stamps:
            continue
        arr = image_array(msg, f"{output_bag} {topic} @ {stamp}")
        task = by_topic[topic]
        if task == "segmentation":
            arr = np.where(arr == NO_PREDICTION, -1, arr).astype(np.int16)
        frames.setdefault(stamp, {})[task] = arr
    missing = [s for s in stamps if set(frames.get(s, {})) != set(topics)]
    if missing:
        raise DataError(f"{output_bag} lacks outputs for {len(missing)} frame(s), e.g. stamp "
                        f"{missing[0]} (sample {stamps[missing[0]]})")
    out.mkdir(parents=True, exist_ok=True)
    for stamp, arrays in frames.items():
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(out / f"{stamps[stamp]}.npz", buf.getvalue())
    return len(frames)
