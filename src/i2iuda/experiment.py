"""The study in one command: translate source -> target, then compare a segmenter trained on
raw source ("source-only") with one trained on translated source ("adapted"), and optionally
one trained on target labels ("oracle", an upper bound), all evaluated on the target val set.

Stages, each writing into the run folder:

    data         generate the built-in benchmark if absent (or check that the real folders read)
    translate    train CycleGAN source -> target               RUN/translate/
    apply        translate the source train and val frames      RUN/translated/
    source_only  segment on raw source, select on source val    RUN/source_only/
    adapted      segment on translated source, select on translated source val   RUN/adapted/
    oracle       segment on target train (upper bound)          RUN/oracle/
    evaluate     every model on the target val set              RUN/eval/<model>/, RUN/metrics.json
    report       report.md and report.html                      RUN/report.*

A stage is skipped on re-run when RUN/stages.json records it done with the same config; an
interrupted training stage resumes from its last checkpoint. ``--from STAGE`` redoes a stage
and everything after it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import save_config, to_dict
from .data.datasets import build_index
from .data.synthetic import SynthConfig, generate
from .errors import UserError
from .io import write_json
from .progress import console
from .segmentation.train import SegmentConfig
from .translation.train import TranslateConfig

STAGES = ("data", "translate", "apply", "source_only", "adapted", "oracle", "evaluate", "report")
MODELS = ("source_only", "adapted", "oracle")
METRICS_SCHEMA = "i2iuda.study.metrics/1"


@dataclass
class StudyData:
    # Built-in benchmark: generated into synthetic_root if absent; {root} in the specs below
    # stands for it. For real data set synthetic_root: null and give the four specs.
    synthetic_root: str | None = "data/synthetic"
    synthetic: SynthConfig = field(default_factory=lambda: SynthConfig(n_source=1000, n_target_train=1000,
                                                                       n_target_val=300))
    source_train: str = "synthetic:{root}:source-train"
    source_val: str = "synthetic:{root}:source-val"
    target_train: str = "synthetic:{root}:target-train"
    target_val: str = "synthetic:{root}:target-val"


@dataclass
class StudyEval:
    size: tuple[int, int] | None = None  # input size (None: the segmenters' training size)
    flip: bool = False
    classes: str = "19"  # 19, 16 or 13
    pictures: int = 6


@dataclass
class StudyConfig:
    seed: int = 0
    data: StudyData = field(default_factory=StudyData)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    oracle: bool = True  # train on target labels too: an upper bound, not a UDA result
    eval: StudyEval = field(default_factory=StudyEval)
    workers: int = 2


def specs(cfg: StudyConfig) -> dict[str, str]:
    root = cfg.data.synthetic_root or ""
    return {k: getattr(cfg.data, k).format(root=root) for k in ("source_train", "source_val", "target_train", "target_val")}


def translated_specs(cfg: StudyConfig, run: Path) -> tuple[str, str]:
    """The translated source keeps the source's layout, so its kind and holdout carry over."""
    from .translation.apply import translated_spec

    src = specs(cfg)["source_train"]
    return translated_spec(src, run / "translated", "train"), translated_spec(src, run / "translated", "val")


def stage_config(cfg: StudyConfig, stage: str) -> dict:
    """What a stage depends on: its hash decides whether a finished stage is still valid."""
    s = specs(cfg)
    base = {"seed": cfg.seed}
    if stage == "data":
        return {**base, "data": to_dict(cfg.data)}
    if stage in ("translate", "apply"):
        return {**base, "data": s, "translate": to_dict(cfg.translate)}
    if stage in MODELS:
        return {**base, "data": s, "segment": to_dict(cfg.segment),
                **({"translate": to_dict(cfg.translate)} if stage == "adapted" else {})}
    return {**base, "all": to_dict(cfg)}


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """RUN/stages.json: which stages are done, for which config hash, in how many seconds."""

    def __init__(self, run: Path):
        self.path = run / "stages.json"
        self.state = json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, stage: str, h: str) -> bool:
        return self.state.get(stage, {}).get("hash") == h

    def mark(self, stage: str, h: str, seconds: float) -> None:
        self.state[stage] = {"hash": h, "seconds": round(seconds, 1)}
        write_json(self.path, self.state)

    def forget(self, stages) -> None:
        for s in stages:
            self.state.pop(s, None)
        write_json(self.path, self.state)


def stage_dirs(run: Path, stage: str) -> list[Path]:
    return {"translate": [run / "translate"], "apply": [run / "translated"], "source_only": [run / "source_only"],
            "adapted": [run / "adapted"], "oracle": [run / "oracle"], "evaluate": [run / "eval"],
            "report": [run / "figures"]}.get(stage, [])


def run_study(cfg: StudyConfig, run: str | Path, from_stage: str | None = None, stop_after: str | None = None,
              progress: bool = True) -> dict:
    """Run (or continue) the study in ``run``. Returns the metrics (RUN/metrics.json)."""
    # absolute paths in the saved config, so the report and later stages work from any folder
    run = Path(run).resolve()
    if cfg.data.synthetic_root:
        cfg = replace(cfg, data=replace(cfg.data, synthetic_root=str(Path(cfg.data.synthetic_root).resolve())))
    # the study's seed is the one seed: the saved config.yaml shows it in every stage too
    cfg = replace(cfg, translate=replace(cfg.translate, seed=cfg.seed), segment=replace(cfg.segment, seed=cfg.seed))
    for name, value in (("--from", from_stage), ("--stop-after", stop_after)):
        if value is not None and value not in STAGES:
            raise UserError(f"{name} {value!r}: expected one of {', '.join(STAGES)}")
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    stages = Stages(run)
    if from_stage:
        later = STAGES[STAGES.index(from_stage):]
        stages.forget(later)
        for s in later:
            for d in stage_dirs(run, s):
                shutil.rmtree(d, ignore_errors=True)
    s = specs(cfg)
    t_src, t_val = translated_specs(cfg, run)
    todo = [st for st in STAGES if st != "oracle" or cfg.oracle]
    for stage in todo:
        h = _hash(stage_config(cfg, stage))
        if stages.done(stage, h):
            console.print(f"[dim]stage {stage}: done, skipped[/dim]")
        else:
            console.print(f"[bold]stage {stage}[/bold]")
            t0 = time.perf_counter()
            _run_stage(stage, cfg, run, s, t_src, t_val, progress)
            stages.mark(stage, h, time.perf_counter() - t0)
        if stage == stop_after:
            break
    metrics = run / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.exists() else {}


def _can_resume(stage: str, run_dir: Path, stage_cfg) -> bool:
    """An interrupted training stage resumes only if its folder was made with the same config."""
    if not (run_dir / "checkpoints" / "last.pt").exists():
        return False
    import yaml

    if yaml.safe_load((run_dir / "config.yaml").read_text()) != to_dict(stage_cfg):
        raise UserError(f"stage {stage}: {run_dir} holds an unfinished run with another config; "
                        f"use --from {stage} to redo it")
    return True


def _segment(stage: str, cfg: StudyConfig, run_dir: Path, train: str, val: str, progress: bool) -> None:
    from .segmentation.train import train_segmenter

    seg = replace(cfg.segment, train=train, val=val)
    train_segmenter(seg, run_dir, resume=_can_resume(stage, run_dir, seg), progress=progress)


def _run_stage(stage: str, cfg: StudyConfig, run: Path, s: dict, t_src: str, t_val: str, progress: bool) -> None:
    if stage == "data":
        if cfg.data.synthetic_root:
            generate(cfg.data.synthetic_root, cfg.data.synthetic, progress=progress)
        for key, spec in s.items():
            index = build_index(spec)
            for p in index.problems:
                console.print(f"[yellow]{key}: {p}[/yellow]")
            if key != "target_train" and not index.labelled:
                raise UserError(f"data.{key} {spec}: has no labels")
    elif stage == "translate":
        from .translation.train import train_translator

        tcfg = replace(cfg.translate, source=s["source_train"], target=s["target_train"])
        train_translator(tcfg, run / "translate", resume=_can_resume(stage, run / "translate", tcfg),
                         progress=progress)
    elif stage == "apply":
        from .translation.apply import apply_translator

        for spec in (s["source_train"], s["source_val"]):
            apply_translator(run / "translate", spec, run / "translated", device=cfg.translate.device,
                             workers=cfg.workers, batch_size=16, progress=progress)
    elif stage == "source_only":
        _segment(stage, cfg, run / "source_only", s["source_train"], s["source_val"], progress)
    elif stage == "adapted":
        _segment(stage, cfg, run / "adapted", t_src, t_val, progress)
    elif stage == "oracle":
        # an upper bound: trained and selected on target labels (target val), never a UDA number
        _segment(stage, cfg, run / "oracle", s["target_train"], s["target_val"], progress)
    elif stage == "evaluate":
        _evaluate_all(cfg, run, s["target_val"], progress)
    elif stage == "report":
        from .report import write_report

        write_report(run)


def _evaluate_all(cfg: StudyConfig, run: Path, target_val: str, progress: bool) -> None:
    from .segmentation.evaluate import run_eval

    models = {}
    for m in MODELS:
        if m == "oracle" and not cfg.oracle:
            continue
        r = run_eval(run / m, target_val, run / "eval" / m, cfg.eval.size, cfg.eval.flip, "1.0", cfg.eval.classes,
                     pictures=cfg.eval.pictures, device=cfg.segment.device, workers=cfg.workers, progress=progress)
        models[m] = {k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")}
    gap = None
    if "oracle" in models and models["oracle"]["mIoU"] != models["source_only"]["mIoU"]:
        gap = (models["adapted"]["mIoU"] - models["source_only"]["mIoU"]) / \
              (models["oracle"]["mIoU"] - models["source_only"]["mIoU"])
    write_json(run / "metrics.json", {
        "schema": METRICS_SCHEMA, "target_val": target_val, "classes": cfg.eval.classes,
        "models": models, "gap_closed": gap,
        "delta_mIoU_adapted_minus_source_only": models["adapted"]["mIoU"] - models["source_only"]["mIoU"],
    })


def results_table(metrics: dict) -> str:
    rows = [f"{'model':20s} {'PA':>6s} {'MPA':>6s} {'mIoU':>6s} {'FWIoU':>6s}"]
    for name, m in metrics.get("models", {}).items():
        label = name + (" (upper bound)" if name == "oracle" else "")
        rows.append(f"{label:20s} {m['PA']:6.2f} {m['MPA']:6.2f} {m['mIoU']:6.2f} {m['FWIoU']:6.2f}")
    if metrics.get("gap_closed") is not None:
        rows.append(f"gap closed (adapted - source-only) / (oracle - source-only): {100 * metrics['gap_closed']:.1f}%")
    return "\n".join(rows)
