"""A study resolved once: its settings, its run folder, its data specs and its arms by name, built
from the config and handed to every stage (the arms hold it, and ask it for each other)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.datasets import parse_spec
from ..errors import UserError
from ..io import read_json
from .arms import KINDS, Arm
from .config import StudyConfig


@dataclass
class Study:
    cfg: StudyConfig
    run: Path
    specs: dict[str, str] = field(default_factory=dict)  # source_train, source_val, target_train, target_val
    arms: dict[str, Arm] = field(default_factory=dict)  # in study order: source-only, ..., the oracle

    @classmethod
    def resolve(cls, cfg: StudyConfig, run: str | Path) -> "Study":
        root = cfg.data.synthetic_root or ""
        specs = {k: getattr(cfg.data, k).format(root=root) for k in ("source_train", "source_val", "target_train",
                                                                     "target_val")}
        for key, spec in specs.items():  # a malformed spec is refused before anything runs
            try:
                parse_spec(spec)
            except UserError as e:
                raise UserError(f"data.{key}: {e}") from None
        study = cls(cfg, Path(run), specs)
        for kind in KINDS.values():  # each kind's arms see the arms listed before them
            study.arms.update((a.name, a) for a in kind.arms_of(study))
        return study

    def bound(self, which: str) -> Arm | None:
        return next((a for a in self.arms.values() if a.BOUND == which), None)

    @property
    def baseline(self) -> Arm:
        """Source-only: the gap's lower end."""
        return self.bound("lower")

    @property
    def oracle(self) -> Arm | None:
        """The arm trained on target labels, if the study has one: the gap's upper end."""
        return self.bound("upper")

    @property
    def judge(self) -> Arm:
        """The arm whose segmenter judges translated frames (failure gallery, flips): the oracle,
        else source-only."""
        return self.oracle or self.baseline

    def stage_seconds(self, stage: str) -> float | None:
        """How long a finished stage took (stages.json), None if it is not recorded."""
        return read_json(self.run / "stages.json", {}).get(stage, {}).get("seconds")
