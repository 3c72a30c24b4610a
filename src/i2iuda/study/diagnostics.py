"""The evaluate stage's diagnostics that need models, made where the models are (the report reads
the files): how target-like an arm's training frames are (FCN-score, KID/FID), the failure
gallery of a translation arm, and the pseudo-labels of a self-training arm."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.datasets import build_index
from ..io import write_json
from ..progress import console
from ..segmentation.evaluate import EvalProtocol
from .arms import Arm, judge, specs, stage_dir, trained_on_frames, translated_specs
from .config import StudyConfig


def pseudo_label_pictures(cfg: StudyConfig, run: Path, arm: Arm, out: Path, k: int = 4) -> None:
    """out/pseudo_labels.png: target train frames with the pseudo-labels the arm trained on (and,
    where the target train set has labels, as on the synthetic benchmark, their true labels and
    out/pseudo_quality.json: precision and coverage per class, a diagnostic with labels no
    real user has)."""
    from ..data import labels as L
    from ..data.datasets import load_pair, read_label
    from ..io import save_png
    from ..pictures import grid
    from ..segmentation.predict import pseudo_label_quality

    pseudo = build_index(f"pseudo:{stage_dir(run, 'pseudo', arm)}")
    truth = build_index(specs(cfg)["target_train"])
    true_of = {s.rel: s for s in truth.samples} if truth.labelled else {}
    rows = []
    for s in pseudo.samples[:k]:
        image, _ = load_pair(s, None)
        row = [image, L.overlay(image, read_label(s.label, "trainid"))]
        if s.rel in true_of:
            row.append(L.overlay(image, load_pair(true_of[s.rel], truth.label_format)[1]))
        rows.append(row)
    captions = ["target train frame", "pseudo-label"] + (["true label"] if true_of else [])
    save_png(out / "pseudo_labels.png", grid(rows, height=rows[0][0].shape[0], captions=captions))
    if truth.labelled:
        write_json(out / "pseudo_quality.json", pseudo_label_quality(stage_dir(run, "pseudo", arm), truth.spec))


def trained_on_frames(cfg: StudyConfig, run: Path, arm: Arm) -> str:
    """The source val frames of the arm's training set: raw (source-only), translated otherwise."""
    return specs(cfg)["source_val"] if arm.kind == "source_only" else translated_specs(cfg, run, arm.name)[1]


def translation_scores(cfg: StudyConfig, run: Path, arm: Arm, out: Path) -> None:
    """How target-like the frames the arm trains on are (raw source for source-only: the floor):
    out/translation.json with

    fcn_score   the oracle segmenter (trained on *target labels*) on these frames against their
                source labels (Isola et al.'s FCN-score): a diagnostic that needs labels no UDA user
                has, never used to select anything; only with the oracle on
    kid_fid     KID (x 1000) and FID against target train frames, eval.kid_fid frames a side (fid.py);
                the target's features are cached in RUN/fid_cache and computed once"""
    from ..fid import HOW_TO_GET, load_inception, score
    from ..runtime import init_runtime
    from ..segmentation.evaluate import evaluate
    from ..segmentation.models import load_trained

    frames = trained_on_frames(cfg, run, arm)
    result: dict[str, Any] = {"frames": frames, "fcn_score": None, "kid_fid": None}
    if cfg.oracle:
        rt = init_runtime(cfg.segment.device)
        model, mcfg = load_trained(stage_dir(run, "segment", Arm("oracle", "oracle")), rt.device)
        protocol = EvalProtocol(size=tuple(mcfg["data"]["size"]), classes=cfg.eval.classes)
        r = evaluate(model, frames, rt, protocol, workers=0)
        result["fcn_score"] = {k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU", "frames")}
    if cfg.eval.kid_fid:
        net = load_inception()
        if net is None:
            console.print(f"[yellow]{HOW_TO_GET}[/yellow]")
            result["kid_fid"] = {"skipped": HOW_TO_GET}
        else:
            result["kid_fid"] = score(frames, specs(cfg)["target_train"], cfg.eval.kid_fid, run / "fid_cache", net)
    write_json(out / "translation.json", result)


def failure_gallery(cfg: StudyConfig, run: Path, arm: Arm, out: Path, n_frames: int = 200, k: int = 6) -> None:
    from ..data import labels as L
    from ..data.datasets import read_image
    from ..io import save_png
    from ..pictures import grid
    from ..runtime import init_runtime
    from ..segmentation.evaluate import frame_agreement
    from ..segmentation.models import load_trained

    rt = init_runtime(cfg.segment.device)
    model, mcfg = load_trained(stage_dir(run, "segment", Arm(judge(cfg), judge(cfg))), rt.device)
    rows = frame_agreement(model, translated_specs(cfg, run, arm.name)[1], tuple(mcfg["data"]["size"]), rt, n_frames)
    source_root = build_index(specs(cfg)["source_val"]).root
    worst = rows[:k]
    pics = []
    for r in worst:
        src = source_root / r["name"]
        pics.append([read_image(src) if src.exists() else r["image"], r["image"], L.overlay(r["image"], r["label"]),
                     L.overlay(r["image"], r["pred"])])
    save_png(out / "failures.png", grid(pics, height=worst[0]["image"].shape[0],
                                        captions=["source", "translated", "source label", f"{judge(cfg)} sees"]))
    write_json(out / "failures.json", {"judge": judge(cfg), "frames_scored": len(rows),
                                       "mean_agreement": sum(r["agreement"] for r in rows) / len(rows),
                                       "worst": [{"name": r["name"], "agreement": r["agreement"]} for r in worst]})
