"""``mbmt-train evaluate``: metrics, a comparison table and PNG result grids.

Two ways to call it:

- ``--config FILE [--run-dir DIR]``: the config's ``evaluate`` stage (every trained stage into
  its ``metrics.json``, the table into ``DIR/results.md``);
- ``--ckpt PATH [PATH ...] --data DATASET --out DIR [--split val] [--baseline metrics.json]``:
  any checkpoints (``model.safetensors`` or a folder holding one) or model bundles (a folder
  with ``meta.json``); writes ``DIR/<name>/metrics.json`` (the keys of ``mbmt-train score``),
  ``DIR/<name>/<split>.png`` and ``DIR/results.md`` / ``results.csv``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="pipeline config (stage mode)")
    parser.add_argument("--run-dir", type=Path, default=None, help="run folder (stage mode)")
    parser.add_argument("--stage", default=None, help="the evaluate stage to run (stage mode)")
    parser.add_argument("--force", action="store_true", help="re-run a finished evaluate stage")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (stage mode)")
    parser.add_argument("--ckpt", nargs="+", type=Path, default=None,
                        help="checkpoints or model bundles to evaluate")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (NYUv2 layout)")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="label manifest (default: DATA/manifest.json)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="resize inputs for torch checkpoints (default: the files' size)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="metrics.json of the single-task baselines, for Delta_m")
    parser.add_argument("--samples", type=int, default=3, help="samples in the PNG grid")
    parser.add_argument("--batch-size", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    from training.errors import ConfigError

    if args.config is not None:
        if args.ckpt:
            raise ConfigError("give either --config (pipeline stage) or --ckpt, not both")
        from training.commands.stages import run as run_stage_command

        return run_stage_command(args)
    if not args.ckpt or args.data is None or args.out is None:
        raise ConfigError("give --config FILE, or --ckpt PATH... with --data DATASET and --out DIR")
    return _evaluate_paths(args)


def _evaluate_paths(args: argparse.Namespace) -> int:
    import json

    from mbmt_ros.io import atomic_write_json
    from training.errors import ConfigError
    from training.plots import save_result_grid
    from training.stages.evaluate import evaluate_bundle, evaluate_model, write_results
    from training.tables import TableRow

    manifest = args.manifest or args.data / "manifest.json"
    baseline = None
    if args.baseline is not None:
        try:
            baseline = json.loads(args.baseline.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--baseline {args.baseline}: cannot read metrics JSON ({exc})") from exc
    rows = []
    names: set[str] = set()
    for path in args.ckpt:
        name = path.stem if path.is_file() else path.name
        while name in names:
            name += "_"
        names.add(name)
        out = args.out / name
        if path.is_dir() and (path / "meta.json").is_file():
            metrics, kept, predictor = evaluate_bundle(path, args.data, args.split, manifest,
                                                       args.samples)
            tasks, num_classes, kind = predictor.tasks, len(predictor.class_names), "bundle"
            class_names = list(predictor.class_names)
        else:
            from mbmt_ros.models import load_model
            from training.stages.data import make_dataset

            model = load_model(path)
            dataset = make_dataset(args.data, args.split, manifest, args.input_size)
            metrics, kept = evaluate_model(model, dataset, args.batch_size, args.samples)
            tasks, num_classes, kind = model.tasks, model.num_classes, model.config.get("arch")
            class_names = None
        atomic_write_json(out / "metrics.json", metrics)
        if kept:
            save_result_grid(out / f"{args.split}.png", kept, tasks, num_classes=num_classes,
                             class_names=class_names,
                             title=f"{name} ({args.split})")
        rows.append(TableRow(name, metrics, f"{kind}: {path}"))
        print(f"{name}: {json.dumps(metrics)}")
    write_results(args.out / "results.md", args.out / "results.csv", "Evaluation",
                  [(f"{args.split} split of {args.data}", rows)], baseline)
    print(f"comparison table: {args.out / 'results.md'}")
    return 0
