"""The study's results as files: RUN/metrics.json (one row per arm, schema
i2iuda.study.metrics/2), RUN/study.json (what the report needs to know about the arms and
stages) and the results table ``i2iuda run`` prints."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..translation.methods import method
from .arms import arms, judge, specs, stage_dir
from .config import StudyConfig

METRICS_SCHEMA = "i2iuda.study.metrics/2"


def collect_metrics(cfg: StudyConfig, run: Path) -> dict:
    """RUN/metrics.json (schema i2iuda.study.metrics/2): one row per arm, from RUN/eval/ARM/."""
    rows: dict[str, Any] = {}
    done = json.loads((run / "stages.json").read_text()) if (run / "stages.json").exists() else {}
    for arm in arms(cfg):
        r = json.loads((stage_dir(run, "evaluate", arm) / "metrics.json").read_text())
        rows[arm.name] = {"kind": arm.kind, "method": arm.translate.method if arm.translate else None,
                          **{k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")}}
        scores = stage_dir(run, "evaluate", arm) / "translation.json"
        if scores.exists():  # translation scores of the frames the arm trains on (not the oracle)
            t = json.loads(scores.read_text())
            kf = t.get("kid_fid") or {}
            rows[arm.name]["translation"] = {
                "fcn_score_mIoU": t["fcn_score"]["mIoU"] if t.get("fcn_score") else None,
                "fcn_score_PA": t["fcn_score"]["PA"] if t.get("fcn_score") else None,
                "KID": kf.get("KID"), "KID_std": kf.get("KID_std"), "FID": kf.get("FID"),
                "N": [kf["N_fake"], kf["N_real"]] if "N_fake" in kf else None}
        if arm.translate is not None and method(arm.translate.method).TRAINS and f"translate:{arm.name}" in done:
            rows[arm.name]["translator_seconds"] = done[f"translate:{arm.name}"]["seconds"]
        pq = stage_dir(run, "evaluate", arm) / "pseudo_quality.json"
        about = stage_dir(run, "pseudo", arm) / "about.json" if arm.kind == "self_train" else None
        if about is not None and about.exists():  # what the arm's pseudo-labels were
            a = json.loads(about.read_text())
            q = json.loads(pq.read_text()) if pq.exists() else {}
            rows[arm.name]["pseudo_labels"] = {"kept_fraction": a["kept_fraction"], "thresholds": a["thresholds"],
                                               "precision": q.get("precision"), "coverage": q.get("coverage"),
                                               "per_class": q.get("per_class")}
        history = stage_dir(run, "segment", arm) / "history.json"
        if arm.kind == "online" and history.exists():  # the last epoch's weight and source-val curves
            last = json.loads(history.read_text())[-1]
            rows[arm.name]["online"] = {"source": arm.base, "confidence_weight": last.get("confidence_weight"),
                                        "student_source_val_mIoU": last["mIoU"],
                                        "teacher_source_val_mIoU": last.get("teacher_mIoU")}
        gallery = stage_dir(run, "evaluate", arm) / "failures.json"
        if gallery.exists():
            rows[arm.name]["failure_agreement"] = json.loads(gallery.read_text())["mean_agreement"]
    base = rows["source_only"]["mIoU"]
    top = rows["oracle"]["mIoU"] if "oracle" in rows else None
    for name, row in rows.items():
        row["delta_mIoU"] = row["mIoU"] - base
        row["gap_closed"] = (row["mIoU"] - base) / (top - base) if top is not None and top != base else None
    ranking = sorted((n for n in rows if n != "oracle"), key=lambda n: -rows[n]["mIoU"])
    return {"schema": METRICS_SCHEMA, "target_val": specs(cfg)["target_val"], "classes": cfg.eval.classes,
            "arms": rows, "ranking": ranking}


def manifest(cfg: StudyConfig, run: Path) -> dict:
    """RUN/study.json: what the report needs to know about the study, as plain data."""
    stages = json.loads((run / "stages.json").read_text()) if (run / "stages.json").exists() else {}
    seg = cfg.segment
    rows = []
    for arm in arms(cfg):
        row = {"name": arm.name, "kind": arm.kind, "segment": f"segment/{arm.name}", "eval": f"eval/{arm.name}"}
        if arm.kind == "translation":
            about = stage_dir(run, "apply", arm) / "about.json"
            t = arm.translate
            length = f"{t.epochs * t.steps_per_epoch} steps" if t.steps_per_epoch else f"{t.epochs} epochs"
            desc = json.loads(about.read_text())["description"] if about.exists() else t.method
            if method(t.method).TRAINS:
                desc += f", {length} at batch {t.data.batch_size}, size {t.data.size[0]}x{t.data.size[1]}"
                if t.data.random_crop:
                    desc += f" (random {t.data.random_crop[0]}x{t.data.random_crop[1]} crops)"
            if arm.on_the_fly:
                desc += "; applied on the fly in segmenter training"
            row.update(method=t.method, description=desc, translate=f"translate/{arm.name}",
                       translated=f"translated/{arm.name}", on_the_fly=arm.on_the_fly)
        if arm.kind == "self_train":
            st, r = arm.self_train, arm.name.rsplit("_r", 1)[1]
            row.update(description=f"self-training round {r}: pseudo-labels of target train from "
                                   f"{' + '.join(arm.teachers)} ({st.percentile:g}th percentile per class, capped at "
                                   f"0.9), mixed {st.mix_fraction:g} into each batch of {arm.base}'s training set; "
                                   f"{'warm start from the teacher' if st.warm_start else 'same initialisation as ' + arm.base}, "
                                   f"selected on {arm.base}'s translated source val", pseudo=f"pseudo/{arm.name}")
        if arm.kind == "online":
            o = arm.online
            parts = [f"an EMA teacher (alpha {o.alpha:g}) labels target frames, ClassMix pastes half the classes of each "
                     f"source frame into a target frame, the teacher's labels weighted by the share of its pixels with "
                     f"confidence >= {o.threshold:g}, strong colour jitter and blur"]
            if o.rare_class_sampling:
                parts.append(f"rare-class sampling of the source frames (T {o.rcs_temperature:g})")
            if o.mic:
                parts.append(f"MIC: the student also learns the teacher's labels from target frames with "
                             f"{100 * o.mic_ratio:.0f}% of their patches masked")
            row.update(method=arm.translate.method if arm.translate else None, source=arm.base,
                       description=f"online self-training on "
                                   f"{'the raw source' if arm.base == 'source_only' else arm.base + chr(39) + 's training set'} "
                                   f"and the unlabelled target "
                                   f"train frames, {seg.epochs * (seg.steps_per_epoch or 0) or seg.epochs} "
                                   f"{'steps' if seg.steps_per_epoch else 'epochs'} at batch {seg.data.batch_size} "
                                   f"source + {seg.data.batch_size} target: " + "; ".join(parts)
                                   + "; the last student is evaluated")
        rows.append(row)
    return {"name": run.name, "seed": cfg.seed, "specs": specs(cfg), "judge": judge(cfg),
            "segmenter": f"{seg.model.arch}-{seg.model.backbone}, {seg.epochs} epochs, size {seg.data.size[0]}x"
                         f"{seg.data.size[1]}, selected on (translated) source val mIoU",
            "segment_size": list(seg.data.size), "arms": rows,
            "stage_seconds": {k: v["seconds"] for k, v in stages.items()},
            "stage_peak_rss_mb": {k: v.get("peak_rss_mb") for k, v in stages.items()}}


def results_table(metrics: dict) -> str:
    rows = [f"{'arm':24s} {'PA':>6s} {'MPA':>6s} {'mIoU':>6s} {'FWIoU':>6s} {'gap closed':>10s}"]
    for name, m in metrics.get("arms", {}).items():
        label = name + (" (upper bound)" if name == "oracle" else "")
        gap = "" if m["gap_closed"] is None or m["kind"] in ("source_only", "oracle") else f"{100 * m['gap_closed']:.1f}%"
        rows.append(f"{label:24s} {m['PA']:6.2f} {m['MPA']:6.2f} {m['mIoU']:6.2f} {m['FWIoU']:6.2f} {gap:>10s}")
    return "\n".join(rows)
