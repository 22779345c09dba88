"""Stage 7, ``evaluate``: metrics, comparison table and result grids.

:func:`evaluate_model` scores a torch model on a dataset split (pooled metrics of
``training.metrics``, the same ``metrics.json`` keys as ``mbmt-train score``) and keeps a few
samples for the PNG grid; :func:`evaluate_bundle` does the same for an exported model bundle
through ``mbmt_ros.runtime``. The pipeline stage evaluates every trained stage into
``<stage>/metrics.json`` + ``<stage>/plots/``, and writes the comparison table to
``<run dir>/results.md`` and ``results.csv`` with Delta_m against the single-task nets.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbmt_ros.io import atomic_write_json, atomic_write_text
from mbmt_ros.tasks import IMAGENET_MEAN, IMAGENET_STD, NORMALS, SEGMENTATION, TASKS
from training.plots import save_result_grid
from training.progress import progress
from training.run_dir import DONE_FILE, MODEL_FILE, RunDir
from training.stages.common import StageContext, is_rank_zero
from training.stages.data import ensure_dataset, make_dataset, manifest_path
from training.stages.fingerprint import EVALUATED_KINDS, evaluated_stages
from training.tables import TableRow, csv_table, markdown_table

__all__ = ["evaluate_model", "evaluate_bundle", "evaluate", "write_results",
           "denormalize"]

log = logging.getLogger(__name__)

#: stage kinds whose weights are evaluated (pretrain-st: one net per task).
_FULL_LABEL_KINDS = ("pretrain-st", "train-mt", "train-mbmt")


def denormalize(image: Any) -> np.ndarray:
    """A normalised ``(3, H, W)`` tensor back to ``(H, W, 3)`` uint8 RGB."""
    arr = np.asarray(image.detach().cpu().float().numpy() if hasattr(image, "detach") else image)
    arr = arr.transpose(1, 2, 0) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def _to_layout(task: str, tensor: Any, is_logits: bool) -> np.ndarray:
    """One sample of model layout -> prediction layout (ids (H,W), depth (H,W), normals (H,W,3))."""
    arr = tensor.detach().cpu().float().numpy()
    if task == SEGMENTATION:
        return arr.argmax(axis=0) if is_logits else arr
    if task == NORMALS:
        return np.moveaxis(arr, 0, -1)
    return arr.reshape(arr.shape[-2:])


def evaluate_model(model: Any, dataset: Any, batch_size: int = 8, samples: int = 3,
                   device: str | None = None) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Pooled metrics of ``model`` over ``dataset`` and up to ``samples`` grid samples."""
    import torch
    from torch.utils.data import DataLoader

    from training.lightning_module import model_inputs
    from training.metrics import MetricSuite

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    suite = MetricSuite(model.tasks, model.num_classes)
    kept: list[dict[str, Any]] = []
    with torch.inference_mode():
        for batch in progress(DataLoader(dataset, batch_size=batch_size, shuffle=False),
                              desc="evaluate", unit="batch"):
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            outputs = model(*model_inputs(model, batch))
            suite.update_batch(outputs, batch)
            for i in range(batch["image"].shape[0]):
                if len(kept) >= samples:
                    break
                item: dict[str, Any] = {"rgb": denormalize(batch["image"][i])}
                for task in model.tasks:
                    item[f"pred_{task}"] = _to_layout(task, outputs[task][i], True)
                    flags = batch.get(f"has_{task}")
                    if flags is None or bool(flags[i]):
                        item[f"gt_{task}"] = _to_layout(task, batch[task][i], False)
                kept.append(item)
    return suite.compute(), kept


def evaluate_bundle(bundle: Path, root: Path, split: str, manifest: Path | None = None,
                    samples: int = 3, backend: str = "auto") -> tuple[dict, list[dict], Any]:
    """Metrics of an exported model bundle (through ``mbmt_ros.runtime``) on a dataset split."""
    from mbmt_ros.runtime import open_predictor
    from training.data.layout import detect_layout, list_indices, load_sample
    from training.metrics import MetricSuite

    predictor = open_predictor(bundle, backend=backend, precision="fp32", device="cpu")
    try:
        layout = detect_layout(root)
        suite = MetricSuite(predictor.tasks, len(predictor.class_names))
        kept: list[dict[str, Any]] = []
        for index in progress(list_indices(layout, split), desc=f"evaluate {bundle.name}"):
            sample = load_sample(layout, split, index)
            pred = predictor.predict(sample.rgb)
            gts = {t: getattr(sample, t) for t in predictor.tasks if getattr(sample, t) is not None}
            suite.update({t: pred[t] for t in gts}, gts)
            if len(kept) < samples:
                kept.append({"rgb": sample.rgb, **{f"pred_{t}": pred[t] for t in predictor.tasks},
                             **{f"gt_{t}": v for t, v in gts.items()}})
        return suite.compute(), kept, predictor
    finally:
        predictor.close()


def _describe(run: RunDir, name: str, kind: str, model_path: Path) -> str:
    from mbmt_ros.models import read_checkpoint_config

    cfg = read_checkpoint_config(model_path)
    arch = cfg.get("arch", "?")
    if arch == "mbmt":
        n = len(cfg.get("backbones") or [])
        init = "ST-pretrained" if cfg.get("backbone_checkpoints") else "cold"
        frozen = "frozen" if cfg.get("freeze_backbones") else "trained"
        return f"MBMT {n}x{(cfg.get('backbones') or ['?'])[0]} ({init}, backbones {frozen})"
    if arch == "teacher":
        return f"teacher {cfg.get('backbone')} + {cfg.get('extra_modality')} input (GT at test)"
    if arch == "mti_teacher":
        extra = cfg.get("extra_backbone") or cfg.get("backbone")
        return (f"MTI teacher {cfg.get('backbone')} + {extra} (FFM) + "
                f"{cfg.get('extra_modality')} input (GT at test)")
    if kind == "pretrain-st":
        return f"ST {cfg.get('backbone')}"
    label = "student " if kind == "train-student" else ""
    if arch == "mtinet":
        backbones = cfg.get("backbones") or ["?"]
        name = backbones[0] if len(backbones) == 1 else f"{len(backbones)}x{backbones[0]}"
        aux = f", aux {'+'.join(cfg['aux_tasks'])}" if cfg.get("aux_tasks") else ""
        init = ""
        if kind == "train-mbmt":
            init = (", ST-pretrained" if cfg.get("backbone_checkpoints") else ", cold") + (
                ", backbones frozen" if cfg.get("freeze_backbones") else "")
        return f"{label}MTI-Net {name}{aux}{init}"
    if arch == "mtunet":
        return f"{label}MT-UNet base {cfg.get('base_channels')}"
    return f"{label or arch.upper() + ' '}{cfg.get('backbone')}"


def _evaluate_stage(ctx: StageContext, root: Path, manifest: Path, name: str, kind: str,
                    split: str, samples: int) -> tuple[dict, str]:
    """Evaluate one finished stage into its folder; returns (metrics, description)."""
    from mbmt_ros.models import load_model

    stage_dir = ctx.run.stage_dir(name, create=False)
    input_size = ctx.config.data["input_size"]
    dataset = make_dataset(root, split, manifest, input_size)
    batch = int(ctx.train["batch_size"])
    if kind == "pretrain-st":
        merged: dict[str, dict[str, float]] = {}
        for task in TASKS:
            path = stage_dir / task / MODEL_FILE
            if not path.is_file():
                continue
            metrics, kept = evaluate_model(load_model(path), dataset, batch, samples)
            atomic_write_json(stage_dir / task / "metrics.json", metrics)
            save_result_grid(stage_dir / task / "plots" / f"{split}.png", kept, [task],
                             title=f"{name}/{task} ({split})")
            merged.update({t: v for t, v in metrics.items() if t == task})
        atomic_write_json(stage_dir / "metrics.json", merged)
        return merged, _describe(ctx.run, name, kind, next(stage_dir.glob(f"*/{MODEL_FILE}")))
    path = stage_dir / MODEL_FILE
    model = load_model(path)
    metrics, kept = evaluate_model(model, dataset, batch, samples)
    atomic_write_json(stage_dir / "metrics.json", metrics)
    save_result_grid(stage_dir / "plots" / f"{split}.png", kept, model.tasks,
                     num_classes=model.num_classes, title=f"{name} ({split})")
    return metrics, _describe(ctx.run, name, kind, path)


def write_results(path_md: Path, path_csv: Path, title: str,
                  groups: Sequence[tuple[str, list[TableRow]]],
                  baseline: dict[str, dict[str, float]] | None, notes: Sequence[str] = ()) -> None:
    """The markdown (one table per group) and CSV (all rows) comparison, written atomically."""
    parts = [f"# {title}\n"]
    for heading, rows in groups:
        if rows:
            parts.append(f"## {heading}\n\n" + markdown_table(rows, baseline))
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    atomic_write_text(path_md, "\n".join(parts))
    every = [r for _, rows in groups for r in rows]
    atomic_write_text(path_csv, csv_table(every, baseline))


def evaluate(ctx: StageContext) -> dict[str, Any]:
    """Evaluate every finished training stage (or ``stages:``) and write the comparison."""
    if not is_rank_zero():
        return {}
    opts = ctx.spec.options
    root = ensure_dataset(ctx.config, ctx.run)
    manifest = manifest_path(ctx.config, ctx.run, None)  # data.manifest, else the dataset's
    split = opts.get("split") or ctx.config.data["val_split"]
    names = evaluated_stages(ctx.config, ctx.spec)  # its stages: or every earlier trained one
    rows: dict[str, TableRow] = {}
    kinds: dict[str, str] = {}
    for name in names:
        kind = ctx.config.stage(name).kind
        if kind not in EVALUATED_KINDS or not (ctx.run.root / name / DONE_FILE).is_file():
            log.warning("evaluate: skipping stage '%s' (%s)", name,
                        "not finished" if kind in EVALUATED_KINDS else f"a {kind} stage")
            continue
        metrics, description = _evaluate_stage(ctx, root, manifest, name, kind, split,
                                               int(opts["samples"]))
        rows[name] = TableRow(name, metrics, description)
        kinds[name] = kind
        log.info("evaluate: %s %s", name, metrics)
    baseline_name = opts.get("baseline") or next(
        (n for n, k in kinds.items() if k == "pretrain-st"), None)
    baseline = rows[baseline_name].metrics if baseline_name in rows else None
    full = [r for n, r in rows.items() if kinds[n] in _FULL_LABEL_KINDS]
    imbalanced = [r for n, r in rows.items() if kinds[n] not in _FULL_LABEL_KINDS]
    notes = [f"Split: {split} of {root}; metrics pooled over all valid pixels "
             "(docs/metrics.md).",
             f"Δm: mean relative gain (%) over the tasks vs the single-task nets of "
             f"'{baseline_name}'." if baseline else "Δm: no single-task baseline evaluated.",
             "PNG grids: " + ", ".join(f"{n}/plots/{split}.png" for n in rows
                                       if kinds[n] != "pretrain-st")]
    write_results(ctx.run.root / "results.md", ctx.run.root / "results.csv",
                  f"Results: {ctx.config.name}",
                  [("Full labels: ST vs MT-Net vs MBMT-Net", full),
                   ("Imbalanced split: teacher, UMMT and UMMT-PS", imbalanced)], baseline, notes)
    atomic_write_json(ctx.dir / "metrics.json", {n: r.metrics for n, r in rows.items()})
    return {"evaluated": list(rows), "baseline": baseline_name,
            "results": str(ctx.run.root / "results.md")}

