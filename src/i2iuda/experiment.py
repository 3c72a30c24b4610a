"""The study in one command: compare ways of closing the domain gap, each an *arm*, all
evaluated on the target val set.

Arms are data (``translate.methods``): each translation arm names a method and its settings,
gives one translated source set and one segmenter trained on it ("adapted"). Source-only (a
segmenter on raw source) and the oracle (on target labels: an upper bound, not a UDA result) are
arms too, and each round of self-training (``self_train``: pseudo-labelled target frames mixed
into an adapted arm's training set) is one. A method that applies on the fly (FDA) trains its segmenter on raw source restyled
as each frame is drawn, and translates only the source val split offline (checkpoint
selection, pictures).

Stages, in order, each writing into the run folder (ARM = an arm's name):

    data              generate the built-in benchmark if absent (or check that the real folders read)
    translate:ARM     train the arm's translator                       RUN/translate/ARM/
    apply:ARM         translate source train and val at the segmenter's input size, and picture
                      what the translator does                         RUN/translated/ARM/
    segment:ARM       DeepLab for every arm, selected on (translated) source val   RUN/segment/ARM/
    pseudo:ARM        a self-training arm's pseudo-labels of target train, from its teachers
                      (then its segment stage)                         RUN/pseudo/ARM/
    evaluate:ARM      every arm on the target val set, prediction pictures; for source-only and
                      translation arms the translation scores (FCN-score, KID/FID), for
                      translation arms the failure gallery, for self-training arms pictures of
                      their pseudo-labels                              RUN/eval/ARM/
    report            RUN/metrics.json, RUN/study.json, RUN/report.md and report.html (reads files only)

A stage is skipped on re-run when RUN/stages.json records it done with the same config hash,
so adding an arm to a finished study runs only the new arm's stages (and the report); an
interrupted training stage resumes from its last checkpoint, and a finished stage whose
settings changed is redone. ``--from STAGE`` (a stage, or a kind such as ``segment``) redoes it
and every stage after it. With ``lanes`` > 1 independent stages run side by side (lanes.py;
``needs`` says what each one reads).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .config import from_dict, merge, save_config, to_dict
from .data.datasets import build_index
from .data.synthetic import SynthConfig, generate
from .errors import UserError
from .io import write_json
from .lanes import Job, run_in_lanes
from .progress import console
from .runlock import holding
from .segmentation.evaluate import EvalProtocol
from .segmentation.train import SegmentConfig
from .translation.methods import method
from .translation.train import TranslateConfig, with_method_defaults

METRICS_SCHEMA = "i2iuda.study.metrics/2"
KINDS = ("data", "translate", "apply", "segment", "pseudo", "evaluate", "report")


@dataclass
class StudyData:
    # Built-in benchmark: generated into synthetic_root if absent; {root} in the specs below
    # stands for it. For real data set synthetic_root: null and give the four specs.
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


@dataclass
class StudyConfig:
    seed: int = 0
    data: StudyData = field(default_factory=StudyData)
    translate: StudyTranslate = field(default_factory=StudyTranslate)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    # self-training arms by name, e.g. {st: {teachers: [cyclegan], rounds: 2}}; see SelfTrain
    self_train: dict[str, SelfTrain] = field(default_factory=dict)
    oracle: bool = True  # train on target labels too: an upper bound, not a UDA result
    eval: StudyEval = field(default_factory=StudyEval)
    workers: int = 2
    # stages side by side in this many processes, each with its share of the cores: on a few CPU
    # cores two one-thread lanes get more done than one two-thread process (README, "Speed").
    # Results depend on the thread count: a study keeps one setting. 1 on a GPU.
    lanes: int = 1


@dataclass
class Arm:
    name: str
    kind: str  # source_only | translation | self_train | oracle
    translate: TranslateConfig | None = None  # translation arms; a self-training arm: its first teacher's
    self_train: SelfTrain | None = None  # self-training arms
    teachers: list[str] = field(default_factory=list)  # self-training: the arms whose models pseudo-label
    base: str = ""  # self-training: the arm whose training set it trains on (plus the pseudo-labels)

    @property
    def semantic_from_study(self) -> bool:  # CyCADA's loss with the study's source-only model as f
        model = self.translate.model if self.translate else {}
        return bool(model.get("semantic")) and not model.get("semantic_model")

    @property
    def on_the_fly(self) -> bool:  # the method applies inside segmenter training (FDA)
        return self.translate is not None and hasattr(method(self.translate.method), "segment_on_the_fly")


def specs(cfg: StudyConfig) -> dict[str, str]:
    root = cfg.data.synthetic_root or ""
    return {k: getattr(cfg.data, k).format(root=root) for k in ("source_train", "source_val", "target_train", "target_val")}


def arms(cfg: StudyConfig) -> list[Arm]:
    """source_only, the translation arms in the order given, and the oracle (if on)."""
    entries = cfg.translate.methods
    if isinstance(entries, list):
        entries = {name: {} for name in entries}
    out = [Arm("source_only", "source_only")]
    s = specs(cfg)
    translate_keys = {f.name for f in fields(TranslateConfig)}
    for name, over in entries.items():
        where = f"translate.methods.{name}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in ("source_only", "oracle"):
            raise UserError(f"{where}: arm names are lower-case letters, digits, - and _ (not source_only/oracle)")
        over = dict(over or {})
        m = over.pop("method", name)
        method(m)  # a clear error for an unknown method
        base = merge(to_dict(TranslateConfig()), cfg.translate.settings.get(m, {}))
        base = merge(base, {k: v for k, v in over.items() if k in translate_keys})
        base["model"] = {**base.get("model", {}), **{k: v for k, v in over.items() if k not in translate_keys}}
        base.update(method=m, source=s["source_train"], target=s["target_train"], seed=cfg.seed)
        out.append(Arm(name, "translation", with_method_defaults(from_dict(TranslateConfig, base, where))))
    by_name = {a.name: a for a in out}
    for name, st in cfg.self_train.items():
        where = f"self_train.{name}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in by_name or name == "oracle":
            raise UserError(f"{where}: a new arm name of lower-case letters, digits, - and _")
        unknown = [t for t in st.teachers if t not in by_name or by_name[t].kind != "translation"]
        if not st.teachers or unknown:
            raise UserError(f"{where}.teachers: {unknown or '[]'}: expected translation arms of this study "
                            f"({', '.join(a.name for a in out if a.kind == 'translation') or 'none'})")
        if st.rounds < 1 or not 0 < st.percentile <= 100 or not 0 < st.mix_fraction < 1:
            raise UserError(f"{where}: rounds >= 1, 0 < percentile <= 100, 0 < mix_fraction < 1")
        base = by_name[st.teachers[0]]
        teachers = list(st.teachers)
        for r in range(1, st.rounds + 1):
            arm = Arm(f"{name}_r{r}", "self_train", base.translate, st, teachers, base.name)
            out.append(arm)
            teachers = [arm.name]
    if cfg.oracle:
        out.append(Arm("oracle", "oracle"))
    return out


def segment_config(cfg: StudyConfig, arm: Arm, run: Path) -> SegmentConfig:
    """Source-only trains on raw source, the oracle on target labels (selected on target val: an
    upper bound), a translation arm on its translated source (or raw source restyled on the
    fly), selected on its translated source val."""
    s = specs(cfg)
    if arm.kind == "source_only":
        return replace(cfg.segment, train=s["source_train"], val=s["source_val"])
    if arm.kind == "oracle":
        return replace(cfg.segment, train=s["target_train"], val=s["target_val"])
    if arm.kind == "self_train":  # the first teacher's training set, the pseudo-labels mixed in
        seg = segment_config(cfg, arm_named(cfg, arm.base), run)
        init = str(stage_dir(run, "segment", arm_named(cfg, arm.teachers[0]))) if arm.self_train.warm_start else ""
        return replace(seg, mix=f"pseudo:{stage_dir(run, 'pseudo', arm)}", mix_fraction=arm.self_train.mix_fraction,
                       init_from=init)
    t_train, t_val = translated_specs(cfg, run, arm.name)
    if arm.on_the_fly:
        return replace(cfg.segment, train=s["source_train"], val=t_val,
                       **method(arm.translate.method).segment_on_the_fly(arm.translate))
    return replace(cfg.segment, train=t_train, val=t_val)


def arm_named(cfg: StudyConfig, name: str) -> Arm:
    return next(a for a in arms(cfg) if a.name == name)


def translated_specs(cfg: StudyConfig, run: Path, arm: str) -> tuple[str, str]:
    """The translated source keeps the source's layout, so its kind and holdout carry over."""
    from .translation.apply import translated_spec

    src, out = specs(cfg)["source_train"], run / "translated" / arm
    return translated_spec(src, out, "train"), translated_spec(src, out, "val")


def judge(cfg: StudyConfig) -> str:
    """The arm whose segmenter judges translated frames in the failure gallery."""
    return "oracle" if cfg.oracle else "source_only"


def stage_list(cfg: StudyConfig) -> list[tuple[str, Arm | None]]:
    """data, translate and apply per translation arm, segment and evaluate per arm, report. An arm
    with CyCADA's loss that uses the study's source-only model needs it first: then
    segment:source_only comes right after data."""
    all_arms = arms(cfg)
    translation = [a for a in all_arms if a.kind == "translation"]
    early = [a for a in all_arms[:1] if any(t.semantic_from_study for t in translation)]
    plain = [a for a in all_arms if a not in early and a.kind != "self_train"]
    return ([("data", None)] + [("segment", a) for a in early]
            + [(k, a) for a in translation for k in ("translate", "apply")]
            + [("segment", a) for a in plain]
            + [(k, a) for a in all_arms if a.kind == "self_train" for k in ("pseudo", "segment")]
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
    translate = {"translate": to_dict(arm.translate), "size": cfg.segment.data.size} if arm.translate else {}
    if arm.semantic_from_study:  # f is the study's source-only model: its stage is part of this one
        translate["semantic_from"] = stage_config(cfg, "segment", arms(cfg)[0])
    if kind in ("translate", "apply"):
        return {**base, **translate}
    segment = {**base, **translate, "segment": to_dict(cfg.segment), "arm": arm.kind}
    if kind == "segment":
        return segment
    # evaluate: the arm's segmenter, the protocol, and the judge of the failure gallery and the
    # FCN-score; KID/FID (eval.kid_fid) only where they are computed, so that studies run before
    # they existed stay valid
    ev = to_dict(cfg.eval)
    if not ev.get("kid_fid"):
        ev.pop("kid_fid", None)
    scored = arm.kind != "oracle"
    judged = {"judge": stage_config(cfg, "segment", Arm(judge(cfg), judge(cfg))), "scores": 1} if scored else {}
    return {**segment, "eval": ev, **judged}


# Features added after studies were run, by their switch and its off value: while a feature is off,
# its switch and every setting named after it (semantic_model, mix_fraction, ...) are left out of
# the stage hashes, so finished studies stay valid when a feature is added.
ADDED_FEATURES = {"semantic": 0.0, "mix": "", "init_from": "", "encoder_depth": 5, "decoder_channels": 256,
                  "lanes": 1, "random_crop": None}


def _without_features_off(obj):
    if isinstance(obj, list):
        return [_without_features_off(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    off = [k for k, v in ADDED_FEATURES.items() if k in obj and obj[k] == v]
    return {k: _without_features_off(v) for k, v in obj.items() if not any(k.startswith(f) for f in off)}


def _hash(obj) -> str:
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


def stage_dir(run: Path, kind: str, arm: Arm | None) -> Path | None:
    folder = {"translate": "translate", "apply": "translated", "segment": "segment", "pseudo": "pseudo",
              "evaluate": "eval"}.get(kind)
    return run / folder / arm.name if folder else (run / "figures" if kind == "report" else None)


def run_study(cfg: StudyConfig, run: str | Path, from_stage: str | None = None, stop_after: str | None = None,
              progress: bool = True) -> dict:
    """Run (or continue) the study in ``run``. Returns the metrics (RUN/metrics.json)."""
    with holding(run):  # one study per folder; its stages write inside it under the same hold
        return _run_study(cfg, Path(run), from_stage, stop_after, progress)


def _run_study(cfg: StudyConfig, run: Path, from_stage: str | None, stop_after: str | None, progress: bool) -> dict:
    # absolute paths in the saved config, so the report and later stages work from any folder
    run = Path(run).resolve()
    if cfg.data.synthetic_root:
        cfg = replace(cfg, data=replace(cfg.data, synthetic_root=str(Path(cfg.data.synthetic_root).resolve())))
    # the study's seed is the one seed: the saved config.yaml shows it in the segment stage too
    cfg = replace(cfg, segment=replace(cfg.segment, seed=cfg.seed))
    if cfg.lanes < 1:
        raise UserError(f"lanes={cfg.lanes}: expected 1 or more")
    if cfg.lanes > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"lanes={cfg.lanes} under torchrun: the ranks would each start their own lanes; "
                        f"set lanes=1 (a GPU gets nothing from lanes)")
    todo = stage_list(cfg)
    names = [stage_name(k, a) for k, a in todo]
    for option, value in (("--from", from_stage), ("--stop-after", stop_after)):
        if value is not None and value not in names and value not in KINDS:
            raise UserError(f"{option} {value!r}: expected a stage ({', '.join(names)}) or a kind ({', '.join(KINDS)})")
    run.mkdir(parents=True, exist_ok=True)
    stages = Stages(run)
    if not from_stage and stages.recorded("data") and not stages.done("data", _hash(stage_config(cfg, "data", None))):
        # other data (or the same data at another path): every finished stage would be deleted and redone
        ran = yaml.safe_load((run / "config.yaml").read_text()).get("data", {}) if (run / "config.yaml").exists() else {}
        now = to_dict(cfg.data)
        what = "; ".join(f"data.{k}: {ran.get(k)} -> {v}" for k, v in now.items() if ran.get(k) != v)
        raise UserError(f"{run}: its data settings changed since its stages ran ({what or 'data'}); every finished "
                        f"stage would be redone and its outputs deleted: pass --from data for that, or use another --out")
    save_config(cfg, run / "config.yaml")
    if from_stage:
        first = next(i for i, n in enumerate(names) if n == from_stage or n.split(":")[0] == from_stage)
        stages.forget(names[first:])
        for kind, arm in todo[first:]:
            if (d := stage_dir(run, kind, arm)) is not None:
                shutil.rmtree(d, ignore_errors=True)
    last = max((i for i, n in enumerate(names) if stop_after in (n, n.split(":")[0])), default=len(names))
    jobs = []
    for (kind, arm), name in zip(todo[:last + 1], names[:last + 1]):
        h = _hash(stage_config(cfg, kind, arm))
        folder = stage_dir(run, kind, arm)
        if stages.done(name, h) and (folder is None or folder.exists()):  # a deleted folder is redone
            console.print(f"[dim]stage {name}: done, skipped[/dim]")
        else:
            if stages.recorded(name) and folder is not None and folder.exists():  # done, then the config changed
                console.print(f"[yellow]stage {name}: its settings changed since it ran: redone[/yellow]")
                shutil.rmtree(folder)
                stages.forget([name])
            todo_before = {j.name for j in jobs}  # a stage needs only earlier ones; done ones are done
            jobs.append(Job(name, needs(cfg, kind, arm) & todo_before, (kind, arm, cfg, run),
                            in_lane=kind not in ("data", "report"), hash=h))
    if cfg.lanes > 1:
        run_in_lanes(jobs, cfg.lanes, _lane_stage, lambda *args: _run_stage(*args, progress),
                     lambda job, seconds, peak: stages.mark(job.name, job.hash, seconds, peak))
    else:
        for job in jobs:
            console.print(f"[bold]stage {job.name}[/bold]")
            t0 = time.perf_counter()
            _run_stage(*job.args, progress)
            stages.mark(job.name, job.hash, time.perf_counter() - t0)
    metrics = run / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.exists() else {}


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
        return {"data"} | ({stage_name("apply", arm)} if arm.kind == "translation" else set())
    # evaluate: the arm's segmenter, the judge of its failure gallery, its pseudo-labels
    judged = {stage_name("segment", arm_named(cfg, judge(cfg)))} if arm.kind != "oracle" else set()
    pseudo = {stage_name("pseudo", arm)} if arm.kind == "self_train" else set()
    return {stage_name("segment", arm)} | needs(cfg, "segment", arm) | judged | pseudo


def _lane_stage(kind: str, arm: Arm | None, cfg: StudyConfig, run: Path) -> None:
    """One stage in a lane process (lanes.py), inside the folder its parent study holds. No
    progress bar: two lanes would draw over each other; the training logs print rate and ETA."""
    from .runlock import inherit

    inherit(run)
    _run_stage(kind, arm, cfg, run, progress=False)


def _can_resume(stage: str, run_dir: Path, stage_cfg) -> bool:
    """An interrupted training stage resumes only if its folder was made with the same config."""
    if not (run_dir / "checkpoints" / "last.pt").exists():
        return False
    if yaml.safe_load((run_dir / "config.yaml").read_text()) != to_dict(stage_cfg):
        raise UserError(f"stage {stage}: {run_dir} holds an unfinished run with another config; "
                        f"use --from {stage} to redo it")
    return True


def _run_stage(kind: str, arm: Arm | None, cfg: StudyConfig, run: Path, progress: bool) -> None:
    s = specs(cfg)
    if kind == "data":
        if cfg.data.synthetic_root:
            generate(cfg.data.synthetic_root, cfg.data.synthetic, progress=progress)
        for key, spec in s.items():
            index = build_index(spec)
            for p in index.problems:
                console.print(f"[yellow]{key}: {p}[/yellow]")
            if key != "target_train" and not index.labelled:
                raise UserError(f"data.{key} {spec}: has no labels")
    elif kind == "translate":
        from .translation.train import train_translator

        folder, tcfg = stage_dir(run, kind, arm), arm.translate
        if arm.semantic_from_study:
            f = str(stage_dir(run, "segment", arms(cfg)[0]))
            tcfg = replace(tcfg, model={**tcfg.model, "semantic_model": f})
        train_translator(tcfg, folder, resume=_can_resume(f"translate:{arm.name}", folder, tcfg), progress=progress)
    elif kind == "apply":
        _apply(cfg, run, arm, progress)
    elif kind == "segment":
        from .segmentation.train import train_segmenter

        seg, folder = segment_config(cfg, arm, run), stage_dir(run, kind, arm)
        train_segmenter(seg, folder, resume=_can_resume(f"segment:{arm.name}", folder, seg), progress=progress)
    elif kind == "pseudo":
        _pseudo(cfg, run, arm, progress)
    elif kind == "evaluate":
        _evaluate(cfg, run, arm, progress)
    elif kind == "report":
        from .report import write_report

        write_json(run / "metrics.json", collect_metrics(cfg, run))
        write_json(run / "study.json", manifest(cfg, run))
        write_report(run)


def _apply(cfg: StudyConfig, run: Path, arm: Arm, progress: bool) -> None:
    """Translate at the size the segmenter consumes (its data.size), so that the adapted
    segmenter sees frames as sharp as source-only's; a method applied on the fly needs only
    the val split offline (model selection and pictures)."""
    from .io import save_png
    from .translation.apply import apply_translator, sample_grid
    from .translation.train import load_translator

    s = specs(cfg)
    translator, _ = load_translator(stage_dir(run, "translate", arm), arm.translate.device)
    out, size = stage_dir(run, "apply", arm), tuple(cfg.segment.data.size)
    for spec in ([s["source_val"]] if arm.on_the_fly else [s["source_train"], s["source_val"]]):
        apply_translator(translator, spec, out, size, workers=cfg.workers, batch_size=16, progress=progress)
    save_png(out / "samples.png", sample_grid(translator, s["source_val"], s["target_train"], n=4, size=size))
    write_json(out / "about.json", {"description": translator.describe(size), "size": list(size)})


def _pseudo(cfg: StudyConfig, run: Path, arm: Arm, progress: bool) -> None:
    """Pseudo-label target train with the arm's teachers (their mean softmax): RUN/pseudo/ARM/
    (predictions/ and the thresholded labels/, about.json with the class thresholds)."""
    from .segmentation.predict import predict, pseudo_labels

    out = stage_dir(run, "pseudo", arm)
    teachers = [stage_dir(run, "segment", arm_named(cfg, t)) for t in arm.teachers]
    predict(teachers, specs(cfg)["target_train"], out / "predictions", EvalProtocol(), device=cfg.segment.device,
            workers=cfg.workers, progress=progress)
    pseudo_labels(out / "predictions", out, arm.self_train.percentile, progress=progress)


def _evaluate(cfg: StudyConfig, run: Path, arm: Arm, progress: bool) -> None:
    """The arm's segmenter on target val (metrics, prediction pictures); for a translation arm
    also the failure gallery: its translated source val frames where the judge (the oracle, else
    source-only) sees something else than the source label says, i.e. where translation changed
    the meaning (the pictures are made here, where the models are, and the report reads them)."""
    from .segmentation.evaluate import run_eval

    protocol = EvalProtocol(**{f.name: getattr(cfg.eval, f.name) for f in fields(EvalProtocol)})
    out = stage_dir(run, "evaluate", arm)
    run_eval(stage_dir(run, "segment", arm), specs(cfg)["target_val"], out, protocol, pictures=cfg.eval.pictures,
             device=cfg.segment.device, workers=cfg.workers, progress=progress)
    if arm.kind in ("source_only", "translation"):
        translation_scores(cfg, run, arm, out)
    if arm.kind == "translation":
        failure_gallery(cfg, run, arm, out)
    if arm.kind == "self_train":
        pseudo_label_pictures(cfg, run, arm, out)


def pseudo_label_pictures(cfg: StudyConfig, run: Path, arm: Arm, out: Path, k: int = 4) -> None:
    """out/pseudo_labels.png: target train frames with the pseudo-labels the arm trained on (and,
    where the target train set has labels, as on the synthetic benchmark, their true labels and
    out/pseudo_quality.json: precision and coverage per class, a diagnostic with labels no
    real user has)."""
    from .data import labels as L
    from .data.datasets import load_pair, read_label
    from .io import save_png
    from .pictures import grid
    from .segmentation.predict import pseudo_label_quality

    pseudo = build_index(f"pseudo:{stage_dir(run, 'pseudo', arm)}")
    truth = build_index(specs(cfg)["target_train"])
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
        write_json(out / "pseudo_quality.json", pseudo_label_quality(stage_dir(run, "pseudo", arm), truth.spec))


def trained_on_frames(cfg: StudyConfig, run: Path, arm: Arm) -> str:
    """The source val frames of the arm's training set: raw (source-only), translated otherwise."""
    return specs(cfg)["source_val"] if arm.kind == "source_only" else translated_specs(cfg, run, arm.name)[1]


def translation_scores(cfg: StudyConfig, run: Path, arm: Arm, out: Path) -> None:
    """How target-like the frames the arm trains on are (raw source for source-only: the floor):
    out/translation.json with

    fcn_score   the oracle segmenter (trained on *target labels*) on these frames against their
                source labels (Isola et al.'s FCN-score): a diagnostic that needs labels no UDA user
                has, never used to select anything; only with the oracle on
    kid_fid     KID (x 1000) and FID against target train frames, eval.kid_fid frames a side (fid.py);
                the target's features are cached in RUN/fid_cache and computed once"""
    from .fid import HOW_TO_GET, load_inception, score
    from .runtime import init_runtime
    from .segmentation.evaluate import evaluate
    from .segmentation.models import load_trained

    frames = trained_on_frames(cfg, run, arm)
    result: dict[str, Any] = {"frames": frames, "fcn_score": None, "kid_fid": None}
    if cfg.oracle:
        rt = init_runtime(cfg.segment.device)
        model, mcfg = load_trained(stage_dir(run, "segment", Arm("oracle", "oracle")), rt.device)
        protocol = EvalProtocol(size=tuple(mcfg["data"]["size"]), classes=cfg.eval.classes)
        r = evaluate(model, frames, rt, protocol, workers=0)
        result["fcn_score"] = {k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU", "frames")}
    if cfg.eval.kid_fid:
        net = load_inception()
        if net is None:
            console.print(f"[yellow]{HOW_TO_GET}[/yellow]")
            result["kid_fid"] = {"skipped": HOW_TO_GET}
        else:
            result["kid_fid"] = score(frames, specs(cfg)["target_train"], cfg.eval.kid_fid, run / "fid_cache", net)
    write_json(out / "translation.json", result)


def failure_gallery(cfg: StudyConfig, run: Path, arm: Arm, out: Path, n_frames: int = 200, k: int = 6) -> None:
    from .data import labels as L
    from .data.datasets import read_image
    from .io import save_png
    from .pictures import grid
    from .runtime import init_runtime
    from .segmentation.evaluate import frame_agreement
    from .segmentation.models import load_trained

    rt = init_runtime(cfg.segment.device)
    model, mcfg = load_trained(stage_dir(run, "segment", Arm(judge(cfg), judge(cfg))), rt.device)
    rows = frame_agreement(model, translated_specs(cfg, run, arm.name)[1], tuple(mcfg["data"]["size"]), rt, n_frames)
    source_root = build_index(specs(cfg)["source_val"]).root
    worst = rows[:k]
    pics = []
    for r in worst:
        src = source_root / r["name"]
        pics.append([read_image(src) if src.exists() else r["image"], r["image"], L.overlay(r["image"], r["label"]),
                     L.overlay(r["image"], r["pred"])])
    save_png(out / "failures.png", grid(pics, height=worst[0]["image"].shape[0],
                                        captions=["source", "translated", "source label", f"{judge(cfg)} sees"]))
    write_json(out / "failures.json", {"judge": judge(cfg), "frames_scored": len(rows),
                                       "mean_agreement": sum(r["agreement"] for r in rows) / len(rows),
                                       "worst": [{"name": r["name"], "agreement": r["agreement"]} for r in worst]})


def collect_metrics(cfg: StudyConfig, run: Path) -> dict:
    """RUN/metrics.json (schema i2iuda.study.metrics/2): one row per arm, from RUN/eval/ARM/."""
    rows: dict[str, Any] = {}
    done = json.loads((run / "stages.json").read_text()) if (run / "stages.json").exists() else {}
    for arm in arms(cfg):
        r = json.loads((stage_dir(run, "evaluate", arm) / "metrics.json").read_text())
        rows[arm.name] = {"kind": arm.kind, "method": arm.translate.method if arm.translate else None,
                          **{k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")}}
        scores = stage_dir(run, "evaluate", arm) / "translation.json"
        if scores.exists():  # translation scores of the frames the arm trains on (not the oracle)
            t = json.loads(scores.read_text())
            kf = t.get("kid_fid") or {}
            rows[arm.name]["translation"] = {
                "fcn_score_mIoU": t["fcn_score"]["mIoU"] if t.get("fcn_score") else None,
                "fcn_score_PA": t["fcn_score"]["PA"] if t.get("fcn_score") else None,
                "KID": kf.get("KID"), "KID_std": kf.get("KID_std"), "FID": kf.get("FID"),
                "N": [kf["N_fake"], kf["N_real"]] if "N_fake" in kf else None}
        if arm.translate is not None and method(arm.translate.method).TRAINS and f"translate:{arm.name}" in done:
            rows[arm.name]["translator_seconds"] = done[f"translate:{arm.name}"]["seconds"]
        pq = stage_dir(run, "evaluate", arm) / "pseudo_quality.json"
        about = stage_dir(run, "pseudo", arm) / "about.json" if arm.kind == "self_train" else None
        if about is not None and about.exists():  # what the arm's pseudo-labels were
            a = json.loads(about.read_text())
            q = json.loads(pq.read_text()) if pq.exists() else {}
            rows[arm.name]["pseudo_labels"] = {"kept_fraction": a["kept_fraction"], "thresholds": a["thresholds"],
                                               "precision": q.get("precision"), "coverage": q.get("coverage"),
                                               "per_class": q.get("per_class")}
        gallery = stage_dir(run, "evaluate", arm) / "failures.json"
        if gallery.exists():
            rows[arm.name]["failure_agreement"] = json.loads(gallery.read_text())["mean_agreement"]
    base = rows["source_only"]["mIoU"]
    top = rows["oracle"]["mIoU"] if "oracle" in rows else None
    for name, row in rows.items():
        row["delta_mIoU"] = row["mIoU"] - base
        row["gap_closed"] = (row["mIoU"] - base) / (top - base) if top is not None and top != base else None
    ranking = sorted((n for n in rows if n != "oracle"), key=lambda n: -rows[n]["mIoU"])
    return {"schema": METRICS_SCHEMA, "target_val": specs(cfg)["target_val"], "classes": cfg.eval.classes,
            "arms": rows, "ranking": ranking}


def manifest(cfg: StudyConfig, run: Path) -> dict:
    """RUN/study.json: what the report needs to know about the study, as plain data."""
    stages = json.loads((run / "stages.json").read_text()) if (run / "stages.json").exists() else {}
    seg = cfg.segment
    rows = []
    for arm in arms(cfg):
        row = {"name": arm.name, "kind": arm.kind, "segment": f"segment/{arm.name}", "eval": f"eval/{arm.name}"}
        if arm.kind == "translation":
            about = stage_dir(run, "apply", arm) / "about.json"
            t = arm.translate
            length = f"{t.epochs * t.steps_per_epoch} steps" if t.steps_per_epoch else f"{t.epochs} epochs"
            desc = json.loads(about.read_text())["description"] if about.exists() else t.method
            if method(t.method).TRAINS:
                desc += f", {length} at batch {t.data.batch_size}, size {t.data.size[0]}x{t.data.size[1]}"
                if t.data.random_crop:
                    desc += f" (random {t.data.random_crop[0]}x{t.data.random_crop[1]} crops)"
            if arm.on_the_fly:
                desc += "; applied on the fly in segmenter training"
            row.update(method=t.method, description=desc, translate=f"translate/{arm.name}",
                       translated=f"translated/{arm.name}", on_the_fly=arm.on_the_fly)
        if arm.kind == "self_train":
            st, r = arm.self_train, arm.name.rsplit("_r", 1)[1]
            row.update(description=f"self-training round {r}: pseudo-labels of target train from "
                                   f"{' + '.join(arm.teachers)} ({st.percentile:g}th percentile per class, capped at "
                                   f"0.9), mixed {st.mix_fraction:g} into each batch of {arm.base}'s training set; "
                                   f"{'warm start from the teacher' if st.warm_start else 'same initialisation as ' + arm.base}, "
                                   f"selected on {arm.base}'s translated source val", pseudo=f"pseudo/{arm.name}")
        rows.append(row)
    return {"name": run.name, "seed": cfg.seed, "specs": specs(cfg), "judge": judge(cfg),
            "segmenter": f"{seg.model.arch}-{seg.model.backbone}, {seg.epochs} epochs, size {seg.data.size[0]}x"
                         f"{seg.data.size[1]}, selected on (translated) source val mIoU",
            "segment_size": list(seg.data.size), "arms": rows,
            "stage_seconds": {k: v["seconds"] for k, v in stages.items()},
            "stage_peak_rss_mb": {k: v.get("peak_rss_mb") for k, v in stages.items()}}


def results_table(metrics: dict) -> str:
    rows = [f"{'arm':24s} {'PA':>6s} {'MPA':>6s} {'mIoU':>6s} {'FWIoU':>6s} {'gap closed':>10s}"]
    for name, m in metrics.get("arms", {}).items():
        label = name + (" (upper bound)" if name == "oracle" else "")
        gap = "" if m["gap_closed"] is None or m["kind"] in ("source_only", "oracle") else f"{100 * m['gap_closed']:.1f}%"
        rows.append(f"{label:24s} {m['PA']:6.2f} {m['MPA']:6.2f} {m['mIoU']:6.2f} {m['FWIoU']:6.2f} {gap:>10s}")
    return "\n".join(rows)
