"""Multi-seed studies: ``i2iuda run --seeds 0,1,2 --out RUN``.

One seed decides nothing: on the CPU benchmark the same CycleGAN preset closed 57%, 68% and 54%
of the gap on three seeds. This runs the whole study once per seed, in RUN/seed_S/ (each one an
ordinary study folder: resumable, skipped stage by stage when done, its own report), on the same
data, and writes the aggregate:

    RUN/metrics.json   schema i2iuda.study.aggregate/1:
        seeds, runs                    the seeds and their folders
        arms.ARM.METRIC                {mean, std, min, max, values} over seeds for PA, MPA, mIoU,
                                       FWIoU, delta_mIoU (arm - source-only) and gap_closed
                                       (a fraction); std is the sample standard deviation (ddof 1)
        arms.ARM.per_class_IoU.CLASS   the same summary per class (None where a class is n/a)
        arms.ARM.KEY                   the same summary of every other number of the arm's rows
                                       (failure_agreement, translator_seconds, ...) and of each
                                       number in its blocks (translation: KID, FID, fcn_score_mIoU;
                                       pseudo_labels; online), where every seed has them; a block's
                                       other values (N, thresholds, names) are the first seed's
        paired_mIoU                    for every pair of arms (not the oracle), the *paired*
                                       difference a - b over seeds: {a, b, mean, std, min, max,
                                       values, a_better, seeds, ci95}; a is the arm with the higher
                                       mean; ci95 = [lo, hi], the 95% confidence interval of the
                                       mean difference (Student's t, seeds - 1 degrees of freedom;
                                       null for one seed): an interval that holds 0 is not a result
        ranking                        arms (not the oracle) by mean mIoU
    RUN/report.{md,html}               the aggregate first, per-seed spread as error bars and dots

The seed changes the translator's and the segmenters' initialisation and the sample order; the
data set (``data.synthetic.seed``) stays the same, so the spread is training noise alone.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import write_json
from ..progress import say
from ..report import ranked_arms, read_metrics, upgraded, write_seeds_report
from ..runlock import holding
from .config import StudyConfig
from .run import run_study
from .study import Study

AGGREGATE_SCHEMA = "i2iuda.study.aggregate/1"
METRICS = ("PA", "MPA", "mIoU", "FWIoU", "delta_mIoU", "gap_closed")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' -> [0, 1, 2] / [0, 1, 2, 3, 4]."""
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected seeds like 0,1,2 or a range like 0-4") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: expected distinct non-negative seeds")
    return seeds


# Student's t quantile t(0.975, df) for df = 1..10; beyond, 1.96 + 2.4 / df is within 0.03 of it
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def ci95(diffs: list[float]) -> list[float] | None:
    """95% confidence interval of the mean of paired differences (Student's t), None for one."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    df = d.size - 1
    half = (T975[df - 1] if df <= len(T975) else 1.96 + 2.4 / df) * d.std(ddof=1) / np.sqrt(d.size)
    return [float(d.mean() - half), float(d.mean() + half)]


def summary(values: list) -> dict | None:
    """{mean, std (ddof 1; 0 for one value), min, max, values} of the values that are not None."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return None
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": values}


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarised(per: list[dict], done: set[str]) -> dict:
    """The rest of an arm's rows over seeds, whatever its kind put in them: each number every
    seed has, summarised; each block (a mapping: translation scores, pseudo-labels, ...) every
    seed has, its numbers summarised and its other values (N, lists, names) as the first seed's."""
    out = {}
    for k, v in per[0].items():
        if k in done or not all(k in p for p in per):
            continue
        if is_number(v) or v is None:
            out[k] = summary([p[k] for p in per])
        elif isinstance(v, dict):
            out[k] = {kk: summary([p[k].get(kk) for p in per]) if all(is_number(p[k].get(kk)) or p[k].get(kk) is None
                                                                      for p in per) else vv for kk, vv in v.items()}
    return out


def aggregate(per_seed: dict[int, dict]) -> dict:
    """The aggregate metrics (module docstring) of the studies' metrics.json files, by seed."""
    per_seed = {s: upgraded(m) for s, m in per_seed.items()}
    seeds = sorted(per_seed)
    arms = list(per_seed[seeds[0]]["arms"])
    for s in seeds:
        if list(per_seed[s]["arms"]) != arms:
            raise UserError(f"seed {s}: arms {list(per_seed[s]['arms'])} differ from seed {seeds[0]}'s {arms}")
    rows = {}
    for a in arms:
        per = [per_seed[s]["arms"][a] for s in seeds]
        rows[a] = {"kind": per[0]["kind"], "bound": per[0]["bound"], "method": per[0].get("method"),
                   **{m: summary([p[m] for p in per]) for m in METRICS},
                   "per_class_IoU": {c: summary([p["per_class_IoU"][c] for p in per]) for c in per[0]["per_class_IoU"]}}
        rows[a].update(summarised(per, set(rows[a])))
    ranking = sorted((a for a in arms if rows[a]["bound"] != "upper"), key=lambda a: -rows[a]["mIoU"]["mean"])
    paired = []
    for i, a in enumerate(ranking):
        for b in ranking[i + 1:]:
            d = [per_seed[s]["arms"][a]["mIoU"] - per_seed[s]["arms"][b]["mIoU"] for s in seeds]
            paired.append({"a": a, "b": b, **summary(d), "a_better": sum(x > 0 for x in d), "seeds": len(d),
                           "ci95": ci95(d)})
    first = per_seed[seeds[0]]
    return {"schema": AGGREGATE_SCHEMA, "seeds": seeds, "runs": {str(s): f"seed_{s}" for s in seeds},
            "target_val": first["target_val"], "classes": first["classes"],
            "std": "sample standard deviation over seeds (ddof 1)", "arms": rows, "paired_mIoU": paired,
            "ranking": ranking}


def run_seeds(cfg: StudyConfig, run: str | Path, seeds: list[int], from_stage: str | None = None,
              stop_after: str | None = None, progress: bool = True) -> dict:
    """The study once per seed in RUN/seed_S/, then RUN/metrics.json and the report of all seeds."""
    run = Path(run).resolve()
    Study.resolve(replace(cfg, seed=seeds[0]), run)  # bad settings are refused before the folder is touched
    with holding(run):
        for i, s in enumerate(seeds):
            say(f"seed {s} ({i + 1} of {len(seeds)}): {run / f'seed_{s}'}", "bold")
            run_study(replace(cfg, seed=s), run / f"seed_{s}", from_stage, stop_after, progress)
        if stop_after is not None:
            return {}
        metrics = aggregate({s: read_metrics(run / f"seed_{s}" / "metrics.json") for s in seeds})
        write_json(run / "metrics.json", metrics)
        write_seeds_report(run)
        return metrics


def seeds_table(metrics: dict) -> str:
    """The aggregate as text: mean ± std per arm, then the paired differences."""
    metrics = upgraded(metrics)
    n = len(metrics["seeds"])
    rows = [f"{n} seeds {metrics['seeds']}: mean ± std (sample std over seeds)",
            f"{'arm':24s} {'mIoU':>14s} {'min-max':>13s} {'gap closed':>16s}"]
    for name in ranked_arms(metrics):
        r = metrics["arms"][name]
        m, g = r["mIoU"], r["gap_closed"]
        gap = f"{100 * g['mean']:5.1f} ± {100 * g['std']:4.1f}%" if g else ""
        rows.append(f"{name:24s} {m['mean']:6.2f} ± {m['std']:5.2f} {m['min']:6.2f}-{m['max']:<6.2f} {gap:>16s}")
    rows.append("paired mIoU differences (a - b over the same seeds):")
    for p in metrics["paired_mIoU"]:
        ci = f", 95% CI [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]" if p.get("ci95") else ""
        rows.append(f"  {p['a']} - {p['b']}: {p['mean']:+.2f} ± {p['std']:.2f}{ci} (a better on {p['a_better']}/{p['seeds']})")
    return "\n".join(rows)
