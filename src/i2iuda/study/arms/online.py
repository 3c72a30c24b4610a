"""Online self-training (segmentation/online.py: DACS, with rare-class sampling and MIC as options):
one arm per entry of ``online``, a student and its EMA teacher trained on its source arm's
labelled training set (raw source, a translation arm's translated source, or FDA on the fly) and
the unlabelled target train frames, with the study's segment settings; the last student is
evaluated."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

from ...config import at_least, from_dict, merge, to_dict
from ...errors import UserError
from ...io import read_json, write_json
from ...runtime import init_runtime
from ...segmentation.evaluate import EvalProtocol, evaluate
from ...segmentation.models import load_trained
from ...segmentation.online import OnlineConfig, OnlineSettings, train_online
from .base import EVALUATE, ONLINE, Arm, can_resume, check_name, project, stage_name
from .source_only import SourceOnly
from .translation import Translation


@dataclass
class OnlineArm(OnlineSettings):
    """An online self-training arm's settings: the method's (OnlineSettings), its source arm and
    its length."""

    source: str = "source_only"  # source_only or a translation arm of this study
    # the schedule's length in steps (None: the segment settings'; the number of epochs, i.e. of
    # validations, stays the segment settings'): DACS trains 250k iterations, DAFormer and MIC 40k
    steps: int | None = None
    # the study's segment settings as this arm changes them (its own segmenter and optimiser, e.g.
    # DAFormer's: {model: {arch: daformer, backbone: mit_b5}, lr: 6.0e-4, backbone_lr_mult: 0.1,
    # norm_decay_mult: 0}; its batch: {data: {batch_size: 2}}); its source arm's data stay
    segment: dict = field(default_factory=dict)

    RANGES: ClassVar[dict] = {**OnlineSettings.RANGES, "steps": at_least(1)}


class Online(Arm):
    KIND: ClassVar[str] = "online"

    def __init__(self, name: str, study, settings: OnlineArm):
        self.name, self.study, self.settings = name, study, settings

    @classmethod
    def arms_of(cls, study) -> list["Online"]:
        out = []
        for name, oa in study.cfg.online.items():
            where = f"online.{name}"
            check_name(name, where, [*study.arms, *(a.name for a in out)])
            sources = [a.name for a in study.arms.values() if isinstance(a, (SourceOnly, Translation))]
            if oa.source not in sources:
                raise UserError(f"{where}.source: {oa.source!r}: expected source_only or a translation arm of this "
                                f"study ({', '.join(sources[1:]) or 'none'})")
            out.append(cls(name, study, oa))
        return out

    @property
    def source(self) -> Arm:
        """The arm whose labelled training set it trains on."""
        return self.study.arms[self.settings.source]

    @property
    def method(self) -> str | None:
        return self.source.method

    def stages(self) -> list[tuple[str, int]]:
        return [("segment", ONLINE), ("evaluate", EVALUATE)]

    def stage_config(self, stage: str) -> dict:
        """Its source arm's segment stage and the method's settings (and, since the teacher lost its
        dropout and the warm-up became mmcv's, that: arms trained before are trained again)."""
        segment = {**self.source.stage_config("segment"), "arm": self.KIND, "online": to_dict(self.settings),
                   "teacher": "without dropout"}
        return segment if stage == "segment" else {**segment, "eval": self.eval_settings(), "teacher_scored": True}

    def needs(self, stage: str) -> set[str]:
        if stage == "segment":
            return self.source.needs("segment")
        return {stage_name("segment", self)} | self.needs("segment")

    def segment_config(self) -> OnlineConfig:
        """The source arm's training set (and its FDA on the fly), the target's frames."""
        seg = self.source.segment_config()
        if self.settings.segment:
            where = f"online.{self.name}.segment"
            changed = merge(to_dict(seg), {k: v for k, v in self.settings.segment.items() if k not in ("train", "val")})
            seg = from_dict(type(seg), changed, where)
        if self.settings.steps:
            seg = replace(seg, steps_per_epoch=max(1, self.settings.steps // seg.epochs))
        return OnlineConfig(**{f.name: getattr(seg, f.name) for f in fields(seg)},
                            target=self.study.specs["target_train"], online=project(self.settings, OnlineSettings))

    def evaluate(self, progress: bool) -> None:
        """The last student on target val, and its EMA teacher beside it (eval/ARM/teacher.json: a
        diagnostic with target labels, never used to select anything)."""
        super().evaluate(progress)
        cfg, out = self.study.cfg, self.folder("evaluate")
        rt = init_runtime(cfg.segment.device)
        teacher, mcfg = load_trained(self.folder("segment"), rt.device, which="teacher")
        protocol = replace(project(cfg.eval, EvalProtocol), size=tuple(mcfg["data"]["size"]))
        r = evaluate(teacher, self.study.specs["target_val"], rt, protocol, workers=cfg.workers)
        write_json(out / "teacher.json", {k: r[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")})

    def run(self, stage: str, progress: bool) -> None:
        if stage == "segment":
            seg, folder = self.segment_config(), self.folder("segment")
            train_online(seg, folder, resume=can_resume(stage_name(stage, self), folder, seg), progress=progress)
        else:
            self.evaluate(progress)

    def metrics_row(self) -> dict:
        row = super().metrics_row()
        history = read_json(self.folder("segment") / "history.json", None)
        if history:  # the last epoch's weight and source-val curves
            last = history[-1]
            teacher = read_json(self.folder("evaluate") / "teacher.json", {})
            row["online"] = {"source": self.source.name, "confidence_weight": last.get("confidence_weight"),
                             "student_source_val_mIoU": last["mIoU"], "teacher_source_val_mIoU": last.get("teacher_mIoU"),
                             "teacher_mIoU": teacher.get("mIoU")}
        return row

    def manifest(self) -> dict:
        o, seg = self.settings, self.segment_config()
        parts = [f"an EMA teacher (alpha {o.alpha:g}) labels target frames, ClassMix pastes half the classes of each "
                 f"source frame into a target frame, the teacher's labels weighted by the share of its pixels with "
                 f"confidence >= {o.threshold:g}, strong colour jitter and blur"]
        if o.rare_class_sampling:
            parts.append(f"rare-class sampling of the source frames (T {o.rcs_temperature:g})")
        if o.mic:
            parts.append(f"MIC: the student also learns the teacher's labels from target frames with "
                         f"{100 * o.mic_ratio:.0f}% of their patches masked")
        if o.feature_distance:
            parts.append(f"DAFormer's ImageNet feature distance (weight {o.feature_distance:g}) on thing classes")
        m = seg.model
        if m != self.study.cfg.segment.model:  # its own network (``segment`` settings)
            head = f", {m.decoder_channels}-channel head" if m.arch == "daformer" else ""
            parts.insert(0, f"network {m.arch}-{m.backbone}{head}" + (", ImageNet-pretrained" if m.pretrained else ""))
        length = (f"{seg.epochs * seg.steps_per_epoch} steps" if seg.steps_per_epoch
                  else f"{self.study.cfg.segment.epochs} epochs")
        on = "the raw source" if self.source.method is None else f"{self.source.name}'s training set"
        return {**super().manifest(), "method": self.method, "source": self.source.name,
                "rare_class_sampling": o.rare_class_sampling, "mic": o.mic,
                "description": f"online self-training on {on} and the unlabelled target train frames, {length} at "
                               f"batch {seg.data.batch_size} source + {seg.data.batch_size} target: "
                               + "; ".join(parts) + "; the last student is evaluated"}

    @classmethod
    def section(cls, run: Path, row: dict, metrics: dict, figures: Path) -> list[str]:
        """Its recipe, its last training step's mixed frames (and MIC's masked ones), the teacher's
        confidence weight over training and the student's and teacher's source-val mIoU per epoch."""
        import matplotlib.pyplot as plt

        name = row["name"]
        md = [f"## Arm {name}", "", row["description"] + ".", ""]
        images = sorted((run / row["segment"] / "images").glob("step_*.png"))
        if images:
            rel = images[-1].relative_to(run).as_posix()
            md += ["The last training step: source frames with their labels, target frames with the teacher's labels, "
                   "the mixed frames the student trains on (source objects pasted into target frames, then strongly "
                   "augmented) with their mixed labels" + (", and MIC's masked target frames" if row.get("mic") else "")
                   + ":", "", f"![{name} training step]({rel})", ""]
        hist = read_json(run / row["segment"] / "history.json", [])
        log = run / row["segment"] / "losses.jsonl"
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()] if log.is_file() else []
        q = [(ln["step"], ln["loss/q"]) for ln in lines if "loss/q" in ln]
        if hist or q:
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), dpi=100)
            if q:
                axes[0].plot(*zip(*q), color="#1e88e5")
            axes[0].set_title("confidence weight q (share of target pixels >= threshold)")
            axes[0].set_xlabel("step")
            axes[0].set_ylim(0, 1)
            if hist:
                epochs = [h["epoch"] for h in hist]
                axes[1].plot(epochs, [h["mIoU"] for h in hist], marker="o", label="student")
                axes[1].plot(epochs, [h.get("teacher_mIoU") for h in hist], marker="s", ls="--", label="teacher")
                axes[1].legend(fontsize=8)
            axes[1].set_title("(translated) source val mIoU")
            axes[1].set_xlabel("epoch")
            for ax in axes:
                ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(figures / f"online_{name}.png")
            plt.close(fig)
            md += [f"![{name} confidence weight and curves](figures/online_{name}.png)", ""]
        o = metrics.get("online") or {}
        if o.get("confidence_weight") is not None:
            md += [f"At the end: confidence weight {o['confidence_weight']:.3f} (last epoch's mean); source-val mIoU "
                   f"student {o['student_source_val_mIoU']:.2f}, teacher {o['teacher_source_val_mIoU']:.2f}"
                   + (f"; target val mIoU of the EMA teacher {o['teacher_mIoU']:.2f} beside the student's "
                      f"{metrics['mIoU']:.2f} (a diagnostic: the student is what the arm is scored with)"
                      if o.get("teacher_mIoU") is not None else "") + ".", ""]
        return md
