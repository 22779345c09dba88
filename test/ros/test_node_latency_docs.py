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


def _row(size, camera, input_delay, e2e, profile="shipped"):
    diag = {"predict_p50_ms": "30", "predict_p99_ms": "35", "total_p50_ms": "33",
            "overhead_p50_ms": "3", "publish_p50_ms": "1", "build_p50_ms": "1",
            "queue_p50_ms": "0.5", "convert_p50_ms": "0.1", "input_delay_p50_ms": str(input_delay)}
    return {"model": "tiny", "size": list(size), "outputs": "raw", "profile": profile,
            "camera_profile": camera, "diagnostics": diag, "e2e_ms": [e2e] * 10}


def test_where_the_time_goes_pairs_rows_of_the_same_case() -> None:
    bench = _bench()
    data = {"settings": {"size": [288, 384]}, "machine": {"cpu_count": 2}, "overlap": [],
            "results": [_row((480, 640), "default", 12.0, 60.0), _row((480, 640), "shipped", 1.5, 48.0),
                        _row((288, 384), "default", 0.8, 40.0),
                        _row((288, 384), "default", 0.8, 41.0, profile="shipped-sync")]}
    lines = bench.why_lines(data)
    [camera] = [ln for ln in lines if "camera -> node" in ln]
    assert "480x640" in camera and "12.0 ms with the camera on Fast DDS defaults" in camera
    assert "900 KiB, does not fit" in camera and "1.5 ms with the camera on the shipped profile" in camera
    assert "+25.0 -> +13.0 ms" in camera  # e2e p99 - predict p99, default -> shipped camera
    [sync] = [ln for ln in lines if "synchronous" in ln]
    assert sync.startswith("- tiny 288x384 raw (3)") and "+5.0 -> +6.0 ms" in sync
    # the overhead split is given for the shipped rows at the first size only
    assert [ln for ln in lines if "of the node overhead" in ln] == [
        "- tiny 288x384 raw (3): of the node overhead p50 3.0 ms, publish (the rclpy `publish` "
        "calls) is 1.0 ms, build 1.0, queue 0.5, convert 0.1 ms."]
