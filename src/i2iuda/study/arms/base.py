"""What an arm kind is: one class behind the ``Arm`` protocol below; its instances are a study's
arms of that kind. An arm answers for itself: its stages and what each depends on (the config
its hash is of) and reads, what each does, what its segmenter trains on, its row of metrics.json
and study.json, and its section of the report (from files only). The study never asks an arm
its kind; the kinds are found by name in the plain dict of ``__init__.py``.

Phases order a study's stages: each arm lists its stages with a phase, the study sorts them by
phase (stably: arms in their order), and a stage another one needs earlier moves just before it.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ...config import to_dict
from ...errors import UserError
from ...io import read_json, read_yaml
from ...segmentation.evaluate import EvalProtocol, run_eval
from ...segmentation.train import SegmentConfig, train_segmenter
from ..diagnostics import translation_scores

if TYPE_CHECKING:
    from ..study import Study

# phases of the stages, in study order
DATA, TRANSLATE, SEGMENT, SELF_TRAIN, ONLINE, EVALUATE, REPORT = 0, 10, 20, 30, 40, 50, 60
# where each kind of stage writes inside the run folder: RUN/<folder>/<arm>
FOLDERS = {"translate": "translate", "apply": "translated", "segment": "segment", "pseudo": "pseudo",
           "look": "look", "evaluate": "eval"}
RESERVED = ("source_only", "oracle")  # the names of the study's two fixed arms


def stage_name(stage: str, arm: "Arm | None") -> str:
    return stage if arm is None else f"{stage}:{arm.name}"


def check_name(name: str, where: str, taken) -> None:
    """A new arm's name: lower-case letters, digits, - and _, not taken, not a fixed arm's."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in taken or name in RESERVED:
        raise UserError(f"{where}: a new arm name of lower-case letters, digits, - and _ (not "
                        f"{', '.join(sorted(set(taken) | set(RESERVED)))})")


@runtime_checkable
class Arm(Protocol):
    """One arm of a study. The members with a body here are defaults (subclass to get them)."""

    KIND: ClassVar[str]  # the kind's name: in metrics.json, study.json and (as it was) the stage hashes
    # the two ends of the gap: "lower" (source-only) and "upper" (the oracle); None for an arm
    # that adapts, whose gap closed is reported
    BOUND: ClassVar[str | None] = None
    name: str
    study: "Study"

    @classmethod
    def arms_of(cls, study: "Study") -> list["Arm"]:
        """This kind's arms of ``study``, from its settings (the arms before them already built)."""
        ...

    def stages(self) -> list[tuple[str, int]]:
        """Its stages and their phases, in order."""
        return [("segment", SEGMENT), ("evaluate", EVALUATE)]

    def stage_config(self, stage: str) -> dict:
        """What ``stage`` depends on: a finished stage whose hash of this changed is redone."""
        ...

    def needs(self, stage: str) -> set[str]:
        """The stages whose outputs ``stage`` reads (when it may start in a lane)."""
        ...

    def run(self, stage: str, progress: bool) -> None:
        """Run ``stage`` (its folder: ``folder(stage)``)."""
        ...

    def segment_config(self) -> SegmentConfig:
        """What its segmenter trains on and with."""
        ...

    def metrics_row(self) -> dict:
        """Its row of metrics.json (before delta_mIoU and gap_closed), from its files."""
        return {"kind": self.KIND, "bound": self.BOUND, "method": self.method, **self.scores()}

    def manifest(self) -> dict:
        """Its row of study.json: what the report needs to know, as typed plain data."""
        return {"name": self.name, "kind": self.KIND, "bound": self.BOUND, "segment": f"segment/{self.name}",
                "eval": f"eval/{self.name}"}

    @classmethod
    def section(cls, run: Path, row: dict, metrics: dict, figures: Path) -> list[str]:
        """Its section of the report, markdown lines, from its study.json ``row`` and metrics.json
        row and the files in ``run`` (never a model): nothing by default."""
        return []

    # -- defaults the kinds share --------------------------------------------------------------
    @property
    def method(self) -> str | None:
        """The translation method of its training set (None: raw source or target)."""
        return None

    def folder(self, stage: str) -> Path:
        return self.study.run / FOLDERS[stage] / self.name

    def scores(self) -> dict:
        """Its target val scores (eval/ARM/metrics.json)."""
        r = read_json(self.folder("evaluate") / "metrics.json")
        return {k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")}

    def base_config(self) -> dict:
        """What every stage of every arm depends on: the seed and the data."""
        return {"seed": self.study.cfg.seed, "data": self.study.specs}

    def evaluate(self, progress: bool) -> None:
        """The arm's segmenter on target val: eval/ARM/metrics.json and prediction pictures."""
        cfg = self.study.cfg
        protocol = project(cfg.eval, EvalProtocol)
        run_eval(self.folder("segment"), self.study.specs["target_val"], self.folder("evaluate"), protocol,
                 pictures=cfg.eval.pictures, device=cfg.segment.device, workers=cfg.workers, progress=progress)

    def eval_settings(self) -> dict:
        """The evaluation protocol; KID/FID (eval.kid_fid) only where they are computed, so that
        studies run before they existed stay valid."""
        ev = to_dict(self.study.cfg.eval)
        if not ev.get("kid_fid"):
            ev.pop("kid_fid", None)
        return ev


def project(value: Any, cls: type) -> Any:
    """An instance of ``cls`` (a dataclass) from the fields of ``value`` that ``cls`` has: the
    evaluation protocol out of the study's eval settings, a method's settings out of an arm's."""
    return cls(**{f.name: getattr(value, f.name) for f in dataclasses.fields(cls)})


def can_resume(stage: str, folder: Path, cfg: Any) -> bool:
    """An interrupted training stage resumes only if its folder was made with the same config."""
    if not (folder / "checkpoints" / "last.pt").exists():
        return False
    if read_yaml(folder / "config.yaml", None) != to_dict(cfg):
        raise UserError(f"stage {stage}: {folder} holds an unfinished run with another config; "
                        f"use --from {stage} to redo it")
    return True


class TrainedOnLabels(Arm):
    """An arm whose segmenter ``segment train`` trains on a labelled set (source-only, a translation
    arm, the oracle): its segment and evaluate stages. ``JUDGED``: a look stage too, which scores
    its training frames with the study's judge (FCN-score, KID, appearance; ``look``). It reads
    no segmenter of the arm's own, so it runs beside the arm's segmenter training, not after it."""

    JUDGED: ClassVar[bool] = True

    def stages(self) -> list[tuple[str, int]]:
        return [("segment", SEGMENT), *([("look", EVALUATE)] if self.JUDGED else []), ("evaluate", EVALUATE)]

    def translate_config(self) -> dict:
        """What its training set's translation depends on (nothing for raw source or target)."""
        return {}

    def stage_config(self, stage: str) -> dict:
        cfg = self.study.cfg
        segment = {**self.base_config(), **self.translate_config(), "segment": to_dict(cfg.segment), "arm": self.KIND}
        if stage == "segment":
            return segment
        if stage == "look":  # its frames, the judge and source-only (the label-free flips)
            return {**self.base_config(), **self.translate_config(), "eval": self.eval_settings(),
                    "judge": self.study.judge.stage_config("segment"),
                    "baseline": self.study.baseline.stage_config("segment")}
        # the judge and its scores were the evaluate stage's until the look stage took them: hashed
        # as then, so that finished evaluate stages stay valid
        judged = {"judge": self.study.judge.stage_config("segment"), "scores": 1} if self.JUDGED else {}
        return {**segment, "eval": self.eval_settings(), **judged}

    def needs(self, stage: str) -> set[str]:
        if stage == "segment":
            return {"data"}
        if stage == "look":
            return self.needs("segment") | {stage_name("segment", a) for a in (self.study.judge, self.study.baseline)}
        return {stage_name("segment", self)} | self.needs("segment")

    def run(self, stage: str, progress: bool) -> None:
        if stage == "segment":
            seg, folder = self.segment_config(), self.folder("segment")
            train_segmenter(seg, folder, resume=can_resume(stage_name(stage, self), folder, seg), progress=progress)
        elif stage == "look":
            self.look(progress)
        elif stage == "evaluate":
            self.evaluate(progress)

    def look(self, progress: bool) -> None:
        """How target-like the frames it trains on are (diagnostics.translation_scores)."""
        translation_scores(self, self.folder("look"))

    def manifest(self) -> dict:
        return {**super().manifest(), **({"look": f"look/{self.name}"} if self.JUDGED else {})}
