"""The look and evaluate stages' diagnostics that need models, made where the models are (the report reads
the files): how target-like an arm's training frames are and how they look (FCN-score, KID/FID,
checkerboard, colour cast), what a translation arm's translator did to the frames' meaning (its
failure gallery and flip tables), and the pseudo-labels of a self-training arm. Each takes the arm
(which knows its study) and the folder to write into."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import appearance
from ..data import labels as L
from ..data.datasets import build_index, fit_label, load_pair, read_image, read_label
from ..data.transforms import eval_transform
from ..fid import HOW_TO_GET, load_inception, score
from ..io import read_json, save_png, write_json
from ..metrics import confusion_matrix, flip_table
from ..pictures import grid
from ..progress import say
from ..runtime import init_runtime
from ..segmentation.evaluate import EvalProtocol, classes_at, evaluate, frame_agreement
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
                the target's features are cached in RUN/fid_cache and computed once
    appearance  the frames' checkerboard score and mean colour, and their colour shift against the
                target train frames' (appearance.py; the target's own, beside: its floor), over the
                first ``LOOKED_AT`` frames of each; for translated frames, the edges they kept of
                the source frames they were made from"""
    study = arm.study
    cfg, frames = study.cfg, arm.trained_on()
    source = study.specs["source_val"]
    result: dict[str, Any] = {"frames": frames, "fcn_score": None, "kid_fid": None,
                              "appearance": look(frames, target_look(study), source if frames != source else None)}
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


LOOKED_AT = 200  # frames a set's appearance is measured on


def frames_of(spec: str, n: int | None = LOOKED_AT) -> list[np.ndarray]:
    return [read_image(s.image) for s in build_index(spec).samples[:n]]


def read_set(spec: str, n: int | None = LOOKED_AT) -> tuple[list, list[np.ndarray], list[np.ndarray] | None]:
    """The first ``n`` samples of a set, their frames and, where the set has labels, their trainIds
    (None where it has none): each file read once."""
    index = build_index(spec)
    samples = index.samples[:n]
    frames = [read_image(s.image) for s in samples]
    if not index.labelled:
        return samples, frames, None
    return samples, frames, [fit_label(read_label(s.label, index.label_format), f.shape[:2]) for s, f in zip(samples, frames)]


def class_reference(val: tuple, train: tuple) -> tuple[dict | None, float | None]:
    """The class cast's reference, the class colours of the target val frames (``val``: a
    ``read_set``), and its floor, the class cast of the target train frames (``train``) against
    it; (None, None) without val labels, the floor None without train labels."""
    _, val_frames, val_labels = val
    classes = appearance.class_colour(zip(val_frames, val_labels)) if val_labels else None
    _, train_frames, train_labels = train
    if classes is None or not train_labels:
        return classes, None
    return classes, appearance.class_cast(appearance.class_colour(zip(train_frames, train_labels)), classes)["cast"]


def target_look(study) -> dict:
    """The target train frames' checkerboard score and colour, and the cast of the target's own val
    frames against them (the floor of a cast: two sets of the same domain differ this much); where
    the target val set has labels, its class colours (the class cast's reference: target labels)
    and the class cast of the target train frames against them (its floor, where they have labels):
    RUN/appearance_target.json, measured once."""
    cache = study.run / "appearance_target.json"
    spec, val_spec = study.specs["target_train"], study.specs["target_val"]
    cached = read_json(cache, None)
    if (cached is None or cached.get("frames") != spec or cached.get("val_frames") != val_spec
            or "class_colour" not in cached):
        train, val = read_set(spec), read_set(val_spec)
        c, val_colour = appearance.colour(train[1]), appearance.colour(val[1])
        classes, floor = class_reference(val, train)
        cached = {"frames": spec, "val_frames": val_spec, "checkerboard_db": appearance.checkerboard_db(train[1]),
                  "colour": c, "val_cast": appearance.colour_shift(val_colour, c)["cast"] if val_colour and c else None,
                  "class_colour": classes, "train_class_cast": floor}
        write_json(cache, cached)
    return cached


def look(spec: str, target: dict, source: str | None = None) -> dict:
    """appearance.py's measures of a set's first ``LOOKED_AT`` frames against the target's (from
    ``target_look``); with ``source``, the set those frames were translated from (the same names),
    the edges they kept of it; where the set has labels (translated source frames keep the
    source's) and the target val set too, the class cast."""
    samples, frames, labels = read_set(spec)
    c = appearance.colour(frames)
    kept = None
    if source is not None:
        originals = {s.rel: s.image for s in build_index(source).samples}
        kept = appearance.edges_kept((read_image(originals[s.rel]), frame)
                                     for s, frame in zip(samples, frames) if s.rel in originals)
    class_cast = None
    if target.get("class_colour") and labels:
        mine = appearance.class_colour(zip(frames, labels))
        class_cast = appearance.class_cast(mine, target["class_colour"], L.CLASS_NAMES) if mine else None
    return {"checkerboard_db": appearance.checkerboard_db(frames), "colour": c,
            "colour_shift": appearance.colour_shift(c, target["colour"]), "edges_kept": kept,
            "class_cast": class_cast, "target_checkerboard_db": target["checkerboard_db"],
            "target_colour": target["colour"], "target_val_cast": target.get("val_cast"),
            "target_train_class_cast": target.get("train_class_cast"), "cast_jnd": appearance.CAST_JND}


@torch.no_grad()
def readings(model, spec: str, size: tuple[int, int], rt, n: int, batch: int = 16) -> dict[str, np.ndarray]:
    """A segmenter's class maps of the first ``n`` frames of a set, at each frame's size, by name."""
    index, tf, out = build_index(spec), eval_transform(size), {}
    model.eval()
    samples = index.samples[:n]
    for i in range(0, len(samples), batch):
        chunk = [(s, read_image(s.image)) for s in samples[i:i + batch]]
        x = rt.to_device(torch.stack([tf(image, None)[0] for _, image in chunk]))
        for (s, image), pred in zip(chunk, classes_at(model, x, [image.shape[:2] for _, image in chunk])):
            out[s.rel] = pred.cpu().numpy()
    return out


def flips(pairs) -> dict:
    """The flip table (metrics.flip_table) of (reference, reading) class maps, a reading of another
    size resized to the reference's (nearest: translated frames are at the segmenter's size); 255 in
    either left out."""
    conf = torch.zeros(L.NUM_CLASSES, L.NUM_CLASSES, dtype=torch.int64)
    for ref, read in pairs:
        read = fit_label(read.astype(np.uint8), ref.shape)
        conf += confusion_matrix(torch.from_numpy(read.astype(np.int64)), torch.from_numpy(ref.astype(np.int64)),
                                 L.NUM_CLASSES)
    return flip_table(conf)


def failure_gallery(arm, out: Path, n_frames: int = 200, k: int = 6) -> None:
    """out/failures.png and failures.json: the arm's translated source val frames where the study's
    judge (the oracle, else source-only) agrees least with the source label; and two flip tables of
    what the translation did to each class: the judge's reading of the translated frames against
    the source labels (with the oracle as the judge, it needs target labels: a diagnostic of the
    benchmark), and the label-free one, the source-only segmenter's reading of the translated frame
    against its reading of the source frame."""
    study = arm.study
    judge = study.judge
    rt = init_runtime(study.cfg.segment.device)
    model, mcfg = load_trained(judge.folder("segment"), rt.device)
    rows = frame_agreement(model, arm.trained_on(), tuple(mcfg["data"]["size"]), rt, n_frames)
    judged = flips((r["label"], r["pred"]) for r in rows)
    so, so_cfg = load_trained(study.baseline.folder("segment"), rt.device)
    size = tuple(so_cfg["data"]["size"])
    before = readings(so, study.specs["source_val"], size, rt, n_frames)
    after = readings(so, arm.trained_on(), size, rt, n_frames)
    label_free = flips((before[name], after[name]) for name in after if name in before)
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
                                       "worst": [{"name": r["name"], "agreement": r["agreement"]} for r in worst],
                                       "flips": {**judged, "judge": judge.name,
                                                 "needs_target_labels": judge.BOUND == "upper"},
                                       "flips_label_free": {**label_free, "judge": study.baseline.name}})
