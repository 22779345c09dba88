"""The seeded comparison study behind docs/results.md: every comparison of the two papers
(MBMT-Net pretrained+frozen vs cold start vs MT-Net vs ST; UMMT vs UMMT-PS; the affinity
verdict; MTI-Net / MT-UNet and the MTI teacher) over several training seeds, judged by a rule
fixed here before any result was looked at.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study.py                 # 3 seeds, cpu30 budget
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study.py --budget smoke --seeds 0 \\
        --out /tmp/study_smoke --work /tmp/study_smoke_runs               # a 1-seed smoke run

Per seed it runs two pipelines on the same synthetic scenes (data seed 0; the seed changes
every training seed and the imbalanced split):

- ``config/train/tiny.yaml`` (ST, MBMT-Net pre/frozen and cold, MT-Net, teacher, UMMT,
  UMMT-PS) plus the ``affinity`` stage on its split;
- ``config/train/tiny_architectures.yaml`` (MTI-Net, MTI-Net on MBMT, MT-UNet, the MTI teacher
  and its students) on the first pipeline's data folder.

The export stages are left out (the study compares metrics, not bundles). Each seed's raw
metrics go to ``<out>/seed<N>.json`` (with the command, git commit, budget, timings and the
verdict rule); ``benchmarks/docs_tables.py`` turns them into the tables of docs/results.md
(mean ± std over seeds and the verdicts). Re-running resumes: finished pipeline stages are
reused (the run folders are under ``--work``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared provenance
from provenance import git  # noqa: E402

from training.config import read_config  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "study_cpu30"

#: The budgets (``--set`` overrides applied to both pipelines). ``cpu30``: the budget of the
#: single-seed runs docs/results.md used to show (30 epochs, teacher 60), about 40 minutes
#: for three seeds on a quiet 2-core machine; ``cpu``: a third of that (10 epochs, teacher 20:
#: about 20 minutes), too short for the teacher to label anything at tau = 0.9; ``smoke``: a
#: minute or two per seed, to check the study runs end to end.
BUDGETS: dict[str, list[str]] = {
    "cpu30": ["train.epochs=30", "stages.teacher.train.epochs=60", "train.num_threads=1"],
    "cpu": ["train.epochs=10", "stages.teacher.train.epochs=20", "train.num_threads=1"],
    "smoke": ["train.epochs=1", "stages.teacher.train.epochs=2", "train.num_threads=1",
              "train.batch_size=4", "data.synth.count=16", "data.synth.size=[32,64]",
              "stages.split.depth=12", "stages.split.segmentation=4", "stages.pseudo.tau=0.5"],
}

#: The verdict rule, fixed before the study was first run. For a comparison "A vs B" of one
#: figure (higher = better after the sign of the metric is applied), with per-seed values a_i,
#: b_i: d = mean(a) - mean(b), pooled std s = sqrt((std(a)^2 + std(b)^2) / 2) (sample std,
#: ddof 1). "A better" when d > 2 s, "B better" when d < -2 s, else "not distinguishable".
#: The paper's claim is "reproduced" when the outcome is the claimed one, "contradicted" when
#: it is the opposite one, "not distinguishable" otherwise; a claim of "no effect" reads "no
#: effect detected (2 s = x)" when not distinguishable (issue 19: it was "reproduced", which
#: overstated what a null result at this power shows) and "contradicted" otherwise.
VERDICT_RULE = ("A vs B on one figure (sign-adjusted so that higher is better), per-seed values "
                "a_i, b_i: d = mean(a) - mean(b), s = sqrt((std(a)^2 + std(b)^2) / 2) (sample "
                "std); 'A better' if d > 2 s, 'B better' if d < -2 s, else 'not "
                "distinguishable'. A paper's claim is 'reproduced' when the outcome is the "
                "claimed one, 'contradicted' when it is the opposite, else 'not "
                "distinguishable'; a claim of no effect reads 'no effect detected (2 s = x)' when "
                "not distinguishable (never 'reproduced': the rule cannot show an absence) and "
                "'contradicted' otherwise.")
K_STD = 2.0


@dataclass(frozen=True)
class Comparison:
    """One claim: figure ``figure`` of row ``a`` vs row ``b`` (rows are ``pipeline/stage`` or
    ``affinity/<sub-run>``); ``claim`` is ``"A better"``, ``"B better"`` or ``"no effect"``."""

    key: str
    a: str
    b: str
    figure: str          # "delta_m" or "<task>.<metric>"
    claim: str
    source: str          # which paper makes the claim, and what it reports


#: Fixed before looking, with the papers' claims.
COMPARISONS: tuple[Comparison, ...] = (
    Comparison("mbmt_pre_vs_cold", "tiny/mbmt", "tiny/mbmt-cold", "delta_m", "A better",
               "MBMT-Net paper: pretrained frozen ST backbones beat training them from scratch"),
    Comparison("mbmt_pre_vs_mt", "tiny/mbmt", "tiny/mt", "delta_m", "A better",
               "MBMT-Net paper: MBMT-Net beats MT-Net"),
    Comparison("mbmt_pre_vs_st", "tiny/mbmt", "tiny/pretrain-st", "delta_m", "A better",
               "MBMT-Net paper: MBMT-Net beats the single-task nets"),
    Comparison("mt_vs_st", "tiny/mt", "tiny/pretrain-st", "delta_m", "B better",
               "MTI-Net paper: the shared-encoder MTL baseline is below ST (-1.71 %)"),
    Comparison("ummt_ps_vs_ummt", "tiny/ummt-ps", "tiny/ummt", "delta_m", "A better",
               "imbalanced-data paper: pseudo labels improve the student"),
    Comparison("ummt_ps_vs_ummt_miou", "tiny/ummt-ps", "tiny/ummt", "segmentation.miou",
               "A better", "imbalanced-data paper: UMMT-D 19.2 -> UMMT-PS 25.3 mIoU (500 depth + "
               "250 seg labels; this UMMT is trained on the imbalanced split, as UMMT-D)"),
    Comparison("ummt_ps_vs_ummt_rmse", "tiny/ummt-ps", "tiny/ummt", "depth.rmse", "A better",
               "imbalanced-data paper: depth RMSE UMMT-D 0.783 -> UMMT-PS 0.653"),
    Comparison("affinity_depth_helps_seg", "affinity/depth_input", "affinity/rgb",
               "segmentation.miou", "A better",
               "imbalanced-data paper (Condition 2): depth as input helps segmentation"),
    Comparison("affinity_seg_helps_depth", "affinity/segmentation_input", "affinity/rgb",
               "depth.rmse", "no effect",
               "imbalanced-data paper: segmentation as input does not help depth"),
    Comparison("mtinet_vs_mt", "arch/mtinet", "tiny/mt", "delta_m", "A better",
               "MTI-Net paper: MTI-Net with auxiliary tasks (the edge front end tested "
               "here) +10.91 % vs the MTL baseline -1.71 % (+6.40 % is without them)"),
    Comparison("mtinet_vs_st", "arch/mtinet", "arch/pretrain-st", "delta_m", "A better",
               "MTI-Net paper: MTI-Net beats the single-task nets"),
    Comparison("mtunet_vs_mt", "arch/mtunet", "tiny/mt", "delta_m", "A better",
               "MT-UNet paper: MT-UNet beats the shared-encoder baselines (MTAN, dense)"),
    Comparison("mti_ummt_ps_vs_ummt", "arch/ummt-ps", "arch/ummt", "delta_m", "A better",
               "imbalanced-data paper: pseudo labels of the MTI teacher improve the student"),
)

#: Metrics where lower is better (the sign of a comparison of a raw metric).
_LOWER = {"depth.abs_err", "depth.rel_err", "depth.rmse", "depth.log_rmse", "normals.mean",
          "normals.median"}


def provenance(argv: list[str], budget: str) -> dict[str, Any]:
    """Who produced the raw file: command, commit, budget, machine."""
    return {"command": " ".join(["benchmarks/study.py", *argv]),
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "budget": budget, "overrides": BUDGETS[budget],
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1min": round(os.getloadavg()[0], 2)},
            "verdict_rule": VERDICT_RULE}


def _config(name: str, extra_stages: list[dict[str, Any]], drop_kind: str = "export") -> dict:
    raw = read_config(REPO / "config" / "train" / f"{name}.yaml")
    raw["stages"] = [s for s in raw["stages"] if s.get("kind") != drop_kind] + extra_stages
    return raw


def _pipeline(config: dict[str, Any], run: Path, overrides: list[str]) -> float:
    run.mkdir(parents=True, exist_ok=True)
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(Path(sys.executable).parent / "mbmt-train"), "pipeline", "--config", str(path),
           "--run-dir", str(run)]
    for item in overrides:
        cmd += ["--set", item]
    start = time.monotonic()
    with open(run.parent / f"{run.name}.log", "a") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"study: pipeline {run} failed (exit {proc.returncode}); "
                         f"see {run.parent / (run.name + '.log')}")
    return time.monotonic() - start


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def run_seed(seed: int, budget: str, work: Path) -> dict[str, Any]:
    """Both pipelines for one seed; returns the seed's raw record (metrics per row)."""
    common = [f"seed={seed}", *BUDGETS[budget]]
    tiny = work / f"seed{seed}" / "tiny"
    arch = work / f"seed{seed}" / "arch"
    affinity = {"name": "affinity", "kind": "affinity", "manifest": "split"}
    t_tiny = _pipeline(_config("tiny", [affinity]), tiny, common)
    arch_over = [*common, f"data.root={tiny / 'data'}", "data.synth=null"]
    arch_over = [o for o in arch_over if not o.startswith("data.synth.")]
    t_arch = _pipeline(_config("tiny_architectures", []), arch, arch_over)
    rows: dict[str, Any] = {}
    for prefix, run in (("tiny", tiny), ("arch", arch)):
        for stage, metrics in _read(run / "evaluate" / "metrics.json").items():
            rows[f"{prefix}/{stage}"] = {"metrics": metrics}
            done = run / stage / "done.json"
            if done.is_file() and "weights" in _read(done):
                rows[f"{prefix}/{stage}"]["final_weights"] = _read(done)["weights"]
    aff = _read(tiny / "affinity" / "affinity.json")
    for sub, metrics in aff["metrics"].items():
        rows[f"affinity/{sub}"] = {"metrics": metrics}
    pseudo = {}
    for prefix, run in (("tiny", tiny), ("arch", arch)):
        info = run / "pseudo" / "pseudo_labels.json"
        if info.is_file():
            pseudo[prefix] = _read(info)
    return {"seed": seed, "rows": rows, "affinity_report": {k: v for k, v in aff.items()
                                                          if k != "metrics"},
            "pseudo_labels": pseudo, "wall_s": {"tiny": round(t_tiny, 1),
                                                 "arch": round(t_arch, 1)}}


# ----------------------------------------------------------------------- aggregation (docs)

def delta_m(row: dict[str, Any], baseline: dict[str, Any]) -> float:
    """Delta_m (%) of a row's metrics vs the ST metrics (training.metrics.delta_m)."""
    from training.metrics import delta_m as _delta_m

    metrics = {t: v for t, v in row["metrics"].items() if t in baseline["metrics"]}
    return float(_delta_m(metrics, baseline["metrics"]))


BASELINE = {"tiny": "tiny/pretrain-st", "arch": "arch/pretrain-st",
            "affinity": "tiny/pretrain-st"}


def figure(record: dict[str, Any], row: str, name: str) -> float:
    """One figure of one row in one seed's record: ``delta_m`` or ``task.metric``."""
    if name == "delta_m":
        return delta_m(record["rows"][row], record["rows"][BASELINE[row.split("/")[0]]])
    task, metric = name.split(".")
    return float(record["rows"][row]["metrics"][task][metric])


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, std


def judge(comp: Comparison, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply :data:`VERDICT_RULE` to one comparison over the seeds' records."""
    sign = -1.0 if comp.figure in _LOWER else 1.0
    a = [figure(r, comp.a, comp.figure) for r in records]
    b = [figure(r, comp.b, comp.figure) for r in records]
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    d = sign * (ma - mb)
    pooled = math.sqrt((sa * sa + sb * sb) / 2) if len(records) > 1 else float("nan")
    if not math.isfinite(pooled):
        outcome = "not distinguishable"
    elif d > K_STD * pooled:
        outcome = "A better"
    elif d < -K_STD * pooled:
        outcome = "B better"
    else:
        outcome = "not distinguishable"
    if comp.claim == "no effect":
        verdict = (f"no effect detected (2 s = {K_STD * pooled:.3g})"
                   if outcome == "not distinguishable" else "contradicted")
    elif outcome == comp.claim:
        verdict = "reproduced"
    elif outcome == "not distinguishable":
        verdict = "not distinguishable"
    else:
        verdict = "contradicted"
    return {"key": comp.key, "a": comp.a, "b": comp.b, "figure": comp.figure,
            "claim": comp.claim, "source": comp.source, "a_values": a, "b_values": b,
            "a_mean": ma, "a_std": sa, "b_mean": mb, "b_std": sb, "difference": d,
            "pooled_std": pooled, "outcome": outcome, "verdict": verdict}


#: prediction grids of the first seed copied into docs/results/ (stage -> file name)
FIGURES = {"tiny/mbmt": "tiny_mbmt_val.png", "tiny/mt": "tiny_mt_val.png",
           "tiny/ummt": "tiny_ummt_val.png", "tiny/ummt-ps": "tiny_ummt-ps_val.png",
           "arch/mtinet": "tiny_architectures_mtinet_val.png",
           "arch/mtunet": "tiny_architectures_mtunet_val.png",
           "arch/ummt-ps": "tiny_architectures_ummt-ps_val.png"}


def copy_figures(work: Path, seed: int, docs: Path = REPO / "docs" / "results") -> list[Path]:
    """Copy the evaluate stage's validation grids of ``seed``'s runs into the docs folder."""
    import shutil

    copied = []
    for row, name in FIGURES.items():
        prefix, stage = row.split("/")
        grid = work / f"seed{seed}" / prefix / stage / "plots" / "val.png"
        if grid.is_file():
            shutil.copyfile(grid, docs / name)
            copied.append(docs / name)
    return copied


def load_records(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """The seeds' raw records of a study folder, in seed order."""
    return sorted((_read(p) for p in folder.glob("seed*.json")), key=lambda r: r["seed"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu30")
    parser.add_argument("--out", type=Path, default=None,
                        help="raw JSON folder (default benchmarks/results/study_<budget>)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "study",
                        help="run folders (resumable)")
    parser.add_argument("--figures-only", action="store_true",
                        help="copy the first seed's prediction grids into docs/results/ "
                             "(nothing else; do it for the study docs/results.md shows)")
    args = parser.parse_args(argv)
    if args.figures_only:
        for path in copy_figures(args.work / args.budget, args.seeds[0]):
            print(f"study: copied {path}")
        return 0
    from mbmt_ros.io import atomic_write_json

    args.out = args.out or RESULTS.parent / f"study_{args.budget}"
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance(argv, args.budget)
    for seed in args.seeds:
        start = time.monotonic()
        record = run_seed(seed, args.budget, args.work / args.budget)
        record["provenance"] = prov
        record["seeds"] = args.seeds
        atomic_write_json(args.out / f"seed{seed}.json", record)
        print(f"study: seed {seed} done in {time.monotonic() - start:.0f} s -> "
              f"{args.out / f'seed{seed}.json'}", flush=True)
    records = [r for r in load_records(args.out) if r["seed"] in args.seeds]
    for comp in COMPARISONS:
        v = judge(comp, records)
        print(f"{comp.key}: {v['a_mean']:.3f}±{v['a_std']:.3f} vs {v['b_mean']:.3f}±"
              f"{v['b_std']:.3f} -> {v['outcome']} ({v['verdict']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
