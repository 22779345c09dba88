"""Benchmark (not a test): MBMT-Net decoder training with frozen vs unfrozen backbones.

Measures, for each variant in its own child process (so peak memory is not shared): time per
training step and per epoch (NYUv2: 795 training frames), and peak memory - CUDA
``max_memory_allocated`` on GPU, the process's peak RSS on CPU. Random inputs and labels, no data
loading, the same loss / weighting / optimiser as the training stages. Writes the table into
the "Training" section of docs/benchmarks.md (other sections are left alone).

    .venv/bin/python benchmarks/frozen_vs_unfrozen.py                       # paper model
    .venv/bin/python benchmarks/frozen_vs_unfrozen.py --input-size 144 192 --batch 4 --steps 4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NYUV2_TRAIN = 795


def _measure(args: argparse.Namespace, frozen: bool) -> dict:
    import resource

    import torch
    import yaml

    from mbmt_ros.models import build_model
    from training.losses import compute_losses
    from training.weighting import make_weighting

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = yaml.safe_load(Path(args.config).read_text())
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
    step_s = sorted(times)[len(times) // 2]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"frozen": frozen, "step_s": step_s,
            "epoch_s": step_s * -(-NYUV2_TRAIN // n),
            "peak_mib": peak, "trainable": sum(p.numel() for p in params),
            "total": sum(p.numel() for p in model.parameters())}


def _section(args: argparse.Namespace, rows: list[dict]) -> str:
    import torch

    machine = (torch.cuda.get_device_name() if args.device == "cuda" else
               f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
               f"{args.threads or torch.get_num_threads()}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    peak_kind = "CUDA max allocated" if args.device == "cuda" else "process peak RSS"
    lines = ["## Training", "",
             f"`benchmarks/frozen_vs_unfrozen.py`: MBMT-Net of `{Path(args.config).name}` "
             f"(backbones randomly initialised), batch {args.batch} at {args.input_size[0]}x"
             f"{args.input_size[1]}, DWA, Adam; median of {args.steps} steps after {args.warmup} "
             f"warm-up; epoch = {NYUV2_TRAIN} NYUv2 training frames. Machine: {machine}; "
             f"1-minute load average {load:.1f} when measured (shared machine: times are upper "
             "bounds).", "",
             f"| backbones | trainable / total params | s / step | s / epoch | peak memory ({peak_kind}, MiB) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {'frozen' if r['frozen'] else 'unfrozen'} | "
                     f"{r['trainable'] / 1e6:.2f} M / {r['total'] / 1e6:.2f} M | "
                     f"{r['step_s']:.3f} | {r['epoch_s']:.0f} | {r['peak_mib']:.0f} |")
    f, u = rows
    lines += ["", f"Frozen backbones: {u['step_s'] / f['step_s']:.2f}x faster per step, "
              f"{u['peak_mib'] / max(f['peak_mib'], 1e-9):.2f}x less peak memory than unfrozen "
              "(no backbone gradients, activations or optimiser state).", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace (or append) the '## Training' section of docs/benchmarks.md."""
    from mbmt_ros.io import atomic_write_text

    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(r"^## Training\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(text + "\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + text + "\n"
    atomic_write_text(path, new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "config/train/nyuv2_mbmt.yaml"))
    parser.add_argument("--input-size", nargs=2, type=int, default=[288, 384])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--out", default=str(REPO / "docs/benchmarks.md"))
    parser.add_argument("--child", choices=["frozen", "unfrozen"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args, args.child == "frozen")))
        return 0
    rows = []
    for variant in ("frozen", "unfrozen"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", variant]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(variant, rows[-1], flush=True)
    text = _section(args, rows)
    print(text)
    write_section(Path(args.out), text)
    return 0


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
