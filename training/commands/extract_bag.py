"""``mbmt-train extract-bag``: turn a rosbag2 RGB-D recording into a dataset.

Every paired frame, in time order, goes to ``OUT/train/`` (NYUv2 layout) with depth in
metres, normals from depth + camera intrinsics, and segmentation from ``--labels DIR``
PNGs named ``<stamp_ns>.png`` (0 = void, k = class k-1), plus ``manifest.json`` and
``camera.json``.
"""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", metavar="BAG", help="rosbag2 folder (mcap or sqlite3)")
    parser.add_argument("--rgb", required=True, metavar="TOPIC",
                        help="colour topic (sensor_msgs/Image or CompressedImage)")
    parser.add_argument("--depth", required=True, metavar="TOPIC",
                        help="depth topic registered to colour (16UC1 mm, 32FC1 m, "
                             "or compressedDepth)")
    parser.add_argument("--camera-info", metavar="TOPIC",
                        help="CameraInfo of the colour camera (needed for normals)")
    parser.add_argument("--camera", metavar="JSON",
                        help="camera.json intrinsics instead of a CameraInfo topic")
    parser.add_argument("--labels", metavar="DIR",
                        help="segmentation PNGs named <stamp_ns>.png (0 = void, k = class k-1)")
    parser.add_argument("--tolerance-ms", type=float, default=20.0,
                        help="max |stamp difference| for an RGB/depth pair (default 20)")
    parser.add_argument("--num-classes", type=int, default=13,
                        help="segmentation classes (default 13: NYU13)")
    parser.add_argument("--split", choices=("train", "val"), default="train",
                        help="split the frames go to (default train)")
    parser.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                        help="put the last F of the frames (in time order) into val/ "
                             "(default 0: all frames go to --split)")
    parser.add_argument("--out", required=True, metavar="DATASET", help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DATASET if it exists (only once the new one is complete)")


def run(args: argparse.Namespace) -> int:
    from training.data.camera import CameraIntrinsics
    from training.data.extract import extract_bag

    camera = CameraIntrinsics.load(args.camera) if args.camera else None
    report = extract_bag(args.bag, args.out, args.rgb, args.depth, args.camera_info,
                         labels_dir=args.labels, tolerance_ms=args.tolerance_ms,
                         camera=camera, num_classes=args.num_classes, split=args.split,
                         overwrite=args.overwrite, val_fraction=args.val_fraction)
    where = f"{report.out}/{args.split}/" + (" and val/" if args.val_fraction > 0 else "")
    print(f"{report.frames} frames ({report.labelled} with segmentation labels) written to "
          f"{where}")
    if report.unmatched_rgb or report.unmatched_depth:
        print(f"unpaired: {len(report.unmatched_rgb)} colour frames without depth, "
              f"{len(report.unmatched_depth)} depth frames without colour (stamps in "
              "manifest.json info)")
    if report.unused_labels:
        print(f"{len(report.unused_labels)} label PNGs matched no frame: "
              + ", ".join(report.unused_labels[:5]))
    return 0
