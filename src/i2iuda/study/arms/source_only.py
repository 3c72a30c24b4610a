"""Source-only: the segmenter trained on the raw labelled source, selected on source val. The
gap's lower end: every other arm's gap closed is measured from it."""
from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from ...segmentation.train import SegmentConfig
from .base import TrainedOnLabels
from .translation import read_translation_scores


class SourceOnly(TrainedOnLabels):
    KIND: ClassVar[str] = "source_only"
    BOUND: ClassVar[str | None] = "lower"

    def __init__(self, study):
        self.name, self.study = "source_only", study

    @classmethod
    def arms_of(cls, study) -> list["SourceOnly"]:
        return [cls(study)]

    def segment_config(self) -> SegmentConfig:
        s = self.study.specs
        return replace(self.study.cfg.segment, train=s["source_train"], val=s["source_val"])

    def trained_on(self) -> str:
        """The source val frames of its training set: raw (its look stage scores them: the floor)."""
        return self.study.specs["source_val"]

    def metrics_row(self) -> dict:
        return {**super().metrics_row(), **read_translation_scores(self)}
