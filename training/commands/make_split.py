"""``mbmt-train make-split``: an imbalanced label split as a manifest.

Keeps ``--depth N`` training samples with depth, ``--segmentation M`` of them also with
segmentation (reproducibly by ``--seed``); the validation split is copied unchanged.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="dataset folder")
    parser.add_argument("--depth", type=int, required=True, help="training samples with depth")
    parser.add_argument("--segmentation", type=int, required=True,
                        help="how many of those also keep segmentation")
    parser.add_argument("--normals", type=int, default=None,
                        help="how many keep normals (default: every kept sample that has them)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--manifest", metavar="JSON",
                        help="full manifest to draw from (default DATA/manifest.json)")
    parser.add_argument("--out", metavar="MANIFEST",
                        help="output manifest (default DATA/splits/depth<N>_seg<M>_seed<S>.json)")


def run(args: argparse.Namespace) -> int:
    from training.data.manifest import make_imbalanced_split, open_manifest

    data = Path(args.data)
    full = open_manifest(data, args.manifest)
    split = make_imbalanced_split(full, args.depth, args.segmentation, args.seed, args.normals)
    out = Path(args.out) if args.out else \
        data / "splits" / f"depth{args.depth}_seg{args.segmentation}_seed{args.seed}.json"
    split.save(out)
    c = split.counts().get("train", {})
    print(f"wrote {out}: train {c.get('samples', 0)} samples, depth "
          f"{c.get('depth', {}).get('gt', 0)}, segmentation "
          f"{c.get('segmentation', {}).get('gt', 0)}, normals {c.get('normals', {}).get('gt', 0)}")
    return 0
