"""Turn a rosbag2 RGB-D recording into a dataset (NYUv2 layout + manifest).

RGB and depth frames are paired by header stamp (nearest first, each frame used once,
within a tolerance); unpaired frames are reported. Depth becomes metres at the RGB
resolution (registered depth resized with nearest neighbour), normals are derived from
depth and the camera intrinsics, and label PNGs named ``<stamp_ns>.png`` (the RGB frame's
stamp) become segmentation labels. The dataset appears only when complete.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.tasks import NYU13_CLASSES
from training.data.bag import (
    CAMERA_INFO,
    COMPRESSED,
    IMAGE,
    camera_from_info,
    decode_color,
    decode_depth,
    iter_messages,
    open_bag,
)
from training.data.camera import CAMERA_NAME, CameraIntrinsics
from training.data.label_png import read_label_png
from training.data.manifest import default_class_names
from training.data.normals_from_depth import normals_from_depth
from training.data.sample import GT, Provenance, Sample
from training.data.transforms import _nearest
from training.data.writer import open_dataset_writer
from training.errors import DataError
from training.progress import progress

__all__ = ["ExtractReport", "pair_by_stamp", "extract_bag", "label_files"]

log = logging.getLogger(__name__)


@dataclass
class ExtractReport:
    """What :func:`extract_bag` did: frames written, and the stamps left without partner."""

    out: Path
    frames: int
    labelled: int
    unmatched_rgb: list[int] = field(default_factory=list)
    unmatched_depth: list[int] = field(default_factory=list)
    unused_labels: list[str] = field(default_factory=list)
    normals: bool = True


def pair_by_stamp(rgb: list[int], depth: list[int], tolerance_ns: int
                  ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pair stamps nearest-first (each used once) within ``tolerance_ns``.

    Returns ``(pairs sorted by rgb stamp, unmatched rgb, unmatched depth)``.
    """
    d_sorted = np.array(sorted(depth), dtype=np.int64)
    candidates: list[tuple[int, int, int]] = []
    for r in rgb:
        lo = np.searchsorted(d_sorted, r - tolerance_ns, side="left")
        hi = np.searchsorted(d_sorted, r + tolerance_ns, side="right")
        candidates.extend((abs(int(d) - r), r, int(d)) for d in d_sorted[lo:hi])
    candidates.sort()
    used_r: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for _, r, d in candidates:
        if r not in used_r and d not in used_d:
            used_r.add(r)
            used_d.add(d)
            pairs.append((r, d))
    pairs.sort()
    return (pairs, sorted(set(rgb) - used_r), sorted(set(depth) - used_d))


def label_files(labels_dir: str | Path | None) -> dict[int, Path]:
    """stamp -> PNG of a labels folder whose files are named ``<stamp_ns>.png``."""
    if labels_dir is None:
        return {}
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise DataError(f"labels folder {labels_dir} does not exist")
    out: dict[int, Path] = {}
    for p in sorted(labels_dir.iterdir()):
        if p.suffix.lower() != ".png":
            continue
        if not p.stem.isdigit():
            raise DataError(f"{p}: label PNGs must be named <stamp_ns>.png (the RGB frame's "
                            "header stamp in nanoseconds, e.g. 1700000000100000000.png)")
        out[int(p.stem)] = p
    return out


def _fmt(stamps: list[int], limit: int = 5) -> str:
    s = ", ".join(str(x) for x in stamps[:limit])
    return s + (f" ... ({len(stamps)} in all)" if len(stamps) > limit else "")


def _resize_depth(depth: np.ndarray, size: tuple[int, int], where: str) -> np.ndarray:
    h, w = depth.shape
    if (h, w) == size:
        return depth
    if abs(w / h - size[1] / size[0]) > 0.01:
        raise DataError(f"{where}: depth is {h}x{w} but colour is {size[0]}x{size[1]} (another "
                        "aspect ratio): record depth registered to colour "
                        "(e.g. aligned_depth_to_color)")
    return _nearest(depth, size)


def extract_bag(bag: str | Path, out: str | Path, rgb_topic: str, depth_topic: str,
                info_topic: str | None = None, labels_dir: str | Path | None = None,
                tolerance_ms: float = 20.0, camera: CameraIntrinsics | None = None,
                num_classes: int = len(NYU13_CLASSES), split: str = "train",
                overwrite: bool = False, edge_threshold: float = 0.03,
                val_fraction: float = 0.0) -> ExtractReport:
    """Write every paired frame of ``bag`` in time order to ``out/<split>/`` (see module doc);
    with ``val_fraction`` > 0 the last ``round(frames x val_fraction)`` frames go to ``val/``
    instead (index 0 first), so a training run has frames to validate on."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    bag = Path(bag)
    labels = label_files(labels_dir)
    reader = open_bag(bag)
    try:
        rgb_stamps, depth_stamps, camera = _scan_stamps(reader, bag, rgb_topic, depth_topic,
                                                        info_topic, camera)
        pairs, lone_rgb, lone_depth = _pair_frames(bag, rgb_topic, depth_topic, rgb_stamps,
                                                   depth_stamps, tolerance_ms)
        if camera is None:
            log.warning("no --camera-info topic: surface normals are not derived")
        rank = {r: i for i, (r, _) in enumerate(pairs)}
        unused = sorted(str(p) for s, p in labels.items() if s not in rank)
        if unused:
            log.warning("%d label PNGs match no paired RGB frame stamp: %s", len(unused),
                        ", ".join(unused[:5]))
        info = {"source": "rosbag2", "bag": str(bag), "rgb_topic": rgb_topic,
                "depth_topic": depth_topic, "camera_info_topic": info_topic,
                "labels": str(labels_dir) if labels_dir else None,
                "tolerance_ms": tolerance_ms, "unmatched_rgb": lone_rgb,
                "unmatched_depth": lone_depth, "unused_labels": unused}
        with open_dataset_writer(out, num_classes=num_classes,
                                 class_names=default_class_names(num_classes),
                                 dataset=f"rosbag2:{bag.name}", info=info,
                                 overwrite=overwrite) as writer:
            n_train = len(pairs) - int(round(len(pairs) * val_fraction))
            labelled, size = _write_pairs(
                reader, bag, rgb_topic, depth_topic, pairs, writer, split, n_train,
                lambda key, rgb, depth, where: _make_sample(
                    key, rgb, depth, camera, labels.get(key), num_classes, edge_threshold,
                    f"bag:{bag.name}:{rgb_topic}"))
            if camera is not None and size is not None:
                if (camera.width, camera.height) != size:
                    camera = camera.scaled(*size)
                camera.save(writer.tmp_root / CAMERA_NAME)
    finally:
        reader.close()
    log.info("extracted %d frames (%d labelled) from %s to %s", len(pairs), labelled, bag, out)
    return ExtractReport(Path(out), len(pairs), labelled, lone_rgb, lone_depth, unused,
                         camera is not None)


def _scan_stamps(reader: Any, bag: Path, rgb_topic: str, depth_topic: str,
                 info_topic: str | None, camera: CameraIntrinsics | None
                 ) -> tuple[list[int], list[int], CameraIntrinsics | None]:
    """First pass over the bag: the colour and depth stamps, and the camera from the first
    CameraInfo (unless one was given)."""
    topics = {rgb_topic: (IMAGE, COMPRESSED), depth_topic: (IMAGE, COMPRESSED)}
    if info_topic:
        topics[info_topic] = (CAMERA_INFO,)
    rgb_stamps: list[int] = []
    depth_stamps: list[int] = []
    for m in iter_messages(reader, topics, str(bag)):
        if m.topic == rgb_topic:
            rgb_stamps.append(m.stamp_ns)
        elif m.topic == depth_topic:
            depth_stamps.append(m.stamp_ns)
        elif camera is None:
            camera = camera_from_info(m.msg, f"{bag} {info_topic}")
    if not rgb_stamps or not depth_stamps:
        raise DataError(f"{bag}: {len(rgb_stamps)} messages on {rgb_topic} and "
                        f"{len(depth_stamps)} on {depth_topic}; both are needed")
    if info_topic and camera is None:
        raise DataError(f"{bag}: no CameraInfo message on {info_topic}")
    return rgb_stamps, depth_stamps, camera


def _pair_frames(bag: Path, rgb_topic: str, depth_topic: str, rgb_stamps: list[int],
                 depth_stamps: list[int], tolerance_ms: float
                 ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """``(pairs, lone_rgb, lone_depth)`` by nearest stamp; no pair at all is an error, lone
    frames are logged."""
    pairs, lone_rgb, lone_depth = pair_by_stamp(rgb_stamps, depth_stamps,
                                                int(round(tolerance_ms * 1e6)))
    if not pairs:
        raise DataError(
            f"{bag}: no frame on {rgb_topic} has a depth partner on {depth_topic} within "
            f"{tolerance_ms} ms (rgb stamps {_fmt(sorted(rgb_stamps))}; depth stamps "
            f"{_fmt(sorted(depth_stamps))}); raise --tolerance-ms or check the topics")
    if lone_rgb:
        log.warning("%d frames on %s have no depth partner within %s ms (skipped): %s",
                    len(lone_rgb), rgb_topic, tolerance_ms, _fmt(lone_rgb))
    if lone_depth:
        log.warning("%d frames on %s have no colour partner (skipped): %s",
                    len(lone_depth), depth_topic, _fmt(lone_depth))
    return pairs, lone_rgb, lone_depth


def _write_pairs(reader: Any, bag: Path, rgb_topic: str, depth_topic: str,
                 pairs: list[tuple[int, int]], writer: Any, split: str, n_train: int,
                 make_sample: Callable[[int, np.ndarray, np.ndarray, str], Sample]
                 ) -> tuple[int, tuple[int, int] | None]:
    """Second pass: decode each paired frame as soon as both halves arrived and write it
    (the first ``n_train`` to ``split``, the rest to ``val``); returns
    ``(labelled frames, (width, height) of the last frame)``."""
    rank = {r: i for i, (r, _) in enumerate(pairs)}
    partner = {d: r for r, d in pairs}
    pending_rgb: dict[int, np.ndarray] = {}
    pending_depth: dict[int, np.ndarray] = {}
    labelled, size = 0, None
    bar = progress(desc="extract-bag", total=len(pairs))
    for m in iter_messages(reader, {rgb_topic: (IMAGE, COMPRESSED),
                                    depth_topic: (IMAGE, COMPRESSED)}, str(bag)):
        where = f"{bag} {m.topic} @ {m.stamp_ns}"
        if m.topic == rgb_topic and m.stamp_ns in rank:
            pending_rgb[m.stamp_ns] = decode_color(m.msg, m.msgtype, where)
            key = m.stamp_ns
        elif m.topic == depth_topic and m.stamp_ns in partner:
            key = partner[m.stamp_ns]
            pending_depth[key] = decode_depth(m.msg, m.msgtype, where)
        else:
            continue
        if key not in pending_rgb or key not in pending_depth:
            continue
        rgb = pending_rgb.pop(key)
        depth = _resize_depth(pending_depth.pop(key), rgb.shape[:2], where)
        sample = make_sample(key, rgb, depth, where)
        labelled += sample.segmentation is not None
        size = (rgb.shape[1], rgb.shape[0])
        if rank[key] < n_train:
            writer.add(sample, split, rank[key])
        else:  # held back for validation (--val-fraction)
            writer.add(sample, "val", rank[key] - n_train)
        bar.update()
    bar.close()
    return labelled, size


def _make_sample(stamp: int, rgb: np.ndarray, depth: np.ndarray,
                 camera: CameraIntrinsics | None, label_png: Path | None, num_classes: int,
                 edge_threshold: float, source: str) -> Sample:
    h, w = rgb.shape[:2]
    normals = None
    if camera is not None:
        cam = camera.scaled(w, h)
        normals, _ = normals_from_depth(depth, cam, edge_threshold)
    seg = None
    if label_png is not None:
        seg = read_label_png(label_png, num_classes)
        if seg.shape != (h, w):
            raise DataError(f"{label_png}: label is {seg.shape[0]}x{seg.shape[1]} but the RGB "
                            f"frame is {h}x{w}")
    kinds = {"depth": GT}
    if normals is not None:
        kinds["normals"] = GT
    if seg is not None:
        kinds["segmentation"] = GT
    return Sample(rgb=rgb, segmentation=seg, depth=depth, normals=normals,
                  provenance=Provenance(source=source, stamp_ns=stamp, labels=kinds))
