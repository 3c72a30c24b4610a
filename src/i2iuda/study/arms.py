"""The study's arms: source-only, one per translation method (``translate.methods``), one per
self-training round, the oracle; and what each one's segmenter trains and is selected on."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..config import from_dict, merge, to_dict
from ..errors import UserError
from ..segmentation.train import SegmentConfig
from ..translation.methods import method
from ..translation.train import TranslateConfig, with_method_defaults
from .config import OnlineArm, SelfTrain, StudyConfig


@dataclass
class Arm:
    name: str
    kind: str  # source_only | translation | self_train | online | oracle
    translate: TranslateConfig | None = None  # translation arms; a self-training arm: its first teacher's
    self_train: SelfTrain | None = None  # self-training arms
    teachers: list[str] = field(default_factory=list)  # self-training: the arms whose models pseudo-label
    base: str = ""  # self-training, online: the arm whose training set it trains on (plus the target)
    online: OnlineArm | None = None  # online self-training arms

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
        out.append(Arm(name, "translation", with_method_defaults(from_dict(TranslateConfig, base, where), where)))
    by_name = {a.name: a for a in out}
    for name, st in cfg.self_train.items():
        where = f"self_train.{name}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in by_name or name == "oracle":
            raise UserError(f"{where}: a new arm name of lower-case letters, digits, - and _")
        unknown = [t for t in st.teachers if t not in by_name or by_name[t].kind != "translation"]
        if not st.teachers or unknown:
            raise UserError(f"{where}.teachers: {unknown or '[]'}: expected translation arms of this study "
                            f"({', '.join(a.name for a in out if a.kind == 'translation') or 'none'})")
        base = by_name[st.teachers[0]]
        teachers = list(st.teachers)
        for r in range(1, st.rounds + 1):
            arm = Arm(f"{name}_r{r}", "self_train", base.translate, st, teachers, base.name)
            out.append(arm)
            teachers = [arm.name]
    for name, oa in cfg.online.items():
        where = f"online.{name}"
        by_name = {a.name: a for a in out}
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in by_name or name == "oracle":
            raise UserError(f"{where}: a new arm name of lower-case letters, digits, - and _")
        src = by_name.get(oa.source)
        if src is None or src.kind not in ("source_only", "translation"):
            raise UserError(f"{where}.source: {oa.source!r}: expected source_only or a translation arm of this study "
                            f"({', '.join(a.name for a in out if a.kind == 'translation') or 'none'})")
        out.append(Arm(name, "online", src.translate, base=src.name, online=oa))
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
    if arm.kind == "online":  # the source arm's training set (and its FDA on the fly), the target's frames
        from ..segmentation.online import OnlineConfig, OnlineSettings

        seg = segment_config(cfg, arm_named(cfg, arm.base), run)
        settings = from_dict(OnlineSettings, {k: v for k, v in to_dict(arm.online).items()
                                              if k not in ("source", "steps")}, f"online.{arm.name}")
        if arm.online.steps:
            seg = replace(seg, steps_per_epoch=max(1, arm.online.steps // seg.epochs))
        return OnlineConfig(**{f.name: getattr(seg, f.name) for f in fields(seg)}, target=specs(cfg)["target_train"],
                            online=settings)
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
    from ..translation.apply import translated_spec

    src, out = specs(cfg)["source_train"], run / "translated" / arm
    return translated_spec(src, out, "train"), translated_spec(src, out, "val")


def judge(cfg: StudyConfig) -> str:
    """The arm whose segmenter judges translated frames in the failure gallery."""
    return "oracle" if cfg.oracle else "source_only"


def trained_on_frames(cfg: StudyConfig, run: Path, arm: Arm) -> str:
    """The source val frames of the arm's training set: raw (source-only), translated otherwise."""
    return specs(cfg)["source_val"] if arm.kind == "source_only" else translated_specs(cfg, run, arm.name)[1]


def stage_dir(run: Path, kind: str, arm: Arm | None) -> Path | None:
    """Where a stage writes: RUN/translate/ARM, RUN/translated/ARM, RUN/segment/ARM, RUN/pseudo/ARM,
    RUN/eval/ARM; the report's figures in RUN/figures; the data stage nowhere inside RUN."""
    folder = {"translate": "translate", "apply": "translated", "segment": "segment", "pseudo": "pseudo",
              "evaluate": "eval"}.get(kind)
    return run / folder / arm.name if folder else (run / "figures" if kind == "report" else None)
