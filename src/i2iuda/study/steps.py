"""What each stage does (``run_stage``): the bodies behind the names in plan.py. Heavy modules are
imported inside the stage that needs them, so that planning a study (and the report) imports no
nets."""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import yaml

from ..config import to_dict
from ..data.datasets import build_index
from ..data.synthetic import generate
from ..errors import UserError
from ..io import write_json
from ..progress import console
from ..segmentation.evaluate import EvalProtocol
from .arms import Arm, arm_named, arms, segment_config, specs, stage_dir
from .config import StudyConfig
from .diagnostics import failure_gallery, pseudo_label_pictures, translation_scores


def _can_resume(stage: str, run_dir: Path, stage_cfg) -> bool:
    """An interrupted training stage resumes only if its folder was made with the same config."""
    if not (run_dir / "checkpoints" / "last.pt").exists():
        return False
    if yaml.safe_load((run_dir / "config.yaml").read_text()) != to_dict(stage_cfg):
        raise UserError(f"stage {stage}: {run_dir} holds an unfinished run with another config; "
                        f"use --from {stage} to redo it")
    return True


def run_stage(kind: str, arm: Arm | None, cfg: StudyConfig, run: Path, progress: bool) -> None:
    s = specs(cfg)
    if kind == "data":
        if cfg.data.synthetic_root:
            generate(cfg.data.synthetic_root, cfg.data.synthetic, progress=progress)
        for key, spec in s.items():
            index = build_index(spec)
            for p in index.problems:
                console.print(f"[yellow]{key}: {p}[/yellow]")
            if key != "target_train" and not index.labelled:
                raise UserError(f"data.{key} {spec}: has no labels")
    elif kind == "translate":
        from ..translation.train import train_translator

        folder, tcfg = stage_dir(run, kind, arm), arm.translate
        if arm.semantic_from_study:
            f = str(stage_dir(run, "segment", arms(cfg)[0]))
            tcfg = replace(tcfg, model={**tcfg.model, "semantic_model": f})
        train_translator(tcfg, folder, resume=_can_resume(f"translate:{arm.name}", folder, tcfg), progress=progress)
    elif kind == "apply":
        _apply(cfg, run, arm, progress)
    elif kind == "segment":
        from ..segmentation.train import train_segmenter

        seg, folder = segment_config(cfg, arm, run), stage_dir(run, kind, arm)
        train = train_segmenter
        if arm.kind == "online":
            from ..segmentation.online import train_online as train
        train(seg, folder, resume=_can_resume(f"segment:{arm.name}", folder, seg), progress=progress)
    elif kind == "pseudo":
        _pseudo(cfg, run, arm, progress)
    elif kind == "evaluate":
        _evaluate(cfg, run, arm, progress)
    elif kind == "report":
        from ..report import write_report
        from .results import collect_metrics, manifest

        write_json(run / "metrics.json", collect_metrics(cfg, run))
        write_json(run / "study.json", manifest(cfg, run))
        write_report(run)


def _apply(cfg: StudyConfig, run: Path, arm: Arm, progress: bool) -> None:
    """Translate at the size the segmenter consumes (its data.size), so that the adapted
    segmenter sees frames as sharp as source-only's; a method applied on the fly needs only
    the val split offline (model selection and pictures)."""
    from ..io import save_png
    from ..translation.apply import apply_translator, sample_grid
    from ..translation.train import load_translator

    s = specs(cfg)
    translator, _ = load_translator(stage_dir(run, "translate", arm), arm.translate.device)
    out, size = stage_dir(run, "apply", arm), tuple(cfg.segment.data.size)
    for spec in ([s["source_val"]] if arm.on_the_fly else [s["source_train"], s["source_val"]]):
        apply_translator(translator, spec, out, size, workers=cfg.workers, batch_size=16, progress=progress)
    save_png(out / "samples.png", sample_grid(translator, s["source_val"], s["target_train"], n=4, size=size))
    write_json(out / "about.json", {"description": translator.describe(size), "size": list(size)})


def _pseudo(cfg: StudyConfig, run: Path, arm: Arm, progress: bool) -> None:
    """Pseudo-label target train with the arm's teachers (their mean softmax): RUN/pseudo/ARM/
    (predictions/ and the thresholded labels/, about.json with the class thresholds)."""
    from ..segmentation.predict import predict, pseudo_labels

    out = stage_dir(run, "pseudo", arm)
    teachers = [stage_dir(run, "segment", arm_named(cfg, t)) for t in arm.teachers]
    predict(teachers, specs(cfg)["target_train"], out / "predictions", EvalProtocol(), device=cfg.segment.device,
            workers=cfg.workers, progress=progress)
    pseudo_labels(out / "predictions", out, arm.self_train.percentile, progress=progress)


def _evaluate(cfg: StudyConfig, run: Path, arm: Arm, progress: bool) -> None:
    """The arm's segmenter on target val (metrics, prediction pictures); for a translation arm
    also the failure gallery: its translated source val frames where the judge (the oracle, else
    source-only) sees something else than the source label says, i.e. where translation changed
    the meaning (the pictures are made here, where the models are, and the report reads them)."""
    from ..segmentation.evaluate import run_eval

    protocol = EvalProtocol(**{f.name: getattr(cfg.eval, f.name) for f in fields(EvalProtocol)})
    out = stage_dir(run, "evaluate", arm)
    run_eval(stage_dir(run, "segment", arm), specs(cfg)["target_val"], out, protocol, pictures=cfg.eval.pictures,
             device=cfg.segment.device, workers=cfg.workers, progress=progress)
    if arm.kind in ("source_only", "translation"):
        translation_scores(cfg, run, arm, out)
    if arm.kind == "translation":
        failure_gallery(cfg, run, arm, out)
    if arm.kind == "self_train":
        pseudo_label_pictures(cfg, run, arm, out)
