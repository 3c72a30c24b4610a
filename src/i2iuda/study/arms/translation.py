"""A translation arm: one per entry of ``translate.methods``. Its translator is trained
(``translate:ARM``), the source translated at the segmenter's input size (``apply:ARM``), and a
segmenter trained on the translated source, selected on the translated source val; a method
applied on the fly (FDA) trains the segmenter on raw source restyled as it is drawn instead."""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import ClassVar

from ...appearance import CAST_JND, hue_name
from ...config import from_dict, merge, to_dict
from ...io import read_json, save_png, write_json
from ...report import nice
from ...runtime import init_runtime
from ...segmentation.models import frozen_segmenter
from ...segmentation.train import SegmentConfig
from ...translation.apply import apply_translator, sample_grid, translated_spec
from ...translation.methods import method
from ...translation.train import TranslateConfig, load_translator, train_translator
from ..diagnostics import failure_gallery, translation_scores
from .base import TRANSLATE, TrainedOnLabels, can_resume, check_name, stage_name


class Translation(TrainedOnLabels):
    KIND: ClassVar[str] = "translation"

    def __init__(self, name: str, study, translate: TranslateConfig):
        self.name, self.study, self.translate = name, study, translate

    @classmethod
    def arms_of(cls, study) -> list["Translation"]:
        """``translate.methods``: a list of methods (each with ``translate.settings.METHOD``), or a
        mapping arm name -> {method: M, key: value}: translate keys (epochs, ...) and the method's
        own (beta, ngf, ...) over its settings."""
        cfg = study.cfg
        entries = cfg.translate.methods
        if isinstance(entries, list):
            entries = {name: {} for name in entries}
        translate_keys = {f.name for f in fields(TranslateConfig)}
        out = []
        for name, over in entries.items():
            where = f"translate.methods.{name}"
            check_name(name, where, [a.name for a in out])
            over = dict(over or {})
            m = over.pop("method", name)
            method(m)  # a clear error for an unknown method
            base = merge(to_dict(TranslateConfig()), cfg.translate.settings.get(m, {}))
            base = merge(base, {k: v for k, v in over.items() if k in translate_keys})
            base["model"] = {**(base.get("model") or {}), **{k: v for k, v in over.items() if k not in translate_keys}}
            base.update(method=m, source=study.specs["source_train"], target=study.specs["target_train"], seed=cfg.seed)
            out.append(cls(name, study, from_dict(TranslateConfig, base, where)))
        return out

    @property
    def method(self) -> str:
        return self.translate.method

    @property
    def on_the_fly(self) -> bool:
        """The method applies inside segmenter training (FDA)."""
        return method(self.method).on_the_fly(self.translate) is not None

    @property
    def judged_by_the_study(self) -> bool:
        """A semantic loss (CyCADA's) whose segmenter is the study's source-only model."""
        return method(self.method).judge_run(self.translate.model) == ""

    def stages(self) -> list[tuple[str, int]]:
        return [("translate", TRANSLATE), ("apply", TRANSLATE), *super().stages()]

    def translate_config(self) -> dict:
        out = {"translate": to_dict(self.translate), "size": self.study.cfg.segment.data.size}
        if self.judged_by_the_study:  # f is the study's source-only model: its stage is part of this one
            out["semantic_from"] = self.study.baseline.stage_config("segment")
        return out

    def stage_config(self, stage: str) -> dict:
        if stage in ("translate", "apply"):
            return {**self.base_config(), **self.translate_config()}
        return super().stage_config(stage)

    def needs(self, stage: str) -> set[str]:
        if stage == "translate":
            return {"data"} | ({stage_name("segment", self.study.baseline)} if self.judged_by_the_study else set())
        if stage == "apply":
            return {stage_name("translate", self)}
        if stage == "segment":
            return {"data", stage_name("apply", self)}
        return super().needs(stage)

    def run(self, stage: str, progress: bool) -> None:
        if stage == "translate":
            self.train_translator(progress)
        elif stage == "apply":
            self.apply(progress)
        else:
            super().run(stage, progress)

    def train_translator(self, progress: bool) -> None:
        folder, tcfg, m = self.folder("translate"), self.translate, method(self.method)
        if self.judged_by_the_study:
            tcfg = replace(tcfg, model=m.with_judge_run(tcfg.model, str(self.study.baseline.folder("segment"))))
        judge_run = m.judge_run(tcfg.model)
        judge = frozen_segmenter(judge_run, init_runtime(tcfg.device).device) if judge_run is not None else None
        train_translator(tcfg, folder, resume=can_resume(stage_name("translate", self), folder, tcfg),
                         progress=progress, judge=judge)

    def apply(self, progress: bool) -> None:
        """Translate at the size the segmenter consumes (its data.size), so that the adapted
        segmenter sees frames as sharp as source-only's; a method applied on the fly needs only
        the val split offline (model selection and pictures)."""
        s, cfg = self.study.specs, self.study.cfg
        translator, _ = load_translator(self.folder("translate"), self.translate.device)
        out, size = self.folder("apply"), tuple(cfg.segment.data.size)
        # on a CPU, 4 frames a batch keep a generator's activations in cache (6.1 against 8.6 ms a
        # demo frame at 16, the same translations to the bit); a GPU wants the larger batch
        batch = 16 if translator.rt.device.type == "cuda" else 4
        for spec in ([s["source_val"]] if self.on_the_fly else [s["source_train"], s["source_val"]]):
            apply_translator(translator, spec, out, size, workers=cfg.workers, batch_size=batch, progress=progress)
        save_png(out / "samples.png", sample_grid(translator, s["source_val"], s["target_train"], n=4, size=size))
        write_json(out / "about.json", {"description": translator.describe(size), "size": list(size)})

    def translated(self, split: str) -> str:
        """The spec of its translated source (the source's layout, so its kind and holdout carry over)."""
        return translated_spec(self.study.specs["source_train"], self.folder("apply"), split)

    def trained_on(self) -> str:
        """The source val frames of its training set: translated."""
        return self.translated("val")

    def segment_config(self) -> SegmentConfig:
        seg, val = self.study.cfg.segment, self.translated("val")
        if self.on_the_fly:
            return replace(seg, train=self.study.specs["source_train"], val=val,
                           **method(self.method).on_the_fly(self.translate))
        return replace(seg, train=self.translated("train"), val=val)

    def look(self, progress: bool) -> None:
        """Its failure gallery and flip tables (translated source val frames where the judge sees
        something else than the source label says), then how target-like its training frames are
        (translation.json, the stage's record, last)."""
        failure_gallery(self, self.folder("look"))
        translation_scores(self, self.folder("look"))

    def metrics_row(self) -> dict:
        row = {**super().metrics_row(), **read_translation_scores(self)}
        seconds = self.study.stage_seconds(stage_name("translate", self))
        if method(self.method).TRAINS and seconds is not None:
            row["translator_seconds"] = seconds
        gallery = read_json(self.folder("look") / "failures.json", None)
        if gallery is not None:
            row["failure_agreement"] = gallery["mean_agreement"]
            for key in ("flips", "flips_label_free"):  # the mean share of a class's pixels read as another
                kept = (gallery.get(key) or {}).get("kept")
                if kept:
                    row[f"{key}_mean"] = 100 - sum(kept.values()) / len(kept)
        return row

    def manifest(self) -> dict:
        t = self.translate
        about = read_json(self.folder("apply") / "about.json", {})
        desc = about.get("description", t.method)
        if method(t.method).TRAINS:
            length = f"{t.epochs * t.steps_per_epoch} steps" if t.steps_per_epoch else f"{t.epochs} epochs"
            desc += f", {length} at batch {t.data.batch_size}, size {t.data.size[0]}x{t.data.size[1]}"
            if t.data.random_crop:
                desc += f" (random {t.data.random_crop[0]}x{t.data.random_crop[1]} crops)"
        if self.on_the_fly:
            desc += "; applied on the fly in segmenter training"
        return {**super().manifest(), "method": t.method, "description": desc, "translate": f"translate/{self.name}",
                "translated": f"translated/{self.name}", "on_the_fly": self.on_the_fly}

    @classmethod
    def section(cls, run: Path, row: dict, metrics: dict, figures: Path) -> list[str]:
        """What its translator does (samples) and its failure gallery."""
        name, look = row["name"], row.get("look", row["eval"])  # a study from before the look stage: eval/
        md = [f"## Arm {name}", "", row["description"], ""]
        if (run / row["translated"] / "samples.png").is_file():
            md += [f"![{name} samples]({row['translated']}/samples.png)", ""]
        fail = read_json(run / look / "failures.json", None)
        if fail:
            md += [f"**Failure cases**: translated source val frames ranked by the agreement (pixel accuracy) "
                   f"between the source label and what {nice(fail['judge'], fail.get('judge_bound'))} sees in the "
                   f"translated frame, lowest first. Low agreement means the translator painted one class as another, "
                   f"so the source labels no longer describe the frame. Mean agreement over {fail['frames_scored']} "
                   f"frames: **{fail['mean_agreement']:.1f}%**.", "",
                   f"![{name} failure cases]({look}/failures.png)", "", "| frame | agreement (%) |", "|---|---|"]
            md += [f"| {r['name']} | {r['agreement']:.1f} |" for r in fail["worst"]] + [""]
            md += flip_section(fail)
        md += look_section(read_json(run / look / "translation.json", {}).get("appearance"))
        return md


def read_translation_scores(arm) -> dict:
    """The ``translation`` block of a metrics row (FCN-score, KID, FID of the frames the arm
    trains on) from look/ARM/translation.json, where the look stage wrote one."""
    t = read_json(arm.folder("look") / "translation.json", None)
    if t is None:
        return {}
    kf, fcn, look = t.get("kid_fid") or {}, t.get("fcn_score"), t.get("appearance") or {}
    shift, cc = look.get("colour_shift") or {}, look.get("class_cast") or {}
    return {"translation": {"fcn_score_mIoU": fcn["mIoU"] if fcn else None, "fcn_score_PA": fcn["PA"] if fcn else None,
                            "KID": kf.get("KID"), "KID_std": kf.get("KID_std"), "FID": kf.get("FID"),
                            "N": [kf["N_fake"], kf["N_real"]] if "N_fake" in kf else None,
                            "checkerboard_db": look.get("checkerboard_db"), "cast": shift.get("cast"),
                            "cast_hue_deg": shift.get("cast_hue_deg"), "chroma_shift": shift.get("chroma"),
                            "edges_kept": look.get("edges_kept"), "class_cast": cc.get("cast"),
                            "class_lightness": cc.get("lightness"),
                            "target_train_class_cast": look.get("target_train_class_cast"),
                            "target_checkerboard_db": look.get("target_checkerboard_db"),
                            "target_val_cast": look.get("target_val_cast"), "cast_jnd": look.get("cast_jnd")}}


def flip_section(fail: dict) -> list[str]:
    """The flip tables of failures.json: what the translation did to each class's meaning."""
    md = []
    for key, what in (("flips", "the judge's reading of the translated frames against the source labels"),
                      ("flips_label_free", "source-only's reading of the translated frame against its reading of "
                                           "the source frame (no target label needed)")):
        t = fail.get(key)
        if not t or not t.get("top"):
            continue
        note = (" This judge is trained on target labels: a diagnostic of the benchmark; the label-free table "
                "below needs none." if t.get("needs_target_labels") else "")
        md += [f"**Flips, {what}** ({t['judge']} reads): of the pixels of class c, the share read as c'.{note}", "",
               "| c → c' | share of c (%) | pixels |", "|---|---|---|"]
        md += [f"| {f['from']} → {f['to']} | {f['share']:.1f} | {f['pixels']} |" for f in t["top"]] + [""]
    return md


def look_section(look: dict | None) -> list[str]:
    """The appearance of the translated frames beside the target's (checkerboard, colour cast)."""
    if not look or look.get("checkerboard_db") is None:
        return []
    c, shift = look.get("target_colour") or look["colour"], look["colour_shift"]
    floor = look.get("target_val_cast")
    return [f"**How the translated frames look** (appearance.py; up to 200 source val frames against 200 target "
            f"train frames): checkerboard {look['checkerboard_db']:.2f} dB (the target's own frames: "
            f"{look['target_checkerboard_db']:.2f} dB; above it, the periodic artifacts of up-sampling); colour cast "
            f"{shift['cast']:.2f} a\\*b\\* units towards {hue_name(shift['cast_hue_deg'])} ({shift['cast_hue_deg']:.0f}°), "
            f"chroma {shift['chroma']:+.2f}, lightness {shift['lightness']:+.2f} against the target's mean colour "
            f"(L* {c['L']:.1f}, a* {c['a']:+.2f}, b* {c['b']:+.2f}; the target's own val frames: a cast of "
            + (f"{floor:.2f}" if floor is not None else "–")
            + f"; from about {CAST_JND} a cast is visible, one just-noticeable difference)"
            + (f"; edges kept {look['edges_kept']:.2f} (the correlation of the translated and the source frames' "
               "luminance edges: 1 = the same; smeared edges and streaks lower it)" if look.get("edges_kept") is not None
               else "")
            + class_cast_text(look) + ".", ""]


def class_cast_text(look: dict) -> str:
    """The class cast clause of ``look_section`` ("" where the look stage had no labels for it)."""
    cc, floor = look.get("class_cast") or {}, look.get("target_train_class_cast")
    if cc.get("cast") is None:
        return ""
    return (f"; **class cast** {cc['cast']:.2f} a\\*b\\* units, lightness {cc['lightness']:+.2f} (per class, the distance "
            "of the class's mean colour from the same class's in the target val frames, weighted by the class's share "
            "of the pixels: it reads *target val labels*; the target's own train frames: "
            + (f"{floor:.2f}" if floor is not None else "–") + "; most of it: "
            + ", ".join(f"{w['class']} {w['cast']:.1f}" for w in cc["worst"]) + ")")
