"""The active-learning table of docs/results.md is generated from the committed raw results of
``benchmarks/active_learning.py`` (never retyped): ``--check`` passes on the repository and
fails as soon as the raw numbers and the docs disagree."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "active_learning.py"
RAW = REPO / "benchmarks" / "results" / "active_learning.json"


def _module():
    spec = importlib.util.spec_from_file_location("active_learning_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_table_matches_the_committed_raw_results() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    raw = json.loads(RAW.read_text())
    assert raw["complete"] and raw["commit"] and raw["command"]
    assert len({r["seed"] for r in raw["rows"]}) >= 3
    assert {r["strategy"] for r in raw["rows"]} == {"random", "uncertainty", "diversity",
                                                    "hybrid"}


def test_the_table_is_computed_from_the_raw_rows(tmp_path: Path) -> None:
    mod = _module()
    raw = json.loads(RAW.read_text())
    last = max(r["round"] for r in raw["rows"])
    vals = [r["miou"] for r in raw["rows"] if r["strategy"] == "random" and r["round"] == last]
    table = mod.markdown(raw)
    row = next(ln for ln in table.splitlines() if ln.startswith("| random |"))
    assert f"{np.mean(vals):.2f} ± {np.std(vals):.2f}" in row
    for r in raw["rows"]:  # change one number: the docs are now stale
        if r["strategy"] == "hybrid" and r["round"] == last:
            r["miou"] += 5.0
            break
    (tmp_path / "raw.json").write_text(json.dumps(raw))
    assert mod.main(["--check", "--results", str(tmp_path / "raw.json")]) == 1
    assert mod.main(["--check"]) == 0
