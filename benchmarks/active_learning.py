"""Active-learning study: does choosing which frames to label beat labelling random ones?

On synthetic indoor scenes (``training/data/synth``) shaped like a robot recording - every
scene is seen ``--duplicates`` times with small sensor noise, as consecutive frames of one
corridor are - the loop of docs/robot.md runs per seed:

1. start from ``--initial`` frames with segmentation ground truth (random, per seed); every
   training frame has depth; train the student as the pipeline does today (depth-input
   teacher on the labelled frames -> pseudo labels on the rest -> RGB-only student; the
   stages of ``config/train/tiny.yaml`` at a small budget) and export its bundle;
2. per strategy (uncertainty, diversity, hybrid, random): ``select`` ``--budget`` more frames
   with the current bundle, ``label-export`` them to a CVAT task, "label" them from the
   ground truth (the labeller's CVAT export is written from the true masks, RGB colour PNGs
   as CVAT writes them), ``label-import`` the export, retrain, evaluate the bundle's mIoU on
   the validation frames; repeat for ``--rounds`` rounds.

Raw results (every round of every strategy and seed, with the command and the commit) go to
``benchmarks/results/active_learning.json``, written after each round; ``--doc`` renders the
mIoU table into docs/results.md between the active-learning markers, ``--check`` fails if the
table there is not what the raw results give::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/active_learning.py --seeds 0 1 2
    .venv/bin/python benchmarks/active_learning.py --doc      # (re)write the docs table
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import platform
import shutil
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared provenance
from provenance import git  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "active_learning.json"
DOC = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- active-learning:begin -->", "<!-- active-learning:end -->"
STRATEGIES = ("random", "uncertainty", "diversity", "hybrid")

log = logging.getLogger("active_learning")


# --------------------------------------------------------------------------- data
def make_pool(out: Path, seed: int, scenes: int, duplicates: int, val: int, size: list[int],
              initial: int) -> dict[int, np.ndarray]:
    """Write the working dataset (``initial`` train frames with segmentation, the rest
    without) and return the oracle: train index -> true segmentation."""
    from mbmt_ros.tasks import NYU13_CLASSES
    from training.data.synth.generate import frame_stamp
    from training.data.synth.render import render_frame
    from training.data.writer import open_dataset_writer

    rng = np.random.default_rng([seed, 7])
    n_train = scenes * duplicates
    labelled = set(rng.permutation(n_train)[:initial].tolist())
    oracle: dict[int, np.ndarray] = {}
    with open_dataset_writer(out, 13, list(NYU13_CLASSES), dataset="active-learning pool",
                             info={"seed": seed, "scenes": scenes, "duplicates": duplicates}
                             ) as writer:
        index = 0
        for scene in range(scenes):
            base = render_frame(seed, scene, *size).sample
            for _ in range(duplicates):
                noise = rng.integers(-6, 7, base.rgb.shape)
                rgb = np.clip(base.rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8)
                oracle[index] = base.segmentation.copy()
                labels = dict(base.provenance.labels)
                if index not in labelled:
                    labels.pop("segmentation")
                sample = base.replace(rgb=rgb, segmentation=base.segmentation
                                      if index in labelled else None,
                                      provenance=replace(base.provenance, labels=labels,
                                                         stamp_ns=frame_stamp(index)))
                writer.add(sample, "train", index)
                index += 1
        for v in range(val):
            sample = render_frame(seed, scenes + v, *size).sample
            writer.add(sample, "val", v)
    return oracle


def oracle_export(task: Path, out: Path, root: Path, oracle: dict[int, np.ndarray]) -> None:
    """The labeller: CVAT's export of ``task`` after painting every frame's true mask."""
    from PIL import Image

    from training.data.manifest import open_manifest
    from training.labeling.cvat import CLASS_DIR, LABELMAP, parse_labelmap
    from training.labeling.frames import frame_names

    manifest = open_manifest(root)
    names = frame_names(manifest)
    with zipfile.ZipFile(task) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        labelmap = parse_labelmap(src.read(LABELMAP).decode(), LABELMAP)
        colours = np.array([labelmap["background"], *(labelmap[n] for n in manifest.class_names)],
                           np.uint8)
        for item in src.namelist():
            data = src.read(item)
            if item.startswith(f"{CLASS_DIR}/"):
                seg = oracle[names[Path(item).stem].index]
                buf = io.BytesIO()
                Image.fromarray(colours[np.where(seg < 0, 0, seg + 1)]).save(buf, "PNG")
                data = buf.getvalue()
            if not item.startswith("JPEGImages/"):  # CVAT exports without images by default
                dst.writestr(item, data)


# --------------------------------------------------------------------------- training
def train_round(root: Path, run: Path, seed: int, args: argparse.Namespace) -> Path:
    """Teacher -> pseudo labels -> student with the tiny config's stages; the student bundle."""

    from training.config import parse_config, read_config
    from training.export import export_bundle
    from training.run_dir import RunDir
    from training.stages import run_pipeline

    tiny = read_config(ROOT / "config" / "train" / "tiny.yaml")
    stages = {s["name"]: s for s in tiny["stages"]}
    manifest = str(root / "manifest.json")
    raw = {
        "name": "active-learning", "seed": seed, "model": tiny["model"],
        "data": {"root": str(root)},
        "train": {**tiny["train"], "epochs": args.epochs, "num_threads": 1,
                  "log_every_n_steps": 50},
        "stages": [
            {**stages["teacher"], "manifest": manifest,
             "train": {"epochs": args.teacher_epochs, "lr": 0.01}},
            {**stages["pseudo"], "manifest": manifest, "tau": args.tau},
            {**stages["ummt-ps"], "name": "student"},
        ],
    }
    run_pipeline(parse_config(raw), RunDir(run))
    bundle = run / "bundle"
    if not bundle.exists():
        export_bundle(run / "student", bundle, input_size=tuple(args.size), exporter="torchscript",
                      fp16=False)
    return bundle


def evaluate(bundle: Path, root: Path) -> dict[str, float]:
    from training.stages.evaluate import evaluate_bundle

    metrics, _, _ = evaluate_bundle(bundle, root, "val", samples=0, backend="onnxruntime")
    seg = metrics.get("segmentation", metrics)
    return {"miou": float(seg["miou"]), "pixel_acc": float(seg["pixel_acc"])}


def label_round(root: Path, bundle: Path, strategy: str, seed: int, work: Path,
                oracle: dict[int, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """select -> label-export -> oracle labeller -> label-import, as a user runs them."""
    from mbmt_ros.runtime import open_predictor
    from training.data.layout import detect_layout, read_label, sample_path
    from training.labeling.apply import export_frames, import_labels
    from training.select.selection import select_frames

    with open_predictor(bundle, backend="onnxruntime", precision="fp32", device="cpu") as pred:
        sel = select_frames(root, pred, args.budget, strategy, seed=seed)
        export_frames(root, sel.frames, work / "task.zip",
                      predict=lambda rgb: pred.predict(rgb)["segmentation"])
    oracle_export(work / "task.zip", work / "export.zip", root, oracle)
    import_labels(work / "export.zip", root)
    layout = detect_layout(root)
    for f in sel.frames:  # the round trip must be lossless
        got = read_label(sample_path(layout, f.split, f.index, "segmentation"),
                         oracle[f.index].shape)
        if not np.array_equal(got, oracle[f.index]):
            raise SystemExit(f"label round trip changed frame {f}")
    return {"selected": [f.index for f in sel.frames],
            "scenes": sorted({f.index // args.duplicates for f in sel.frames}),
            "selected_uncertainty": float(np.mean(sel.uncertainty)),
            "pool_uncertainty": sel.mean_uncertainty}


# --------------------------------------------------------------------------- study
def _commit() -> str:
    sha = git("rev-parse", "HEAD")
    if sha == "unknown":
        return sha
    dirty = git("status", "--porcelain").strip()
    return sha + ("+dirty" if dirty and dirty != "unknown" else "")


def run_study(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from mbmt_ros.io import atomic_write_json

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {
        "command": " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/active_learning.py",
                             *argv]),
        "commit": _commit(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "settings": {k: v for k, v in vars(args).items()
                     if k not in ("doc", "check", "work", "results")},
        "rows": [], "complete": False,
    }
    t_all = time.monotonic()
    for seed in args.seeds:
        base = work / f"seed{seed}"
        oracle = make_pool(base / "data0", seed, args.scenes, args.duplicates, args.val,
                           args.size, args.initial)
        t0 = time.monotonic()
        bundle0 = train_round(base / "data0", base / "run0", seed, args)
        first = {"seed": seed, "round": 0, "labelled": args.initial,
                 **evaluate(bundle0, base / "data0"), "seconds": time.monotonic() - t0}
        for strategy in args.strategies:
            out["rows"].append({**first, "strategy": strategy})
        for strategy in args.strategies:
            root = base / strategy / "data"
            shutil.copytree(base / "data0", root)
            bundle = bundle0
            for rnd in range(1, args.rounds + 1):
                t0 = time.monotonic()
                step = base / strategy / f"round{rnd}"
                step.mkdir(parents=True)
                picked = label_round(root, bundle, strategy, seed * 1000 + rnd, step, oracle,
                                     args)
                bundle = train_round(root, step / "run", seed, args)
                row = {"seed": seed, "strategy": strategy, "round": rnd,
                       "labelled": args.initial + rnd * args.budget, **picked,
                       **evaluate(bundle, root), "seconds": time.monotonic() - t0}
                out["rows"].append(row)
                log.info("seed %d %s round %d: mIoU %.2f (%d distinct scenes of %d picks)",
                         seed, strategy, rnd, row["miou"], len(row["scenes"]), args.budget)
                out["elapsed_s"] = time.monotonic() - t_all
                atomic_write_json(args.results, out)
    out["complete"] = True
    out["elapsed_s"] = time.monotonic() - t_all
    atomic_write_json(args.results, out)
    return out


# --------------------------------------------------------------------------- docs table
def markdown(res: dict[str, Any]) -> str:
    """The docs table of a results file: mean ± std mIoU over seeds per strategy and round."""
    rows = res["rows"]
    s = res["settings"]
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})
    strategies = [x for x in STRATEGIES if any(r["strategy"] == x for r in rows)]
    lab = {r["round"]: r["labelled"] for r in rows}
    head = ("| strategy | " + " | ".join(f"round {k} ({lab[k]} labelled)" for k in rounds)
            + " | distinct scenes picked / round |")
    lines = [
        f"Generated by `benchmarks/active_learning.py --doc` from "
        f"`benchmarks/results/active_learning.json` (commit `{res['commit']}`, started "
        f"{res['started']}, {res.get('elapsed_s', 0) / 60:.0f} min"
        + ("" if res.get("complete") else ", **incomplete run**") + f"). Command: "
        f"`{res['command'].strip()}`.", "",
        f"Pool: {s['scenes']} scenes x {s['duplicates']} near-duplicate frames = "
        f"{s['scenes'] * s['duplicates']} training frames at {s['size'][0]}x{s['size'][1]}, "
        f"{s['val']} validation frames; {s['initial']} labelled at the start, "
        f"{s['budget']} more per round; student {s['epochs']} epochs, teacher "
        f"{s['teacher_epochs']}, tau {s['tau']}; seeds {seeds}. Validation mIoU (%) of the "
        "student bundle, mean ± std over seeds; Δ = mean paired difference to random "
        "(same seed, same round).", "",
        head, "|---|" + "---:|" * (len(rounds) + 1)]
    by = {(r["strategy"], r["round"], r["seed"]): r for r in rows}
    for strat in strategies:
        cells = []
        for k in rounds:
            vals = [by[(strat, k, sd)]["miou"] for sd in seeds if (strat, k, sd) in by]
            cell = f"{np.mean(vals):.2f} ± {np.std(vals):.2f}" if vals else "-"
            if strat != "random" and k > 0 and vals:
                diff = [by[(strat, k, sd)]["miou"] - by[("random", k, sd)]["miou"]
                        for sd in seeds if (strat, k, sd) in by and ("random", k, sd) in by]
                if diff:
                    cell += f" (Δ {np.mean(diff):+.2f})"
            if vals and len(vals) < len(seeds):
                cell += f" [{len(vals)} seeds]"
            cells.append(cell)
        picked = [len(r["scenes"]) for r in rows if r["strategy"] == strat and r["round"] > 0]
        cells.append(f"{np.mean(picked):.1f} of {s['budget']}" if picked else "-")
        lines.append(f"| {strat} | " + " | ".join(cells) + " |")
    lines += ["", verdict(by, strategies, seeds, rounds[-1])]
    return "\n".join(lines)


def verdict(by: dict, strategies: list[str], seeds: list[int], last: int) -> str:
    """One sentence on the last round: each strategy's paired difference to random, and
    whether it beat random on every seed."""
    parts = []
    for strat in (s for s in strategies if s != "random"):
        diff = [by[(strat, last, sd)]["miou"] - by[("random", last, sd)]["miou"]
                for sd in seeds if (strat, last, sd) in by and ("random", last, sd) in by]
        if diff:
            wins = sum(d > 0 for d in diff)
            parts.append(f"{strat} {np.mean(diff):+.2f} points (better on {wins} of "
                         f"{len(diff)} seeds)")
    return (f"After the last round (round {last}), vs random: " + "; ".join(parts) + ".")



def render_doc(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the markers {BEGIN} / {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--initial", type=int, default=6, help="labelled frames at the start")
    p.add_argument("--budget", type=int, default=6, help="frames labelled per round")
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--duplicates", type=int, default=3)
    p.add_argument("--val", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=[32, 64])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--work", default="/tmp/mbmt_active_learning")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--doc", action="store_true", help="write the table into docs/results.md")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if docs/results.md's table differs from the raw results")
    args = p.parse_args(argv)
    if args.doc or args.check:
        res = json.loads(args.results.read_text())
        text = DOC.read_text(encoding="utf-8")
        new = render_doc(text, markdown(res))
        if args.check:
            if new != text:
                print(f"{DOC}: the active-learning table is stale; run "
                      "benchmarks/active_learning.py --doc", file=sys.stderr)
                return 1
            return 0
        from mbmt_ros.io import atomic_write_text

        atomic_write_text(DOC, new)
        print(f"wrote the active-learning table into {DOC}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = run_study(args, argv)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
