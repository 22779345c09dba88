"""Losses against hand-computed values, and partially labelled batches."""
from __future__ import annotations

import math

import pytest
import torch

from training.errors import TrainingError
from training.losses import compute_losses, depth_loss, normals_loss, segmentation_loss

TASKS = ("segmentation", "depth", "normals")


def _seg_logits() -> torch.Tensor:
    # N=2, C=2, H=1, W=3. Sample 0: pixel 0 logits (0, 0); pixel 1 (0, ln 3); pixel 2 any.
    logits = torch.zeros(2, 2, 1, 3)
    logits[0, 1, 0, 1] = math.log(3.0)
    logits[0, 0, 0, 2] = 5.0
    logits[1, 0] = 10.0  # sample 1 strongly predicts class 0 ...
    return logits


def _seg_target() -> torch.Tensor:
    # sample 0: class 0, class 1, void; sample 1: all class 1 (... but is labelled class 1)
    return torch.tensor([[[0, 1, -1]], [[1, 1, 1]]])


def test_segmentation_cross_entropy_ignores_void_pixels():
    # pixel 0: softmax(0, 0)[0] = 1/2 -> ln 2; pixel 1: softmax(0, ln3)[1] = 3/4 -> ln(4/3)
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    loss = segmentation_loss(_seg_logits(), _seg_target(), torch.tensor([True, False]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_segmentation_unlabelled_samples_contribute_nothing_not_zeros():
    logits, target = _seg_logits(), _seg_target()
    only_first = segmentation_loss(logits[:1], target[:1])
    flagged = segmentation_loss(logits, target, torch.tensor([True, False]))
    both = segmentation_loss(logits, target)
    assert flagged.item() == pytest.approx(only_first.item())
    # sample 1 has loss ~10 per pixel (logit gap 10): including it changes the mean a lot
    assert both.item() > 5.0


def test_segmentation_all_void_gives_no_loss():
    target = torch.full((2, 1, 3), -1)
    assert segmentation_loss(_seg_logits(), target) is None


def test_depth_l1_over_valid_pixels():
    pred = torch.tensor([[[[1.0, 2.0, 3.0, 4.0, 5.0]]]])
    gt = torch.tensor([[[[1.5, 0.0, 2.0, float("nan"), float("inf")]]]])
    # valid: pixels 0 and 2 -> |1 - 1.5| = 0.5, |3 - 2| = 1 -> mean 0.75
    assert depth_loss(pred, gt).item() == pytest.approx(0.75)


def test_depth_all_invalid_gives_no_loss():
    assert depth_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)) is None


def test_normals_one_minus_cosine_over_valid_pixels():
    # (N=1, 3, H=1, W=4): pred vs gt per pixel
    pred = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    gt = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    pred = pred.T.reshape(1, 3, 1, 4)
    gt = gt.T.reshape(1, 3, 1, 4)
    # cos: 1 (scaled prediction is normalised), 0, 1/sqrt(2); last pixel invalid (zero gt)
    expected = ((1 - 1) + (1 - 0) + (1 - 1 / math.sqrt(2))) / 3
    assert normals_loss(pred, gt).item() == pytest.approx(expected, rel=1e-6)


def _batch(has_seg, has_depth, has_normals):
    torch.manual_seed(0)
    return {
        "segmentation": torch.randint(0, 3, (3, 4, 4)),
        "depth": torch.rand(3, 1, 4, 4) + 0.5,
        "normals": torch.nn.functional.normalize(torch.randn(3, 3, 4, 4), dim=1),
        "has_segmentation": torch.tensor(has_seg),
        "has_depth": torch.tensor(has_depth),
        "has_normals": torch.tensor(has_normals),
    }


def _outputs():
    torch.manual_seed(1)
    return {
        "segmentation": torch.randn(3, 3, 4, 4, requires_grad=True),
        "depth": torch.rand(3, 1, 4, 4, requires_grad=True),
        "normals": torch.randn(3, 3, 4, 4, requires_grad=True),
    }


def test_compute_losses_partially_labelled_batch():
    batch = _batch([True, False, True], [False, True, False], [False, False, False])
    outputs = _outputs()
    losses = compute_losses(outputs, batch, TASKS)
    # no sample carries normals -> the key is omitted
    assert set(losses) == {"segmentation", "depth"}
    keep = torch.tensor([True, False, True])
    expected_seg = segmentation_loss(outputs["segmentation"][keep], batch["segmentation"][keep])
    assert losses["segmentation"].item() == pytest.approx(expected_seg.item())
    expected_depth = (outputs["depth"][1] - batch["depth"][1]).abs().mean()
    assert losses["depth"].item() == pytest.approx(expected_depth.item())
    # gradients reach only the labelled samples of each task
    sum(losses.values()).backward()
    seg_grad = outputs["segmentation"].grad.abs().sum(dim=(1, 2, 3))
    depth_grad = outputs["depth"].grad.abs().sum(dim=(1, 2, 3))
    assert seg_grad[1] == 0 and seg_grad[0] > 0 and seg_grad[2] > 0
    assert depth_grad[0] == 0 and depth_grad[2] == 0 and depth_grad[1] > 0
    assert outputs["normals"].grad is None


def test_compute_losses_all_labelled_equals_plain_losses_and_flags_default_to_true():
    batch = _batch([True] * 3, [True] * 3, [True] * 3)
    outputs = _outputs()
    losses = compute_losses(outputs, batch, TASKS)
    for key in ("has_segmentation", "has_depth", "has_normals"):
        del batch[key]
    unflagged = compute_losses(outputs, batch, TASKS)
    assert set(losses) == set(TASKS) == set(unflagged)
    for task in TASKS:
        assert losses[task].item() == pytest.approx(unflagged[task].item())


def test_compute_losses_skips_missing_targets_and_only_requested_tasks():
    batch = _batch([True] * 3, [True] * 3, [True] * 3)
    del batch["depth"]
    losses = compute_losses(_outputs(), batch, ("segmentation", "depth"))
    assert set(losses) == {"segmentation"}


def test_compute_losses_errors():
    batch = _batch([True] * 3, [True] * 3, [True] * 3)
    outputs = _outputs()
    del outputs["normals"]
    with pytest.raises(TrainingError, match="normals"):
        compute_losses(outputs, batch, TASKS)
    with pytest.raises(TrainingError, match="unknown task"):
        compute_losses(_outputs(), batch, ("edges",))
    batch["has_depth"] = torch.tensor([True, False])
    with pytest.raises(TrainingError, match="has_depth"):
        compute_losses(_outputs(), batch, ("depth",))
