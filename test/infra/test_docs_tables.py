"""The generated tables of the docs match the committed raw results
(``benchmarks/docs_tables.py --check``, run as a user runs it), and the check notices a
retyped cell or a lost marker. The blocks other benchmark scripts write with their own
markers (``backends.py``, ``node_soak.py``) are re-rendered here from their committed JSON."""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "docs_tables.py"
RESULTS = REPO / "benchmarks" / "results"


def _bench(name: str):
    """benchmarks/<name>.py, imported under a private name (no clash with other modules)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(text: str, begin: str, end: str) -> str:
    assert text.count(begin) == 1 and text.count(end) == 1, (begin, end)
    return text.split(begin, 1)[1].split(end, 1)[0]


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_docs_match_the_raw_results():
    proc = _check()
    assert proc.returncode == 0, proc.stderr


def test_check_catches_a_retyped_cell_and_a_lost_marker(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")  # a generated sentence lives there
    page = docs / "results.md"
    text = page.read_text(encoding="utf-8")
    block = text.split("<!-- generated:study-full begin -->", 1)[1].split("|---", 1)[1]
    row = block.split("\n")[1]
    cells = row.split(" | ")
    cells[2] = "99.99 ± 0.01"  # a hand-edited mIoU
    page.write_text(text.replace(row, " | ".join(cells)), encoding="utf-8")
    proc = _check("--docs", str(docs))
    assert proc.returncode == 1 and "results.md differs" in proc.stderr
    # regenerating restores the committed page exactly
    subprocess.run([sys.executable, str(SCRIPT), "--docs", str(docs)], check=True,
                   capture_output=True, timeout=120)
    assert page.read_text(encoding="utf-8") == (REPO / "docs" / "results.md").read_text(
        encoding="utf-8")
    page.write_text(text.replace("<!-- generated:study-verdicts end -->", ""), encoding="utf-8")
    proc = _check("--docs", str(docs))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "study-verdicts" in proc.stderr


def test_training_table_is_rendered_from_its_raw_results(tmp_path):
    raw = json.loads((RESULTS / "frozen_vs_unfrozen.json").read_text())
    assert raw["command"] and raw["git_commit"] and "git_dirty" in raw and raw["date_utc"]
    assert raw["torch"] and raw["machine"]["cpu_count"] and "load_avg_1min_end" in raw["machine"]
    assert {r["variant"] for r in raw["rows"]} == {"frozen", "unfrozen"}
    for r in raw["rows"]:  # the medians are those of the raw step times
        assert len(r["step_times_s"]) == raw["settings"]["steps"]
        assert r["step_s"] == statistics.median(r["step_times_s"])
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    bench = _bench("frozen_vs_unfrozen")
    assert _block(text, "<!-- generated:training-frozen begin -->",
                  "<!-- generated:training-frozen end -->") == "\n" + bench.render(raw)
    assert "5,829" not in text and "5,164" not in text  # the old hand-typed paper-size figures
    # a retyped step time is caught by --check
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")  # a generated sentence lives there
    row = next(ln for ln in text.splitlines() if ln.startswith("| frozen | "))
    cells = row.split(" | ")
    cells[2] = "0.001"
    (docs / "benchmarks.md").write_text(text.replace(row, " | ".join(cells)), encoding="utf-8")
    proc = _check("--docs", str(docs))
    assert proc.returncode == 1 and "benchmarks.md differs" in proc.stderr


def test_backends_blocks_match_their_raw_results():
    bench = _bench("backends")
    raw = json.loads((RESULTS / "backends.json").read_text())
    table = bench.markdown(raw["results"], raw["machine"], raw["params"], raw.get("accuracy"))
    assert _block(bench.DOC.read_text(encoding="utf-8"), bench.BEGIN, bench.END) == "\n" + table, \
        "docs/benchmarks.md is out of date: run benchmarks/backends.py --from-json"
    summary = bench.cpu_summary(raw["results"], raw["machine"], raw.get("accuracy"))
    assert _block(bench.DEPLOY_DOC.read_text(encoding="utf-8"), bench.CPU_BEGIN,
                  bench.CPU_END) == "\n" + summary, \
        "docs/deployment.md is out of date: run benchmarks/backends.py --from-json"


def test_soak_block_is_rendered_from_its_raw_results():
    """The whole Soak block - machine line, command, tables and the figures in its notes - is
    ``node_soak.render`` of the committed node_soak.json, which says where it came from."""
    bench = _bench("node_soak")
    raw = json.loads((RESULTS / "node_soak.json").read_text())
    # provenance: command, commit, time, machine, what the node ran, the model
    assert raw["command"].startswith("scripts/ros_isolated .venv/bin/python benchmarks/node_soak.py ")
    assert re.fullmatch(r"[0-9a-f]{40}", raw["git_commit"]) and isinstance(raw["git_dirty"], bool)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", raw["date_utc"])
    machine = raw["machine"]
    for key in ("cpu", "cpu_count", "os", "python", "onnxruntime", "rclpy",
                "load_avg_1min_start", "load_avg_1min_end"):
        assert machine.get(key) not in (None, ""), key
    node = raw["node"]
    for key in ("backend", "device", "precision"):  # as the node reported them
        assert node[key] and node[key] == node["diagnostics"][key], key
    assert "error" not in node["parameters"] and node["parameters"]["backend"] == node["backend"]
    settings, results = raw["settings"], raw["results"]
    assert raw["bundle"]["model_sha256"] and raw["bundle"]["input_size"] == settings["size"]
    assert settings["export_config"] or settings["bundle"]
    # the page is the rendering of the JSON, nothing typed by hand
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    block = bench.MARK_START + _block(text, bench.MARK_START, bench.MARK_END) + bench.MARK_END
    assert bench.render(raw) == block, \
        "docs/benchmarks.md is out of date: run .venv/bin/python benchmarks/node_soak.py --render"
    shown = dict(raw, note=None)  # no field was missing (render writes "?" for one)
    assert "?" not in bench._machine_line(shown) + bench._notes(shown)
    # the shown command is the one the JSON was measured with
    args = shlex.split(raw["command"])
    assert float(args[args.index("--minutes") + 1]) == settings["minutes"] == results["minutes"]
    assert float(args[args.index("--rate") + 1]) == settings["rate_hz"] == results["rate_hz"]
    assert [int(v) for v in args[args.index("--size") + 1:][:2]] == settings["size"]
    assert (settings["export_config"] or settings["bundle"]) in args
    # the memory summary is that of the raw samples
    rss = [r for _, r, _ in raw["samples"]]
    assert abs(results["rss_mb"]["start"] - rss[0]) < 1e-3
    assert abs(results["rss_mb"]["max"] - max(rss)) < 1e-3
    assert len(results["per_minute"]) == math.ceil(results["minutes"])


# ------------------------------------------------------------------ transfer study (issue 19)

_RGB_TASKS = ("segmentation", "depth", "normals")
_HIGHER = {"miou", "pixel_acc", "delta1", "within_11_25", "within_22_5", "within_30"}


def synthetic_raw_records(seeds: int = 8) -> list[dict]:
    """SYNTHETIC raw records in the shape benchmarks/transfer_study.py writes - a test fixture
    with planted effects, not results (nothing here is committed under benchmarks/results):
    MBMT-Net is 12 % better than the ST nets on every metric, every other arm is the ST nets
    within noise, UMMT-PS equals UMMT-D within noise, the teacher has +5 mIoU headroom."""
    import numpy as np

    rng = np.random.default_rng(123)
    base = {"segmentation": {"miou": 20.0, "pixel_acc": 60.0},
            "depth": {"abs_err": 0.8, "rel_err": 0.3, "rmse": 1.0},
            "normals": {"mean": 30.0, "median": 25.0, "within_11_25": 20.0, "within_22_5": 45.0,
                        "within_30": 58.0}}
    gain = {"mbmt": 0.12}

    def arm(st, stage, tasks):
        g = gain.get(stage, 0.0)
        return {t: {k: v * (1 + g if k in _HIGHER else 1 - g) * (1 + rng.normal(0, 0.01))
                    for k, v in st[t].items()} for t in tasks}

    records = []
    for seed in range(seeds):
        st = {t: {k: v * (1 + rng.normal(0, 0.05)) for k, v in m.items()}
              for t, m in base.items()}
        rows = {"pretrain-st": {"metrics": st}}
        for stage in ("mbmt", "mbmt-src", "mbmt-mt", "mbmt-cold", "mbmt-cold-lr1e-5", "mt-src", "mt",
                      "mtinet", "mtunet"):
            rows[stage] = {"metrics": arm(st, stage, _RGB_TASKS)}
        for stage in ("ummt", "ummt-d", "ummt-ps", "teacher"):
            rows[stage] = {"metrics": arm(st, stage, ("segmentation", "depth"))}
        rows["ummt-ps"]["metrics"]["segmentation"]["miou"] = (
            rows["ummt-d"]["metrics"]["segmentation"]["miou"] + rng.normal(0, 0.5))
        rows["teacher"]["metrics"]["segmentation"]["miou"] += 5.0
        stages = {s: {"finished_at": f"2030-01-01T0{seed // 4}:{10 + seed:02d}:00Z",
                      "run_id": f"{seed}{s}"} for s in rows}
        records.append({
            "seed": seed, "rows": rows, "stages": stages, "reused_stages": [],
            "provenance": {"command": "benchmarks/transfer_study.py", "git_commit": "a" * 40,
                           "git_dirty": False, "budget": "study",
                           "preregistration_sha256": "b" * 64,
                           "preregistration_commit": "c" * 40,
                           "study_started_at": "2030-01-01T00:00:00Z",
                           "machine": {"cpu_count": 2, "cpu_model": "synthetic",
                                       "load_avg_1min": 0.1}}})
    return records


def _delta_m_by_hand(metrics: dict, st: dict) -> float:
    lower = {"abs_err", "rel_err", "mean", "median"}
    keys = {"segmentation": ("miou", "pixel_acc"), "depth": ("abs_err", "rel_err"),
            "normals": ("mean", "median", "within_11_25", "within_22_5", "within_30")}
    per_task = [statistics.fmean((-1 if k in lower else 1) * (metrics[t][k] - st[t][k])
                                 / st[t][k] * 100 for k in keys[t]) for t in metrics]
    return statistics.fmean(per_task)


def test_transfer_study_section_is_derived_from_the_raw_records():
    sys.path.insert(0, str(REPO / "benchmarks"))
    docs = _bench("transfer_docs")
    prereg = _bench("transfer_study").preregistration()
    records = synthetic_raw_records()
    text = docs.render(records, prereg)
    # the arms table: Δm of MBMT-Net recomputed by hand from the same numbers
    dm = [_delta_m_by_hand(r["rows"]["mbmt"]["metrics"], r["rows"]["pretrain-st"]["metrics"])
          for r in records]
    row = next(ln for ln in text.splitlines() if ln.startswith("| MBMT-Net (ST backbones frozen) |"))
    assert row.endswith(f"| {statistics.fmean(dm):.2f} ± {statistics.stdev(dm):.2f} |")
    # the comparisons: the planted effect is found, the planted null reads "no effect detected"
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and " vs " in ln]

    def comparison(pair: str, figure: str) -> str:
        return next(ln for ln in lines if ln.split(" | ")[1] == pair and figure in ln)

    mbmt_vs_mt = comparison("MBMT-Net (ST backbones frozen) vs MT-Net (source → target)", "Δm")
    assert mbmt_vs_mt.endswith("**reproduced** |")
    miou = comparison("UMMT-PS (UMMT-D + pseudo seg) vs UMMT-D (200 depth + 100 seg)", "mIoU")
    assert re.search(r"\*\*no effect detected \(MDE \d+\.\d+\)\*\* \|$", miou)
    diffs = [r["rows"]["ummt-ps"]["metrics"]["segmentation"]["miou"]
             - r["rows"]["ummt-d"]["metrics"]["segmentation"]["miou"] for r in records]
    assert f"| {statistics.fmean(diffs):.2f} ± {statistics.stdev(diffs):.2f} |".replace(
        "-", "−") in miou
    # a planted null on a "no effect" claim is never "reproduced"
    assert "reproduced" not in comparison("MT-Net (source → target) vs MT-Net (scratch)", "Δm")
    # "which model should I train" follows the numbers
    advice = text.split("#### Which model should I train", 1)[1]
    assert "**Train MBMT-Net (ST backbones frozen)**" in advice
    # the claims grouped by verdict; nulls carry their MDE and the paper's effect
    grouped = text.split("#### What reproduced", 1)[1].split("####", 1)[0]
    reproduced = next(ln for ln in grouped.splitlines() if ln.startswith("- **Reproduced**"))
    assert "MBMT-Net (ST backbones frozen) > MT-Net (source → target) on Δm % ↑ (primary)" in reproduced
    nulls = next(ln for ln in grouped.splitlines() if ln.startswith("- **No effect detected"))
    assert re.search(r"UMMT-PS \(UMMT-D \+ pseudo seg\) > UMMT-D \(200 depth \+ 100 seg\) on "
                     r"Seg mIoU ↑ \(primary\) \(MDE \d+\.\d+, paper's effect", nulls)
    results = _bench("transfer_study").analyse(records, prereg)
    sentence = docs.readme_sentence(records, results)
    assert "MBMT-Net over MT-Net: reproduced" in sentence
    assert "pseudo labels on mIoU: no effect detected" in sentence
    assert "train MBMT-Net (ST backbones frozen)" in sentence and "docs/results.md#" in sentence
    assert "no stage reused from an earlier run" in text and "on a clean tree" in text
    # a diverged run is flagged (and stays in the means), none is flagged otherwise
    assert "Diverged runs" not in text
    broken = copy.deepcopy(records)
    broken[3]["rows"]["mtunet"]["metrics"]["depth"]["rmse"] = 50.0
    flagged = docs.render(broken, prereg)
    assert "Diverged runs" in flagged and "MT-UNet: seed 3." in flagged
    # before the study has run the section says so (no numbers)
    assert "has not been run yet" in docs.render(records[:1], prereg)
