"""The transfer study (issue 19): source-domain pretraining, every arm of the papers' claims on
the same target frames, at least 8 seeds, judged by the paired rule pre-registered in
``benchmarks/preregistration/transfer_study.yaml`` (``benchmarks/paired_stats.py``).

Usage (from the repository root, on a clean, committed tree)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer_study.py            # 8 seeds, 2 jobs
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer_study.py --budget tiny --seeds 0 \\
        --out /tmp/ts --work /tmp/ts_runs --allow-dirty                      # a 1-seed smoke run

It runs ``config/train/study_source.yaml`` once (the shifted source domain, pretraining only)
into ``<work>/source``, then ``config/train/study_target.yaml`` per seed into
``<work>/seed<N>`` with every ``init:`` pointed at that source run; ``--jobs`` seeds run side by
side, one CPU thread each. Each seed's raw metrics go to ``<out>/seed<N>.json`` with the
provenance the issue asks for: the commit, whether the tree was clean (a dirty tree is refused
unless ``--allow-dirty``, which is then recorded), the pre-registration's SHA-256 and commit,
and every stage's ``finished_at`` / ``run_id`` - all after this study's start, i.e. no stage was
reused from an earlier run. Re-running resumes (the pipelines skip finished stages) as long as
the work folder belongs to the same commit and budget; another commit's folder is refused.
``benchmarks/docs_tables.py`` renders docs/results.md's section from the raw JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared helpers
import paired_stats  # noqa: E402
from provenance import cpu_model, git  # noqa: E402

from mbmt_ros.runtime.bundle import sha256_file  # noqa: E402

PREREGISTRATION = REPO / "benchmarks" / "preregistration" / "transfer_study.yaml"
RESULTS = REPO / "benchmarks" / "results" / "transfer_study"
SOURCE_CONFIG = REPO / "config" / "train" / "study_source.yaml"
TARGET_CONFIG = REPO / "config" / "train" / "study_target.yaml"
#: target stages that start from the source run: stage -> source stage folder
INIT_FROM = {"pretrain-st": "pretrain-st", "assemble-src": "pretrain-st", "mt-src": "mt",
             "teacher": "teacher",
             "ummt": "mt", "ummt-d": "mt", "ummt-ps": "mt"}

ESTIMATE = REPO / "benchmarks" / "results" / "transfer_study_estimate.json"

#: ``--set`` overrides per budget: (source pipeline, target pipeline). ``study``: the configs
#: as committed (source 8 epochs on 1,000 frames; target 15 epochs, teacher 30, on 200 + 150
#: frames), one thread per pipeline - sized from a timed one-epoch run (``--estimate-from``,
#: ``transfer_study_estimate.json``) for about 2 hours on 2 cores with 2 jobs; docs/results.md
#: gives the estimate and, once run, the measured time. ``tiny``: the test suite's one-seed
#: rerun (tiny data, one epoch).
_TINY_DATA = ["data.synth.size=[32,48]", "train.epochs=1", "train.batch_size=8"]
BUDGETS: dict[str, tuple[list[str], list[str]]] = {
    "study": (["train.num_threads=1"], ["train.num_threads=1"]),
    "tiny": (["train.num_threads=1", *_TINY_DATA, "data.synth.count=24",
              "data.synth.val_fraction=0.25"],
             ["train.num_threads=1", *_TINY_DATA, "data.synth.count=40",
              "stages.split.depth=12", "stages.split.segmentation=6",
              "stages.split-balanced.depth=6", "stages.split-balanced.segmentation=6",
              "stages.teacher.train.epochs=1", "stages.pseudo.tau=0.5",
              "stages.evaluate.samples=1"]),
}


def preregistration(path: Path = PREREGISTRATION) -> dict[str, Any]:
    """The pre-registered design (comparisons, test, seeds)."""
    return yaml.safe_load(path.read_text())


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _dirty(out: Path, work: Path) -> list[str]:
    """Tracked changes and untracked files, except the study's own outputs."""
    lines = git("status", "--porcelain").splitlines()
    if lines == ["unknown"]:
        return ["git status failed"]
    skip = []
    for folder in (out, work):
        try:
            skip.append(str(folder.resolve().relative_to(REPO)) + "/")
        except ValueError:
            pass
    return [ln for ln in lines if not any(ln[3:].startswith(s) for s in skip)]


def _pipeline(config: Path, run: Path, overrides: list[str]) -> float:
    """Run one pipeline (resumable) into ``run``; its output goes to ``<run>.log``."""
    run.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "mbmt-train"), "pipeline", "--config", str(config),
           "--run-dir", str(run)]
    for item in overrides:
        cmd += ["--set", item]
    start = time.monotonic()
    log = run.parent / f"{run.name}.log"
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"transfer_study: pipeline {run} failed (exit {proc.returncode}); "
                         f"see {log} - re-run the same command to resume")
    return time.monotonic() - start


def _stages(run: Path) -> dict[str, dict[str, Any]]:
    """Every finished stage of a run folder: when it finished and its run id."""
    out = {}
    for done in sorted(run.glob("*/done.json")):
        info = json.loads(done.read_text())
        out[done.parent.name] = {"finished_at": info.get("finished_at"),
                                 "run_id": info.get("run_id"),
                                 "fingerprint": info.get("fingerprint")}
    return out


def claim_study(work: Path, budget: str, commit: str) -> dict[str, Any]:
    """The work folder's ``study.json``: created on the first run; a later run resumes only a
    folder of the same commit and budget (so nothing from another study is reused)."""
    from mbmt_ros.io import atomic_write_json

    path = work / "study.json"
    if path.is_file():
        info = json.loads(path.read_text())
        if info.get("git_commit") != commit or info.get("budget") != budget:
            raise SystemExit(
                f"transfer_study: {work} holds a study at commit {info.get('git_commit')} "
                f"(budget {info.get('budget')}), not {commit} ({budget}); its stages must not be "
                "reused - pass a new --work folder")
        return info
    work.mkdir(parents=True, exist_ok=True)
    info = {"git_commit": commit, "budget": budget, "started_at": _utc()}
    atomic_write_json(path, info)
    return info


def reused_stages(stages: dict[str, dict[str, Any]], started_at: str) -> list[str]:
    """Stages that finished before this study started (ISO-8601 UTC strings compare in order)."""
    return sorted(n for n, s in stages.items() if not s["finished_at"]
                  or s["finished_at"] < started_at)


def run_source(work: Path, budget: str) -> dict[str, Any]:
    wall = _pipeline(SOURCE_CONFIG, work / "source", BUDGETS[budget][0])
    return {"wall_s": round(wall, 1), "stages": _stages(work / "source")}


def run_seed(seed: int, budget: str, work: Path) -> dict[str, Any]:
    """The target pipeline of one seed; returns its raw record (metrics per stage)."""
    run = work / f"seed{seed}"
    inits = [f"stages.{stage}.init={work / 'source' / src}" for stage, src in INIT_FROM.items()]
    wall = _pipeline(TARGET_CONFIG, run, [f"seed={seed}", *BUDGETS[budget][1], *inits])
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    pseudo = run / "pseudo" / "pseudo_labels.json"
    return {"seed": seed, "rows": {stage: {"metrics": m} for stage, m in metrics.items()},
            "pseudo_labels": json.loads(pseudo.read_text()) if pseudo.is_file() else None,
            "wall_s": round(wall, 1), "stages": _stages(run)}


def provenance(argv: list[str], budget: str, allow_dirty: bool, dirty: list[str],
               study: dict[str, Any]) -> dict[str, Any]:
    return {"command": " ".join(["benchmarks/transfer_study.py", *argv]),
            "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(dirty),
            "dirty_files": dirty, "allow_dirty": allow_dirty,
            "preregistration_sha256": sha256_file(PREREGISTRATION),
            "preregistration_commit": git("log", "-1", "--format=%H", "--",
                                          str(PREREGISTRATION.relative_to(REPO))) or None,
            "study_started_at": study["started_at"], "budget": budget,
            "overrides": {"source": BUDGETS[budget][0], "target": BUDGETS[budget][1]},
            "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
                        "python": platform.python_version(),
                        "load_avg_1min": round(os.getloadavg()[0], 2)},
            "rule": paired_stats.RULE}


def _seconds(stamp: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def estimate(timed: Path, epochs: int, seeds: int, jobs: int,
             started: dict[str, str]) -> dict[str, Any]:
    """The study's wall time extrapolated from a timed run of both pipelines at ``epochs``
    epochs per training stage (``<timed>/source``, ``<timed>/seed0``; ``started``: when each
    pipeline started, ISO UTC). A stage's time is the gap between its ``finished_at`` and the
    previous stage's (the first one's includes data generation); a training stage's scales
    with the study's epochs / ``epochs`` (an over-estimate: fixed costs scale too)."""
    from training.config import load_config

    out: dict[str, Any] = {"timed_epochs": epochs, "seeds": seeds, "jobs": jobs,
                           "pipelines": {}}
    for name, config, folder in (("source", SOURCE_CONFIG, "source"),
                                 ("target", TARGET_CONFIG, "seed0")):
        cfg = load_config(config)
        stages = _stages(timed / folder)
        last = _seconds(started[name])
        rows = {}
        for spec in cfg.stages:
            end = _seconds(stages[spec.name]["finished_at"])
            measured = end - last
            last = end
            scale = int(spec.train["epochs"]) / epochs if spec.trains else 1.0
            rows[spec.name] = {"measured_s": measured, "study_s": round(measured * scale, 1)}
        out["pipelines"][name] = {"stages": rows,
                                  "study_s": round(sum(r["study_s"] for r in rows.values()), 1)}
    per_seed = out["pipelines"]["target"]["study_s"]
    rounds = -(-seeds // max(1, jobs))
    out["total_s"] = round(out["pipelines"]["source"]["study_s"] + rounds * per_seed, 1)
    out["machine"] = {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
                      "load_avg_1min": round(os.getloadavg()[0], 2)}
    out["started"] = started
    out["git_commit"] = git("rev-parse", "HEAD")
    return out


def time_one_epoch(folder: Path, seeds: int, jobs: int) -> dict[str, Any]:
    """Run the source and one seed's target pipeline at one epoch per training stage in
    ``folder`` (new), one thread each as the study does, and extrapolate (:func:`estimate`)."""
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"transfer_study: --estimate {folder} is not empty; give a new folder")
    one = ["train.epochs=1", "stages.teacher.train.epochs=1"]
    started = {"source": _utc()}
    _pipeline(SOURCE_CONFIG, folder / "source", [*BUDGETS["study"][0], "train.epochs=1"])
    started["target"] = _utc()
    inits = [f"stages.{stage}.init={folder / 'source' / src}" for stage, src in INIT_FROM.items()]
    _pipeline(TARGET_CONFIG, folder / "seed0", [*BUDGETS["study"][1], *one, *inits])
    return estimate(folder, 1, seeds, jobs, started)


# ----------------------------------------------------------------------- analysis (docs)

#: figures where lower is better
LOWER = {"depth.abs_err", "depth.rel_err", "depth.rmse", "depth.log_rmse", "normals.mean",
         "normals.median"}
BASELINE = "pretrain-st"


def figure(record: dict[str, Any], row: str, name: str) -> float:
    """One figure of one stage in one seed: ``delta_m`` (vs that seed's ST nets) or
    ``task.metric``."""
    from training.metrics import delta_m

    metrics = record["rows"][row]["metrics"]
    if name == "delta_m":
        base = record["rows"][BASELINE]["metrics"]
        return float(delta_m({t: v for t, v in metrics.items() if t in base}, base))
    task, metric = name.split(".")
    return float(metrics[task][metric])


def analyse(records: list[dict[str, Any]], prereg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pre-registered comparison over the seeds: the paired test and its verdict."""
    test = prereg["test"]
    out = []
    for comp in prereg["comparisons"]:
        a = [figure(r, comp["a"], comp["figure"]) for r in records]
        b = [figure(r, comp["b"], comp["figure"]) for r in records]
        res = paired_stats.paired_test(a, b, higher_is_better=comp["figure"] not in LOWER,
                                       alpha=test["alpha"], power=test["power"])
        out.append({**comp, "a_values": a, "b_values": b, **res.as_dict(),
                    "verdict": paired_stats.verdict(comp["claim"], res, comp.get("min_effect"))})
    return out


def load_records(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """The seeds' raw records of a study folder, in seed order."""
    return sorted((json.loads(p.read_text()) for p in folder.glob("seed*.json")),
                  key=lambda r: r["seed"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prereg = preregistration()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=prereg["seeds"])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default=prereg["budget"])
    parser.add_argument("--jobs", type=int, default=2, help="seeds run side by side")
    parser.add_argument("--out", type=Path, default=RESULTS, help="raw JSON folder")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "transfer_study",
                        help="run folders (resumable; one study per folder)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a tree with uncommitted changes (recorded in every JSON)")
    parser.add_argument("--estimate", type=Path, default=None, metavar="DIR",
                        help="only time both pipelines at one epoch per training stage in DIR "
                             "(a new folder) and write the study's budget estimate")
    args = parser.parse_args(argv)
    from mbmt_ros.io import atomic_write_json

    if args.estimate is not None:
        est = time_one_epoch(args.estimate, len(args.seeds), args.jobs)
        atomic_write_json(ESTIMATE, est)
        print(f"transfer_study: estimated {est['total_s'] / 60:.0f} min -> {ESTIMATE}")
        return 0

    dirty = _dirty(args.out, args.work)
    if dirty and not args.allow_dirty:
        raise SystemExit("transfer_study: the tree has uncommitted changes "
                         f"({', '.join(dirty[:5])}{' ...' if len(dirty) > 5 else ''}); commit "
                         "them first, or pass --allow-dirty (recorded in the raw JSON)")
    commit = git("rev-parse", "HEAD")
    study = claim_study(args.work, args.budget, commit)
    prov = provenance(argv, args.budget, args.allow_dirty, dirty, study)
    start = time.monotonic()
    source = run_source(args.work, args.budget)
    print(f"transfer_study: source done in {source['wall_s']:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)

    def one(seed: int) -> None:
        record = run_seed(seed, args.budget, args.work)
        reused = reused_stages({**record["stages"], **{f"source/{k}": v for k, v in
                                                       source["stages"].items()}},
                               study["started_at"])
        if reused:
            raise SystemExit(f"transfer_study: seed {seed}: stages {reused} finished before "
                             f"this study started ({study['started_at']}); use a new --work")
        record.update(source=source, reused_stages=reused, provenance=prov, seeds=args.seeds)
        atomic_write_json(args.out / f"seed{seed}.json", record)
        print(f"transfer_study: seed {seed} done in {record['wall_s']:.0f} s -> "
              f"{args.out / f'seed{seed}.json'}", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in [pool.submit(one, s) for s in args.seeds]:
            future.result()
    print(f"transfer_study: {len(args.seeds)} seeds in {time.monotonic() - start:.0f} s",
          flush=True)
    records = [r for r in load_records(args.out) if r["seed"] in args.seeds]
    if len(records) > 1:
        for v in analyse(records, prereg):
            print(f"{v['key']}: mean diff {v['mean_diff']:+.3f} (sd {v['sd_diff']:.3f}, "
                  f"p {v['p']:.3g}, MDE {v['mde']:.3f}) -> {v['verdict']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
