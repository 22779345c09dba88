"""``mbmt-train quantize``: write a calibrated INT8 graph (``model_int8.onnx``) into a model
bundle, after checking its accuracy on the dataset's validation split (see
:mod:`training.quantize`)."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, metavar="BUNDLE_DIR",
                        help="model bundle to add model_int8.onnx to (`mbmt-train export`)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset root (NYUv2 layout) with the calibration and val splits")
    parser.add_argument("--frames", type=int, default=64, metavar="N",
                        help="calibration frames, evenly spaced over the split (default 64)")
    parser.add_argument("--calib-split", default="train", help="calibration split (default train)")
    parser.add_argument("--val-split", default="val",
                        help="split the accuracy delta is measured on (default val)")
    parser.add_argument("--val-frames", type=int, metavar="M",
                        help="measure on M evenly spaced frames of the split (default: all)")
    parser.add_argument("--max-miou-drop", type=float, default=1.0, metavar="POINTS",
                        help="refuse when INT8 loses more mIoU points than this (default 1)")
    parser.add_argument("--max-depth-increase", type=float, default=2.0, metavar="PERCENT",
                        help="refuse when the depth abs error grows by more than this percent "
                             "(default 2)")
    parser.add_argument("--max-normals-increase", type=float, default=2.0, metavar="DEGREES",
                        help="refuse when the normals mean angle error grows by more than this "
                             "many degrees (default 2)")
    parser.add_argument("--calibration", choices=("minmax", "entropy", "percentile"),
                        default="minmax", help="calibration method (default minmax)")
    parser.add_argument("--backends", nargs="+", choices=("onnxruntime", "openvino"),
                        help="backends the INT8 graph is checked on (default: those installed)")
    parser.add_argument("--threads", type=int, help="CPU threads for the measurement runs")


def run(args: argparse.Namespace) -> int:
    from training.quantize import Limits, quantize_bundle

    record = quantize_bundle(
        args.bundle, args.data, frames=args.frames, calib_split=args.calib_split,
        val_split=args.val_split, val_frames=args.val_frames,
        limits=Limits(args.max_miou_drop, args.max_depth_increase, args.max_normals_increase),
        calibration=args.calibration, backends=args.backends, num_threads=args.threads)
    accuracy = record["accuracy"]
    for name, delta in accuracy["delta"].items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in delta.items() if v is not None)
        print(f"{name} int8 vs fp32 on {accuracy['frames']} {accuracy['split']} frames: {shown}")
    print(f"wrote {args.bundle}/{record['file']} (calibrated on {record['calibration']['frames']} "
          f"{record['calibration']['split']} frames)")
    return 0
