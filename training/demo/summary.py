"""The demo's final summary: one Markdown text, printed and saved as ``summary.md``, plus the
same facts as ``summary.json`` for scripts and tests.

It shows the pipeline's comparison table (``results.md``), the exported model scored twice -
in PyTorch by the evaluate stage and through the live perception node (ONNX Runtime or
TensorRT, over DDS) - the node's measured latency and output rate, which stages ran and
which were reused, and the paths of the PNG result grids and of the recorded output bag.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["build_summary", "format_summary", "metrics_table"]

_KEY_METRICS = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err", "rmse", "delta1"),
    "normals": ("mean", "median", "within_11_25", "within_30"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.4g}"
    return str(value)


def metrics_table(columns: dict[str, dict[str, dict[str, float]]]) -> str:
    """A Markdown table ``task / metric`` x the given metric sets (``{column: metrics}``)."""
    names = list(columns)
    lines = ["| task | metric | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for task, keys in _KEY_METRICS.items():
        for key in keys:
            values = [columns[n].get(task, {}).get(key) for n in names]
            if all(v is None for v in values):
                continue
            lines.append(f"| {task} | {key} | " + " | ".join(
                "-" if v is None else _fmt(v) for v in values) + " |")
    return "\n".join(lines)


def build_summary(*, out: Path, run_dir: Path, budget: str, device: str, stages_run: list[str],
                  stages_reused: list[str], data_reused: bool, bundle: Path, export_from: str,
                  session: dict[str, Any], node_metrics: dict[str, Any],
                  node_metrics_path: Path, elapsed_s: float) -> dict[str, Any]:
    """Collect every fact of the summary (JSON-able)."""
    torch_metrics_path = run_dir / export_from / "metrics.json"
    torch_metrics: dict[str, Any] = {}
    if torch_metrics_path.is_file():
        import json

        torch_metrics = json.loads(torch_metrics_path.read_text(encoding="utf-8"))
    results = run_dir / "results.md"
    grids = sorted(str(p) for p in run_dir.glob("**/plots/*.png"))
    stats = session.get("stats", {})
    diag = session.get("node_diagnostics", {})
    active = diag.get("active") or {}
    return {
        "out": str(out), "run_dir": str(run_dir), "budget": budget, "device": device,
        "elapsed_s": round(elapsed_s, 1), "data_reused": data_reused,
        "stages_run": stages_run, "stages_reused": stages_reused,
        "results_md": str(results) if results.is_file() else None,
        "bundle": str(bundle), "bundle_from": export_from,
        "png_grids": grids, "output_bag": session.get("output_bag"),
        "output_bag_topics": session.get("output_bag_topics", {}),
        "node": {
            "backend": session.get("backend"), "device": session.get("device"),
            "precision": session.get("precision"), "frames": session.get("frames"),
            "replay_rate_hz": 10.0 * float(session.get("replay_rate", 1.0)),
            "dropped_first_pass": session.get("dropped_first_pass"),
            "replay_passes": session.get("replay_passes"),
            "output_rate_hz": stats.get("output_rate_hz"),
            "latency_p50_ms": stats.get("latency_p50_ms"),
            "latency_p90_ms": stats.get("latency_p90_ms"),
            "latency_max_ms": stats.get("latency_max_ms"),
            "inference_median_ms": _float(active.get("inference_median_ms")),
            # per-frame stamps taken in the node, p50/p99 over the same frames (docs/node.md)
            "timing_frames": _float(active.get("timing_frames")),
            **{key: _float(active.get(key)) for key in _NODE_TIMING},
        },
        "node_metrics": node_metrics, "node_metrics_json": str(node_metrics_path),
        "torch_metrics": torch_metrics,
        "torch_metrics_json": str(torch_metrics_path) if torch_metrics else None,
    }


_NODE_TIMING = ("predict_p50_ms", "predict_p99_ms", "total_p50_ms", "total_p99_ms",
                "overhead_p50_pct", "overhead_p99_pct")


def _float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def format_summary(s: dict[str, Any]) -> str:
    """The human-readable summary (Markdown)."""
    node = s["node"]
    parts = [f"# mbmt_ros demo ({s['budget']} budget, device {s['device']}) - "
             f"{s['elapsed_s']:.0f} s", ""]
    reused = ", ".join(s["stages_reused"]) or "none"
    ran = ", ".join(s["stages_run"]) or "none"
    parts += [f"Pipeline stages run: {ran}; reused (already finished): {reused}.",
              f"Synthetic data: {'reused' if s['data_reused'] else 'generated'}.", ""]
    if s["results_md"]:
        parts += ["## Comparison table (`results.md`)", "",
                  Path(s["results_md"]).read_text(encoding="utf-8").strip(), ""]
    columns = {"perception node (ROS 2, recorded)": s["node_metrics"]}
    if s["torch_metrics"]:
        columns[f"PyTorch, stage '{s['bundle_from']}'"] = s["torch_metrics"]
    parts += ["## The exported model through the perception node", "",
              f"Bundle `{s['bundle']}` (from stage '{s['bundle_from']}'), backend "
              f"{node['backend']} on {node['device']} ({node['precision']}); {node['frames']} val "
              f"frames replayed at {node['replay_rate_hz']:.0f} Hz, outputs matched to the "
              "ground truth by header stamp and scored with `mbmt-train score`.", "",
              metrics_table(columns), "",
              "| node | value |", "|---|---|",
              f"| latency p50 / p90 / max (image published -> its last output received, over DDS) | "
              f"{_fmt(node['latency_p50_ms'])} / {_fmt(node['latency_p90_ms'])} / "
              f"{_fmt(node['latency_max_ms'])} ms |",
              f"| in the node, same {_fmt(node.get('timing_frames'))} frames (its own stamps): predict p50 / p99 | "
              f"{_fmt(node.get('predict_p50_ms'))} / {_fmt(node.get('predict_p99_ms'))} ms |",
              f"| in the node: receipt -> last output published, p50 / p99 | "
              f"{_fmt(node.get('total_p50_ms'))} / {_fmt(node.get('total_p99_ms'))} ms |",
              f"| node overhead, (receipt -> last publish - predict) / predict, p50 / p99 | "
              f"{_fmt(node.get('overhead_p50_pct'))} / {_fmt(node.get('overhead_p99_pct'))} % |",
              f"| output rate | {_fmt(node['output_rate_hz'])} Hz |",
              f"| frames dropped by the node on the first pass (re-sent) | "
              f"{node['dropped_first_pass']} |", ""]
    topics = ", ".join(f"{t} ({v['count']} msgs)" for t, v in s["output_bag_topics"].items())
    parts += ["## Files", "",
              f"- recorded output bag: `{s['output_bag']}` - {topics}",
              f"- node metrics: `{s['node_metrics_json']}`",
              f"- model bundle: `{s['bundle']}`",
              f"- comparison table: `{s['results_md']}`",
              "- PNG result grids:", *[f"  - `{g}`" for g in s["png_grids"]]]
    return "\n".join(parts) + "\n"
