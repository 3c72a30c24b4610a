"""The built-in synthetic benchmark: determinism, class presence, a real appearance gap, speed."""
import time

import numpy as np

from i2iuda.data import labels as L
from i2iuda.data.check import check_dataset
from i2iuda.data.datasets import build_index, load_pair
from i2iuda.data.synthetic import NoiseBank, SynthConfig, generate, render_frame, write_preview

CFG = SynthConfig(height=128, width=256)
REQUIRED = ["road", "sidewalk", "building", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
            "sky", "person", "rider", "car"]


def frames(domain, n, split):
    bank = NoiseBank(CFG.height, CFG.width, np.random.default_rng(0))
    return [render_frame(domain, i, split, CFG, bank) for i in range(n)]


def test_render_is_deterministic():
    bank = NoiseBank(CFG.height, CFG.width, np.random.default_rng(0))
    a = render_frame("target", 5, "train", CFG, bank)
    b = render_frame("target", 5, "train", CFG, bank)
    c = render_frame("target", 6, "train", CFG, bank)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_generate_twice_writes_identical_files(tmp_path):
    cfg = SynthConfig(height=32, width=64, n_source=6, n_target_train=3, n_target_val=3, workers=2)
    generate(tmp_path / "a", cfg, progress=False)
    generate(tmp_path / "b", SynthConfig(**{**cfg.__dict__, "workers": 1}), progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 24
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_every_required_class_appears_in_both_domains():
    for domain, split in (("source", "all"), ("target", "train")):
        counts = np.zeros(256, np.int64)
        for _, lab in frames(domain, 60, split):
            counts += np.bincount(lab.ravel(), minlength=256)
        present = {L.CLASS_NAMES[i] for i in range(19) if counts[i] > 0}
        assert set(REQUIRED) <= present, (domain, set(REQUIRED) - present)
        assert counts[L.CLASS_NAMES.index("wall")] + counts[L.CLASS_NAMES.index("fence")] > 0
        assert counts[L.CLASS_NAMES.index("bus")] + counts[L.CLASS_NAMES.index("truck")] > 0


def test_domains_differ_in_class_appearance_not_in_geometry():
    src, tgt = frames("source", 40, "all"), frames("target", 40, "train")

    def class_means(fs):
        means = {}
        for img, lab in fs:
            for c in (0, 2, 8, 10):
                means.setdefault(c, []).append(img[lab == c].mean(0) if (lab == c).any() else np.full(3, np.nan))
        return {c: np.nanmean(v, 0) for c, v in means.items()}

    ms, mt = class_means(src), class_means(tgt)
    for c in ms:  # every major class looks different (> 25 grey levels apart on average)
        assert np.abs(ms[c] - mt[c]).max() > 25, (L.CLASS_NAMES[c], ms[c], mt[c])
    # class layout is similar: road and sky cover comparable fractions in both domains
    frac = lambda fs, c: np.mean([(lab == c).mean() for _, lab in fs])
    for c in (0, 10):
        assert 0.5 < frac(src, c) / frac(tgt, c) < 2.0


def test_generator_speed():
    bank = NoiseBank(CFG.height, CFG.width, np.random.default_rng(0))
    t = time.perf_counter()
    for i in range(100):
        render_frame("target" if i % 2 else "source", i, "train" if i % 2 else "all", CFG, bank)
    per_frame = (time.perf_counter() - t) / 100
    assert per_frame < 0.1  # ~0.01 s here; a loose bound so that a slow CI machine passes


def test_readers_and_check_on_generated_benchmark(synth_root):
    src = check_dataset(f"synthetic:{synth_root}:source", workers=0, progress=False)
    tgt = check_dataset(f"synthetic:{synth_root}:target-val", workers=0, progress=False)
    assert src.frames == 40 and tgt.frames == 12 and not src.problems and not tgt.problems
    assert src.image_sizes[(128, 64)] == 40
    assert src.ignore_fraction == 0 and tgt.ignore_fraction > 0  # the target's ego-vehicle hood is void
    for r in (src, tgt):
        assert r.class_frequency["road"] > 0.1 and r.class_frequency["sky"] > 0.05
    # labels come back through the Cityscapes-id tables as the generator's trainIds
    index = build_index(f"synthetic:{synth_root}:target-val")
    _, lab = load_pair(index.samples[0], index.label_format)
    assert lab.max() == 255 and lab[lab != 255].max() < 19
    assert (synth_root / "preview.png").exists() is False
    assert write_preview(synth_root, n=2).exists()
