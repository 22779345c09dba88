"""``mbmt-train demo [--out DIR] [--budget full|ci] [--device auto|cpu|cuda]``: the end-to-end
demo on built-in synthetic data (docs/demo.md).

Synthetic scenes and their rosbag2 recording -> the ``tiny`` pipeline (ST pretraining ->
MBMT-Net; multi-modal teacher -> pseudo labels -> student; evaluation; export) -> the
perception node in an isolated network namespace, fed the recording's val frames -> its
outputs recorded to a rosbag2 and scored against the ground truth -> a summary. Re-running
reuses finished stages.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"),
                        help="output folder (default runs/demo); re-use it to resume")
    parser.add_argument("--budget", choices=("full", "ci"), default="full",
                        help="full (default): the README's main job (about 5 min on 2 CPU "
                             "cores, at most ~15); ci: the same steps on less data and fewer "
                             "epochs (1-3 min)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto (default): a CUDA GPU when there is one, else the CPU")
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline config (default config/train/tiny.yaml)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per process (OMP_NUM_THREADS); 0 (default): 1 on "
                             "machines with 2 cores or fewer, where busy-waiting OpenMP threads "
                             "make training many times slower under any other load, else the "
                             "libraries' choice")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar for the node's outputs")


def run(args: argparse.Namespace) -> int:
    from training.demo.orchestrate import run_demo

    run_demo(args.out, budget=args.budget, device=args.device, config=args.config,
             progress=not args.no_progress, threads=args.threads)
    return 0
