"""The study's plan: its stages in order, what each one depends on (its config hash: a finished
stage whose hash changed is redone), what each one reads (``needs``: when it may start in a
lane), and RUN/stages.json, the record of finished stages.

    data              generate the built-in benchmark if absent (or check that the real folders read)
    translate:ARM     train the arm's translator                       RUN/translate/ARM/
    apply:ARM         translate source train and val at the segmenter's input size  RUN/translated/ARM/
    segment:ARM       DeepLab for every arm, selected on (translated) source val   RUN/segment/ARM/
    pseudo:ARM        a self-training arm's pseudo-labels of target train  RUN/pseudo/ARM/
    evaluate:ARM      every arm on the target val set, and its diagnostics      RUN/eval/ARM/
    report            RUN/metrics.json, study.json, report.md and report.html (reads files only)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import to_dict
from ..io import write_json
from .arms import Arm, arm_named, arms, judge, specs
from .config import StudyConfig

KINDS = ("data", "translate", "apply", "segment", "pseudo", "evaluate", "report")


def stage_list(cfg: StudyConfig) -> list[tuple[str, Arm | None]]:
    """data, translate and apply per translation arm, segment and evaluate per arm, report. An arm
    with CyCADA's loss that uses the study's source-only model needs it first: then
    segment:source_only comes right after data."""
    all_arms = arms(cfg)
    translation = [a for a in all_arms if a.kind == "translation"]
    early = [a for a in all_arms[:1] if any(t.semantic_from_study for t in translation)]
    plain = [a for a in all_arms if a not in early and a.kind not in ("self_train", "online")]
    return ([("data", None)] + [("segment", a) for a in early]
            + [(k, a) for a in translation for k in ("translate", "apply")]
            + [("segment", a) for a in plain]
            + [(k, a) for a in all_arms if a.kind == "self_train" for k in ("pseudo", "segment")]
            + [("segment", a) for a in all_arms if a.kind == "online"]
            + [("evaluate", a) for a in all_arms] + [("report", None)])


def stage_name(kind: str, arm: Arm | None) -> str:
    return kind if arm is None else f"{kind}:{arm.name}"


def stage_config(cfg: StudyConfig, kind: str, arm: Arm | None) -> dict:
    """What a stage depends on: its hash decides whether a finished stage is still valid."""
    base = {"seed": cfg.seed, "data": specs(cfg)}
    if kind == "data":
        return {"seed": cfg.seed, "data": to_dict(cfg.data)}
    if kind == "report":
        return {"all": to_dict(cfg)}
    if arm.kind == "self_train":  # what the teachers depend on, the recipe and the round
        teachers = [stage_config(cfg, "segment", arm_named(cfg, t)) for t in arm.teachers]
        pseudo = {**base, "teachers": teachers, "self_train": to_dict(arm.self_train), "arm": arm.kind}
        if kind == "pseudo":
            return pseudo
        if kind == "segment":
            return {**pseudo, "base": stage_config(cfg, "segment", arm_named(cfg, arm.base))}
        return {**pseudo, "base": stage_config(cfg, "segment", arm_named(cfg, arm.base)), "eval": to_dict(cfg.eval)}
    if arm.kind == "online":  # the source arm's segment stage and the method's settings
        segment = {**stage_config(cfg, "segment", arm_named(cfg, arm.base)), "arm": arm.kind,
                   "online": to_dict(arm.online)}
        return segment if kind == "segment" else {**segment, "eval": _eval_settings(cfg)}
    translate = {"translate": to_dict(arm.translate), "size": cfg.segment.data.size} if arm.translate else {}
    if arm.semantic_from_study:  # f is the study's source-only model: its stage is part of this one
        translate["semantic_from"] = stage_config(cfg, "segment", arms(cfg)[0])
    if kind in ("translate", "apply"):
        return {**base, **translate}
    segment = {**base, **translate, "segment": to_dict(cfg.segment), "arm": arm.kind}
    if kind == "segment":
        return segment
    # evaluate: the arm's segmenter, the protocol, and the judge of the failure gallery and the
    # FCN-score
    scored = arm.kind != "oracle"
    judged = {"judge": stage_config(cfg, "segment", Arm(judge(cfg), judge(cfg))), "scores": 1} if scored else {}
    return {**segment, "eval": _eval_settings(cfg), **judged}


def _eval_settings(cfg: StudyConfig) -> dict:
    """The evaluation protocol; KID/FID (eval.kid_fid) only where they are computed, so that studies
    run before they existed stay valid."""
    ev = to_dict(cfg.eval)
    if not ev.get("kid_fid"):
        ev.pop("kid_fid", None)
    return ev


# Features added after studies were run, by their switch and its off value: while a feature is off,
# its switch and every setting named after it (semantic_model, mix_fraction, ...) are left out of
# the stage hashes, so finished studies stay valid when a feature is added.
ADDED_FEATURES = {"semantic": 0.0, "mix": "", "init_from": "", "encoder_depth": 5, "decoder_channels": 256,
                  "lanes": 1, "random_crop": None, "source_gap": 2.0, "online": {}, "steps": None, "target_size": None}


def _without_features_off(obj):
    if isinstance(obj, list):
        return [_without_features_off(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    off = [k for k, v in ADDED_FEATURES.items() if k in obj and obj[k] == v]
    return {k: _without_features_off(v) for k, v in obj.items() if not any(k.startswith(f) for f in off)}


def stage_hash(obj) -> str:
    obj = _without_features_off(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """RUN/stages.json: which stages are done, for which config hash, in how many seconds."""

    def __init__(self, run: Path):
        self.path = run / "stages.json"
        self.state = json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, stage: str, h: str) -> bool:
        return self.state.get(stage, {}).get("hash") == h

    def recorded(self, stage: str) -> bool:
        return stage in self.state

    def mark(self, stage: str, h: str, seconds: float, peak: float | None = None) -> None:
        import resource

        # the memory high-water mark so far (Linux: KiB) of the process that ran the stage (the
        # study's, or its lane's), data loader workers apart
        peak = peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.state[stage] = {"hash": h, "seconds": round(seconds, 1), "peak_rss_mb": round(peak)}
        write_json(self.path, self.state)

    def forget(self, names) -> None:
        for s in names:
            self.state.pop(s, None)
        write_json(self.path, self.state)


def needs(cfg: StudyConfig, kind: str, arm: Arm | None) -> set[str]:
    """The stages whose outputs a stage reads (what decides when it may start in a lane)."""
    if kind == "data":
        return set()
    if kind == "report":
        return {stage_name(k, a) for k, a in stage_list(cfg)} - {"report"}
    if kind == "translate":
        early = {stage_name("segment", arms(cfg)[0])} if arm.semantic_from_study else set()
        return {"data"} | early
    if kind == "apply":
        return {stage_name("translate", arm)}
    if kind == "pseudo":
        teachers = [arm_named(cfg, t) for t in arm.teachers]
        return {n for t in teachers for n in {stage_name("segment", t)} | needs(cfg, "segment", t)}
    if kind == "segment":
        if arm.kind == "self_train":
            return {stage_name("pseudo", arm)} | needs(cfg, "segment", arm_named(cfg, arm.base))
        if arm.kind == "online":
            return needs(cfg, "segment", arm_named(cfg, arm.base))
        return {"data"} | ({stage_name("apply", arm)} if arm.kind == "translation" else set())
    # evaluate: the arm's segmenter, the judge of its failure gallery, its pseudo-labels
    judged = {stage_name("segment", arm_named(cfg, judge(cfg)))} if arm.kind not in ("oracle", "online") else set()
    pseudo = {stage_name("pseudo", arm)} if arm.kind == "self_train" else set()
    return {stage_name("segment", arm)} | needs(cfg, "segment", arm) | judged | pseudo
