"""The README's main command on the CI budget: ``mbmt-train demo --budget ci`` - the same entry
point and steps as ``scripts/demo`` (synthetic data -> tiny pipeline -> bundle -> perception
node in the isolated namespace -> recorded + scored outputs -> summary), then once more to
show that finished stages are reused."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

TASKS = ("segmentation", "depth", "normals")
CI_VAL_FRAMES = 10  # budget ci: 40 frames, val fraction 0.25


def _demo(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training.cli", "demo", "--out", str(out), "--budget", "ci",
           "--device", "cpu", "--threads", "1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _finite(metrics: dict) -> bool:
    return all(math.isfinite(v) for values in metrics.values() for v in values.values())


@pytest.mark.slow
@pytest.mark.ros
def test_demo_ci_budget_end_to_end_then_reuses_finished_stages(tmp_path: Path) -> None:
    from training.demo.bags import bag_summary

    out = tmp_path / "demo"
    started = time.monotonic()
    first = _demo(out)
    demo_ms = (time.monotonic() - started) * 1e3
    summary = json.loads((out / "summary.json").read_text())

    # the printed summary: comparison table, node figures, file paths
    printed = first.stdout
    assert "Comparison table" in printed and "| mbmt" in printed
    assert "latency p50" in printed and "output rate" in printed
    assert summary["output_bag"] in printed and summary["png_grids"]
    assert all(g in printed for g in summary["png_grids"])
    assert (out / "summary.md").read_text() in printed

    # the pipeline ran every stage and wrote the comparison table and result grids
    assert summary["stages_reused"] == [] and not summary["data_reused"]
    assert Path(summary["results_md"]).is_file()
    assert all(Path(g).is_file() and Path(g).stat().st_size > 0 for g in summary["png_grids"])

    # the bundle
    bundle = Path(summary["bundle"])
    assert (bundle / "model.onnx").is_file() and (bundle / "meta.json").is_file()
    assert set(json.loads((bundle / "meta.json").read_text())["tasks"]) == set(TASKS)
    # ... verifies itself against its reference set on every CPU backend here, as a robot
    # would check it with the console script (issue 20)
    from mbmt_ros.runtime import BACKENDS

    engine = Path(sys.executable).with_name("mbmt-engine")
    backends = [b for b in ("onnxruntime", "openvino", "torch")
                if BACKENDS[b].availability("cpu") is None]
    assert "onnxruntime" in backends
    for backend in backends:
        proc = subprocess.run([str(engine), "verify", str(bundle), "--backend", backend,
                               "--precision", "fp32", "--device", "cpu", "--json"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (backend, proc.stdout, proc.stderr)
        report = json.loads(proc.stdout)
        assert report["backend"] == backend and report["result"]["status"] == "passed", report
        assert report["result"]["figures"]["segmentation_agreement"] >= 0.99, report

    # the output bag: the node's three topics, one message per replayed val frame
    counts = {t: v["count"] for t, v in bag_summary(summary["output_bag"]).items()}
    assert counts == {f"/perception_node/{task}": CI_VAL_FRAMES for task in TASKS}

    # the recorded outputs scored against the ground truth: finite metrics for every task
    metrics = json.loads(Path(summary["node_metrics_json"]).read_text())
    assert set(metrics) == set(TASKS) and _finite(metrics)
    assert len(list((out / "ros" / "predictions").glob("*.npz"))) == CI_VAL_FRAMES
    # the node ran the same model the evaluate stage scored in torch: same figures
    torch_metrics = summary["torch_metrics"]
    assert abs(metrics["depth"]["abs_err"] - torch_metrics["depth"]["abs_err"]) < 0.05
    assert abs(metrics["segmentation"]["miou"] - torch_metrics["segmentation"]["miou"]) < 5.0

    node = summary["node"]
    assert node["frames"] == CI_VAL_FRAMES and node["output_rate_hz"] > 0, node
    assert 0 < node["latency_p50_ms"] < demo_ms, node  # a frame's latency is within the run

    # second run: data and every stage reused, the node measured and scored again
    second = _demo(out)
    again = json.loads((out / "summary.json").read_text())
    assert again["data_reused"] and again["stages_run"] == []
    assert again["stages_reused"] == summary["stages_run"]
    assert "already done, skipping" in second.stderr + second.stdout
    assert "starting in" not in second.stderr + second.stdout
    rescored = json.loads(Path(again["node_metrics_json"]).read_text())
    for task, values in metrics.items():  # same bundle, same frames: the same scores
        assert rescored[task] == pytest.approx(values, rel=1e-5, abs=1e-6)
