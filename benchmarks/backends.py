"""Benchmark the inference backends on one bundle: latency (median, p99), throughput and peak
memory per available backend, at 288x384 and 480x640, batch 1.

Usage (from the repository root)::

    .venv/bin/python benchmarks/backends.py                 # paper MBMT config, writes docs
    .venv/bin/python benchmarks/backends.py --tiny --no-docs  # smoke run with a tiny model

The model is the paper's MBMT-Net (three EfficientNet-B2 backbones, concatenation fusion,
two-way FPN, EfficientPS heads) with random weights - latency does not depend on the weights.
Each backend is measured in its own subprocess (clean peak-memory figures, no thread pools
left over from another backend) on the same bundle and the same input frame; GPU variants
are also compared with the CPU FP32 outputs (segmentation agreement, depth / normal error).
The table is written between the markers of the "Inference backends" section of
``docs/benchmarks.md``; the raw figures go to ``benchmarks/results/backends.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- backends-table:begin -->", "<!-- backends-table:end -->"
SECTION = "## Inference backends"

#: The paper's MBMT-Net (IEEE Access 2022): 3x EfficientNet-B2, CAT fusion, 13 NYUv2 classes.
MBMT_PAPER = {"arch": "mbmt", "backbones": ["efficientnet_b2"] * 3, "fusion": "cat",
              "freeze_backbones": True, "num_classes": 13}
TINY = {"arch": "mbmt", "backbones": ["test_efficientnet"] * 2, "fpn_channels": 16,
        "head_channels": 8, "task_hidden_channels": 16, "num_classes": 13}


def variants(cuda: bool, ort_cuda: bool, tensorrt: bool) -> list[dict[str, Any]]:
    """The backend configurations to measure on this machine."""
    out = [
        {"label": "onnxruntime CPU fp32", "backend": "onnxruntime", "device": "cpu",
         "precision": "fp32", "options": {}},
        {"label": "torch CPU fp32 eager", "backend": "torch", "device": "cpu",
         "precision": "fp32", "options": {}},
    ]
    if cuda:
        out += [
            {"label": "torch CUDA fp32 eager", "backend": "torch", "device": "cuda",
             "precision": "fp32", "options": {"channels_last": False}},
            {"label": "torch CUDA fp16 channels-last", "backend": "torch", "device": "cuda",
             "precision": "fp16", "options": {}},
            {"label": "torch CUDA fp16 channels-last + CUDA graphs", "backend": "torch",
             "device": "cuda", "precision": "fp16", "options": {"cuda_graphs": True}},
        ]
    if ort_cuda:
        out.append({"label": "onnxruntime CUDA fp16", "backend": "onnxruntime",
                    "device": "cuda", "precision": "fp16", "options": {"ort_tensorrt": False}})
    if tensorrt:
        out.append({"label": "TensorRT fp16", "backend": "tensorrt", "device": "cuda",
                    "precision": "fp16", "options": {}})
    return out


# --------------------------------------------------------------------------- worker side
def _open(spec: dict[str, Any]) -> Any:
    from mbmt_ros.runtime import open_predictor

    options = dict(spec["options"])
    if spec["device"] == "cpu" and spec.get("threads"):
        options["num_threads"] = spec["threads"]
    return open_predictor(spec["bundle"], backend=spec["backend"], precision=spec["precision"],
                          device=spec["device"], **options)


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Open one variant alone (subprocess): open time, peak memory, parity with the CPU FP32
    reference."""
    image = np.load(spec["image"], allow_pickle=False)
    gpu_before = _gpu_used()
    t0 = time.perf_counter()
    pred = _open(spec)
    open_s = time.perf_counter() - t0
    for _ in range(3):
        out = pred.predict(image)
    result = {"open_s": round(open_s, 2), "backend_used": pred.backend, "device": pred.device,
              "precision": pred.precision, "peak_rss_mib": _peak_rss_mib()}
    if pred.device == "cuda":
        result["gpu_mem_mib"] = _gpu_peak(spec["backend"], gpu_before)
    result["parity"] = _parity(out, np.load(spec["reference"], allow_pickle=False))
    pred.close()
    return result


def timing(group: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Latency of several variants in one process (subprocess), iterations interleaved
    round-robin so that load changes on a shared machine hit every variant alike."""
    image = np.load(group["image"], allow_pickle=False)
    preds = {spec["label"]: _open(spec) for spec in group["specs"]}
    for _ in range(group["warmup"]):
        for pred in preds.values():
            pred.predict(image)
    labels = list(preds)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for i in range(group["iters"]):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            t = time.perf_counter()
            preds[label].predict(image)
            times[label].append((time.perf_counter() - t) * 1e3)
    for pred in preds.values():
        pred.close()
    return {label: _stats(ms) for label, ms in times.items()}


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited
    from the parent across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stats(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {"median_ms": float(np.median(arr)), "p99_ms": float(np.percentile(arr, 99)),
            "mean_ms": float(arr.mean()), "throughput_fps": float(1e3 / arr.mean()),
            "iters": len(ms)}


def _gpu_used() -> int | None:
    try:
        from mbmt_ros.runtime.cuda_device import check, cudart

        free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
        return int(total - free)
    except Exception:  # no GPU / cuda-python
        return None


def _gpu_peak(backend: str, before: int | None) -> float | None:
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_reserved() / 2**20
    after = _gpu_used()  # device-wide used memory delta (ORT / TensorRT own allocators)
    return None if after is None or before is None else (after - before) / 2**20


def _parity(out: dict[str, np.ndarray], ref: Any) -> dict[str, float]:
    report = {}
    if "segmentation" in out:
        report["seg_agreement"] = float(np.mean(out["segmentation"] == ref["segmentation"]))
    for task in ("depth", "normals"):
        if task in out:
            report[f"{task}_max_abs"] = float(np.abs(out[task] - ref[task]).max())
            report[f"{task}_mean_abs"] = float(np.abs(out[task] - ref[task]).mean())
    return report


# --------------------------------------------------------------------------- driver side
def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "ram_gib": round(mem, 1),
            "os": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": round(os.getloadavg()[0], 2)}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def export_bundles(cfg: dict[str, Any], sizes: list[tuple[int, int]], work: Path,
                   fp16: bool, reuse: bool = False) -> dict[tuple[int, int], Path]:
    import torch

    from mbmt_ros.models import build_model
    from training.export import export_model

    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).eval()
    bundles = {}
    for h, w in sizes:
        out = work / f"bundle_{h}x{w}"
        bundles[(h, w)] = out
        if reuse and (out / "meta.json").is_file():
            continue
        t = time.perf_counter()
        export_model(model, out, input_size=(h, w), exporter="torchscript", fp16=fp16,
                     overwrite=True, provenance={"data": "random weights (benchmark)"})
        print(f"exported {out} in {time.perf_counter() - t:.0f} s", flush=True)
        bundles[(h, w)] = out
    return bundles


def run_worker(mode: str, payload: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, f"--{mode}", json.dumps(payload)],
                          capture_output=True, text=True, cwd=REPO, timeout=3600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(results: list[dict[str, Any]], info: dict[str, Any], params: int) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        "`benchmarks/backends.py`: MBMT-Net (3x EfficientNet-B2, random weights, "
        f"{params / 1e6:.1f} M parameters), batch 1, end-to-end `Predictor.predict` on a frame "
        "at the bundle size (copy-in, graph incl. normalisation + argmax, copy-out).",
        "",
        f"Machine: {info['cpu']}, {info['cpu_count']} logical CPUs, {info['ram_gib']} GiB RAM, "
        f"{info.get('gpu', 'no GPU')}; {info['os']}; Python {info['python']}, torch "
        f"{info['torch']}, onnxruntime {info['onnxruntime']}; "
        f"1-min load average at start {info['load_avg_1min']}.",
        "",
        "| input | backend | median ms | p99 ms | frames/s | peak RSS MiB | GPU MiB | "
        "seg agreement vs CPU fp32 | depth max abs (m) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["result"]
        if "error" in m:
            lines.append(f"| {r['size']} | {r['label']} | failed: {m['error']} | | | | | | |")
            continue
        par = m.get("parity", {})
        gpu = m.get("gpu_mem_mib")
        lines.append(
            f"| {r['size']} | {r['label']} | {m['median_ms']:.1f} | {m['p99_ms']:.1f} | "
            f"{m['throughput_fps']:.1f} | {m['peak_rss_mib']:.0f} | "
            f"{'-' if gpu is None else f'{gpu:.0f}'} | "
            f"{par.get('seg_agreement', float('nan')) * 100:.2f} % | "
            f"{par.get('depth_max_abs', float('nan')):.2g} |")
    lines.append("")
    for size in dict.fromkeys(r["size"] for r in results):
        by = {(r["label"], r.get("threads", 0)): r["result"] for r in results if r["size"] == size}
        for threads in dict.fromkeys(r.get("threads", 0) for r in results):
            ort = next((v for (k, t), v in by.items()
                        if k.startswith("onnxruntime CPU") and t == threads), {})
            eager = next((v for (k, t), v in by.items()
                          if k.startswith("torch CPU") and t == threads), {})
            if "median_ms" in ort and "median_ms" in eager:
                what = f"{threads} thread(s)" if threads else "default threads"
                lines.append(f"- {size}, {what}: ONNX Runtime CPU is "
                             f"**{eager['median_ms'] / ort['median_ms']:.2f}x** as fast as "
                             f"PyTorch eager on the CPU (median latency ratio).")
        by = {r["label"]: r["result"] for r in results if r["size"] == size}
        gpu32 = by.get("torch CUDA fp32 eager", {})
        best = by.get("torch CUDA fp16 channels-last + CUDA graphs", {})
        if "median_ms" in gpu32 and "median_ms" in best:
            lines.append(f"- {size}: torch fp16 + channels-last + CUDA graphs is "
                         f"**{gpu32['median_ms'] / best['median_ms']:.2f}x** faster than torch "
                         f"fp32 eager on the GPU.")
    return "\n".join(lines) + "\n"


def write_doc(table: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else "# Benchmarks\n"
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    from mbmt_ros.io import atomic_write_text

    atomic_write_text(DOC, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", nargs="+", default=["288x384", "480x640"])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="CPU intra-op threads for the CPU backends; several values measure "
                             "each (default 0: each library's own default, the physical "
                             "cores)")
    parser.add_argument("--tiny", action="store_true", help="tiny model (smoke test)")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--work", help="folder for bundles (default: a temporary folder)")
    parser.add_argument("--reuse-bundles", action="store_true",
                        help="reuse bundles already exported into --work")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "backends.json"))
    args = parser.parse_args(argv)
    if args.probe or args.timing:
        job = probe if args.probe else timing
        print(json.dumps(job(json.loads(args.probe or args.timing))))
        return 0

    import torch

    from mbmt_ros.runtime import backend_availability
    from mbmt_ros.runtime.registry import BACKENDS

    info = machine()
    cuda = torch.cuda.is_available()
    avail = backend_availability("cuda")
    specs = variants(cuda, avail["onnxruntime"] is None, BACKENDS["tensorrt"].availability(
        "cuda") is None)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    cfg = TINY if args.tiny else MBMT_PAPER
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        bundles = export_bundles(cfg, sizes, work, fp16=cuda, reuse=args.reuse_bundles)
        from mbmt_ros.runtime import open_predictor

        results = []
        for (h, w), bundle in bundles.items():
            rng = np.random.default_rng(0)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            np.save(work / "image.npy", image)
            with open_predictor(bundle, backend="onnxruntime", precision="fp32",
                                device="cpu") as ref:
                np.savez(work / "reference.npz", **ref.predict(image))
            common = {"bundle": str(bundle), "image": str(work / "image.npy"),
                      "reference": str(work / "reference.npz")}
            for n, threads in enumerate(args.threads):
                group = []
                for spec in specs:
                    if spec["device"] != "cpu" and n > 0:
                        continue  # GPU variants once, with the first thread setting
                    label = spec["label"] + (f", {threads} thread{'s' * (threads > 1)}"
                                             if threads and spec["device"] == "cpu" else "")
                    group.append({**spec, **common, "label": label, "threads": threads})
                timed = run_worker("timing", {"image": common["image"], "specs": group,
                                              "iters": args.iters, "warmup": args.warmup})
                for job in group:
                    result = {**run_worker("probe", job),
                              **timed.get(job["label"], {"error": timed.get("error", "?")})}
                    print(f"{h}x{w} {job['label']}: {json.dumps(result)}", flush=True)
                    results.append({"size": f"{h}x{w}", "label": job["label"],
                                    "threads": threads if job["device"] == "cpu" else 0,
                                    "result": result})
        from mbmt_ros.models import build_model

        params = sum(p.numel() for p in build_model(cfg, load_weights=False).parameters())
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": info, "config": cfg,
                                           "iters": args.iters, "results": results},
                                          indent=2) + "\n")
    table = markdown(results, info, params)
    print(table)
    if not args.no_docs:
        write_doc(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
