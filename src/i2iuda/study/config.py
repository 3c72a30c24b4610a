"""The study's settings: typed dataclasses, read from the study YAML (``i2iuda run --config``)
and saved in RUN/config.yaml. What the arms are and how they train is in arms.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import Range, at_least, open_fraction
from ..data.synthetic import SynthConfig
from ..segmentation.evaluate import EvalProtocol
from ..segmentation.online import OnlineSettings
from ..segmentation.train import SegmentConfig


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


@dataclass
class OnlineArm(OnlineSettings):
    """An online self-training arm (segmentation/online.py: DACS, with rare-class sampling and MIC
    as options): a student and its EMA teacher trained on ``source``'s labelled training set (raw
    source, or a translation arm's translated source, or FDA on the fly) and the unlabelled target
    train frames, with the study's segment settings; the last student is evaluated."""

    source: str = "source_only"  # source_only or a translation arm of this study
    # the schedule's length in steps (None: the segment settings'; the number of epochs, i.e. of
    # validations, stays the segment settings'): DACS trains 250k iterations, DAFormer and MIC 40k
    steps: int | None = None

    RANGES: ClassVar[dict] = {**OnlineSettings.RANGES, "steps": at_least(1)}


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
    # cores two one-thread lanes get more done than one two-thread process (README, "Speed").
    # Results depend on the thread count: a study keeps one setting. 1 on a GPU.
    lanes: int = 1

    RANGES: ClassVar[dict] = {"seed": at_least(0), "workers": at_least(0), "lanes": at_least(1)}
