"""``mbmt-train pipeline --config config/train/<name>.yaml [--run-dir DIR]``: run the stages the
config lists, in order, into ``DIR/<stage>/``; finished stages are skipped, so a crashed run
continues where it stopped."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.stages.options import add_config_arguments

    add_config_arguments(parser, stage=False)
    parser.add_argument("--only", nargs="+", default=None, metavar="STAGE",
                        help="run only these stages (their inputs must be done)")
    parser.add_argument("--force", nargs="+", default=[], metavar="STAGE",
                        help="delete these stages' folders and run them afresh")


def run(args: argparse.Namespace) -> int:
    import time

    from training.errors import ConfigError
    from training.stages import run_pipeline
    from training.stages.options import config_from_args, log_to_file

    config, run_dir = config_from_args(args)
    names = [s.name for s in config.stages]
    for name in (args.only or []) + list(args.force):
        if name not in names:
            raise ConfigError(f"unknown stage '{name}'; the config's stages are {names}")
    log_to_file(run_dir)
    start = time.monotonic()
    run_pipeline(config, run_dir, only=args.only, force=args.force)
    print(f"pipeline '{config.name}' finished in {time.monotonic() - start:.0f} s: {run_dir.root}")
    results = run_dir.root / "results.md"
    if results.is_file():
        print(f"comparison table: {results}")
    return 0
