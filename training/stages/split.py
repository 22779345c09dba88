"""The ``make-split`` stage: an imbalanced label split (e.g. 500 depth, 250 segmentation labels)
of the dataset's training frames, as a manifest in ``<stage>/manifest.json``."""
from __future__ import annotations

from typing import Any

from training.errors import ConfigError
from training.stages.common import StageContext, is_rank_zero
from training.stages.data import ensure_dataset

__all__ = ["make_split"]


def make_split(ctx: StageContext) -> dict[str, Any]:
    from training.data.manifest import Manifest, make_imbalanced_split

    opts = ctx.spec.options
    if opts.get("depth") is None or opts.get("segmentation") is None:
        raise ConfigError(f"stage '{ctx.spec.name}' (make-split) needs 'depth: N' and "
                          "'segmentation: M' (numbers of training frames with each label)")
    root = ensure_dataset(ctx.config, ctx.run)
    seed = ctx.config.seed if opts.get("seed") is None else int(opts["seed"])
    manifest = make_imbalanced_split(Manifest.load(root / "manifest.json"), int(opts["depth"]),
                                     int(opts["segmentation"]), seed, normals=opts.get("normals"),
                                     split=ctx.config.data["train_split"])
    path = ctx.dir / "manifest.json"
    if is_rank_zero():
        manifest.save(path)
    return {"manifest": str(path), "counts": manifest.counts(), "seed": seed}
