"""``mbmt-train check-data``: validate a dataset folder and print its label counts."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="dataset folder (NYUv2 layout)")
    parser.add_argument("--manifest", metavar="JSON",
                        help="manifest to check (default DATA/manifest.json, else every file)")
    parser.add_argument("--label-folder", metavar="NAME",
                        help="segmentation folder (e.g. label_19 for Cityscapes)")


def run(args: argparse.Namespace) -> int:
    from training.data.check import check_dataset, format_report

    print(format_report(check_dataset(args.data, args.manifest, args.label_folder)))
    return 0
