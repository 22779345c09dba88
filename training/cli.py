"""``mbmt-train``: the training module's command line.

Each sub-command lives in its own module under :mod:`training.commands` and is imported
only when it runs, so ``mbmt-train --help`` is instant and a command's heavy dependencies
(torch, rosbags, ...) load only when needed. A command module defines
``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mbmt_ros.cli import run_command

# name -> (module under training.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("summary", "print a model's parameter / FLOP table"),
    "synth": ("synth", "generate synthetic RGB-D scenes (NYUv2 layout + rosbag2)"),
    "extract-bag": ("extract_bag", "turn a rosbag2 recording into a dataset"),
    "make-split": ("make_split", "make an imbalanced label split (manifest) from a dataset"),
    "check-data": ("check_data", "validate a dataset folder and print its contents"),
    "pretrain-st": ("stages", "stage 1: train one single-task network per task"),
    "assemble": ("stages", "stage 2a: build MBMT-Net from the single-task backbones"),
    "train-mbmt": ("stages", "stage 2b: train the MBMT-Net decoder (DWA)"),
    "train-mt": ("stages", "stage 3: train the MT-Net baseline"),
    "train-teacher": ("stages", "stage 4: train the multi-modal teacher"),
    "pseudo-label": ("pseudo_label", "stage 5: pseudo segmentation labels from the teacher"),
    "train-student": ("stages", "stage 6: train the RGB-only student on GT + pseudo labels"),
    "evaluate": ("evaluate", "stage 7: metrics, comparison table and result grids"),
    "score": ("score", "score a folder of prediction .npz files against a dataset"),
    "affinity": ("affinity", "which task helps which: depth- vs segmentation-input teachers"),
    "pipeline": ("pipeline", "run the stages a config lists, resuming finished ones"),
    "export": ("export", "export a checkpoint to a model bundle (ONNX + meta + weights)"),
    "quantize": ("quantize", "add a calibrated INT8 graph to a model bundle (CPU backends)"),
    "select": ("select", "choose the frames to label next (uncertainty / diversity / hybrid)"),
    "label-export": ("label_export", "write frames + pre-annotations as a CVAT labelling task"),
    "label-import": ("label_import", "read a CVAT export's masks back into the dataset"),
    "demo": ("demo", "the end-to-end demo on built-in synthetic data"),
}


def _load(name: str):
    module_name, _ = COMMANDS[name]
    return importlib.import_module(f"training.commands.{module_name}")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbmt-train", description="Train, evaluate and export MBMT-Net models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="warnings and errors only; no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            _load(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from training.console import quiet_console

    # Lightning's chatter and expected warnings go to the log files only; -q: warnings and
    # errors only on the console (the log files keep INFO) and no progress bars
    quiet_console(level=logging.WARNING if args.quiet else None)
    module = _load(args.command)
    return run_command("mbmt-train", args.command, lambda: module.run(args))


if __name__ == "__main__":
    sys.exit(main())
