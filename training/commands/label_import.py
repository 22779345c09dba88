"""``mbmt-train label-import``: a CVAT "Segmentation mask 1.1" export back into a dataset.

The masks become the frames' ground-truth segmentation (``label/<index>.npy`` and the manifest,
each replaced atomically, manifest last) or, with ``--labels-out``, label PNGs named
``<stamp_ns>.png`` for ``extract-bag --labels``; it says how many frames were labelled for
the first time and how many already had labels that the import replaced. The whole archive
is checked first (label map vs the dataset's classes, every frame present, every colour
known); on any error nothing is written.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="archive", required=True, type=Path, metavar="EXPORT.zip",
                        help="CVAT export of the labelled task (Segmentation mask 1.1)")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR",
                        help="the dataset the task was exported from")
    parser.add_argument("--format", choices=("cvat",), default="cvat", help="archive format")
    parser.add_argument("--manifest", type=Path,
                        help="manifest to update (default: DIR/manifest.json)")
    parser.add_argument("--labels-out", type=Path, metavar="DIR",
                        help="write <stamp_ns>.png label PNGs here instead of into the dataset")


def run(args: argparse.Namespace) -> int:
    from training.labeling.apply import import_labels

    report = import_labels(args.archive, args.data, args.manifest, args.labels_out)
    share = 100.0 * report.labelled_pixels / max(report.total_pixels, 1)
    where = args.labels_out if args.labels_out is not None else args.data
    kind = "label PNGs" if args.labels_out is not None else "ground truth"
    print(f"{len(report.frames)} masks imported into {where}: {report.new} frames labelled for "
          f"the first time, {report.replaced} replaced existing {kind} ({share:.1f} % of their "
          "pixels labelled, the rest void)")
    return 0
