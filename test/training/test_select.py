"""``mbmt-train select`` through the CLI on the layouts a user has (synthetic with a split
manifest, extract-bag output, NYUv2 without a manifest): deterministic for a seed, a progress
bar on a terminal that ``-q`` silences, the uncertainty ranking checked against the bundle's own outputs, diversity that does not
spend the budget on near-duplicates, and the strategies' selection rules on known scores."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from loop_helpers import mbmt_train, mbmt_train_on_terminal, one_line_error

from mbmt_ros.tasks import NYU13_CLASSES
from training.data.synth import write_synth_dataset
from training.data.synth.render import render_frame
from training.data.writer import open_dataset_writer
from training.select.strategies import k_center_greedy, select

H, W = 24, 32


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight segmentation + depth bundle with the 13 NYU classes."""
    import torch

    from mbmt_ros.models import build_model, save_model
    from training.export import export_bundle

    folder = tmp_path_factory.mktemp("select")
    torch.manual_seed(0)
    model = build_model({"arch": "mt", "backbone": "test_efficientnet", "num_classes": 13,
                         "tasks": ["segmentation", "depth"], "fpn_channels": 8,
                         "head_channels": 8, "task_hidden_channels": 8})
    save_model(folder / "ckpt" / "model.safetensors", model, {"data": "unit-test"})
    return export_bundle(folder / "ckpt", folder / "bundle", input_size=(32, 64),
                         exporter="torchscript", fp16=False)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic frames (10 train, 2 val) with a split: 3 of the 10 keep segmentation."""
    root = write_synth_dataset(tmp_path_factory.mktemp("select") / "data", 12, H, W, seed=2)
    mbmt_train("make-split", root, "--depth", "10", "--segmentation", "3", "--out",
               root / "split.json")
    return root


def listed(path: Path) -> list[str]:
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines()
            if ln.split("#")[0].strip()]


def select_cli(*args: str | Path, check: bool = True):
    return mbmt_train("select", *args, check=check)


def test_uncertainty_ranks_by_the_bundles_confidence(synth: Path, bundle: Path,
                                                     tmp_path: Path) -> None:
    proc = select_cli("--data", synth, "--manifest", synth / "split.json", "--bundle", bundle,
                      "--budget", "3", "--strategy", "uncertainty", "--out", tmp_path / "l.txt")
    assert "scoring:" not in proc.stderr  # not a terminal: no progress bar in logs
    chosen = listed(tmp_path / "l.txt")
    split = json.loads((synth / "split.json").read_text())
    labelled = {f"train/{s['index']}" for s in split["samples"]
                if s["split"] == "train" and "segmentation" in s["labels"]}
    candidates = [f"train/{s['index']}" for s in split["samples"]
                  if s["split"] == "train" and "segmentation" not in s["labels"]]
    assert len(chosen) == 3 and not set(chosen) & labelled and set(chosen) <= set(candidates)
    from mbmt_ros.runtime import open_predictor

    with open_predictor(bundle, backend="onnxruntime", precision="fp32", device="cpu") as p:
        score = {f: float(np.mean(1 - p.predict(np.load(synth / "train" / "image" /
                                                          f"{f.split('/')[1]}.npy")
                                                  )["segmentation_confidence"]))
                 for f in candidates}
    assert min(score[f] for f in chosen) >= max(score[f] for f in candidates
                                                if f not in chosen) - 1e-6
    assert [score[f] for f in chosen] == sorted((score[f] for f in chosen), reverse=True)


def test_progress_bar_on_a_terminal_and_quiet_silences_it(synth: Path, bundle: Path,
                                                         tmp_path: Path) -> None:
    args = ("select", "--data", synth, "--manifest", synth / "split.json", "--bundle", bundle,
            "--budget", "2", "--strategy", "uncertainty", "--out", tmp_path / "l.txt")
    code, shown = mbmt_train_on_terminal(*args)
    assert code == 0, shown
    assert re.search(r"scoring:\s+\d+%\|", shown), shown  # the bar, through training.progress
    code, quiet = mbmt_train_on_terminal("-q", *args)
    assert code == 0, quiet
    assert "scoring" not in quiet and "%|" not in quiet, quiet
    assert len(listed(tmp_path / "l.txt")) == 2  # and the work was done


def test_deterministic_for_a_seed(synth: Path, bundle: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        select_cli("--data", synth, "--manifest", synth / "split.json", "--bundle", bundle,
                   "--budget", "4", "--strategy", "hybrid", "--seed", "4", "--out",
                   tmp_path / name)
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text()
    assert len(listed(tmp_path / "a")) == 4


@pytest.mark.slow
def test_extracted_bag_and_nyuv2_layout_without_manifest(synth: Path, bundle: Path,
                                                         tmp_path: Path) -> None:
    # extract-bag output: every frame lacks segmentation (no --labels), all are candidates
    ext = tmp_path / "extracted"
    mbmt_train("extract-bag", synth / "bag", "--rgb", "/camera/color/image_raw", "--depth",
               "/camera/depth/image_raw", "--out", ext)
    select_cli("--data", ext, "--bundle", bundle, "--budget", "5", "--strategy", "hybrid",
               "--out", tmp_path / "bag.txt")
    chosen = listed(tmp_path / "bag.txt")
    assert len(set(chosen)) == 5 and all(c.startswith("train/") for c in chosen)
    # MTAN's NYUv2 as downloaded: no manifest.json; every file is ground truth, so a user
    # selects against a split made by make-split
    nyu = Path(shutil.copytree(synth, tmp_path / "nyuv2", ignore=shutil.ignore_patterns(
        "manifest.json", "split.json", "bag", "camera.json")))
    err = one_line_error(select_cli("--data", nyu, "--bundle", bundle, "--budget", "2", "--out",
                                    tmp_path / "x.txt", check=False), "select")
    assert "already has ground-truth segmentation; nothing left to select" in err
    mbmt_train("make-split", nyu, "--depth", "8", "--segmentation", "2", "--out",
               nyu / "split.json")
    select_cli("--data", nyu, "--manifest", nyu / "split.json", "--bundle", bundle, "--budget",
               "6", "--strategy", "diversity", "--out", tmp_path / "nyu.txt")
    assert len(listed(tmp_path / "nyu.txt")) == 6
    assert not (tmp_path / "x.txt").exists()


def test_diversity_does_not_pick_near_duplicates(bundle: Path, tmp_path: Path) -> None:
    """One corridor seen 6 times (sensor noise only) and 3 other scenes: 4 picks, 4 scenes."""
    rng = np.random.default_rng(0)
    scene_of = []
    with open_dataset_writer(tmp_path / "dupes", 13, list(NYU13_CLASSES)) as writer:
        for scene, copies in ((0, 6), (1, 1), (2, 1), (3, 1)):
            base = render_frame(9, scene, H, W).sample.replace(segmentation=None)
            for _ in range(copies):
                noisy = np.clip(base.rgb.astype(np.int16) + rng.integers(-4, 5, base.rgb.shape),
                                0, 255).astype(np.uint8)
                writer.add(base.replace(rgb=noisy))
                scene_of.append(scene)
    for strategy in ("diversity", "hybrid"):
        select_cli("--data", tmp_path / "dupes", "--bundle", bundle, "--budget", "4",
                   "--strategy", strategy, "--pool-factor", "3", "--out", tmp_path / strategy)
        picks = [scene_of[int(f.split("/")[1])] for f in listed(tmp_path / strategy)]
        assert sorted(picks) == [0, 1, 2, 3], (strategy, picks)


def test_a_bundle_of_other_classes_is_refused(synth: Path, bundle: Path,
                                              tmp_path: Path) -> None:
    split = json.loads((synth / "split.json").read_text())
    split["class_names"][0] = "bunk"
    (tmp_path / "split.json").write_text(json.dumps(split))
    err = one_line_error(select_cli("--data", synth, "--manifest", tmp_path / "split.json",
                                    "--bundle", bundle, "--budget", "2", "--out",
                                    tmp_path / "l.txt", check=False), "select")
    assert "predicts classes ['bed'," in err and "use a model trained on" in err


def test_strategies_on_known_scores() -> None:
    # two tight clusters and a lone point; uncertainty highest inside cluster A
    feats = np.array([[0, 0], [0.01, 0], [0, 0.01], [5, 5], [5.01, 5], [10, 0]], float)
    unc = np.array([0.9, 0.8, 0.85, 0.2, 0.1, 0.5])
    assert select("uncertainty", unc, feats, 3) == [0, 2, 1]
    div = select("diversity", unc, feats, 3, seed=1)
    assert sorted({0 if i < 3 else 1 if i < 5 else 2 for i in div}) == [0, 1, 2]
    # hybrid: diversity among the 2 x 2 most uncertain (0, 2, 1, 5): one from A, then 5
    hyb = select("hybrid", unc, feats, 2, pool_factor=2.0)
    assert len({0 if i < 3 else i for i in hyb}) == 2 and 5 in hyb
    # labelled frames count as covered: with cluster A labelled, nothing from A is picked
    assert not set(k_center_greedy(feats, 2, centers=feats[:1])) & {0, 1, 2}
    assert select("random", unc, feats, 6, seed=3) != select("random", unc, feats, 6, seed=4)
    assert sorted(select("random", unc, feats, 6, seed=3)) == list(range(6))
