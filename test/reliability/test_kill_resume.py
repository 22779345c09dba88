"""SIGKILL the training pipeline during a training stage, during pseudo-labelling and during
export; after each kill every artefact on disk is complete and valid (or absent), and a
re-run resumes - finished stages are skipped, the killed training resumes from its
checkpoint - and completes with a usable model bundle.

The pipeline is the tiny config's, cut to the stages that matter here (split, MT-Net,
teacher, pseudo labels, export) on 24 frames of 32x48, in its own process group: the kill
takes the export child process down too, as a crash or the OOM killer would.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from reliability_helpers import check_tree

REPO = Path(__file__).resolve().parents[2]


def _config(tmp: Path) -> Path:
    tiny = yaml.safe_load((REPO / "config" / "train" / "tiny.yaml").read_text())
    tiny["name"] = "reliability"
    tiny["data"] = {"synth": {"count": 24, "size": [32, 48], "seed": 0, "val_fraction": 0.25}}
    tiny["train"].update(epochs=3, batch_size=6, num_threads=1)
    tiny["stages"] = [
        {"name": "split", "kind": "make-split", "depth": 18, "segmentation": 6},
        {"name": "mt", "kind": "train-mt"},
        {"name": "teacher", "kind": "train-teacher", "manifest": "split",
         "extra_modality": "depth", "model": {"tasks": ["segmentation", "depth"]},
         "train": {"epochs": 1}},
        {"name": "pseudo", "kind": "pseudo-label", "teacher": "teacher", "manifest": "split",
         "tau": 0.0},
        {"name": "export", "kind": "export", "from": "mt"},
    ]
    path = tmp / "reliability.yaml"
    path.write_text(yaml.safe_dump(tiny, sort_keys=False))
    return path


def _command(config: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", "pipeline", "--config", str(config),
            "--run-dir", str(run), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run_until(cmd: list[str], log: Path, condition: Callable[[], bool],
               timeout: float = 300.0) -> bool:
    """Start ``cmd`` in its own process group and SIGKILL the group as soon as ``condition``
    holds; True if it was killed that way, False if the pipeline ended first."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if condition():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise AssertionError(f"pipeline did not reach the kill point in {timeout} s")
            time.sleep(0.001)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _hidden_children(folder: Path, pattern: str) -> bool:
    try:
        return any(True for _ in folder.glob(pattern))
    except OSError:
        return False


def _assert_consistent(run: Path) -> None:
    """Every non-hidden file is valid; a stage with done.json has its complete artefacts."""
    check_tree(run)
    if (run / "mt" / "done.json").is_file():
        assert (run / "mt" / "model.safetensors").is_file()
    if (run / "pseudo" / "done.json").is_file():
        assert (run / "pseudo" / "manifest.json").is_file()
        assert any((run / "pseudo" / "pseudo" / "train" / "label").glob("*.npy"))
    if (run / "export" / "bundle").exists():  # only ever renamed into place when complete
        assert {"model.onnx", "meta.json"} <= {p.name for p in (run / "export" / "bundle").iterdir()}


@pytest.mark.slow
def test_sigkill_during_training_pseudo_labels_and_export_then_resume(tmp_path: Path) -> None:
    config, run, log = _config(tmp_path), tmp_path / "run", tmp_path / "pipeline.out"

    # 1. during training: MT-Net has saved an epoch checkpoint but is not finished
    killed = _run_until(_command(config, run), log, lambda: (
        (run / "mt" / "checkpoints" / "last.ckpt").is_file()
        and not (run / "mt" / "done.json").is_file()))
    assert killed, "the pipeline finished before the training stage could be killed"
    assert not (run / "mt" / "done.json").exists()
    _assert_consistent(run)

    # 2. during pseudo-labelling: its label folder is being written (a hidden temporary)
    killed = False
    for attempt in range(5):
        extra = () if attempt == 0 else ("--force", "pseudo", "--only", "pseudo")
        killed = _run_until(_command(config, run, *extra), log, lambda: (
            _hidden_children(run / "pseudo", ".pseudo.*.partial/train/label/*.npy")))
        if killed:
            break
    assert killed, "pseudo-labelling could not be caught in the act in 5 attempts"
    text = log.read_text(errors="replace")
    assert "mt: resuming from" in text, "the killed training stage did not resume"
    assert "stage 'split' (make-split): already done, skipping" in text
    assert not (run / "pseudo" / "done.json").exists()
    _assert_consistent(run)

    # 3. during export: the bundle is being written into a hidden temporary folder
    killed = _run_until(_command(config, run), log,
                        lambda: _hidden_children(run / "export", ".bundle.*.partial/*"))
    assert killed, "the pipeline finished before export could be killed"
    assert not (run / "export" / "done.json").exists()
    assert not (run / "export" / "bundle").exists()
    _assert_consistent(run)

    # 4. the re-run completes: every stage done, nothing left half-written, bundle usable
    proc = subprocess.run(_command(config, run), capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("split", "mt", "teacher", "pseudo", "export"):
        assert (run / stage / "done.json").is_file(), stage
    assert "stage 'pseudo' (pseudo-label): already done, skipping" in proc.stderr
    _assert_consistent(run)
    assert not list((run / "pseudo").glob(".pseudo.*.partial"))  # cleaned on the re-run

    import numpy as np

    from mbmt_ros.runtime import open_predictor

    predictor = open_predictor(run / "export" / "bundle", backend="onnxruntime", device="cpu",
                               precision="fp32")
    try:
        out = predictor.predict(np.zeros((32, 48, 3), np.uint8))
    finally:
        predictor.close()
    assert out["depth"].shape == (32, 48) and np.isfinite(out["depth"]).all()
