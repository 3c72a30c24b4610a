"""The evaluate stage's diagnostics that need models, made where the models are (the report reads
the files): how target-like an arm's training frames are (FCN-score, KID/FID), the failure
gallery of a translation arm, and the pseudo-labels of a self-training arm. Each takes the arm
(which knows its study) and the folder to write into."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import labels as L
from ..data.datasets import build_index, load_pair, read_image, read_label
from ..fid import HOW_TO_GET, load_inception, score
from ..io import save_png, write_json
from ..pictures import grid
from ..progress import say
from ..runtime import init_runtime
from ..segmentation.evaluate import EvalProtocol, evaluate, frame_agreement
from ..segmentation.models import load_trained
from ..segmentation.predict import pseudo_label_quality


def pseudo_label_pictures(arm, out: Path, k: int = 4) -> None:
    """out/pseudo_labels.png: target train frames with the pseudo-labels the arm trained on (and,
    where the target train set has labels, as on the synthetic benchmark, their true labels and
    out/pseudo_quality.json: precision and coverage per class, a diagnostic with labels no
    real user has)."""
    pseudo = build_index(f"pseudo:{arm.folder('pseudo')}")
    truth = build_index(arm.study.specs["target_train"])
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
        write_json(out / "pseudo_quality.json", pseudo_label_quality(arm.folder("pseudo"), truth.spec))


def translation_scores(arm, out: Path) -> None:
    """How target-like the frames the arm trains on are (``arm.trained_on()``: raw source for
    source-only, the floor): out/translation.json with

    fcn_score   the oracle segmenter (trained on *target labels*) on these frames against their
                source labels (Isola et al.'s FCN-score): a diagnostic that needs labels no UDA user
                has, never used to select anything; only with the oracle on
    kid_fid     KID (x 1000) and FID against target train frames, eval.kid_fid frames a side (fid.py);
                the target's features are cached in RUN/fid_cache and computed once"""
    study = arm.study
    cfg, frames = study.cfg, arm.trained_on()
    result: dict[str, Any] = {"frames": frames, "fcn_score": None, "kid_fid": None}
    if study.oracle is not None:
        rt = init_runtime(cfg.segment.device)
        model, mcfg = load_trained(study.oracle.folder("segment"), rt.device)
        protocol = EvalProtocol(size=tuple(mcfg["data"]["size"]), classes=cfg.eval.classes)
        r = evaluate(model, frames, rt, protocol, workers=0)
        result["fcn_score"] = {k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU", "frames")}
    if cfg.eval.kid_fid:
        net = load_inception()
        if net is None:
            say(HOW_TO_GET, "yellow")
            result["kid_fid"] = {"skipped": HOW_TO_GET}
        else:
            result["kid_fid"] = score(frames, study.specs["target_train"], cfg.eval.kid_fid, study.run / "fid_cache", net)
    write_json(out / "translation.json", result)


def failure_gallery(arm, out: Path, n_frames: int = 200, k: int = 6) -> None:
    """out/failures.png and failures.json: the arm's translated source val frames where the study's
    judge (the oracle, else source-only) agrees least with the source label."""
    study = arm.study
    judge = study.judge
    rt = init_runtime(study.cfg.segment.device)
    model, mcfg = load_trained(judge.folder("segment"), rt.device)
    rows = frame_agreement(model, arm.trained_on(), tuple(mcfg["data"]["size"]), rt, n_frames)
    source_root = build_index(study.specs["source_val"]).root
    worst = rows[:k]
    pics = []
    for r in worst:
        src = source_root / r["name"]
        pics.append([read_image(src) if src.exists() else r["image"], r["image"], L.overlay(r["image"], r["label"]),
                     L.overlay(r["image"], r["pred"])])
    save_png(out / "failures.png", grid(pics, height=worst[0]["image"].shape[0],
                                        captions=["source", "translated", "source label", f"{judge.name} sees"]))
    write_json(out / "failures.json", {"judge": judge.name, "judge_bound": judge.BOUND, "frames_scored": len(rows),
                                       "mean_agreement": sum(r["agreement"] for r in rows) / len(rows),
                                       "worst": [{"name": r["name"], "agreement": r["agreement"]} for r in worst]})
