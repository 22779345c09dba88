"""Command-line options shared by the stage commands and ``pipeline``.

Every stage command reads a pipeline config and a run folder::

    mbmt-train train-mbmt --config config/train/tiny.yaml [--run-dir DIR] [--stage NAME]
                          [--force] [--set train.epochs=2 --set train.devices=2 ...]

``--set KEY=VALUE`` overrides one config value (VALUE is YAML); ``stages.<name>.<option>`` sets
an option of one stage; ``train.*`` keys apply to every stage, so ``--set train.devices=2 --set train.strategy=ddp`` turns any stage into a DDP run
under ``torchrun``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from training.config import PipelineConfig, parse_config, read_config
from training.errors import ConfigError
from training.run_dir import RunDir

__all__ = ["add_config_arguments", "config_from_args", "apply_overrides", "log_to_file"]


def add_config_arguments(parser: argparse.ArgumentParser, stage: bool = True) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="pipeline config (config/train/<name>.yaml)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run folder (default: runs/<config name>)")
    if stage:
        parser.add_argument("--stage", default=None,
                            help="which stage of the config to run (default: the first of "
                                 "this command's kind)")
        parser.add_argument("--force", action="store_true",
                            help="delete the stage's folder and run it afresh, even if done")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. train.epochs=2")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML values) to a raw config mapping."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
        parts = key.split(".")
        if parts[0] == "stages" and len(parts) >= 3:
            _set_stage_option(raw, parts[1], parts[2:], value, item)
            continue
        target = raw
        for part in parts[:-1]:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            target = node
        target[parts[-1]] = value
        if parts[0] == "train" and len(parts) == 2:
            for stage in raw.get("stages") or []:
                if isinstance(stage, dict) and isinstance(stage.get("train"), dict):
                    stage["train"].pop(parts[1], None)
    return raw


def _set_stage_option(raw: dict[str, Any], name: str, keys: list[str], value: Any,
                      item: str) -> None:
    """``stages.<name>.<key>[.<subkey>]=VALUE``: set an option of the stage called ``name``."""
    for stage in raw.get("stages") or []:
        if isinstance(stage, dict) and stage.get("name") == name:
            target = stage
            for part in keys[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            target[keys[-1]] = value
            return
    raise ConfigError(f"--set {item!r}: the config has no stage named '{name}'")


def config_from_args(args: argparse.Namespace) -> tuple[PipelineConfig, RunDir]:
    """The validated config (with ``--set`` overrides) and the run folder of a command."""
    raw = read_config(args.config)
    if args.overrides and isinstance(raw, dict):
        raw = apply_overrides(raw, list(args.overrides))
    config = parse_config(raw, path=args.config, overrides=list(args.overrides))
    from training.config_models import check_pretrained
    from training.stages import default_run_dir

    check_pretrained(config)  # ImageNet weights reachable? before any stage starts

    run = RunDir(args.run_dir or Path(default_run_dir(config)))
    return config, run


def log_to_file(run: RunDir, name: str = "pipeline.log") -> None:
    """Also write the log to ``<run dir>/<name>`` (appending, so re-runs keep the history)."""
    run.root.mkdir(parents=True, exist_ok=True)
    path = str((run.root / name).resolve())
    root = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == path for h in root.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
