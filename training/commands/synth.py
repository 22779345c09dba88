"""``mbmt-train synth``: generate synthetic RGB-D indoor scenes.

Writes ``OUT/{train,val}/{image,label,depth,normal}/<i>.npy`` (the NYUv2 layout),
``OUT/manifest.json``, ``OUT/camera.json`` and ``OUT/bag/`` (rosbag2 mcap with
``/camera/color/image_raw`` rgb8, ``/camera/depth/image_raw`` 16UC1 mm and
``/camera/color/camera_info``; all frames in order, train then val).
"""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output dataset folder (must not exist)")
    parser.add_argument("--count", type=int, required=True, help="number of frames")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(288, 384),
                        help="image height and width (default 288 384)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--domain", choices=("target", "source"), default="target",
                        help="which synthetic distribution (default target; 'source' is the "
                             "shifted one used only for pretraining, docs/data.md)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="fraction of frames in the val split (default 0.2)")
    parser.add_argument("--no-bag", action="store_true", help="do not write OUT/bag/")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="rosbag2 storage of OUT/bag (default mcap)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it exists (only once the new dataset is complete)")


def run(args: argparse.Namespace) -> int:
    from training.data.synth import write_synth_dataset
    from training.progress import progress

    with progress(desc="synth", total=args.count) as bar:
        out = write_synth_dataset(args.out, args.count, args.size[0], args.size[1], args.seed,
                                  val_fraction=args.val_fraction, bag=not args.no_bag,
                                  overwrite=args.overwrite, storage=args.storage,
                                  progress=lambda done, total: bar.update(done - bar.n),
                                  domain=args.domain)
    print(f"synthetic dataset written to {out}")
    return 0
