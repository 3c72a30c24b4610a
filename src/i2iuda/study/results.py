"""The study's results as files: RUN/metrics.json (one row per arm, schema
i2iuda.study.metrics/3), RUN/study.json (what the report needs to know about the arms and
stages), the report with every arm's section, and the results table ``i2iuda run`` prints. Every
row is its arm's own (arms/); what is here is the same for all."""
from __future__ import annotations

from pathlib import Path

from ..io import read_json
from ..report import read_metrics, read_study, upgraded, write_report
from .arms import KINDS
from .study import Study

METRICS_SCHEMA = "i2iuda.study.metrics/3"


def collect_metrics(study: Study) -> dict:
    """RUN/metrics.json: every arm's row (from its files), with delta_mIoU = arm - source-only and
    gap_closed = (arm - source-only) / (oracle - source-only), None for the two ends of the gap
    and without an oracle."""
    rows = {name: arm.metrics_row() for name, arm in study.arms.items()}
    base = rows[study.baseline.name]["mIoU"]
    top = rows[study.oracle.name]["mIoU"] if study.oracle else None
    for row in rows.values():
        row["delta_mIoU"] = row["mIoU"] - base
        adapts = row["bound"] is None and top is not None and top != base
        row["gap_closed"] = (row["mIoU"] - base) / (top - base) if adapts else None
    ranking = sorted((n for n, r in rows.items() if r["bound"] != "upper"), key=lambda n: -rows[n]["mIoU"])
    return {"schema": METRICS_SCHEMA, "target_val": study.specs["target_val"], "classes": study.cfg.eval.classes,
            "arms": rows, "ranking": ranking}


def manifest(study: Study) -> dict:
    """RUN/study.json: what the report needs to know about the study, as plain data."""
    stages = read_json(study.run / "stages.json", {})
    seg = study.cfg.segment
    return {"name": study.run.name, "seed": study.cfg.seed, "specs": study.specs, "judge": study.judge.name,
            "segmenter": f"{seg.model.arch}-{seg.model.backbone}, {seg.epochs} epochs, size {seg.data.size[0]}x"
                         f"{seg.data.size[1]}, selected on (translated) source val mIoU",
            "segment_size": list(seg.data.size), "arms": [arm.manifest() for arm in study.arms.values()],
            "stage_seconds": {k: v["seconds"] for k, v in stages.items()},
            "stage_peak_rss_mb": {k: v.get("peak_rss_mb") for k, v in stages.items()}}


def report(run: str | Path) -> tuple[Path, Path]:
    """RUN/report.md and report.html from the study's files: the report's own parts and every
    arm's section, each by its kind (``KINDS[row["kind"]].section``), from files only."""
    run = Path(run).resolve()
    study, metrics = read_study(run / "study.json"), read_metrics(run / "metrics.json")
    figures = run / "figures"
    figures.mkdir(exist_ok=True)
    sections = {row["name"]: KINDS[row["kind"]].section(run, row, metrics["arms"][row["name"]], figures)
                for row in study["arms"] if row["kind"] in KINDS}
    return write_report(run, sections)


def results_table(metrics: dict) -> str:
    rows = [f"{'arm':24s} {'PA':>6s} {'MPA':>6s} {'mIoU':>6s} {'FWIoU':>6s} {'gap closed':>10s}"]
    for name, m in upgraded(metrics)["arms"].items():
        label = name + (" (upper bound)" if m["bound"] == "upper" else "")
        gap = "" if m["gap_closed"] is None else f"{100 * m['gap_closed']:.1f}%"
        rows.append(f"{label:24s} {m['PA']:6.2f} {m['MPA']:6.2f} {m['mIoU']:6.2f} {m['FWIoU']:6.2f} {gap:>10s}")
    return "\n".join(rows)

