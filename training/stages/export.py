"""The ``export`` stage: a model bundle (ONNX + meta + weights) from a trained stage, through
``mbmt-train export`` (``training.export``), into ``<stage>/bundle/``."""
from __future__ import annotations

import json
import shutil
from typing import Any

from training.run_dir import MODEL_FILE
from training.stages.common import StageContext, is_rank_zero
from training.stages.data import ensure_dataset, image_size, run_cli

__all__ = ["export"]


def export(ctx: StageContext) -> dict[str, Any]:
    opts = ctx.spec.options
    source = opts["from"]
    ckpt = ctx.run.require_model(source, f"stage '{ctx.spec.name}'")
    if not is_rank_zero():
        return {}
    bundle = ctx.dir / "bundle"
    if bundle.exists():  # left by a run killed after the rename but before done.json
        shutil.rmtree(bundle)
    size = opts.get("input_size") or ctx.config.data.get("input_size") or image_size(
        ensure_dataset(ctx.config, ctx.run), ctx.config.data["train_split"])
    args = ["export", "--ckpt", str(ckpt), "--out", str(bundle)]
    # the exported graph's input size must be a multiple of 32 (the backbones' stride)
    size = [max(32, int(round(v / 32)) * 32) for v in size]
    args += ["--input-size", str(size[0]), str(size[1])]
    metrics = ctx.run.root / source / "metrics.json"
    if metrics.is_file():
        args += ["--metrics", str(metrics)]
    run_cli(*args)
    meta = json.loads((bundle / "meta.json").read_text(encoding="utf-8"))
    return {"bundle": str(bundle), "from": source, "checkpoint": str(ckpt),
            "tasks": meta.get("tasks"), "input_size": meta.get("input_size"),
            "reference": meta.get("reference"),  # the set `mbmt-engine verify` checks against
            "model_file": MODEL_FILE}
