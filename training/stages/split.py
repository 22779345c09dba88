"""The ``make-split`` stage: an imbalanced label split (e.g. 500 depth, 250 segmentation labels)
of the dataset's training frames, as a manifest in ``<stage>/manifest.json``."""
from __future__ import annotations

from typing import Any

from training.errors import ConfigError
from training.stages.common import StageContext, is_rank_zero
from training.stages.data import ensure_dataset, validation_holdout

__all__ = ["make_split"]


def make_split(ctx: StageContext) -> dict[str, Any]:
    from training.data.manifest import make_imbalanced_split, open_manifest

    opts = ctx.spec.options
    if opts.get("depth") is None or opts.get("segmentation") is None:
        raise ConfigError(f"stage '{ctx.spec.name}' (make-split) needs 'depth: N' and "
                          "'segmentation: M' (numbers of training frames with each label)")
    root = ensure_dataset(ctx.config, ctx.run)
    seed = ctx.config.seed if opts.get("seed") is None else int(opts["seed"])
    full = open_manifest(root, ctx.config.data["manifest"])
    held = validation_holdout(ctx.config, ctx.run)  # data.val_from_train frames stay out
    full.samples = [e for e in full.samples
                    if not (e.split == ctx.config.data["train_split"] and e.index in held)]
    manifest = make_imbalanced_split(full, int(opts["depth"]),
                                     int(opts["segmentation"]), seed, normals=opts.get("normals"),
                                     split=ctx.config.data["train_split"])
    path = ctx.dir / "manifest.json"
    if is_rank_zero():
        manifest.save(path)
    return {"manifest": str(path), "counts": manifest.counts(), "seed": seed}
