"""docs/results.md's section of the transfer study (issue 19), rendered from its raw JSON only:
the setup and provenance, the arms (mean ± std over seeds), every pre-registered comparison
with its paired test, MDE and verdict (``benchmarks/paired_stats.py``), and the "which model
should I train" advice - derived from those numbers by :func:`advice`, never written by hand.
Until the study has run, :func:`render` says so (with the budget estimate of the timed run).
``benchmarks/docs_tables.py`` calls it; test/infra/test_docs_tables.py checks it on a synthetic
fixture and against the committed raw files.
"""
from __future__ import annotations

import statistics
from typing import Any

import paired_stats
import transfer_study
from table_format import num, plus_minus

__all__ = ["render", "render_estimate", "advice", "summary", "readme_sentence", "NAMES",
           "CANDIDATES"]

#: display names of the target pipeline's stages
NAMES = {"pretrain-st": "ST (source → target)", "mbmt": "MBMT-Net (ST backbones frozen)",
         "mbmt-src": "MBMT-Net (source-only ST backbones frozen)",
         "mbmt-mt": "MBMT-Net (3 × MT backbone)", "mbmt-cold": "MBMT-Net (cold, study lr)",
         "mbmt-cold-lr1e-5": "MBMT-Net (cold, lr 1e-5)", "mt-src": "MT-Net (source → target)",
         "mt": "MT-Net (scratch)", "mtinet": "MTI-Net", "mtunet": "MT-UNet",
         "teacher": "teacher (RGB + depth)", "ummt": "UMMT (100 depth + 100 seg)",
         "ummt-d": "UMMT-D (200 depth + 100 seg)", "ummt-ps": "UMMT-PS (UMMT-D + pseudo seg)"}
#: the RGB three-task models a user could deploy, compared on delta_m by :func:`advice`
CANDIDATES = ("pretrain-st", "mbmt", "mbmt-src", "mbmt-mt", "mbmt-cold", "mbmt-cold-lr1e-5", "mt-src",
              "mt", "mtinet", "mtunet")
_COLS = {"segmentation.miou": ("Seg mIoU ↑", 2), "depth.rmse": ("Depth RMSE ↓", 4),
         "normals.mean": ("Normal Mean ↓", 2), "delta_m": ("Δm % ↑", 2)}


def _name(stage: str) -> str:
    return NAMES.get(stage, stage)


def render_estimate(est: dict[str, Any]) -> str:
    """The budget estimate of the timed one-epoch run (``transfer_study_estimate.json``)."""
    m = est["machine"]
    src, tgt = est["pipelines"]["source"], est["pipelines"]["target"]
    return (f"Budget estimate (`benchmarks/results/transfer_study_estimate.json`, from a timed "
            f"run of both pipelines at {est['timed_epochs']} epoch per training stage on a "
            f"{m['cpu_count']}-core machine, 1-minute load {m['load_avg_1min']}, scaled to the "
            f"study's epochs): source pipeline {src['study_s'] / 60:.0f} min once, target "
            f"pipeline {tgt['study_s'] / 60:.0f} min per seed; {est['seeds']} seeds with "
            f"{est['jobs']} side by side: about {est['total_s'] / 60:.0f} min in all"
            + (" - an over-estimate: the machine was shared (load above its core count), and "
               "fixed per-stage costs were scaled with the epochs" if m["load_avg_1min"]
               > m["cpu_count"] else " (fixed per-stage costs scaled too: an over-estimate)")
            + ".\n")


def _elapsed_min(records: list[dict[str, Any]]) -> float:
    start = transfer_study._seconds(records[0]["provenance"]["study_started_at"])
    ends = [transfer_study._seconds(s["finished_at"]) for r in records
            for s in r["stages"].values() if s.get("finished_at")]
    return (max(ends) - start) / 60


def _setup(records: list[dict[str, Any]]) -> str:
    prov = records[0]["provenance"]
    seeds = ", ".join(str(r["seed"]) for r in records)
    commits = {r["provenance"]["git_commit"] for r in records}
    dirty = any(r["provenance"]["git_dirty"] for r in records)
    reused = sorted({s for r in records for s in r["reused_stages"]})
    m = prov["machine"]
    return (f"Raw results: `benchmarks/results/transfer_study/seed*.json`, written by "
            f"`{prov['command']}` (budget `{prov['budget']}`) at commit"
            f"{'s' if len(commits) > 1 else ''} "
            + ", ".join(f"`{c[:12]}`" for c in sorted(commits))
            + (" **with uncommitted changes** (`--allow-dirty`)" if dirty else
               " on a clean tree")
            + f"; pre-registration `benchmarks/preregistration/transfer_study.yaml` "
            f"(SHA-256 `{prov['preregistration_sha256'][:12]}`, committed in "
            f"`{(prov.get('preregistration_commit') or 'uncommitted')[:12]}`); seeds {seeds}; "
            + ("no stage reused from an earlier run" if not reused
               else f"stages reused from an earlier run: {', '.join(reused)}")
            + f". The study took {_elapsed_min(records):.0f} min on a {m['cpu_count']}-core "
            f"machine ({m.get('cpu_model') or 'CPU model unknown'}; 1-minute load at the start "
            f"{m['load_avg_1min']}). Cells: mean ± sample std over the {len(records)} seeds, "
            "on the same 150 target validation frames; Δm per seed vs that seed's ST nets.\n")


def _arms(records: list[dict[str, Any]]) -> str:
    cols = list(_COLS)
    lines = ["| Arm | " + " | ".join(_COLS[c][0] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for stage in NAMES:
        if not all(stage in r["rows"] for r in records):
            continue
        cells = []
        for c in cols:
            task = c.split(".")[0]
            if c != "delta_m" and task not in records[0]["rows"][stage]["metrics"]:
                cells.append("-")
                continue
            if c == "delta_m" and stage == "teacher":
                cells.append("-")  # the teacher sees depth: no RGB-only Δm
                continue
            cells.append(plus_minus([transfer_study.figure(r, stage, c) for r in records],
                             _COLS[c][1]))
        lines.append(f"| {_name(stage)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: a run whose depth RMSE is this many times its seed's ST nets' has diverged (flagged, kept)
DIVERGED_RATIO = 10.0


def _diverged(records: list[dict[str, Any]]) -> str:
    """Runs that diverged (depth RMSE an order of magnitude above the same seed's ST nets):
    they stay in every mean and test - the flag only says why a spread is huge."""
    hits: dict[str, list[int]] = {}
    for r in records:
        st = transfer_study.figure(r, "pretrain-st", "depth.rmse")
        for stage, row in r["rows"].items():
            rmse = row["metrics"].get("depth", {}).get("rmse")
            if stage != "teacher" and rmse is not None and rmse > DIVERGED_RATIO * st:
                hits.setdefault(stage, []).append(r["seed"])
    if not hits:
        return ""
    return (f"\nDiverged runs (depth RMSE above {DIVERGED_RATIO:g}x the same seed's ST nets; kept "
            "in every mean and test, so their spread is huge): "
            + "; ".join(f"{_name(s)}: seed{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}"
                        for s, v in hits.items()) + ".\n")


def _comparisons(results: list[dict[str, Any]]) -> str:
    lines = ["| Claim (paper) | A vs B | figure | paper effect | mean diff ± sd | p | MDE | "
             "min effect | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for v in results:
        digits = _COLS.get(v["figure"], (None, 3))[1]
        paper = "-" if v.get("paper_effect") is None else num(v["paper_effect"], digits)
        primary = " (primary)" if v.get("primary") else ""
        lines.append(
            f"| {v['paper']}{primary} | {_name(v['a'])} vs {_name(v['b'])} | "
            f"{_COLS.get(v['figure'], (v['figure'],))[0]} | {paper} | "
            f"{num(v['mean_diff'], digits)} ± {num(v['sd_diff'], digits)} | "
            f"{v['p']:.3g} | {num(v['mde'], digits)} | {num(v['min_effect'], digits)} | "
            f"**{v['verdict']}** |")
    return ("\n".join(lines) + "\n\nDifferences are A − B per seed, sign-adjusted so that "
            "positive favours A (also for RMSE); paper effects likewise. Rule (pre-registered): "
            f"{paired_stats.RULE}\n")


def _ranking(records: list[dict[str, Any]], alpha: float = paired_stats.ALPHA
             ) -> tuple[str, str, dict[str, float], paired_stats.PairedResult]:
    """The two deployable arms with the highest mean Δm, the means, and the paired test of
    the best against the runner-up."""
    arms = [s for s in CANDIDATES if all(s in r["rows"] for r in records)]
    mean = {s: statistics.fmean(transfer_study.figure(r, s, "delta_m") for r in records)
            for s in arms}
    best, second = sorted(arms, key=lambda s: -mean[s])[:2]
    res = paired_stats.paired_test([transfer_study.figure(r, best, "delta_m") for r in records],
                                   [transfer_study.figure(r, second, "delta_m") for r in records],
                                   alpha=alpha)
    return best, second, mean, res


def _best_multi_task(mean: dict[str, float]) -> str:
    """The deployable arm with the highest mean Δm that is one network (not the ST nets)."""
    return max((s for s in mean if s != "pretrain-st"), key=lambda s: mean[s])


def advice(records: list[dict[str, Any]], results: list[dict[str, Any]],
           alpha: float = paired_stats.ALPHA) -> list[str]:
    """The "which model should I train" bullets, derived from the numbers: the best deployable
    arm by mean Δm and whether the paired test separates it from the runner-up (a descriptive
    test, not one of the pre-registered comparisons), then the pseudo-label and transfer
    verdicts."""
    best, second, mean, res = _ranking(records, alpha)
    out = []
    single = ""
    if best == "pretrain-st":
        multi = _best_multi_task(mean)
        single = (f" It is three networks, one per task (three backbones and three forward "
                  f"passes on the robot); the best single multi-task network is {_name(multi)} "
                  f"(mean Δm {num(mean[multi], 2)} %).")
    if res.outcome == "A better":
        out.append(f"**Train {_name(best)}** for RGB-only segmentation + depth + normals: the "
                   f"highest mean Δm ({num(mean[best], 2)} %), ahead of the runner-up "
                   f"{_name(second)} by {num(res.mean_diff, 2)} points (paired t-test "
                   f"p = {res.p:.3g}; descriptive, not pre-registered)." + single)
    else:
        out.append(f"**{_name(best)} and {_name(second)} are the two best** by mean Δm "
                   f"({num(mean[best], 2)} % and {num(mean[second], 2)} %), but the paired "
                   f"test does not separate them (p = {res.p:.3g}, MDE {num(res.mde, 2)} "
                   "points): pick the cheaper one to train and run." + single)
    by_key = {v["key"]: v for v in results}
    ps = [by_key[k] for k in ("ummt_ps_vs_ummt_d_miou", "ummt_ps_vs_ummt_d_rmse") if k in by_key]
    if ps:
        helps = [v for v in ps if v["verdict"] == "reproduced"]
        hurts = [v for v in ps if v["verdict"] == "contradicted"]
        if len(helps) == len(ps):
            out.append("**Use pseudo labels** when depth is abundant and segmentation scarce: "
                       "UMMT-PS beats UMMT-D on mIoU and on depth RMSE by at least the "
                       "pre-registered minimum effects.")
        elif hurts:
            out.append("**Do not use pseudo labels** here: UMMT-PS is worse than UMMT-D on "
                       + ", ".join(_COLS[v["figure"]][0] for v in hurts) + ".")
        else:
            head = by_key.get("teacher_headroom")
            room = ""
            if head is not None:
                room = (f", although the teacher was ahead of UMMT-D by {num(head['mean_diff'], 2)} "
                        f"mIoU points ({head['verdict'].split(' (')[0]})")
            out.append("**Pseudo labels showed no detectable gain** here (UMMT-PS vs UMMT-D: "
                       + "; ".join(f"{_COLS[v['figure']][0]}: {v['verdict']}" for v in ps)
                       + f"){room}; a gain smaller than the MDE is not ruled out, so treat them "
                       "as optional, not as the default.")
    if "mt_src_vs_mt" in by_key:
        v = by_key["mt_src_vs_mt"]
        if v["outcome"] == "A better" and v["mean_diff"] >= v["min_effect"]:
            out.append("**Start from pretrained weights**: MT-Net from the source beats MT-Net "
                       f"from scratch by {num(v['mean_diff'], 2)} Δm points "
                       f"(p = {v['p']:.3g}).")
        else:
            out.append("Pretraining on the source vs training from scratch (MT-Net): "
                       f"{v['verdict']}.")
    return out


def _claim(v: dict[str, Any]) -> str:
    figure = _COLS.get(v["figure"], (v["figure"],))[0]
    if v["claim"] == "no effect":
        return f"{_name(v['a'])} = {_name(v['b'])} on {figure}"
    better, worse = (v["a"], v["b"]) if v["claim"] == "A better" else (v["b"], v["a"])
    return f"{_name(better)} > {_name(worse)} on {figure}"


def summary(results: list[dict[str, Any]]) -> list[str]:
    """The papers' claims grouped by verdict (reproduced, contradicted, no effect detected),
    each null with its MDE next to the paper's effect - the power the study had."""
    groups: dict[str, list[str]] = {"reproduced": [], "contradicted": [], "none": []}
    for v in results:
        digits = _COLS.get(v["figure"], (None, 3))[1]
        primary = " (primary)" if v.get("primary") else ""
        if v["verdict"].startswith("no effect detected"):
            paper = ""
            if v.get("paper_effect") is not None:
                seen = (" - an effect of the paper's size would have been detected"
                        if abs(v["paper_effect"]) > v["mde"] else "")
                paper = f", paper's effect {num(v['paper_effect'], digits)}{seen}"
            groups["none"].append(f"{_claim(v)}{primary} (MDE {num(v['mde'], digits)}{paper})")
        elif v["verdict"].startswith("reproduced"):
            groups["reproduced"].append(f"{_claim(v)}{primary}"
                                        + (" - below the minimum that matters"
                                           if "below" in v["verdict"] else ""))
        else:
            groups["contradicted"].append(f"{_claim(v)}{primary} ({v['verdict']}; mean diff "
                                          f"{num(v['mean_diff'], digits)})")
    titles = {"reproduced": "Reproduced", "contradicted": "Contradicted",
              "none": "No effect detected (MDE: the smallest effect the test finds with "
                      f"{paired_stats.POWER:.0%} power)"}
    return [f"**{titles[k]}** ({len(items)}): " + ("; ".join(items) if items else "none") + "."
            for k, items in groups.items()]


def readme_sentence(records: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    """One sentence for the README: what the evidence shows for the primary claims, and the
    advice's first line, linking to the section."""
    by_key = {v["key"]: v for v in results}
    parts = []
    for key, text in (("mbmt_vs_mt", "MBMT-Net over MT-Net"),
                      ("mbmt_vs_st", "MBMT-Net over the ST nets"),
                      ("ummt_ps_vs_ummt_d_miou", "pseudo labels on mIoU"),
                      ("ummt_ps_vs_ummt_d_rmse", "pseudo labels on depth RMSE")):
        if key in by_key:
            verdict = by_key[key]["verdict"].split(" (")[0]
            parts.append(f"{text}: {verdict}")
    best, second, mean, res = _ranking(records)
    pick = (f"train {_name(best)}" if res.outcome == "A better" else
            f"{_name(best)} and {_name(second)} are the best and not separated by the test")
    if best == "pretrain-st":
        pick += (" (three networks; the best single multi-task network: "
                 f"{_name(_best_multi_task(mean))})")
    return (f"In the pre-registered transfer study on synthetic data ({len(records)} seeds, "
            f"paired tests) - {'; '.join(parts)} - the numbers say: {pick} "
            "([results](docs/results.md#the-transfer-study-issue-19-pretraining-8-seeds-a-paired-rule)).\n")


def render(records: list[dict[str, Any]], prereg: dict[str, Any],
           estimate: dict[str, Any] | None = None) -> str:
    """The whole generated section (records: the seeds' raw JSON; prereg: the YAML)."""
    est = render_estimate(estimate) if estimate else ""
    if len(records) < 2:
        return ("The transfer study has not been run yet: `benchmarks/results/transfer_study/` "
                f"holds {len(records)} seed file(s). Its design is pre-registered in "
                "`benchmarks/preregistration/transfer_study.yaml` "
                f"({len(prereg['comparisons'])} comparisons, seeds "
                f"{', '.join(map(str, prereg['seeds']))}); run "
                "`benchmarks/transfer_study.py` on a clean, committed tree.\n"
                + (f"\n{est}" if est else ""))
    results = transfer_study.analyse(records, prereg)
    return (_setup(records) + (f"\n{est}" if est else "")
            + "\n#### Arms\n\n" + _arms(records) + _diverged(records)
            + "\n#### Pre-registered comparisons\n\n" + _comparisons(results)
            + "\n#### What reproduced\n\n" + "".join(f"- {line}\n" for line in summary(results))
            + "\n#### Which model should I train\n\n"
            + "".join(f"- {line}\n" for line in advice(records, results)))
