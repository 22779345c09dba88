"""``mbmt-train pseudo-label``: run the config's pseudo-label stage (see training/stages/pseudo.py)."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.stages.options import add_config_arguments

    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from training.commands.stages import run as run_stage_command

    return run_stage_command(args)
