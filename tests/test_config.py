"""Typed configs: every shipped preset parses; bad keys and values are clear errors."""
from dataclasses import replace
from pathlib import Path

import pytest

from i2iuda.config import load_config, parse_override
from i2iuda.errors import UserError
from i2iuda.experiment import StudyConfig, arms
from i2iuda.segmentation.train import SegmentConfig
from i2iuda.translation.train import TranslateConfig, with_method_defaults

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KIND = {"cyclegan": TranslateConfig, "cut": TranslateConfig, "segment": SegmentConfig, "study": StudyConfig}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads(path):
    cfg = load_config(KIND[path.name.split("_")[0]], path)
    if isinstance(cfg, TranslateConfig):
        with_method_defaults(cfg)
    if isinstance(cfg, StudyConfig):  # every arm resolves, with its method's settings checked
        assert [a.name for a in arms(cfg)][0] == "source_only"
        for m in ("cyclegan", "cut", "fda"):  # (self-training arms name their teachers: left out here)
            one = replace(load_config(StudyConfig, path, [f"translate.methods=[{m}]"]), self_train={})
            with_method_defaults(arms(one)[1].translate)


def test_overrides_and_errors(tmp_path):
    cfg = with_method_defaults(load_config(TranslateConfig, None, ["model.ngf=32", "data.size=[64,128]", "amp=bf16"]))
    assert cfg.model["ngf"] == 32 and cfg.model["n_blocks"] == 9 and cfg.data.size == (64, 128) and cfg.amp == "bf16"
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    with pytest.raises(UserError, match=r"model: unknown key\(s\) ngff"):  # checked by the method's Config
        with_method_defaults(load_config(TranslateConfig, None, ["model.ngff=3"]))
    with pytest.raises(UserError, match="method 'pix2pix': expected one of cyclegan, cut, fda"):
        with_method_defaults(load_config(TranslateConfig, None, ["method=pix2pix"]))
    fda = with_method_defaults(load_config(TranslateConfig, None, ["method=fda"]))
    assert fda.model == {"beta": 0.01}
    with pytest.raises(UserError, match="override.amp: 'fp8' is not one of none, bf16, fp16"):
        load_config(TranslateConfig, None, ["amp=fp8"])
    with pytest.raises(UserError, match="override.epochs: expected int"):
        load_config(TranslateConfig, None, ["epochs=many"])
    assert load_config(TranslateConfig, None, ["decay_start=5e-1"]).decay_start == 0.5  # YAML: a string
    with pytest.raises(UserError, match="override.decay_start: expected float, got 'half'"):
        load_config(TranslateConfig, None, ["decay_start=half"])
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 3\n")
    with pytest.raises(UserError, match="^override.image_every: expected int, got None"):  # not the file's fault
        load_config(TranslateConfig, good, ["image_every=null"])
    good.write_text("epochs: many\n")
    with pytest.raises(UserError, match="good.yaml.epochs: expected int"):  # the file's own error names it
        load_config(TranslateConfig, good, ["image_every=5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_config(TranslateConfig, bad)
    with pytest.raises(UserError, match="--config .*missing.yaml: file not found"):
        load_config(TranslateConfig, tmp_path / "missing.yaml")


def test_base_files_are_merged_under_the_including_keys(tmp_path):
    (tmp_path / "seg.yaml").write_text("epochs: 7\nlr: 0.5\ndata: {batch_size: 3}\n")
    (tmp_path / "study.yaml").write_text("segment: {_base: seg.yaml, lr: 0.1}\n")
    cfg = load_config(StudyConfig, tmp_path / "study.yaml")
    assert (cfg.segment.epochs, cfg.segment.lr, cfg.segment.data.batch_size) == (7, 0.1, 3)
    (tmp_path / "self.yaml").write_text("segment: {_base: self.yaml}\n")
    with pytest.raises(UserError, match="_base names the file itself"):
        load_config(StudyConfig, tmp_path / "self.yaml")
    (tmp_path / "missing.yaml").write_text("segment: {_base: nope.yaml}\n")
    with pytest.raises(UserError, match="nope.yaml: file not found"):
        load_config(StudyConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["study_compare_cpu.yaml", "study_selftrain_cpu.yaml"])
def test_readme_studies_keep_the_cpu_translator_they_were_run_with(name):
    # The demo preset they include trains a lighter CycleGAN (lr 4e-4, 3 blocks); the README's
    # comparison and self-training tables were made with cyclegan_cpu.yaml's: a change to the demo
    # must not silently change (and retrain) them.
    study = arms(load_config(StudyConfig, CONFIGS / name))
    cyclegan = next(a for a in study if a.name == "cyclegan").translate
    plain = with_method_defaults(load_config(TranslateConfig, CONFIGS / "cyclegan_cpu.yaml"))
    assert cyclegan.model == plain.model
    assert (cyclegan.epochs, cyclegan.steps_per_epoch) == (plain.epochs, plain.steps_per_epoch)
