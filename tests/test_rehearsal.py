"""The published preset's code paths at the real data sets' sizes (configs/study_rehearsal_real_sizes.yaml
on ``i2iuda synth --preset real-sizes`` frames): tiny nets, two steps, real resolutions."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from i2iuda.config import load_config
from i2iuda.data.datasets import build_index, load_pair
from i2iuda.data.synthetic import generate_real_sizes
from i2iuda.study import StudyConfig, run_study
from i2iuda.segmentation.evaluate import EvalProtocol, run_eval

PRESET = Path(__file__).resolve().parents[1] / "configs" / "study_rehearsal_real_sizes.yaml"


@pytest.fixture(scope="module")
def real_sizes(tmp_path_factory):
    return generate_real_sizes(tmp_path_factory.mktemp("real"), n_source=8, n_target_train=4, n_target_val=2,
                               progress=False)


def test_the_published_preset_runs_at_real_sizes(tmp_path, real_sizes):
    root = real_sizes
    specs = {"source_train": f"gta5:{root / 'gta5'}:train,val_fraction=0.25",
             "source_val": f"gta5:{root / 'gta5'}:val,val_fraction=0.25",
             "target_train": f"cityscapes:{root / 'cityscapes'}:train",
             "target_val": f"cityscapes:{root / 'cityscapes'}:val"}
    # the real readers see the real layouts and sizes, short GTA5 labels included
    gta5 = build_index(specs["source_train"])
    assert len(gta5.samples) + len(build_index(specs["source_val"]).samples) == 8
    shapes = {Image.open(s.label).size for s in gta5.samples}
    assert Image.open(gta5.samples[0].image).size == (1914, 1052) and (1914, 1050) in shapes
    short = next(s for s in gta5.samples if Image.open(s.label).size == (1914, 1050))
    image, label = load_pair(short, gta5.label_format)
    assert label.shape == image.shape[:2] == (1052, 1914)
    val = build_index(specs["target_val"])
    assert len(val.samples) == 2 and Image.open(val.samples[0].label).size == (2048, 1024)

    cfg = load_config(StudyConfig, PRESET, [f"data.{k}={v}" for k, v in specs.items()])
    run = tmp_path / "run"
    metrics = run_study(cfg, run, progress=False)
    stages = json.loads((run / "stages.json").read_text())
    print("\nrehearsal at real sizes: stage, seconds, peak RSS so far (MB)")
    for name, s in stages.items():
        print(f"  {name:24s} {s['seconds']:7.1f} {s['peak_rss_mb']:7d}")
    assert set(metrics["arms"]) == {"source_only", "cyclegan", "cyclegan_daformer", "cyclegan_mic"}
    # the online arms at the papers' crops: 512x512 of GTA5 at 720x1280 and of Cityscapes at 512x1024
    mic = yaml.safe_load((run / "segment" / "cyclegan_mic" / "config.yaml").read_text())
    assert mic["data"]["crop"] == [512, 512] and mic["online"]["target_size"] == [512, 1024] and mic["online"]["mic"]
    assert json.loads((run / "segment" / "cyclegan_mic" / "summary.json").read_text())["steps"] == 1
    assert (run / "segment" / "cyclegan_daformer" / "rcs.json").is_file()
    # translated at the size the segmenter consumes (the published preset's 720x1280), not 512x1024
    frame = next((run / "translated" / "cyclegan" / "images").glob("*.png"))
    assert Image.open(frame).size == (1280, 720)
    ev = json.loads((run / "eval" / "source_only" / "metrics.json").read_text())
    assert ev["input_size"] == [512, 1024] and ev["frames"] == 2
    # scored at the labels' full 2048x1024 (logits upsampled), not at the 512x1024 input
    assert sum(map(sum, ev["confusion"])) > 2 * 512 * 1024 * 2
    # the translated arm keeps the source's train/val holdout (val_fraction carried over)
    src_val = {Path(s.rel).name for s in build_index(specs["source_val"]).samples}
    from i2iuda.study import Study
    cyclegan = Study.resolve(cfg, run.resolve()).arms["cyclegan"]
    assert {Path(s.rel).name for s in build_index(cyclegan.translated("val")).samples} == src_val

    # sliding windows over the full-resolution frame, predictions written at the label's size
    r = run_eval(run / "segment" / "source_only", specs["target_val"], tmp_path / "slide",
                 EvalProtocol(slide=(512, 1024)), save_predictions=True, pictures=1, device="cpu", workers=0,
                 progress=False)
    preds = sorted((tmp_path / "slide" / "predictions").rglob("*.png"))
    assert r["frames"] == 2 and len(preds) == 2
    assert Image.open(preds[0]).size == (2048, 1024) and np.asarray(Image.open(preds[0])).max() < 19


def test_the_daformer_preset_runs_at_real_sizes(tmp_path, real_sizes):
    """study_gta5_cityscapes_daformer.yaml's paths at GTA5's and Cityscapes' sizes: MiT-B0 (tiny head),
    its ImageNet encoder from a file for the feature distance, class-balanced 512x512 crops of the
    720x1280 source, 512x1024 target frames, one online step on FDA-translated source."""
    from i2iuda.segmentation.daformer import DAFormer

    torch.manual_seed(0)
    weights = tmp_path / "mit_b0.pth"
    torch.save(DAFormer("mit_b0").encoder.state_dict(), weights)
    specs = {"source_train": f"gta5:{real_sizes / 'gta5'}:train,val_fraction=0.25",
             "source_val": f"gta5:{real_sizes / 'gta5'}:val,val_fraction=0.25",
             "target_train": f"cityscapes:{real_sizes / 'cityscapes'}:train",
             "target_val": f"cityscapes:{real_sizes / 'cityscapes'}:val"}
    preset = PRESET.parent / "study_rehearsal_daformer_real_sizes.yaml"
    cfg = load_config(StudyConfig, preset, [f"data.{k}={v}" for k, v in specs.items()] + [f"segment.model.pretrained={weights}"])
    run = tmp_path / "run"
    metrics = run_study(cfg, run, progress=False)
    assert set(metrics["arms"]) == {"source_only", "fda", "fda_daformer"}
    seg = yaml.safe_load((run / "segment" / "fda_daformer" / "config.yaml").read_text())
    assert seg["model"]["arch"] == "daformer" and seg["data"]["crop"] == [512, 512] and seg["data"]["cat_max_ratio"] == 0.75
    assert seg["online"]["feature_distance"] == 0.005 and seg["online"]["target_size"] == [512, 1024]
    assert seg["norm_decay_mult"] == 0.0 and seg["fda_target"]  # FDA on the fly beneath DAFormer
    losses = [json.loads(ln) for ln in (run / "segment" / "fda_daformer" / "losses.jsonl").read_text().splitlines()]
    assert "loss/FD" in losses[0] and (run / "segment" / "fda_daformer" / "rcs.json").is_file()
    assert json.loads((run / "eval" / "fda_daformer" / "teacher.json").read_text())["mIoU"] >= 0
