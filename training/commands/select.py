"""``mbmt-train select``: which frames to label next.

Ranks the frames of a dataset (extract-bag output, NYUv2 or synthetic layout) that have no
segmentation ground truth with a model bundle's outputs and writes the ``--budget`` chosen
ones to a frame list for ``label-export`` (strategies: training/select/strategies.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.select.strategies import STRATEGIES

    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset folder")
    parser.add_argument("--bundle", required=True, type=Path, metavar="BUNDLE",
                        help="model bundle (with segmentation) that scores the frames")
    parser.add_argument("--budget", required=True, type=int, metavar="N",
                        help="how many frames to choose")
    parser.add_argument("--strategy", choices=STRATEGIES, default="hybrid",
                        help="uncertainty: least confident first; diversity: k-center greedy on "
                             "pooled predictions + thumbnail; hybrid: diversity among the "
                             "most uncertain; random (default hybrid)")
    parser.add_argument("--out", required=True, type=Path, metavar="LIST",
                        help="frame list to write (one <split>/<index> a line)")
    parser.add_argument("--seed", type=int, default=0, help="seed (random, first k-center pick)")
    parser.add_argument("--split", default="train", help="split to choose from (default train)")
    parser.add_argument("--manifest", type=Path, help="manifest (default: DIR/manifest.json)")
    parser.add_argument("--pool-factor", type=float, default=3.0, metavar="F",
                        help="hybrid: k-center among the F x N most uncertain frames (default 3)")
    parser.add_argument("--backend", default="auto", help="inference backend (default auto)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="inference device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from mbmt_ros.runtime import open_predictor
    from training.labeling.frames import write_frame_list
    from training.progress import progress
    from training.select.selection import select_frames

    with open_predictor(args.bundle, backend=args.backend, precision="fp32",
                        device=args.device) as predictor:
        sel = select_frames(args.data, predictor, args.budget, args.strategy, args.seed,
                            args.split, args.manifest, args.pool_factor,
                            progress=lambda it: progress(it, desc="scoring"))
    header = [f"mbmt-train select --strategy {args.strategy} --budget {args.budget} "
              f"--seed {args.seed}", f"data {args.data}  bundle {args.bundle}",
              f"{len(sel.frames)} of {sel.candidates} frames without segmentation ground truth "
              f"({sel.labelled} labelled); uncertainty = mean(1 - segmentation_confidence)"]
    write_frame_list(args.out, sel.frames, header,
                     [f"uncertainty {u:.4f}" for u in sel.uncertainty])
    chosen = sum(sel.uncertainty) / max(len(sel.uncertainty), 1)
    print(f"{len(sel.frames)} frames chosen ({args.strategy}) of {sel.candidates} candidates; "
          f"mean uncertainty {chosen:.4f} chosen vs {sel.mean_uncertainty:.4f} all: {args.out}")
    return 0
