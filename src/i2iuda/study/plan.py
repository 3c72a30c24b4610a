"""The study's plan: its stages in order, what each one depends on (its config hash: a finished
stage whose hash changed is redone), what each one reads (``needs``: when it may start in a
lane), and RUN/stages.json, the record of finished stages. The study's own two stages are here;
every other stage is an arm's (arms/):

    data              generate the built-in benchmark if absent (or check that the real folders read)
    translate:ARM     train the arm's translator                       RUN/translate/ARM/
    apply:ARM         translate source train and val at the segmenter's input size  RUN/translated/ARM/
    segment:ARM       every arm's segmenter                                     RUN/segment/ARM/
    pseudo:ARM        a self-training arm's pseudo-labels of target train  RUN/pseudo/ARM/
    look:ARM          how the frames source-only and a translation arm train on look to the judge
                      (FCN-score, KID, checkerboard, cast; flips, failure gallery)  RUN/look/ARM/
    evaluate:ARM      every arm on the target val set, and its diagnostics      RUN/eval/ARM/
    report            RUN/metrics.json, study.json, report.md and report.html (reads files only)
"""
from __future__ import annotations

import hashlib
import json
import resource
from pathlib import Path

from ..config import to_dict
from ..errors import UserError
from ..io import read_json, write_json
from ..progress import say
from .arms.base import DATA, FOLDERS, REPORT, Arm, stage_name
from .study import Study

KINDS = ("data", "translate", "apply", "segment", "pseudo", "look", "evaluate", "report")
Stage = tuple[str, "Arm | None"]  # (kind of stage, its arm; None for the study's own)


def stage_list(study: Study) -> list[Stage]:
    """Every arm's stages between data and report, sorted by phase (stably: arms in their order);
    a stage that another needs at an earlier phase goes just before it (the study's source-only
    segmenter before the translators when CyCADA's loss reads it)."""
    listed = [("data", None, DATA)] + [(k, a, p) for a in study.arms.values() for k, p in a.stages()]
    listed.append(("report", None, REPORT))
    phase = {stage_name(k, a): p for k, a, p in listed}
    for k, a, p in listed[1:-1]:
        for n in needs(study, k, a) - {"data"}:
            if phase[n] > p:
                phase[n] = p - 0.5
    return [(k, a) for k, a, _ in sorted(listed, key=lambda s: phase[stage_name(s[0], s[1])])]


def stage_config(study: Study, kind: str, arm: Arm | None) -> dict:
    """What a stage depends on: its hash decides whether a finished stage is still valid."""
    if kind == "data":
        return {"seed": study.cfg.seed, "data": to_dict(study.cfg.data)}
    if kind == "report":
        return {"all": to_dict(study.cfg)}
    return arm.stage_config(kind)


def needs(study: Study, kind: str, arm: Arm | None) -> set[str]:
    """The stages whose outputs a stage reads (what decides when it may start in a lane)."""
    if kind == "data":
        return set()
    if kind == "report":
        return {stage_name(k, a) for k, a in stage_list(study)} - {"report"}
    return arm.needs(kind)


def stage_folder(study: Study, kind: str, arm: Arm | None) -> Path | None:
    """Where a stage writes: RUN/<folder>/ARM for an arm's, RUN/figures for the report's; the data
    stage nowhere inside RUN."""
    if arm is not None:
        return arm.folder(kind)
    return study.run / "figures" if kind == "report" else None


# Features added after studies were run, by their switch and its off value: while a feature is off,
# its switch and every setting named after it (semantic_model, mix_fraction, ...) are left out of
# the stage hashes, so finished studies stay valid when a feature is added.
ADDED_FEATURES = {"semantic": 0.0, "mix": "", "init_from": "", "encoder_depth": 5, "decoder_channels": 256,
                  "lanes": 1, "random_crop": None, "source_gap": 2.0, "online": {}, "steps": None, "target_size": None,
                  "feature_distance": 0.0, "cat_max_ratio": None, "norm_decay_mult": 1.0, "segment": {},
                  "lambda_identity": 0.5, "sampling": "transposed", "init_gain": 0.02, "label_cycle": 0.0,
                  "ema": 0.0, "residual": False}


# Defaults changed after studies were run, of a setting that does nothing while its feature's switch
# is off: setting -> (switch, new default, old default); hashed at the old default while the switch
# is off, so that finished stages stay valid. (rcs_min_pixels: 3000 px of a 1280x720 frame until it
# followed DAFormer's count, of a native 1914x1052 GTA5 label.)
CHANGED_DEFAULTS = {"rcs_min_pixels": ("rare_class_sampling", 3000 / (1914 * 1052), 3000 / (1280 * 720))}


def _without_features_off(obj):
    if isinstance(obj, list):
        return [_without_features_off(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    off = [k for k, v in ADDED_FEATURES.items() if k in obj and obj[k] == v]
    obj = {k: _without_features_off(v) for k, v in obj.items() if not any(k.startswith(f) for f in off)}
    for key, (switch, new, old) in CHANGED_DEFAULTS.items():
        if obj.get(switch) is False and obj.get(key) == new:
            obj[key] = old
    return obj


def stage_hash(obj) -> str:
    obj = _without_features_off(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The file each kind of stage writes last, in its folder: a finished stage whose record does not
# read (damaged, or gone) is redone; the report's are RUN/metrics.json and RUN/study.json.
RECORDS = {"translate": "summary.json", "apply": "about.json", "segment": "summary.json", "pseudo": "about.json",
           "look": "translation.json", "evaluate": "metrics.json"}


def damaged(study: Study, kind: str, arm: Arm | None) -> Path | None:
    """The record of a finished stage that does not read, if any (module docstring, RECORDS)."""
    files = ([study.run / "metrics.json", study.run / "study.json"] if kind == "report" else
             [arm.folder(kind) / RECORDS[kind]] if arm is not None else [])
    for f in files:
        try:
            read_json(f)
        except UserError:
            return f
    return None


class Stages:
    """RUN/stages.json: which stages are done, for which config hash, in how many seconds. Each
    arm stage's entry is also kept in its own folder (FOLDER/stage.json), so that a damaged
    stages.json is rebuilt from them (``read``) instead of taken for an empty one."""

    def __init__(self, run: Path, state: dict | None = None):
        self.path = run / "stages.json"
        self.state = read_json(self.path, {}) if state is None else state

    @classmethod
    def read(cls, run: Path, folders: dict[str, Path]) -> "Stages":
        """RUN/stages.json, or, where it does not read, rebuilt from the arm stages' own records
        (``folders``: stage name -> folder); the study's own stages (data, report) are redone."""
        try:
            return cls(run)
        except UserError as e:
            state = {}
            for name, folder in folders.items():
                try:
                    state[name] = read_json(folder / "stage.json")
                except UserError:
                    continue
            say(f"{e}: rebuilt from the records of {len(state)} finished stages in their folders", "yellow")
            stages = cls(run, state)
            write_json(stages.path, state)
            return stages

    def done(self, stage: str, h: str) -> bool:
        return self.state.get(stage, {}).get("hash") == h

    def recorded(self, stage: str) -> bool:
        return stage in self.state

    def mark(self, stage: str, h: str, seconds: float, peak: float | None = None, folder: Path | None = None) -> None:
        # the memory high-water mark so far (Linux: KiB) of the process that ran the stage (the
        # study's, or its lane's), data loader workers apart
        peak = peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.state[stage] = {"hash": h, "seconds": round(seconds, 1), "peak_rss_mb": round(peak)}
        if folder is not None and folder.is_dir():
            write_json(folder / "stage.json", self.state[stage])
        write_json(self.path, self.state)

    def forget(self, names) -> None:
        for s in names:
            self.state.pop(s, None)
        write_json(self.path, self.state)
