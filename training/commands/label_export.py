"""``mbmt-train label-export``: frames of a list as a CVAT "Segmentation mask 1.1" task.

The archive holds the images, ``labelmap.txt`` with the dataset's classes and palette, and
pre-annotations (``--bundle``: the model's predictions; else the frames' existing labels) that
a labeller corrects in CVAT (docs/robot.md "Close the loop").
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset folder")
    parser.add_argument("--frames", required=True, type=Path, metavar="LIST",
                        help="frame list (one <split>/<index> a line; mbmt-train select)")
    parser.add_argument("--format", choices=("cvat",), default="cvat",
                        help="archive format (cvat: Segmentation mask 1.1)")
    parser.add_argument("--out", required=True, type=Path, metavar="TASK.zip",
                        help="archive to write")
    parser.add_argument("--bundle", type=Path, metavar="BUNDLE",
                        help="model bundle whose predictions become the pre-annotations")
    parser.add_argument("--manifest", type=Path, help="manifest (default: DIR/manifest.json)")
    parser.add_argument("--backend", default="auto", help="inference backend (default auto)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="inference device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from mbmt_ros.io import atomic_write_json
    from mbmt_ros.tasks import default_palette
    from training.data.manifest import open_manifest
    from training.labeling.apply import export_frames
    from training.labeling.cvat import cvat_labels
    from training.labeling.frames import read_frame_list
    from training.progress import progress

    frames = read_frame_list(args.frames)
    predictor = None
    if args.bundle is not None:
        from mbmt_ros.runtime import open_predictor
        from training.select.score import check_bundle

        predictor = open_predictor(args.bundle, backend=args.backend, precision="fp32",
                                   device=args.device)
        check_bundle(predictor, open_manifest(args.data, args.manifest), args.bundle)
    try:
        predict = (lambda rgb: predictor.predict(rgb)["segmentation"]) if predictor else None
        out = export_frames(args.data, frames, args.out, args.manifest, predict,
                            progress=lambda it: progress(it, desc="export"))
    finally:
        if predictor is not None:
            predictor.close()
    source = f"predictions of {args.bundle}" if predictor else "the frames' existing labels"
    manifest = open_manifest(args.data, args.manifest)
    labels = out.with_name(f"{out.stem}.labels.json")
    atomic_write_json(labels, cvat_labels(manifest.class_names,
                                          default_palette(manifest.num_classes)))
    print(f"{len(frames)} frames written to {out} (CVAT 'Segmentation mask 1.1'; "
          f"pre-annotations: {source}); the task's labels for CVAT's Raw editor: {labels}")
    return 0
