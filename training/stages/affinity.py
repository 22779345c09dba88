"""The ``affinity`` stage: which task helps which (the imbalanced-data paper's analysis).

On the frames that carry both labels, and with the same training budget, it trains an RGB-only
multi-task net (segmentation + depth), a depth-as-input teacher and a segmentation-as-input
teacher, evaluates them on the validation split (teachers get the ground-truth extra input) and
compares: if feeding depth raises segmentation mIoU over RGB only, depth helps segmentation (the
paper's Condition 1/2 - a depth-input teacher is then a good pseudo-labeller for segmentation);
likewise for segmentation -> depth with the depth errors. Results: ``<stage>/affinity.json``
and ``<stage>/affinity.md``; each of the three trainings resumes on its own.
"""
from __future__ import annotations

import logging
from typing import Any

from mbmt_ros.io import atomic_write_json, atomic_write_text
from mbmt_ros.tasks import DEPTH, SEGMENTATION
from training.model_configs import stage_model_config
from training.run_dir import DONE_FILE, MODEL_FILE
from training.stages.common import StageContext, is_rank_zero
from training.stages.data import ensure_dataset, make_dataset, manifest_path

__all__ = ["affinity", "AFFINITY_RUNS"]

log = logging.getLogger(__name__)

#: sub-run -> (architecture, extra modality)
AFFINITY_RUNS: dict[str, tuple[str, str | None]] = {
    "rgb": ("mt", None),
    "depth_input": ("teacher", DEPTH),
    "segmentation_input": ("teacher", SEGMENTATION),
}


def affinity(ctx: StageContext) -> dict[str, Any]:
    from mbmt_ros.models import load_model
    from training.stages.evaluate import evaluate_model
    from training.stages.train import train_model

    results: dict[str, dict[str, Any]] = {}
    both = (SEGMENTATION, DEPTH)
    for sub, (arch, modality) in AFFINITY_RUNS.items():
        out = ctx.dir / sub
        if not (out / DONE_FILE).is_file():
            fixed: dict[str, Any] = {"tasks": list(both)}
            if modality:
                fixed["extra_modality"] = modality
            cfg = stage_model_config(ctx.config.model, ctx.spec, arch, **fixed)
            if arch != "teacher":
                cfg.pop("extra_modality", None)
                cfg.pop("extra_backbone", None)
            info = train_model(ctx, cfg, out_dir=out, name=sub, seed_offset=100,
                               keep=lambda e: all(e.has(t) for t in both))
            if is_rank_zero():
                atomic_write_json(out / DONE_FILE, {"run": sub, **info})
    if not is_rank_zero():
        return {}
    root = ensure_dataset(ctx.config, ctx.run)
    dataset = make_dataset(root, ctx.config.data["val_split"],
                           manifest_path(ctx.config, ctx.run, None), ctx.config.data["input_size"])
    for sub in AFFINITY_RUNS:
        metrics, _ = evaluate_model(load_model(ctx.dir / sub / MODEL_FILE), dataset,
                                    int(ctx.train["batch_size"]), samples=0)
        atomic_write_json(ctx.dir / sub / "metrics.json", metrics)
        results[sub] = metrics
    report = _compare(results)
    atomic_write_json(ctx.dir / "affinity.json", {"metrics": results, **report})
    atomic_write_text(ctx.dir / "affinity.md", _markdown(results, report))
    log.info("affinity: %s", report["summary"])
    return {"affinity": str(ctx.dir / "affinity.json"), **report}


def _compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rgb_seg = results["rgb"][SEGMENTATION]["miou"]
    d_seg = results["depth_input"][SEGMENTATION]["miou"]
    rgb_depth = results["rgb"][DEPTH]["rmse"]
    s_depth = results["segmentation_input"][DEPTH]["rmse"]
    depth_helps_seg = d_seg > rgb_seg
    seg_helps_depth = s_depth < rgb_depth
    summary = (f"depth -> segmentation: mIoU {rgb_seg:.2f} (RGB) vs {d_seg:.2f} (RGB+depth), "
               f"{'helps' if depth_helps_seg else 'does not help'}; "
               f"segmentation -> depth: rmse {rgb_depth:.4f} (RGB) vs {s_depth:.4f} (RGB+seg), "
               f"{'helps' if seg_helps_depth else 'does not help'}")
    return {"depth_helps_segmentation": depth_helps_seg,
            "segmentation_helps_depth": seg_helps_depth,
            "segmentation_miou_gain": d_seg - rgb_seg,
            "depth_rmse_gain": rgb_depth - s_depth, "summary": summary}


def _markdown(results: dict[str, dict[str, Any]], report: dict[str, Any]) -> str:
    lines = ["# Task affinity", "",
             "| Input | Seg mIoU ↑ | Seg Pix Acc ↑ | Depth Abs Err ↓ | Depth RMSE ↓ |",
             "|---|---|---|---|---|"]
    names = {"rgb": "RGB", "depth_input": "RGB + depth (GT)",
             "segmentation_input": "RGB + segmentation (GT)"}
    for sub, metrics in results.items():
        seg, depth = metrics.get(SEGMENTATION, {}), metrics.get(DEPTH, {})
        lines.append(f"| {names[sub]} | {seg.get('miou', float('nan')):.2f} | "
                     f"{seg.get('pixel_acc', float('nan')):.2f} | "
                     f"{depth.get('abs_err', float('nan')):.4f} | "
                     f"{depth.get('rmse', float('nan')):.4f} |")
    lines += ["", report["summary"], "",
              "A task given as input trivially helps its own output (the teacher auto-encodes "
              "it), so only the other task's metric is compared.", ""]
    return "\n".join(lines)
