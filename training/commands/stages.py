"""``mbmt-train pretrain-st | assemble | train-mbmt | train-mt | train-teacher | train-student``.

One module serves every training stage command; ``args.command`` is the stage kind. The stage
runs from a pipeline config into ``<run dir>/<stage>/`` and is skipped when already done.
"""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.stages.options import add_config_arguments

    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from training.stages import run_stage
    from training.stages.options import config_from_args, log_to_file

    config, run_dir = config_from_args(args)
    name = args.stage or config.first_of_kind(args.command).name
    kind = config.stage(name).kind
    if kind != args.command:
        from training.errors import ConfigError

        raise ConfigError(f"stage '{name}' is a {kind} stage; run it with 'mbmt-train {kind}'")
    log_to_file(run_dir)
    info = run_stage(config, run_dir, name, force=args.force)
    print(f"{name}: done ({run_dir.root / name})")
    if info.get("model"):
        print(f"  weights: {info['model']}")
    return 0
