"""Offline self-training on the target (BDL, FDA): one arm per round, NAME_r1, NAME_r2, ...
Round r pseudo-labels target train with its teachers (``pseudo:ARM``; round 1's are translation
arms, several: the mean of their softmax, FDA's MBT; later rounds the round before), then trains a
segmenter on the first teacher's training set with the pseudo-labelled target mixed into every
batch (``segment:ARM``), selected on that training set's source val."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from ...config import Range, at_least, open_fraction, to_dict
from ...errors import UserError
from ...io import read_json
from ...segmentation.evaluate import EvalProtocol
from ...segmentation.predict import predict, pseudo_labels
from ...segmentation.train import SegmentConfig, train_segmenter
from ..diagnostics import pseudo_label_pictures
from .base import EVALUATE, SELF_TRAIN, Arm, can_resume, check_name, stage_name
from .translation import Translation


@dataclass
class SelfTrain:
    """Self-training on the target (BDL, FDA): pseudo-label target train with the teachers, train a
    new segmenter on the first teacher's training set plus the pseudo-labelled target, again for
    each further round with the previous round's model as the teacher."""

    teachers: list[str] = field(default_factory=lambda: ["cyclegan"])  # arms; several: softmax ensemble (MBT)
    rounds: int = 2  # one arm per round: NAME_r1, NAME_r2, ...
    percentile: float = 50.0  # per-class confidence percentile (BDL 50, FDA 66), capped at 0.9
    mix_fraction: float = 0.5  # pseudo-labelled target frames per batch
    warm_start: bool = False  # start from the teacher's weights instead of the same initialisation

    RANGES: ClassVar[dict] = {"rounds": at_least(1), "percentile": Range(lo=0, hi=100, lo_open=True),
                              "mix_fraction": open_fraction}


class SelfTraining(Arm):
    KIND: ClassVar[str] = "self_train"

    def __init__(self, name: str, study, settings: SelfTrain, teachers: list[str], base: str):
        self.name, self.study, self.settings = name, study, settings
        self.teacher_names, self.base_name = teachers, base

    @classmethod
    def arms_of(cls, study) -> list["SelfTraining"]:
        out = []
        for name, st in study.cfg.self_train.items():
            where = f"self_train.{name}"
            check_name(name, where, [*study.arms, *(a.name for a in out)])
            translation = [a.name for a in study.arms.values() if isinstance(a, Translation)]
            unknown = [t for t in st.teachers if t not in translation]
            if not st.teachers or unknown:
                raise UserError(f"{where}.teachers: {unknown or '[]'}: expected translation arms of this study "
                                f"({', '.join(translation) or 'none'})")
            teachers = list(st.teachers)
            for r in range(1, st.rounds + 1):
                out.append(cls(f"{name}_r{r}", study, st, teachers, st.teachers[0]))
                teachers = [out[-1].name]
        return out

    @property
    def teachers(self) -> list[Arm]:
        return [self.study.arms[t] for t in self.teacher_names]

    @property
    def base(self) -> Arm:
        """The arm whose training set it trains on (the first teacher of round 1)."""
        return self.study.arms[self.base_name]

    @property
    def method(self) -> str | None:
        return self.base.method

    def stages(self) -> list[tuple[str, int]]:
        return [("pseudo", SELF_TRAIN), ("segment", SELF_TRAIN), ("evaluate", EVALUATE)]

    def stage_config(self, stage: str) -> dict:
        """What the teachers depend on, the recipe and the round."""
        pseudo = {**self.base_config(), "teachers": [t.stage_config("segment") for t in self.teachers],
                  "self_train": to_dict(self.settings), "arm": self.KIND}
        if stage == "pseudo":
            return pseudo
        segment = {**pseudo, "base": self.base.stage_config("segment")}
        return segment if stage == "segment" else {**segment, "eval": to_dict(self.study.cfg.eval)}

    def needs(self, stage: str) -> set[str]:
        if stage == "pseudo":
            return {n for t in self.teachers for n in {stage_name("segment", t)} | t.needs("segment")}
        if stage == "segment":
            return {stage_name("pseudo", self)} | self.base.needs("segment")
        return {stage_name("segment", self)} | self.needs("segment")

    def segment_config(self) -> SegmentConfig:
        """The first teacher's training set, the pseudo-labels mixed in."""
        st = self.settings
        init = str(self.teachers[0].folder("segment")) if st.warm_start else ""
        return replace(self.base.segment_config(), mix=f"pseudo:{self.folder('pseudo')}", mix_fraction=st.mix_fraction,
                       init_from=init)

    def run(self, stage: str, progress: bool) -> None:
        cfg = self.study.cfg
        if stage == "pseudo":  # RUN/pseudo/ARM: predictions/ and the thresholded labels/, about.json
            out = self.folder("pseudo")
            predict([t.folder("segment") for t in self.teachers], self.study.specs["target_train"], out / "predictions",
                    EvalProtocol(), device=cfg.segment.device, workers=cfg.workers, progress=progress)
            pseudo_labels(out / "predictions", out, self.settings.percentile, progress=progress)
        elif stage == "segment":
            seg, folder = self.segment_config(), self.folder("segment")
            train_segmenter(seg, folder, resume=can_resume(stage_name(stage, self), folder, seg), progress=progress)
        else:
            self.evaluate(progress)
            pseudo_label_pictures(self, self.folder("evaluate"))

    def metrics_row(self) -> dict:
        row = super().metrics_row()
        about = read_json(self.folder("pseudo") / "about.json", None)
        if about is not None:  # what its pseudo-labels were
            q = read_json(self.folder("evaluate") / "pseudo_quality.json", {})
            row["pseudo_labels"] = {"kept_fraction": about["kept_fraction"], "thresholds": about["thresholds"],
                                    "precision": q.get("precision"), "coverage": q.get("coverage"),
                                    "per_class": q.get("per_class")}
        return row

    def manifest(self) -> dict:
        st, r = self.settings, self.name.rsplit("_r", 1)[1]
        base = self.base.name
        return {**super().manifest(), "pseudo": f"pseudo/{self.name}",
                "description": f"self-training round {r}: pseudo-labels of target train from "
                               f"{' + '.join(self.teacher_names)} ({st.percentile:g}th percentile per class, capped at "
                               f"0.9), mixed {st.mix_fraction:g} into each batch of {base}'s training set; "
                               f"{'warm start from the teacher' if st.warm_start else 'same initialisation as ' + base}, "
                               f"selected on {base}'s translated source val"}

    @classmethod
    def section(cls, run: Path, row: dict, metrics: dict, figures: Path) -> list[str]:
        """Its recipe, its pseudo-labels beside the frames, and (where target train labels exist:
        the synthetic benchmark) their precision and coverage per class."""
        name = row["name"]
        md = [f"## Arm {name}", "", row["description"] + ".", ""]
        pl = metrics.get("pseudo_labels") or {}
        if pl:
            md += [f"{100 * pl['kept_fraction']:.1f}% of the target train pixels got a pseudo-label; the rest are "
                   f"ignored.", ""]
        if (run / row["eval"] / "pseudo_labels.png").is_file():
            md += ["Target train frames, their pseudo-labels (uncoloured: ignored) and, where they exist, their true "
                   "labels:", "", f"![{name} pseudo-labels]({row['eval']}/pseudo_labels.png)", ""]
        if pl.get("per_class"):
            md += ["**Pseudo-label quality** (a diagnostic with target train labels, which only the synthetic "
                   f"benchmark has; nothing was selected with it): precision {pl['precision']:.1f}%, coverage "
                   f"{pl['coverage']:.1f}%. Precision: of the pixels labelled c, the share truly c (low = confident "
                   "mistakes that self-training reinforces). Coverage: of the pixels truly c, the share that got a "
                   "label.", "", "| class | threshold | precision (%) | coverage (%) |", "|---|---|---|---|"]
            f = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
            md += [f"| {c} | {t:.2f} | {f(q['precision'])} | {f(q['coverage'])} |"
                   for (c, q), t in zip(pl["per_class"].items(), pl["thresholds"])] + [""]
        return md

