"""The node-latency figures in the docs are rendered from the committed raw results
(``benchmarks/results/node_latency.json``) by ``benchmarks/node_latency.py``, never retyped."""
from __future__ import annotations

import importlib.util
import json
import sys

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("node_latency", REPO / "benchmarks" / "node_latency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("node_latency", module)
    spec.loader.exec_module(module)
    return module


def test_docs_hold_the_figures_rendered_from_the_raw_json() -> None:
    bench = _bench()
    data = json.loads(bench.RESULTS.read_text(encoding="utf-8"))
    assert data["git_commit"] and data["command"] and {r["model"] for r in data["results"]} >= {"tiny", "paper"}
    for result in data["results"]:
        d = {k: float(v) for k, v in result["diagnostics"].items() if k.endswith(("_ms", "_pct"))}
        assert d["total_p50_ms"] >= d["predict_p50_ms"] > 0 and int(result["diagnostics"]["timing_frames"]) == len(result["e2e_ms"])
    blocks = bench.render(data)
    for path, key in bench.DOCS.items():
        text = path.read_text(encoding="utf-8")
        assert f"{bench.BEGIN}\n{blocks[key]}\n{bench.END}" in text, f"{path} is out of date: run benchmarks/node_latency.py --render"
    assert "**+0.6 %**" not in (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")  # the old claim
