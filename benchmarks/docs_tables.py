"""Write the generated tables of the docs from the raw results committed to the repository.

Every table this module owns sits in a docs page between ``<!-- generated:NAME begin -->`` and
``<!-- generated:NAME end -->``; :data:`GENERATORS` maps each NAME to its page, its raw file(s)
and the function that renders it. Nothing here is measured or retyped: the study tables come
from ``benchmarks/results/study_<budget>/seed*.json`` (``benchmarks/study.py``: mean ± std over
seeds, the verdicts by the rule fixed in that script), the model-size tables from
``benchmarks/results/model_sizes.json`` (``benchmarks/model_sizes.py``), the data-loading
and training tables of docs/benchmarks.md from the JSON of ``data_loader.py`` and
``frozen_vs_unfrozen.py`` (each rendered by the script's ``render``). Tables written by other benchmark scripts keep
their own markers and writers (``backends.py``, ``node_latency.py``, ``node_soak.py``,
``active_learning.py``; test/infra/test_docs_tables.py and the scripts' own tests compare
them with their JSON).

Usage (from the repository root)::

    .venv/bin/python benchmarks/docs_tables.py            # rewrite the generated tables
    .venv/bin/python benchmarks/docs_tables.py --check    # exit 1 if a doc differs from its raw files
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import study  # noqa: E402  (benchmarks/study.py: the rule, comparisons and Delta_m)
from table_format import num, plus_minus  # noqa: E402

#: the study budget docs/results.md shows (pinned, so that a new study folder never changes
#: the page behind its prose's back: switch it when the new raw results are committed, then
#: re-read the prose of docs/results.md against the regenerated tables)
STUDY_BUDGET = "cpu30"


class DocsError(Exception):
    """A doc lacks a generator's markers, or a raw file is missing."""


def begin(name: str) -> str:
    return f"<!-- generated:{name} begin -->"


def end(name: str) -> str:
    return f"<!-- generated:{name} end -->"


# ------------------------------------------------------------------------------ formatting

_COLS = {"segmentation.miou": ("Seg mIoU ↑", 2), "segmentation.pixel_acc": ("Seg Pix Acc ↑", 2),
         "depth.abs_err": ("Depth Abs Err ↓", 4), "depth.rel_err": ("Depth Rel Err ↓", 4),
         "depth.rmse": ("Depth RMSE ↓", 4), "depth.log_rmse": ("Depth log RMSE ↓", 4),
         "depth.delta1": ("Depth δ1 ↑", 2), "normals.mean": ("Normal Mean ↓", 2),
         "normals.median": ("Normal Median ↓", 2), "normals.within_11_25": ("Normal 11.25° ↑", 2),
         "normals.within_22_5": ("Normal 22.5° ↑", 2), "normals.within_30": ("Normal 30° ↑", 2),
         "delta_m": ("Δm % ↑", 2)}
FULL = ["segmentation.miou", "segmentation.pixel_acc", "depth.abs_err", "depth.rel_err",
        "depth.rmse", "depth.delta1", "normals.mean", "normals.median", "normals.within_11_25",
        "normals.within_22_5", "normals.within_30", "delta_m"]
IMBALANCED = ["segmentation.miou", "segmentation.pixel_acc", "depth.abs_err", "depth.rel_err",
              "depth.rmse", "depth.log_rmse", "delta_m"]
AFFINITY = ["segmentation.miou", "segmentation.pixel_acc", "depth.abs_err", "depth.rmse"]


def _stats_table(records: list[dict[str, Any]], rows: list[tuple[str, str, str]],
                 columns: list[str]) -> str:
    head = ["Run", "Description", *(_COLS[c][0] for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, description in rows:
        if not all(key in r["rows"] for r in records):
            continue
        cells = [plus_minus([study.figure(r, key, c) for r in records], _COLS[c][1])
                 if all(_has(r, key, c) for r in records) else "-" for c in columns]
        lines.append("| " + " | ".join([label, description, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _has(record: dict[str, Any], key: str, column: str) -> bool:
    if column == "delta_m":
        return True
    task, metric = column.split(".")
    return metric in record["rows"][key]["metrics"].get(task, {})


# ------------------------------------------------------------------------------ study

def study_records() -> tuple[str, list[dict[str, Any]]]:
    """(budget, records) of the study the docs show."""
    records = study.load_records(RESULTS / f"study_{STUDY_BUDGET}")
    if len(records) < 3:
        raise DocsError(f"benchmarks/results/study_{STUDY_BUDGET}/ holds {len(records)} seed(s), "
                        f"3 are needed; run benchmarks/study.py --budget {STUDY_BUDGET}")
    return STUDY_BUDGET, records


def study_setup() -> str:
    budget, records = study_records()
    prov = records[0]["provenance"]
    seeds = [r["seed"] for r in records]
    wall = sum(sum(r["wall_s"].values()) for r in records)
    return (f"Raw results: `benchmarks/results/study_{budget}/seed*.json`, written by "
            f"`{prov['command']}` (budget `{budget}`: `--set` "
            + ", ".join(f"`{o}`" for o in prov["overrides"])
            + f") at commit `{prov['git_commit'][:12]}`"
            + (" with uncommitted changes" if prov.get("git_dirty") else "")
            + f", {prov['date_utc']}; seeds {', '.join(map(str, seeds))}; "
            f"{wall / 60:.0f} min of pipelines in all on a 2-core machine. Every cell is the "
            f"mean ± sample std over the {len(seeds)} seeds; Δm per seed vs that seed's ST "
            "nets.\n")


def study_full() -> str:
    _, records = study_records()
    return _stats_table(records, [
        ("tiny/pretrain-st", "ST", "3 single-task nets (one per task)"),
        ("tiny/mt", "MT-Net", "one shared backbone, DWA"),
        ("tiny/mbmt", "MBMT-Net (pre, frozen)", "3 ST backbones frozen, CAT, decoder trained"),
        ("tiny/mbmt-cold", "MBMT-Net (cold)", "same net, random backbones trained with it"),
    ], FULL)


def _coverage(records: list[dict[str, Any]], prefix: str) -> str:
    cov = [100 * r["pseudo_labels"][prefix]["coverage"] for r in records
           if prefix in r.get("pseudo_labels", {})]
    return f"{plus_minus(cov, 2)} %" if cov else "n/a"


def study_imbalanced() -> str:
    _, records = study_records()
    table = _stats_table(records, [
        ("tiny/teacher", "teacher (MMMT-D)", "RGB + GT depth input - uses depth at test time"),
        ("tiny/ummt", "UMMT", "student, ground-truth labels of the split only"),
        ("tiny/ummt-ps", "UMMT-PS", "student, + pseudo segmentation labels"),
    ], IMBALANCED)
    return table + (f"\nPixels of the unlabelled frames the teacher labels at τ = 0.9: "
                    f"{_coverage(records, 'tiny')}.\n")


def study_affinity() -> str:
    _, records = study_records()
    return _stats_table(records, [
        ("affinity/rgb", "RGB", "RGB-only multi-task net"),
        ("affinity/depth_input", "RGB + depth (GT)", "depth-input teacher"),
        ("affinity/segmentation_input", "RGB + segmentation (GT)", "segmentation-input teacher"),
    ], AFFINITY)


def study_architectures() -> str:
    _, records = study_records()
    table = _stats_table(records, [
        ("arch/pretrain-st", "ST", "3 single-task nets"),
        ("arch/mtinet", "MTI-Net", "one `test_efficientnet`, aux edges, deep supervision"),
        ("arch/mbmt-mti", "MTI-Net on MBMT", "3 ST backbones frozen, CAT, MTI-Net decoder"),
        ("arch/mtunet", "MT-UNet", "dense U-Net, base 4, cross-task skips, Eq. 5 weighting"),
    ], FULL)
    weights = [r["rows"]["arch/mtunet"].get("final_weights") for r in records]
    if all(weights):
        parts = [f"{t} {plus_minus([w[t] for w in weights], 2)}" for t in weights[0]]
        table += f"\nMT-UNet's learned loss weights at the end: {', '.join(parts)}.\n"
    return table


def study_architectures_imbalanced() -> str:
    _, records = study_records()
    table = _stats_table(records, [
        ("arch/teacher", "MTI teacher (MMMT-D)", "RGB + GT depth branches, MTI-Net decoder"),
        ("arch/ummt", "UMMT (MTI-Net)", "RGB-only MTI-Net student, split labels only"),
        ("arch/ummt-ps", "UMMT-PS (MTI-Net)", "same, + pseudo segmentation labels"),
    ], IMBALANCED)
    return table + (f"\nPixels of the unlabelled frames the MTI teacher labels at τ = 0.9: "
                    f"{_coverage(records, 'arch')}.\n")


_NAMES = {"tiny/mbmt": "MBMT-Net (pre)", "tiny/mbmt-cold": "MBMT-Net (cold)",
          "tiny/mt": "MT-Net", "tiny/pretrain-st": "ST", "arch/pretrain-st": "ST",
          "tiny/ummt": "UMMT", "tiny/ummt-ps": "UMMT-PS", "affinity/rgb": "RGB",
          "affinity/depth_input": "RGB + depth", "affinity/segmentation_input": "RGB + seg",
          "arch/mtinet": "MTI-Net", "arch/mtunet": "MT-UNet", "arch/ummt": "UMMT (MTI)",
          "arch/ummt-ps": "UMMT-PS (MTI)"}


def study_verdicts() -> str:
    _, records = study_records()
    lines = ["| Claim (paper) | A vs B | figure | A | B | d | 2 s | outcome | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for comp in study.COMPARISONS:
        v = study.judge(comp, records)
        digits = _COLS[comp.figure][1]
        a, b = _NAMES.get(comp.a, comp.a), _NAMES.get(comp.b, comp.b)
        outcome = {"A better": f"{a} better", "B better": f"{b} better"}.get(v["outcome"],
                                                                              v["outcome"])
        lines.append(
            f"| {comp.source} | {a} vs {b} | {_COLS[comp.figure][0]} | "
            f"{plus_minus(v['a_values'], digits)} | {plus_minus(v['b_values'], digits)} | "
            f"{num(v['difference'], digits)} | {num(2 * v['pooled_std'], digits)} | "
            f"{outcome} | **{v['verdict']}** |")
    return ("\n".join(lines) + "\n\n"
            f"Rule (fixed in `benchmarks/study.py` before the study ran): {study.VERDICT_RULE} "
            "d is sign-adjusted (positive = A better, also for lower-is-better metrics).\n")


# ------------------------------------------------------------------------------ transfer study

def transfer_study_section() -> str:
    """docs/results.md's transfer-study section (issue 19): ``benchmarks/transfer_docs.py``
    renders it from ``results/transfer_study/seed*.json``, the pre-registration and the budget
    estimate; before the study has run it says so."""
    import transfer_docs
    import transfer_study

    estimate = transfer_study.ESTIMATE
    return transfer_docs.render(
        transfer_study.load_records(RESULTS / "transfer_study"), transfer_study.preregistration(),
        json.loads(estimate.read_text()) if estimate.is_file() else None)


def transfer_study_readme() -> str:
    """The README's one sentence on what the transfer study shows (issue 19), from the same
    raw records as the section it links to."""
    import transfer_docs
    import transfer_study

    records = transfer_study.load_records(RESULTS / "transfer_study")
    if len(records) < 2:
        return ("The pre-registered transfer study that decides which model to train has not "
                "been run yet ([results](docs/results.md)).\n")
    return transfer_docs.readme_sentence(
        records, transfer_study.analyse(records, transfer_study.preregistration()))


# ------------------------------------------------------------------------------ model sizes

def _sizes() -> dict[str, Any]:
    path = RESULTS / "model_sizes.json"
    if not path.is_file():
        raise DocsError(f"{path} is missing; run benchmarks/model_sizes.py")
    return json.loads(path.read_text())


def _m(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e7 else f"{n / 1e6:.3f} M"


def sizes_mbmt() -> str:
    raw = _sizes()
    lines = [f"`benchmarks/model_sizes.py` (timm {raw['versions']['timm']}, commit "
             f"`{raw['git_commit'][:12]}`, raw: `benchmarks/results/model_sizes.json`):", "",
             "| model | trainable (ours / paper) | total (ours / paper) | GMACs (ours / paper) |",
             "|---|---|---|---|"]
    for row in raw["rows"]:
        if row["group"] != "mbmt":
            continue
        o, p = row["ours"], row["paper"]
        lines.append(f"| {row['label']} | {_m(o['params_trainable'])} / {p['trainable_m']} M | "
                     f"{_m(o['params_total'])} / {p['total_m']} M | "
                     f"{o['gflops']:.3f} / {p['gmacs']} |")
    return "\n".join(lines) + "\n"


def sizes_mtinet() -> str:
    raw = _sizes()
    lines = ["| model | input | parameters (ours) | parameters, M (paper) | GMACs (ours) | "
             "GFLOPs (paper) |",
             "|---|---|---|---|---|---|"]
    for row in raw["rows"]:
        if row["group"] != "mtinet":
            continue
        o, p = row["ours"], row["paper"]
        gm = f"{o['gflops']:.2f}" if "gflops" in o else "-"
        paper_g = (f"{p['gmacs']} ({p['gmacs_note']})" if "gmacs" in p else "-")
        lines.append(f"| {row['label']} | {row['input_size'][0]} x {row['input_size'][1]} | "
                     f"{_m(o['params_total'])} | {p.get('total_m', '-')} | {gm} | {paper_g} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ benchmarks

def _from_script(module: str, raw_name: str) -> Callable[[], str]:
    """A generator that renders ``benchmarks/results/<raw_name>`` with ``<module>.render``."""
    def render() -> str:
        import importlib

        path = RESULTS / raw_name
        if not path.is_file():
            raise DocsError(f"{path} is missing; run benchmarks/{module}.py")
        return importlib.import_module(module).render(json.loads(path.read_text()))
    return render


# ------------------------------------------------------------------------------ registry

@dataclass(frozen=True)
class Generator:
    doc: str                       # page under docs/ (``../README.md``: the README)
    render: Callable[[], str]      # the table's markdown, from raw files only


GENERATORS: dict[str, Generator] = {
    "study-setup": Generator("results.md", study_setup),
    "study-full": Generator("results.md", study_full),
    "study-imbalanced": Generator("results.md", study_imbalanced),
    "study-affinity": Generator("results.md", study_affinity),
    "study-architectures": Generator("results.md", study_architectures),
    "study-architectures-imbalanced": Generator("results.md", study_architectures_imbalanced),
    "study-verdicts": Generator("results.md", study_verdicts),
    "transfer-study": Generator("results.md", transfer_study_section),
    "transfer-study-readme": Generator("../README.md", transfer_study_readme),
    "model-sizes-mbmt": Generator("models.md", sizes_mbmt),
    "model-sizes-mtinet": Generator("models.md", sizes_mtinet),
    "data-loading": Generator("benchmarks.md", _from_script("data_loader", "data_loader.json")),
    "training-frozen": Generator("benchmarks.md",
                                 _from_script("frozen_vs_unfrozen", "frozen_vs_unfrozen.json")),
}


def replace_block(text: str, name: str, body: str, doc: str) -> str:
    b, e = begin(name), end(name)
    if text.count(b) != 1 or text.count(e) != 1 or text.index(b) > text.index(e):
        raise DocsError(f"docs/{doc}: needs exactly one '{b}' ... '{e}' pair")
    head, rest = text.split(b, 1)
    return f"{head}{b}\n{body}{e}{rest.split(e, 1)[1]}"


def render_docs(docs_dir: Path) -> dict[Path, tuple[str, str]]:
    """page -> (current text, text with every generated table re-rendered)."""
    out: dict[Path, tuple[str, str]] = {}
    for name, gen in GENERATORS.items():
        path = docs_dir / gen.doc
        current, new = out.get(path, (None, None))
        if current is None:
            current = new = path.read_text(encoding="utf-8")
        out[path] = (current, replace_block(new, name, gen.render(), gen.doc))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare: exit 1 when a doc differs from its raw files")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    try:
        pages = render_docs(args.docs)
    except (DocsError, OSError, KeyError, ValueError) as exc:
        print(f"docs_tables: {exc}", file=sys.stderr)
        return 2
    stale = [p for p, (cur, new) in pages.items() if cur != new]
    if args.check:
        for p in stale:
            print(f"docs_tables: {p} differs from its raw results; run "
                  "benchmarks/docs_tables.py", file=sys.stderr)
        return 1 if stale else 0
    from mbmt_ros.io import atomic_write_text

    for p in stale:
        atomic_write_text(p, pages[p][1])
        print(f"docs_tables: wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
