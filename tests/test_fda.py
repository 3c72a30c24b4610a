"""FDA: the amplitude swap as the paper defines it (symmetric window), offline translation,
and segmenter training with FDA on the fly, resumable exactly."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import segmenter_resumes_exactly
from i2iuda.config import load_config
from i2iuda.data.fourier import band, fda_source_to_target, low_frequency_window


def images(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, h, w, generator=g) * 255, torch.rand(2, 3, h, w, generator=g) * 120 + 60


def test_band_is_floor_of_min_side_times_beta():
    assert band(64, 128, 0.01) == 0 and band(64, 128, 0.05) == 3 and band(512, 1024, 0.01) == 5
    assert band(1024, 512, 0.09) == 46


@pytest.mark.parametrize("h, w", [(32, 48), (33, 47)])
def test_b0_swaps_only_the_per_channel_mean(h, w):
    src, trg = images(h, w)
    out = fda_source_to_target(src, trg, beta=0.0)
    want = src - src.mean((-2, -1), keepdim=True) + trg.mean((-2, -1), keepdim=True)
    assert torch.allclose(out, want, atol=1e-3)


@pytest.mark.parametrize("h, w", [(32, 48), (33, 47), (31, 64)])
def test_band_takes_target_amplitude_and_keeps_source_phase_and_is_real(h, w):
    src, trg = images(h, w, seed=1)
    beta = 0.2
    b = band(h, w, beta)
    f_s, f_t = torch.fft.fft2(src.double()), torch.fft.fft2(trg.double())
    # the complex result before taking the real part: the imaginary residue is float error
    window = low_frequency_window(h, w, b)
    mixed = torch.fft.ifft2(torch.polar(torch.where(window, f_t.abs(), f_s.abs()), f_s.angle()))
    assert mixed.imag.abs().max() < 1e-9 * mixed.real.abs().max()
    out = fda_source_to_target(src, trg, beta)
    f_o = torch.fft.fft2(out.double())
    assert torch.allclose(f_o.abs()[..., window], f_t.abs()[..., window], rtol=1e-4, atol=1e-2)
    assert torch.allclose(f_o.abs()[..., ~window], f_s.abs()[..., ~window], rtol=1e-4, atol=1e-2)
    strong = f_s.abs() > 1.0  # phase is defined where there is amplitude
    dphi = torch.angle(f_o * f_s.conj())[strong]
    assert dphi.abs().max() < 1e-3
    # the window is symmetric: (2b+1)^2 frequencies per channel
    assert int(window.sum()) == (2 * b + 1) ** 2


def test_offline_fda_is_deterministic_per_frame_and_clipped(synth_root, tmp_path):
    from i2iuda.runtime import init_runtime
    from i2iuda.translation import fda
    from i2iuda.translation.apply import apply_translator
    from i2iuda.translation.train import TranslateConfig

    cfg = load_config(TranslateConfig, None, ["method=fda", "model.beta=0.05", f"target=synthetic:{synth_root}:target-train"])
    t = fda.FDA.build(cfg, init_runtime("cpu"), 0, training=False)
    spec = f"synthetic:{synth_root}:source-val"
    r = apply_translator(t, spec, tmp_path / "a", (32, 64), batch_size=3, workers=0, progress=False)
    apply_translator(t, spec, tmp_path / "b", (32, 64), batch_size=1, workers=0, progress=False)
    files = sorted((tmp_path / "a").rglob("images/*.png"))
    assert r["translated"] == len(files) > 0
    for f in files:  # the target drawn for a frame depends on its name, not the batching
        assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(tmp_path / "b" / f.relative_to(tmp_path / "a"))))
    assert "b = 1 at 32x64" in t.describe((32, 64))


def test_segmenter_with_fda_on_the_fly_resumes_exactly(synth_root, tmp_path):
    from i2iuda.segmentation.train import SegmentConfig, train_segmenter

    over = ["model.backbone=resnet18", "data.size=[32,64]", "data.crop=[32,64]", "data.batch_size=2",
            "data.workers=1", "device=cpu", "log_every=2", "checkpoint_every=2",
            f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
            f"fda_target=synthetic:{synth_root}:target-train", "fda_beta=0.05", "epochs=2", "steps_per_epoch=3"]
    a = segmenter_resumes_exactly(load_config(SegmentConfig, None, over), tmp_path, stop_at_step=4)
    # and FDA did change what the segmenter saw: without it the weights differ
    plain = load_config(SegmentConfig, None, over[:-3] + ["epochs=2", "steps_per_epoch=3"])
    train_segmenter(plain, tmp_path / "plain", progress=False)
    c = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=True)["trainer"]
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])
