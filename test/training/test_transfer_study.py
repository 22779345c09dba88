"""benchmarks/transfer_study.py reruns one seed of the transfer study (issue 19) at the tiny
budget: source pretraining -> every target arm started from it (``init:``), raw JSON with its
provenance, resume without retraining, and the refusals (dirty tree, another study's folder)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _study():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "_bench_transfer_study", REPO / "benchmarks" / "transfer_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _done(folder: Path) -> dict:
    return json.loads((folder / "done.json").read_text())


def test_the_preregistration_is_complete_and_its_anchors_add_up():
    import yaml

    from training.config import load_config
    from training.metrics import delta_m

    study = _study()
    prereg = study.preregistration()
    assert len(prereg["seeds"]) >= 8 and prereg["budget"] in study.BUDGETS
    assert prereg["test"]["alpha"] == study.paired_stats.ALPHA
    assert prereg["test"]["power"] == study.paired_stats.POWER
    stages = {s.name: s for s in load_config(study.TARGET_CONFIG).stages}
    keys = [c["key"] for c in prereg["comparisons"]]
    assert len(keys) == len(set(keys)) and sum(c["primary"] for c in prereg["comparisons"]) == 4
    for c in prereg["comparisons"]:
        assert stages[c["a"]].trains and stages[c["b"]].trains, c["key"]
        assert c["figure"] in prereg["figures"] and c["claim"] in ("A better", "B better",
                                                                    "no effect")
        assert c["min_effect"] > 0 and c["paper"]
    # every target stage the study starts from the source exists there
    source = {s.name for s in load_config(study.SOURCE_CONFIG).stages}
    assert set(study.INIT_FROM) <= set(stages) and set(study.INIT_FROM.values()) <= source
    # the MBMT-Net anchors are Δm over the paper's Table 6 columns
    table = prereg["paper_tables"]["mbmt_table6"]
    keys6 = {t: tuple(m) for t, m in table["st"].items()}
    mbmt = delta_m(table["mbmt"], table["st"], keys6)
    mt = delta_m(table["mt"], table["st"], keys6)
    by_key = {c["key"]: c for c in prereg["comparisons"]}
    assert by_key["mbmt_vs_st"]["paper_effect"] == pytest.approx(mbmt, abs=0.005)
    assert by_key["mbmt_vs_mt"]["paper_effect"] == pytest.approx(mbmt - mt, abs=0.01)
    # the imbalanced-data paper's comparison is UMMT-D -> UMMT-PS (Table 4), not UMMT
    assert by_key["ummt_ps_vs_ummt_d_miou"]["paper_effect"] == pytest.approx(25.3 - 19.2)
    assert by_key["ummt_ps_vs_ummt_d_rmse"]["paper_effect"] == pytest.approx(0.783 - 0.653)
    assert by_key["mtinet_vs_st"]["paper_effect"] == 10.91  # with auxiliary tasks
    assert yaml.safe_load(study.PREREGISTRATION.read_text()) == prereg


@pytest.mark.slow
def test_one_seed_of_the_study_at_a_tiny_budget(tmp_path):
    study = _study()
    out, work = tmp_path / "raw", tmp_path / "runs"
    args = ["--budget", "tiny", "--seeds", "0", "--jobs", "1", "--out", str(out),
            "--work", str(work), "--allow-dirty"]
    assert study.main(args) == 0
    record = json.loads((out / "seed0.json").read_text())
    prereg = study.preregistration()
    for comp in prereg["comparisons"]:  # every pre-registered arm was trained and evaluated
        assert comp["a"] in record["rows"] and comp["b"] in record["rows"], comp["key"]
        assert isinstance(study.figure(record, comp["a"], comp["figure"]), float)
    prov = record["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
    assert prov["allow_dirty"] is True and prov["git_dirty"] == bool(prov["dirty_files"])
    assert prov["preregistration_sha256"] == hashlib.sha256(
        study.PREREGISTRATION.read_bytes()).hexdigest()
    assert record["reused_stages"] == []
    started = prov["study_started_at"]
    assert all(s["finished_at"] >= started for s in record["stages"].values())
    assert set(record["source"]["stages"]) == {"pretrain-st", "mt", "teacher"}
    # the arms really start from the source run
    source, seed = work / "source", work / "seed0"
    for task in ("segmentation", "depth", "normals"):
        info = _done(seed / "pretrain-st" / task)
        assert info["init_sha256"] == hashlib.sha256(
            (source / "pretrain-st" / task / "model.safetensors").read_bytes()).hexdigest()
    mt_src = hashlib.sha256((source / "mt" / "model.safetensors").read_bytes()).hexdigest()
    assert _done(seed / "mt-src")["init_sha256"] == mt_src
    assert _done(seed / "ummt-ps")["init_sha256"] == mt_src
    assert "init" not in _done(seed / "mt")  # the scratch arm starts from nothing
    copies = _done(seed / "assemble-mt")["backbone_checkpoints"]
    assert copies == [str(seed / "mt-src" / "model.safetensors")] * 3
    assert _done(seed / "teacher")["init"] == str(source / "teacher" / "model.safetensors")
    # the source-only MBMT-Net fuses the source's ST backbones, not the fine-tuned ones
    assert _done(seed / "assemble-src")["backbone_checkpoints"] == [
        str(source / "pretrain-st" / t / "model.safetensors")
        for t in ("segmentation", "depth", "normals")]

    # resuming retrains nothing: every stage keeps its run id
    before = {k: v["run_id"] for k, v in record["stages"].items()}
    assert study.main(args) == 0
    again = json.loads((out / "seed0.json").read_text())
    assert {k: v["run_id"] for k, v in again["stages"].items()} == before


def test_refuses_a_dirty_tree_and_another_studys_folder(tmp_path, monkeypatch):
    study = _study()
    monkeypatch.setattr(study, "_dirty", lambda out, work: [" M training/x.py"])
    args = ["--budget", "tiny", "--seeds", "0", "--out", str(tmp_path / "raw"),
            "--work", str(tmp_path / "runs")]
    with pytest.raises(SystemExit, match="uncommitted changes.*--allow-dirty"):
        study.main(args)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "study.json").write_text(json.dumps(
        {"git_commit": "0" * 40, "budget": "tiny", "started_at": "2020-01-01T00:00:00Z"}))
    with pytest.raises(SystemExit, match="must not be reused - pass a new --work"):
        study.main([*args, "--allow-dirty"])
    assert not (tmp_path / "runs" / "source").exists()  # refused before anything ran
