"""Manifests: the dataset honours them, imbalanced splits are reproducible, bad ones explain."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import run_cli

from training.data import Manifest, MultiTaskDataset, make_imbalanced_split
from training.errors import DataError


def test_full_manifest_counts(synth_dataset: Path) -> None:
    m = Manifest.load(synth_dataset / "manifest.json")
    assert m.num_classes == 13 and m.class_names[0] == "bed"
    counts = m.counts()
    assert counts["train"]["samples"] == 10 and counts["val"]["samples"] == 2
    assert counts["train"]["segmentation"]["gt"] == 10
    assert all(e.stamp_ns is not None for e in m.samples)


def test_split_is_reproducible_nested_and_keeps_val(synth_dataset: Path) -> None:
    full = Manifest.load(synth_dataset / "manifest.json")
    a = make_imbalanced_split(full, depth=6, segmentation=3, seed=5)
    b = make_imbalanced_split(full, depth=6, segmentation=3, seed=5)
    c = make_imbalanced_split(full, depth=6, segmentation=3, seed=6)
    assert a.to_json() == b.to_json()
    assert [e.index for e in a.entries("train")] != [e.index for e in c.entries("train")] or \
        [e.labels for e in a.entries("train")] != [e.labels for e in c.entries("train")]
    train = a.entries("train")
    assert len(train) == 6
    assert sum(e.has("segmentation") for e in train) == 3
    assert all(e.has("depth") and e.has("normals") for e in train)
    assert [e.to_json() for e in a.entries("val")] == [e.to_json() for e in full.entries("val")]
    assert a.info["split"] == {"split": "train", "depth": 6, "segmentation": 3,
                               "normals": None, "seed": 5}
    n = make_imbalanced_split(full, depth=6, segmentation=3, seed=5, normals=2)
    assert sum(e.has("normals") for e in n.entries("train")) == 2
    with pytest.raises(DataError, match="subset of the depth samples"):
        make_imbalanced_split(full, depth=2, segmentation=3, seed=0)
    with pytest.raises(DataError, match="has 10 samples with depth, 11 requested"):
        make_imbalanced_split(full, depth=11, segmentation=3, seed=0)


def test_dataset_honours_manifest(synth_dataset: Path, tmp_path: Path) -> None:
    split = make_imbalanced_split(Manifest.load(synth_dataset / "manifest.json"), 6, 2, seed=1)
    path = split.save(tmp_path / "split.json")
    ds = MultiTaskDataset(synth_dataset, "train", manifest=path)
    assert len(ds) == 6 and ds.indices == [e.index for e in split.entries("train")]
    items = [ds[i] for i in range(len(ds))]
    labelled = [it for it in items if it["has_segmentation"]]
    unlabelled = [it for it in items if not it["has_segmentation"]]
    assert len(labelled) == 2 and len(unlabelled) == 4
    for it in unlabelled:  # the label exists on disk but the manifest withholds it
        assert (it["segmentation"] == -1).all() and it["has_depth"]
        on_disk = np.load(synth_dataset / "train" / "label" / f"{it['index']}.npy")
        assert (on_disk >= 0).any()
    for it in labelled:
        on_disk = np.load(synth_dataset / "train" / "label" / f"{it['index']}.npy")
        np.testing.assert_array_equal(it["segmentation"].numpy(), on_disk)
    depth_only = MultiTaskDataset(synth_dataset, "train", manifest=path, tasks=["depth"])
    it = depth_only[0]
    assert it["has_depth"] and not it["has_segmentation"] and not it["has_normals"]
    assert not it["normals"].any()


def test_pseudo_labels_are_read_from_the_manifest_path(synth_dataset: Path,
                                                       tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_dataset, root)
    m = Manifest.load(root / "manifest.json")
    m = make_imbalanced_split(m, 4, 1, seed=0)
    target = next(e for e in m.entries("train") if not e.has("segmentation"))
    pseudo = np.full((48, 64), 7, np.int16)
    (root / "pseudo").mkdir()
    np.save(root / "pseudo" / f"{target.index}.npy", pseudo)
    m.set_label("train", target.index, "segmentation", "pseudo", f"pseudo/{target.index}.npy")
    m.save(root / "with_pseudo.json")
    reloaded = Manifest.load(root / "with_pseudo.json")
    assert reloaded.get("train", target.index).labels["segmentation"] == "pseudo"
    assert reloaded.counts()["train"]["segmentation"] == {"gt": 1, "pseudo": 1}
    ds = MultiTaskDataset(root, "train", manifest=reloaded)
    pos = ds.indices.index(target.index)
    item = ds[pos]
    assert item["has_segmentation"] and (item["segmentation"] == 7).all()
    assert ds.sample(pos).provenance.labels["segmentation"] == "pseudo"


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("format"), "not an mbmt_ros manifest"),
    (lambda m: m.update(version=99), "version 99 is not supported"),
    (lambda m: m["samples"][0]["labels"].update(depth="guess"), "label kind 'guess'"),
    (lambda m: m["samples"][0]["labels"].update(edges="gt"), "unknown task 'edges'"),
    (lambda m: m["samples"].append(dict(m["samples"][0])), "listed twice"),
    (lambda m: m["samples"][0].pop("split"), r"samples\[0\] is malformed"),
    (lambda m: m.update(class_names=["a"]), "1 class_names for num_classes=13"),
])
def test_bad_manifest_messages(synth_dataset: Path, tmp_path: Path, edit, message: str) -> None:
    obj = json.loads((synth_dataset / "manifest.json").read_text())
    edit(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=message):
        Manifest.load(path)


def test_manifest_sample_without_file(synth_dataset: Path, tmp_path: Path) -> None:
    obj = json.loads((synth_dataset / "manifest.json").read_text())
    obj["samples"][0]["index"] = 99
    (tmp_path / "m.json").write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"lists train samples \[99\] that have no file"):
        MultiTaskDataset(synth_dataset, "train", manifest=tmp_path / "m.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        Manifest.load(tmp_path / "broken.json")


def test_make_split_and_check_data_cli(synth_dataset: Path, tmp_path: Path) -> None:
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    for out in (out1, out2):
        proc = run_cli("make-split", str(synth_dataset), "--depth", "8", "--segmentation", "4",
                       "--seed", "11", "--out", str(out))
        assert "depth 8, segmentation 4" in proc.stdout
    assert out1.read_bytes() == out2.read_bytes()
    proc = run_cli("check-data", str(synth_dataset), "--manifest", str(out1))
    assert "train" in proc.stdout and "4/0" in proc.stdout and "OK" in proc.stdout
    bad = run_cli("make-split", str(synth_dataset), "--depth", "3", "--segmentation", "4",
                  check=False)
    assert bad.returncode == 2 and "subset of the depth samples" in bad.stderr
    assert "Traceback" not in bad.stderr
