"""The study's settings: typed dataclasses, read from the study YAML (``i2iuda run --config``)
and saved in RUN/config.yaml. Each arm kind's own settings live in its module (arms/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import at_least
from ..data.synthetic import SynthConfig
from ..segmentation.evaluate import EvalProtocol
from ..segmentation.train import SegmentConfig
from .arms.online import OnlineArm
from .arms.self_train import SelfTrain


@dataclass
class StudyData:
    # Built-in benchmark: generated into synthetic_root if absent; {root} in the specs below
    # stands for it. For real data set synthetic_root: null and give the four specs. Each variant
    # of the benchmark (synthetic.source_gap, 2 = the hard one) needs a root of its own.
    synthetic_root: str | None = "data/synthetic"
    synthetic: SynthConfig = field(default_factory=lambda: SynthConfig(n_source=1000, n_target_train=1000,
                                                                       n_target_val=300))
    source_train: str = "synthetic:{root}:source-train"
    source_val: str = "synthetic:{root}:source-val"
    target_train: str = "synthetic:{root}:target-train"
    target_val: str = "synthetic:{root}:target-val"


@dataclass
class StudyTranslate:
    # The translation arms: a list of methods, each with its settings below ([cyclegan, fda]), or
    # a mapping arm name -> {method: M, key: value, ...} whose keys override the method's settings
    # (the method's model keys such as beta, or translate keys such as epochs), e.g.
    # {cyclegan: {}, fda_b005: {method: fda, beta: 0.05}}. The method defaults to the arm's name.
    methods: list[str] | dict[str, dict] = field(default_factory=lambda: ["cyclegan"])
    # Per method, its translate config (model, data, epochs, ...; see translation/train.py);
    # source, target and seed are the study's.
    settings: dict[str, dict] = field(default_factory=dict)


@dataclass
class StudyEval(EvalProtocol):
    pictures: int = 6  # target val frames shown with every arm's prediction
    # KID and FID of each arm's (translated) source val frames against target train frames, on
    # fixed subsets of this many frames a side (fid.py); 0 = off: the FID Inception costs ~6 GFLOP
    # a frame, ~30 s an arm on 2 cores, more than the demo should spend on it
    kid_fid: int = 0

    RANGES: ClassVar[dict] = {**EvalProtocol.RANGES, "pictures": at_least(0), "kid_fid": at_least(2, off=0)}


@dataclass
class StudyConfig:
    seed: int = 0
    data: StudyData = field(default_factory=StudyData)
    translate: StudyTranslate = field(default_factory=StudyTranslate)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    # self-training arms by name, e.g. {st: {teachers: [cyclegan], rounds: 2}}; see SelfTrain
    self_train: dict[str, SelfTrain] = field(default_factory=dict)
    # online self-training arms by name, e.g. {dacs: {source: source_only}, cyclegan_dacs_mic:
    # {source: cyclegan, rare_class_sampling: true, mic: true}}; see OnlineArm
    online: dict[str, OnlineArm] = field(default_factory=dict)
    oracle: bool = True  # train on target labels too: an upper bound, not a UDA result
    eval: StudyEval = field(default_factory=StudyEval)
    workers: int = 2
    # stages side by side in this many processes, each with its share of the cores: on a few CPU
    # cores two one-thread lanes get more done than one two-thread process (docs/speed.md).
    # Results depend on the thread count: a study keeps one setting. 1 on a GPU.
    lanes: int = 1

    RANGES: ClassVar[dict] = {"seed": at_least(0), "workers": at_least(0), "lanes": at_least(1)}
