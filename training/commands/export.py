"""``mbmt-train export``: a checkpoint -> a model bundle (``model.onnx`` + ``meta.json`` +
``weights.safetensors``) for ``mbmt_ros.runtime`` and the robot."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="RUN_OR_CKPT",
                        help="a model.safetensors file or the stage folder holding one")
    parser.add_argument("--out", required=True, metavar="BUNDLE_DIR",
                        help="bundle folder to write (created atomically)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                        help="the graph's input size, multiples of 32 (default: the "
                             "checkpoint's, else 288 384)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="export only these of the model's tasks (default: all)")
    parser.add_argument("--metrics", metavar="JSON",
                        help="metrics file to record in meta.json's provenance")
    parser.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                        help="ONNX exporter (default auto: torchscript, opset 17, falling back "
                             "to torch.export, opset 18)")
    parser.add_argument("--no-fp16", dest="fp16", action="store_false",
                        help="skip model_fp16.onnx (the TensorRT 11 strongly typed FP16 graph)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def run(args: argparse.Namespace) -> int:
    from training.export import export_bundle, load_metrics

    metrics = load_metrics(args.metrics) if args.metrics else None
    out = export_bundle(args.ckpt, args.out, input_size=args.input_size, tasks=args.tasks,
                        metrics=metrics, exporter=args.exporter, fp16=args.fp16,
                        overwrite=args.overwrite)
    print(f"wrote model bundle {out}")
    return 0
