"""Parameter and FLOP (multiply-accumulate) figures of the papers' networks as we build them,
next to the figures the papers publish - the raw file behind the tables of docs/models.md.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/model_sizes.py   # -> benchmarks/results/model_sizes.json
    .venv/bin/python benchmarks/docs_tables.py                     # -> the tables in docs/models.md

Every model is built from a shipped config's ``model:`` section (with the changes listed per
row) with random weights and measured by ``mbmt_ros.models.model_summary`` (one zero image;
GMACs count convolutions and matrix products only, see docs/models.md "FLOPs"). The papers'
figures are constants below, each with its table.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from training.config import read_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared provenance
from provenance import git  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "model_sizes.json"


def _shipped(name: str) -> dict[str, Any]:
    model = read_config(REPO / "config" / "train" / f"{name}.yaml")["model"]
    return {k: v for k, v in model.items() if k not in ("pretrained", "backbone_checkpoints")}


def _mbmt(**changes: Any) -> dict[str, Any]:
    return {**_shipped("nyuv2_mbmt"), **changes}


_MTI_PAIR = {"arch": "mtinet", "hrnet_branches": True, "neck": "none", "task_channels": None,
             "aux_tasks": [], "fpm": True, "tasks": ["segmentation", "depth"], "num_classes": 40,
             "head_channels": 128}

#: (group, key, label, config, input size, paper figures). MBMT-Net paper: Table 3 (288 x 384);
#: MTI-Net paper: Table 7a (NYUD-v2, HRNet-18; relative to 2 single-task nets of 8.0 M /
#: 22.0 GFLOPs in total: MTI-Net +57 % / -13 %; the input size is not stated).
MODELS: list[tuple[str, str, str, dict[str, Any], list[int], dict[str, Any]]] = [
    ("mbmt", "st_ss", "ST-SS (b2)",
     {"arch": "st", "backbone": "efficientnet_b2", "tasks": ["segmentation"], "num_classes": 13},
     [288, 384], {"trainable_m": "10", "total_m": "10", "gmacs": 3.251}),
    ("mbmt", "st_de", "ST-DE (b2)",
     {"arch": "st", "backbone": "efficientnet_b2", "tasks": ["depth"], "num_classes": 13},
     [288, 384], {"trainable_m": "11.2", "total_m": "11.2", "gmacs": 11.355}),
    ("mbmt", "st_snp", "ST-SNP (b2)",
     {"arch": "st", "backbone": "efficientnet_b2", "tasks": ["normals"], "num_classes": 13},
     [288, 384], {"trainable_m": "11.2", "total_m": "11.2", "gmacs": 11.36}),
    ("mbmt", "mt_b5", "MT-Net (b5)",
     {"arch": "mt", "backbone": "efficientnet_b5", "num_classes": 13},
     [288, 384], {"trainable_m": "32.6", "total_m": "32.6", "gmacs": 25.144}),
    ("mbmt", "mbmt_cat", "MBMT-Net-CAT (3x b2, frozen)", _mbmt(),
     [288, 384], {"trainable_m": "8.7 (8.72 in the text)", "total_m": "32 (32.06 in the text)",
                  "gmacs": 24.677}),
    ("mbmt", "mbmt_add", "MBMT-Net-ADD / -MUL", _mbmt(fusion="add"),
     [288, 384], {"trainable_m": "7.1", "total_m": "30.4", "gmacs": 24.213}),
    ("mtinet", "backbone_small_v2", "HRNet-W18-small-v2 branches (the paper's backbone)",
     None, [480, 640], {"total_m": "~4 per single-task net (8.0 for the two)"}),
    ("mtinet", "backbone_w18", "HRNet-W18 branches (what the configs used before)",
     None, [480, 640], {}),
    ("mtinet", "mtinet_small_v2", "MTI-Net, seg + depth, HRNet-W18-small-v2, FPM",
     {**_MTI_PAIR, "backbones": ["hrnet_w18_small_v2"]}, [480, 640],
     {"total_m": "12.56 (8.0 + 57 %)", "gmacs": 19.14, "gmacs_note": "22.0 - 13 %"}),
    ("mtinet", "mtinet_w18", "MTI-Net, seg + depth, HRNet-W18, FPM",
     {**_MTI_PAIR, "backbones": ["hrnet_w18"]}, [480, 640], {}),
    ("mtinet", "nyuv2_mtinet", "`nyuv2_mtinet` as shipped (3 tasks + edges, 13 classes)",
     _shipped("nyuv2_mtinet"), [288, 384], {}),
    ("mtinet", "nyuv2_mti_teacher", "`nyuv2_imbalanced_mti_teacher` as shipped (2 branches)",
     _shipped("nyuv2_imbalanced_mti_teacher"), [288, 384], {}),
]


def _backbone(name: str) -> dict[str, Any]:
    from mbmt_ros.models.mtinet import create_mti_backbone
    from mbmt_ros.models.summary import count_parameters

    body = create_mti_backbone(name)
    return {"params_total": count_parameters(body), "params_trainable": count_parameters(body),
            "channels": list(body.channels)}


def measure(config: dict[str, Any] | None, key: str, size: list[int]) -> dict[str, Any]:
    from mbmt_ros.models import build_model, model_summary

    if config is None:
        return _backbone("hrnet_w18_small_v2" if key.endswith("small_v2") else "hrnet_w18")
    summary = model_summary(build_model(config, load_weights=False), size)
    return {k: summary[k] for k in ("params_total", "params_trainable", "gflops",
                                    "params_by_part")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import timm
    import torch

    from mbmt_ros.io import atomic_write_json

    rows = []
    for group, key, label, config, size, paper in MODELS:
        start = time.monotonic()
        ours = measure(config, key, size)
        rows.append({"group": group, "key": key, "label": label, "config": config,
                     "input_size": size, "ours": ours, "paper": paper})
        print(f"{key}: {ours.get('params_total', 0) / 1e6:.3f} M, "
              f"{ours.get('gflops', float('nan')):.3f} GMACs ({time.monotonic() - start:.0f} s)",
              flush=True)
    atomic_write_json(args.out, {
        "command": " ".join(["benchmarks/model_sizes.py", *argv]),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "versions": {"timm": timm.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "cpu_count": os.cpu_count(), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
