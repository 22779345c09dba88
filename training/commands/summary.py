"""``mbmt-train summary``: a model's parameter / FLOP table at the config's input size.

Reads the ``model:`` section and the input size (top-level ``input_size: [H, W]``, else a
pipeline config's ``data.input_size``) of a training config,
builds the model (referenced weight files are not read: the table depends only on the
architecture) and prints trainable / total parameters, GFLOPs (multiply-accumulates, what
the MBMT-Net paper calls FLOPs) and the output shape of each task. ``--json`` also writes
the figures (keys ``params_total``, ``params_trainable``, ``gflops``, ``outputs``, ...).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.config import read_config
from training.errors import ConfigError

__all__ = ["add_arguments", "run", "load_config", "format_summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="training config YAML with a model: section and input_size "
                             "(top level or data.input_size)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the figures to this JSON file")
    parser.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="override the config's input_size")


def load_config(path: Path) -> dict[str, Any]:
    """The YAML mapping at ``path``; a ``ConfigError`` if missing, unreadable or no mapping."""
    cfg = read_config(path)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ConfigError(f"config {path} must be a mapping with a 'model:' section")
    return cfg


def _input_size(cfg: dict[str, Any], override: list[int] | None, path: Path) -> list[int]:
    size = override if override is not None else cfg.get("input_size")
    if size is None and isinstance(cfg.get("data"), dict):
        size = cfg["data"].get("input_size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in size)):
        raise ConfigError(f"{path}: input_size must be [height, width] (integers >= 32), got "
                          f"{size!r}; set it in the config or pass --input-size H W")
    return [int(size[0]), int(size[1])]


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M ({n:,})"


def format_summary(model_cfg: dict[str, Any], summary: dict[str, Any]) -> str:
    """Readable table of a ``model_summary`` result."""
    backbones = model_cfg.get("backbones") or [model_cfg.get("backbone")]
    if model_cfg.get("arch") in ("teacher", "mti_teacher"):
        backbones = [model_cfg.get("backbone"),
                     f"{model_cfg.get('extra_backbone') or model_cfg.get('backbone')} "
                     f"({model_cfg.get('extra_modality')} input)"]
    elif model_cfg.get("arch") == "mtunet":
        backbones = [f"dense U-Net encoder, base {model_cfg.get('base_channels')}"]
    h, w = summary["input_size"]
    lines = [
        f"model           {model_cfg['arch']}"
        + (f"  fusion {model_cfg['fusion']}" if "fusion" in model_cfg else "")
        + ("  (FFM: features added per scale)" if model_cfg.get("arch") == "mti_teacher"
           else ""),
        f"backbones       {', '.join(str(b) for b in backbones)}",
        f"tasks           {', '.join(model_cfg['tasks'])}"
        + (f"  (auxiliary: {', '.join(model_cfg['aux_tasks'])})"
           if model_cfg.get("aux_tasks") else ""),
        f"input size      {h} x {w}",
        f"trainable       {_millions(summary['params_trainable'])}",
        f"total           {_millions(summary['params_total'])}",
        f"GFLOPs          {summary['gflops']:.3f}  (multiply-accumulates, as the paper counts)",
        "parameters by part:",
        *(f"  {name:<14}{_millions(n)}" for name, n in summary["params_by_part"].items()),
        "outputs:",
        *(f"  {task:<14}{shape}" for task, shape in summary["outputs"].items()),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mbmt_ros.io import atomic_write_json
    from mbmt_ros.models import build_model, model_summary

    cfg = load_config(args.config)
    size = _input_size(cfg, args.input_size, args.config)
    model = build_model(cfg["model"], load_weights=False)
    summary = model_summary(model, size)
    summary["model"] = model.config
    print(format_summary(model.config, summary))
    if args.json is not None:
        atomic_write_json(args.json, summary)
    return 0
