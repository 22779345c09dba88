"""Benchmark (not a test): MBMT-Net decoder training with frozen vs unfrozen backbones.

Measures, for each variant in its own child process (so peak memory is not shared): time per
training step and per epoch (NYUv2: 795 training frames), and peak memory - CUDA
``max_memory_allocated`` on GPU, the process's peak RSS on CPU. Random inputs and labels, no data
loading, the same loss / weighting / optimiser as the training stages. The raw figures (with
the settings, machine, commit and command) go to ``--json``; :func:`render` turns them into the
table ``benchmarks/docs_tables.py`` writes between the ``generated:training-frozen`` markers of
docs/benchmarks.md (this script rewrites that block too, unless ``--no-docs``)::

    .venv/bin/python benchmarks/frozen_vs_unfrozen.py                       # paper size
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/frozen_vs_unfrozen.py \\
        --input-size 144 192 --batch 4 --steps 3 --threads 1               # a small CPU run
    .venv/bin/python benchmarks/docs_tables.py --check                     # docs vs the JSON
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared provenance
from provenance import git  # noqa: E402

RAW = REPO / "benchmarks" / "results" / "frozen_vs_unfrozen.json"
DOC = REPO / "docs" / "benchmarks.md"
MARKER = "training-frozen"  # benchmarks/docs_tables.py GENERATORS key
NYUV2_TRAIN = 795
#: The paper's training input size and batch (IEEE Access 2022, Table 4).
PAPER_SIZE, PAPER_BATCH = [288, 384], 8


def _measure(args: argparse.Namespace, frozen: bool) -> dict:
    import resource

    import torch

    from mbmt_ros.models import build_model
    from training.config import read_config
    from training.losses import compute_losses
    from training.weighting import make_weighting

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = read_config(args.config)
    cfg = dict(raw["model"], backbone_checkpoints=None, freeze_backbones=frozen)
    device = torch.device(args.device)
    model = build_model(cfg).to(device).train()
    weighting = make_weighting("dwa", model.tasks, temperature=2.0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)
    h, w = args.input_size
    n = args.batch
    batch = {"image": torch.randn(n, 3, h, w, device=device),
             "segmentation": torch.randint(0, model.num_classes, (n, h, w), device=device),
             "depth": torch.rand(n, 1, h, w, device=device) + 0.5,
             "normals": torch.nn.functional.normalize(torch.randn(n, 3, h, w, device=device), dim=1)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = compute_losses(model(batch["image"]), batch, model.tasks)
        weighting(losses).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    cuda = device.type == "cuda"
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"variant": "frozen" if frozen else "unfrozen", "frozen": frozen,
            "step_times_s": times, "step_s": statistics.median(times),
            "epoch_s": statistics.median(times) * -(-NYUV2_TRAIN // n),
            "peak_mib": peak, "peak_kind": "CUDA max allocated" if cuda else "process peak RSS",
            "trainable": sum(p.numel() for p in params),
            "total": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name() if cuda else "cpu"}


def render(raw: dict) -> str:
    """The "Training" table, its setup line and the frozen/unfrozen ratios, from the raw JSON."""
    st, m = raw["settings"], raw["machine"]
    rows = {r["variant"]: r for r in raw["rows"]}
    f, u = rows["frozen"], rows["unfrozen"]
    h, w = st["input_size"]
    machine = (f"{f['device_name']}" if st["device"] == "cuda" else
               f"{m['arch']}, {m['cpu_count']} CPU cores, torch threads {f['torch_threads']}")
    lines = [f"`{raw['command']}` (commit `{raw['git_commit'][:12]}`"
             + (", uncommitted changes" if raw.get("git_dirty") else "")
             + f", {raw['date_utc']}, torch {raw['torch']}, raw: "
             "`benchmarks/results/frozen_vs_unfrozen.json`): MBMT-Net of "
             f"`{Path(st['config']).name}` (backbones randomly initialised), batch {st['batch']} "
             f"at {h}x{w}, DWA, Adam; median of {st['steps']} steps after {st['warmup']} warm-up; "
             f"epoch = {st['nyuv2_train_frames']} NYUv2 training frames. Machine: {machine}; "
             f"1-minute load average {m['load_avg_1min_start']:.1f} at the start, "
             f"{m['load_avg_1min_end']:.1f} at the end (shared machine: times are upper bounds).",
             "",
             f"| backbones | trainable / total params | s / step | s / epoch | "
             f"peak memory ({f['peak_kind']}, MiB) |",
             "|---|---:|---:|---:|---:|"]
    for r in (f, u):
        lines.append(f"| {r['variant']} | {r['trainable'] / 1e6:.2f} M / {r['total'] / 1e6:.2f} M | "
                     f"{r['step_s']:.3f} | {r['epoch_s']:.0f} | {r['peak_mib']:.0f} |")
    lines += ["", f"Frozen backbones: {u['step_s'] / f['step_s']:.2f}x faster per step (ratio of "
              f"the medians), {u['peak_mib'] / max(f['peak_mib'], 1e-9):.2f}x less peak memory "
              "than unfrozen (no backbone gradients, activations or optimiser state)."]
    if [h, w] != PAPER_SIZE or st["batch"] != PAPER_BATCH:
        lines += ["", f"These raw results cover {h}x{w}, batch {st['batch']} only, not the paper's "
                  f"{PAPER_SIZE[0]}x{PAPER_SIZE[1]}, batch {PAPER_BATCH}; for that size run "
                  "`.venv/bin/python benchmarks/frozen_vs_unfrozen.py` (its defaults; "
                  "`--input-size H W`, `--batch`, `--steps`, `--warmup`, `--threads`, `--device` "
                  "change them)."]
    return "\n".join(lines) + "\n"


def write_doc(raw: dict, doc: Path) -> None:
    """Re-render this script's generated block of ``doc`` (the rest of the page is kept)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from docs_tables import replace_block

    from mbmt_ros.io import atomic_write_text

    atomic_write_text(doc, replace_block(doc.read_text(encoding="utf-8"), MARKER, render(raw),
                                         doc.name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "config/train/nyuv2_mbmt.yaml"))
    parser.add_argument("--input-size", nargs=2, type=int, default=list(PAPER_SIZE))
    parser.add_argument("--batch", type=int, default=PAPER_BATCH)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--json", type=Path, default=RAW, help="raw results file")
    parser.add_argument("--out", type=Path, default=DOC,
                        help="page whose generated:training-frozen block is rewritten")
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    parser.add_argument("--child", choices=["frozen", "unfrozen"], help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args, args.child == "frozen")))
        return 0
    load_start = os.getloadavg()[0]
    rows = []
    for variant in ("frozen", "unfrozen"):
        cmd = [sys.executable, __file__, *argv, "--child", variant]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(variant, rows[-1], flush=True)
    omp = os.environ.get("OMP_NUM_THREADS")
    raw = {"command": (f"OMP_NUM_THREADS={omp} " if omp else "") + " ".join(
               [".venv/bin/python benchmarks/frozen_vs_unfrozen.py", *argv]),
           "git_commit": git("rev-parse", "HEAD"),
           "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
           "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "torch": rows[0]["torch"], "python": platform.python_version(),
           "machine": {"arch": platform.machine(), "cpu": platform.processor() or platform.machine(),
                       "cpu_count": os.cpu_count(), "os": platform.platform(),
                       "load_avg_1min_start": load_start,
                       "load_avg_1min_end": os.getloadavg()[0]},
           "settings": {"config": os.path.relpath(args.config, REPO),
                        "input_size": list(args.input_size), "batch": args.batch,
                        "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                        "device": args.device, "omp_num_threads": omp,
                        "nyuv2_train_frames": NYUV2_TRAIN},
           "rows": rows}
    from mbmt_ros.io import atomic_write_json

    atomic_write_json(args.json, raw)
    print(render(raw))
    if args.no_docs:
        return 0
    if args.json.resolve() != RAW:
        print(f"docs not touched: {args.json} is not the committed {RAW.relative_to(REPO)}")
        return 0
    write_doc(raw, args.out)
    return 0


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
