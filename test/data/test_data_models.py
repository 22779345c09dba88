"""A DataLoader batch of the dataset feeds the models of the foundation issue."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from training.data import Manifest, MultiTaskDataset, default_transform, make_imbalanced_split


@pytest.mark.slow
def test_loader_batch_feeds_build_model(synth_dataset: Path) -> None:
    from mbmt_ros.models import build_model

    split = make_imbalanced_split(Manifest.load(synth_dataset / "manifest.json"), 8, 3, seed=0)
    ds = MultiTaskDataset(synth_dataset, "train", manifest=split,
                          transform=default_transform(True, crop=(32, 48)))
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=True,
                                 generator=torch.Generator().manual_seed(0))))
    assert batch["image"].shape == (4, 3, 32, 48)
    assert batch["has_segmentation"].dtype == torch.bool
    torch.manual_seed(0)
    model = build_model({"arch": "mt", "backbone": "test_efficientnet", "fpn_channels": 16,
                         "head_channels": 8, "task_hidden_channels": 16,
                         "num_classes": ds.num_classes})
    out = model(batch["image"])
    assert out["segmentation"].shape == (4, ds.num_classes, 32, 48)
    assert out["depth"].shape == batch["depth"].shape
    assert out["normals"].shape == batch["normals"].shape
    # losses over the samples that carry each label, valid pixels only, backpropagate
    seg_rows = batch["has_segmentation"]
    seg_loss = torch.nn.functional.cross_entropy(out["segmentation"][seg_rows],
                                                 batch["segmentation"][seg_rows],
                                                 ignore_index=-1) if seg_rows.any() else 0.0
    valid = (batch["depth"] > 0) & batch["has_depth"].view(-1, 1, 1, 1)
    depth_loss = (out["depth"] - batch["depth"]).abs()[valid].mean()
    loss = seg_loss + depth_loss
    loss.backward()
    assert torch.isfinite(loss)


def test_make_loader_is_seeded(synth_dataset: Path) -> None:
    from training.data import default_num_workers, make_loader

    ds = MultiTaskDataset(synth_dataset, "train")
    order = [[int(i) for b in make_loader(ds, 4, shuffle=True, seed=s, num_workers=0)
              for i in b["index"]] for s in (1, 1, 2)]
    assert order[0] == order[1] != order[2] and sorted(order[0]) == ds.indices
    assert 0 <= default_num_workers() <= 4
