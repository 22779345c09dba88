"""Write a synthetic dataset: NYUv2 layout + manifest + camera.json + a rosbag2 recording."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mbmt_ros.tasks import NYU13_CLASSES
from training.data.bag import RgbdBagWriter
from training.data.camera import CAMERA_NAME
from training.data.synth.render import render_frame, synth_camera
from training.data.synth.scene import domain_settings
from training.data.writer import open_dataset_writer
from training.errors import DataError

__all__ = ["write_synth_dataset", "BAG_FOLDER", "STAMP0_NS", "FRAME_PERIOD_NS", "frame_stamp"]

log = logging.getLogger(__name__)

BAG_FOLDER = "bag"
#: Stamp of frame 0 in the recording; frames follow at 10 Hz.
STAMP0_NS = 1_700_000_000_000_000_000
FRAME_PERIOD_NS = 100_000_000


def frame_stamp(frame: int) -> int:
    """Header stamp (ns) of synthetic frame ``frame`` (train frames first, then val)."""
    return STAMP0_NS + frame * FRAME_PERIOD_NS


def write_synth_dataset(out: str | Path, count: int, height: int, width: int, seed: int,
                        val_fraction: float = 0.2, bag: bool = True, overwrite: bool = False,
                        storage: str = "mcap",
                        progress: Callable[[int, int], None] | None = None,
                        domain: str = "target") -> Path:
    """Render ``count`` frames (the last ``round(count * val_fraction)`` are validation) into
    ``out`` atomically; returns ``out``. Frame ``i`` depends only on ``(domain, seed, i)``;
    the manifest's ``info`` records the domain and its settings."""
    dom = domain_settings(domain)
    if count < 1:
        raise DataError(f"--count must be >= 1, got {count}")
    if height < 8 or width < 8:
        raise DataError(f"--size must be at least 8 8, got {height} {width}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(count * val_fraction))
    n_train = count - n_val
    if n_train < 1:
        raise DataError(f"--count {count} with --val-fraction {val_fraction} leaves no "
                        "training frames")
    camera = synth_camera(height, width)
    info = {"generator": "mbmt_ros synth", "seed": seed, "count": count,
            "size": [height, width], "val_fraction": val_fraction, "train": n_train,
            "val": n_val, "camera": CAMERA_NAME, "bag": BAG_FOLDER if bag else None}
    if dom.name != "target":  # the target's manifest stays as it always was
        info.update(domain=dom.name, domain_settings=dom.as_dict())
    start = time.perf_counter()
    with open_dataset_writer(out, num_classes=len(NYU13_CLASSES),
                             class_names=list(NYU13_CLASSES), dataset="synth", info=info,
                             overwrite=overwrite) as writer:
        camera.save(writer.tmp_root / CAMERA_NAME)
        bag_writer = RgbdBagWriter(writer.tmp_root / BAG_FOLDER, storage=storage) \
            if bag else None
        try:
            for frame in range(count):
                split, index = ("train", frame) if frame < n_train else ("val", frame - n_train)
                synth = render_frame(seed, frame, height, width, dom)
                stamp = frame_stamp(frame)
                sample = synth.sample.replace(provenance=replace(
                    synth.sample.provenance, stamp_ns=stamp, split=split, index=index))
                writer.add(sample, split, index)
                if bag_writer is not None:
                    bag_writer.write(stamp, sample.rgb, sample.depth, camera)
                if progress is not None:
                    progress(frame + 1, count)
        finally:
            if bag_writer is not None:
                bag_writer.close()
    elapsed = time.perf_counter() - start
    log.info("wrote %d synthetic frames (%d train, %d val) at %dx%d to %s in %.1f s "
             "(%.0f frames/min)", count, n_train, n_val, height, width, out, elapsed,
             count / max(elapsed, 1e-9) * 60)
    return Path(out)
