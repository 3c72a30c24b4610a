"""The oracle: the segmenter trained on the *target's* labels, selected on target val. Not a UDA
result: the gap's upper end (on for the synthetic benchmark, whose target train set has labels;
off for real data)."""
from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from ...segmentation.train import SegmentConfig
from .base import TrainedOnLabels


class Oracle(TrainedOnLabels):
    KIND: ClassVar[str] = "oracle"
    BOUND: ClassVar[str | None] = "upper"
    JUDGED: ClassVar[bool] = False  # it is the judge

    def __init__(self, study):
        self.name, self.study = "oracle", study

    @classmethod
    def arms_of(cls, study) -> list["Oracle"]:
        return [cls(study)] if study.cfg.oracle else []

    def segment_config(self) -> SegmentConfig:
        s = self.study.specs
        return replace(self.study.cfg.segment, train=s["target_train"], val=s["target_val"])
