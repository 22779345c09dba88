"""Data loading throughput vs the tiny model's CPU training step (NYUv2 layout, 288x384).

Loading must not starve training: this measures the samples/s a DataLoader with the
project's default worker count (``training.data.default_num_workers``) delivers from a
dataset in the NYUv2 layout at 288x384 - written with MTAN's dtypes (float64 images in
[0, 1], float labels, depth (H, W, 1)) and with the compact dtypes ``mbmt-train synth``
writes (uint8 images, int16 labels) - and the samples/s of a training step (forward,
backward, Adam) of the tiny model (``config/train/model_tiny.yaml``) on the CPU::

    .venv/bin/python benchmarks/data_loader.py     # -> benchmarks/results/data_loader.json
    .venv/bin/python benchmarks/docs_tables.py     # -> the "Data loading" table of docs/benchmarks.md

The raw figures (with the command and commit) go to ``--json``; :func:`render` turns them into
the table that ``benchmarks/docs_tables.py`` writes between the ``generated:data-loading``
markers of docs/benchmarks.md.
The frames are synthetic (``training.data.synth``); file sizes and dtypes are those of NYUv2.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared provenance
from provenance import git  # noqa: E402

sys.path.insert(0, str(ROOT))

SECTION = "## Data loading"


def write_dataset(root: Path, count: int, size: tuple[int, int], mtan: bool) -> None:
    """``count`` synthetic frames in the NYUv2 layout, MTAN dtypes or compact dtypes."""
    from training.data.synth import render_frame, write_synth_dataset

    if not mtan:
        write_synth_dataset(root, count, *size, seed=0, val_fraction=0.0, bag=False)
        return
    for i in range(count):
        s = render_frame(0, i, *size).sample
        arrays = {"image": s.rgb.astype(np.float64) / 255.0,
                  "label": s.segmentation.astype(np.float64),
                  "depth": s.depth.astype(np.float64)[..., None],
                  "normal": s.normals.astype(np.float64)}
        for folder, arr in arrays.items():
            (root / "train" / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / "train" / folder / f"{i}.npy", arr)


def loader_rate(root: Path, batch_size: int, epochs: int, workers: int) -> float:
    """Samples/s over ``epochs`` passes (training transform: random flip), after warm-up."""
    from training.data import MultiTaskDataset, default_transform, make_loader

    ds = MultiTaskDataset(root, "train", transform=default_transform(True))
    loader = make_loader(ds, batch_size, shuffle=True, num_workers=workers)
    it = iter(loader)
    next(it)  # warm-up: worker start
    n, start = 0, time.perf_counter()
    for batch in it:
        n += batch["image"].shape[0]
    for _ in range(epochs - 1):
        for batch in loader:
            n += batch["image"].shape[0]
    return n / (time.perf_counter() - start)


def train_rate(size: tuple[int, int], batch_size: int, steps: int) -> float:
    """Samples/s of forward + backward + Adam step of the tiny model on the CPU."""
    import torch

    from mbmt_ros.models import build_model
    from training.config import read_config

    cfg = read_config(ROOT / "config" / "train" / "model_tiny.yaml")["model"]
    torch.manual_seed(0)
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.randn(batch_size, 3, *size)
    seg = torch.randint(0, 13, (batch_size, *size))
    depth = torch.rand(batch_size, 1, *size) + 0.5

    def step() -> None:
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out["segmentation"], seg) \
            + (out["depth"] - depth).abs().mean() + (1 - out["normals"][:, 2]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def render(raw: dict) -> str:
    """The "Data loading" table (and its setup line) from the raw JSON of :func:`main`."""
    m, st = raw["machine"], raw["settings"]
    rows, train = raw["rows"], raw["train_samples_per_s"]
    lines = [f"`{raw['command']}` (commit `{raw['git_commit'][:12]}`, raw: "
             f"`benchmarks/results/data_loader.json`) on {m['cpu']}, {m['cpu_count']} CPU cores, "
             f"{st['count']} frames at {st['size'][0]}x{st['size'][1]}, batch {st['batch_size']}, "
             f"default worker count = {st['workers']} (`training.data.default_num_workers()`), "
             f"training transform (random flip); 1-minute load average {m['load_avg_1min']:.1f} "
             "when measured (other work on the machine lowers both figures).", "",
             "| what | samples/s | vs training step |", "|---|---:|---:|"]
    for name, rate in rows:
        lines.append(f"| loader, {name} | {rate:.1f} | {rate / train:.1f}x |")
    lines.append(f"| tiny model training step (CPU, `model_tiny.yaml`) | {train:.1f} | 1.0x |")
    verdict = "faster" if min(r for _, r in rows) > train else "SLOWER"
    lines += ["", f"Loading is {verdict} than the tiny model trains on the same CPU "
              "(loader workers and the training step compete for the same cores when run "
              "together; figures are measured separately)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=48, help="frames (default 48)")
    parser.add_argument("--size", type=int, nargs=2, default=(288, 384))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="loader passes (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers (default: the project default)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "data_loader.json", help="raw results file")
    argv = sys.argv[1:]
    args = parser.parse_args(argv)

    from training.data import default_num_workers

    workers = default_num_workers() if args.workers is None else args.workers
    size = tuple(args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, mtan in (("MTAN dtypes (float64 image)", True),
                           ("compact dtypes (uint8 image, synth)", False)):
            root = Path(tmp) / ("mtan" if mtan else "compact")
            write_dataset(root, args.count, size, mtan)
            rate = loader_rate(root, args.batch_size, args.epochs, workers)
            rows.append([name, rate])
            print(f"loader {name}: {rate:.1f} samples/s ({workers} workers)", flush=True)
    train = train_rate(size, args.batch_size, args.steps)
    print(f"tiny model training step: {train:.1f} samples/s", flush=True)
    from mbmt_ros.io import atomic_write_json

    raw = {"command": " ".join(["benchmarks/data_loader.py", *argv]),
           "git_commit": git("rev-parse", "HEAD"),
           "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
           "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]},
           "settings": {"count": args.count, "size": list(size), "batch_size": args.batch_size,
                        "epochs": args.epochs, "steps": args.steps, "workers": workers},
           "rows": rows, "train_samples_per_s": train}
    atomic_write_json(args.json, raw)
    print(render(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
