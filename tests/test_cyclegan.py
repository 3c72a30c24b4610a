"""CycleGAN: the paper's nets, one step, learning a colour shift, resume, apply, DDP."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2iuda.config import load_config
from i2iuda.errors import UserError
from i2iuda.data.datasets import build_index
from i2iuda.translation.apply import apply_translator, sample_grid
from i2iuda.segmentation.models import FrozenSegmenter
from i2iuda.translation.cyclegan import CycleGANConfig, build_cyclegan
from i2iuda.translation.gan import Discriminator, Generator, lr_factor, patch_size
from i2iuda.translation.train import TranslateConfig, load_translator, train_translator

from conftest import color_mean, translator_once_and_resumed

TINY = ["model.ngf=8", "model.ndf=8", "model.n_blocks=1", "data.size=[32,64]", "data.batch_size=2",
        "data.workers=0", "device=cpu", "log_every=2", "image_every=4", "checkpoint_every=4"]


def test_parameter_counts_match_reference():
    count = lambda net: sum(p.numel() for p in net.parameters())
    assert round(count(Generator(64, 9)) / 1e6, 3) == 11.378
    assert round(count(Discriminator(64)) / 1e6, 3) == 2.765
    assert count(Generator(16, 2)) < count(Generator(16, 4))  # width and depth configurable


def test_shapes_and_no_sigmoid():
    g, d = Generator(8, 1), Discriminator(8)
    x = torch.randn(2, 3, 36, 68)
    assert g(x).shape == x.shape and g(x).abs().max() <= 1
    scores = d(torch.randn(1, 3, 256, 256))
    assert scores.shape == (1, 1, 30, 30)  # 70x70 receptive field patches
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in d.modules())  # LSGAN: raw scores


@pytest.mark.parametrize("n_layers, patch", [(1, 16), (2, 34), (3, 70)])
def test_patchgan_depth_sets_the_patch_size(n_layers, patch):
    d = Discriminator(8, n_layers)
    for i, m in enumerate(d.model):  # instance norm mixes the whole frame; the patch is the conv chain's
        if isinstance(m, torch.nn.InstanceNorm2d):
            d.model[i] = torch.nn.Identity()
    x = torch.zeros(1, 3, 160, 160, requires_grad=True)
    y = d(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = (x.grad.abs().sum((0, 1, 3)) > 0).nonzero()
    assert int(rows.max() - rows.min() + 1) == patch == patch_size(n_layers)


@pytest.mark.parametrize("pool_size", [50, 0])  # 0: no history, the discriminators see this step's fakes
def test_one_step_changes_all_four_nets_and_losses_are_finite(pool_size):
    cfg = CycleGANConfig(ngf=8, ndf=8, n_blocks=1, identity=True, pool_size=pool_size)
    m = build_cyclegan(cfg, torch.device("cpu"))
    nets = {"G": m.gens.G, "F": m.gens.F, "D_T": m.discs.D_T, "D_S": m.discs.D_S}
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in nets.items()}
    loss = m.step({"source": torch.rand(2, 3, 32, 32) * 2 - 1, "target": torch.rand(2, 3, 32, 32) * 2 - 1})
    for k, n in nets.items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[k], n.parameters()))
        assert changed, k
    assert set(loss) >= {"G_gan", "F_gan", "cycle_s", "cycle_t", "idt_s", "idt_t", "D_T", "D_S"}
    assert all(torch.isfinite(v) for v in loss.values())
    assert len(m.pool_t.images) == min(2, pool_size)  # the history pool filled


def test_cycada_semantic_loss_keeps_meaning_and_trains_only_the_generators():
    """L_sem = CE(f(G(x_s)), argmax f(x_s)) + CE(f(F(x_t)), argmax f(x_t)) with f frozen."""
    from dataclasses import replace

    from i2iuda.translation.cyclegan import semantic_loss

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 19, 1, bias=False)
    f = FrozenSegmenter(torch.nn.Sequential(conv, torch.nn.BatchNorm2d(19)))
    f.train()
    assert not f.net.training  # f stays in eval mode inside a training translator
    s, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    kept = semantic_loss(f, s, t, s, t)
    # colours inverted: a linear f without bias sees the least likely class everywhere
    fake_t, fake_s = (-s).requires_grad_(), (-t).requires_grad_()
    lost = semantic_loss(f, s, t, fake_t, fake_s)
    assert lost["sem_s"] > kept["sem_s"] + 0.5 and lost["sem_t"] > kept["sem_t"] + 0.5
    (lost["sem_s"] + lost["sem_t"]).backward()
    assert fake_t.grad.abs().sum() > 0 and fake_s.grad.abs().sum() > 0  # the gradient reaches G and F
    assert all(p.grad is None and not p.requires_grad for p in f.parameters())  # and not f
    # TLlib's variant: the source labels (255 ignored) instead of argmax f(x_s)
    labels = torch.randint(0, 19, (2, 16, 16))
    labels[:, :4] = 255
    ce = torch.nn.functional.cross_entropy(f(s), labels, ignore_index=255)
    assert semantic_loss(f, s, t, s, t, labels)["sem_s"] == pytest.approx(float(ce), rel=1e-5)
    # f reads frames in its own normalisation (here ImageNet's), not the translator's [-1, 1]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    seen = FrozenSegmenter(torch.nn.Identity(), mean, std)(s)
    want = ((s * 0.5 + 0.5) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(seen, want, atol=1e-6)
    # in the training step: both terms, weighted, and the step still trains G and F
    m = build_cyclegan(CycleGANConfig(ngf=8, ndf=8, n_blocks=1, d_layers=1), torch.device("cpu"))
    m.cfg, m.f = replace(m.cfg, semantic=2.0), f
    with torch.no_grad():
        out = m.gens(s, t)
        unweighted = semantic_loss(f, s, t, out["fake_t"], out["fake_s"])
    loss = m.step({"source": s, "target": t})
    assert float(loss["sem_s"]) == pytest.approx(2 * float(unweighted["sem_s"]), rel=1e-5)
    assert float(loss["sem_t"]) == pytest.approx(2 * float(unweighted["sem_t"]), rel=1e-5)
    assert float(loss["G_total"]) == pytest.approx(sum(float(v) for k, v in loss.items()
                                                       if k not in ("G_total", "D_T", "D_S")), rel=1e-5)


def test_batched_generator_passes_compute_the_paper_outputs():
    """With the identity loss G(s) and G(t) share one pass (F likewise): per-image instance norm
    makes that the same as running each image alone."""
    from i2iuda.translation.cyclegan import Generators

    torch.manual_seed(0)
    gens = Generators(CycleGANConfig(ngf=8, n_blocks=2, identity=True))
    s, t = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    out = gens(s, t)
    G, F = gens.G, gens.F
    expected = {"fake_t": G(s), "idt_t": G(t), "fake_s": F(t), "idt_s": F(s), "rec_s": F(G(s)), "rec_t": G(F(t))}
    for k, v in expected.items():
        assert torch.allclose(out[k], v, atol=1e-5), k


def test_lr_schedule():
    assert lr_factor(0, 100, 0.5, "linear") == 1 and lr_factor(49, 100, 0.5, "linear") == 1
    assert lr_factor(75, 100, 0.5, "linear") == pytest.approx(0.5)
    assert lr_factor(75, 100, 0.5, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 0.5, "cosine") == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(60, 100, 0.5, "cosine") > lr_factor(60, 100, 0.5, "linear")


@pytest.mark.parametrize("name", ["cyclegan", "cut"])
def test_translation_moves_colour_statistics_toward_target(toy_domains, tmp_path, name):
    source, target = toy_domains
    cfg = load_config(TranslateConfig, None, TINY + [f"method={name}", f"source={source}", f"target={target}", "epochs=1",
                                                     "steps_per_epoch=150", "model.ngf=16", "model.n_blocks=2",
                                                     "data.batch_size=4", "checkpoint_every=150", "image_every=150",
                                                     "log_every=50"])
    train_translator(cfg, tmp_path / "run", progress=False)
    apply_translator(load_translator(tmp_path / "run", "cpu")[0], source, tmp_path / "out", (32, 64), workers=0,
                     progress=False)
    mu_s, mu_t = color_mean(source), color_mean(target)
    mu_g = color_mean(f"folder:{tmp_path / 'out' / 'images'}")
    # the translated frames' mean colour is much closer to the target's than the source's was
    assert np.abs(mu_g - mu_t).sum() < 0.5 * np.abs(mu_s - mu_t).sum(), (mu_s, mu_g, mu_t)
    assert list((tmp_path / "run" / "images").glob("*.png"))
    assert list((tmp_path / "run" / "tb").iterdir())
    logged = [json.loads(line) for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss/G_total" in r] == [50, 100, 150]


def _weights(run: Path) -> dict:
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["trainer"]
    return {**{f"g.{k}": v for k, v in ckpt["gens"].items()}, **{f"d.{k}": v for k, v in ckpt["discs"].items()}}


def test_resume_is_exact(synth_root, tmp_path):
    over = TINY + [f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train",
                   "epochs=2", "steps_per_epoch=4", "model.pool_size=3", "data.workers=1"]
    cfg = load_config(TranslateConfig, None, over)
    train_translator(cfg, tmp_path / "once", progress=False)
    train_translator(cfg, tmp_path / "twice", stop_at_step=4, progress=False)  # "killed" after 4 of 8
    half = _weights(tmp_path / "twice")
    train_translator(cfg, tmp_path / "twice", resume=True, progress=False)
    a, b = _weights(tmp_path / "once"), _weights(tmp_path / "twice")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], half[k]) for k in a)  # the second half did train
    # the loss log of the resumed run is the uninterrupted run's, line for line
    assert (tmp_path / "once" / "losses.jsonl").read_text() == (tmp_path / "twice" / "losses.jsonl").read_text()


def test_the_moving_average_is_what_translates_and_resumes_exactly(synth_root, tmp_path):
    """model.ema: the average of G and F's weights is saved beside the live nets, is what
    translator.safetensors holds and load_translator translates with, and resumes bit for bit."""
    over = TINY + [f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train",
                   "epochs=2", "steps_per_epoch=4", "model.ema=0.5"]
    states = translator_once_and_resumed(load_config(TranslateConfig, None, over), tmp_path)
    averaged = [{k.removeprefix("module."): v for k, v in s["gens_ema"].items() if k.startswith("module.")} for s in states]
    assert int(states[0]["gens_ema"]["n_averaged"]) == 8 and averaged[0].keys() == states[0]["gens"].keys()
    assert all(torch.equal(averaged[0][k], averaged[1][k]) for k in averaged[0])
    assert not all(torch.equal(averaged[0][k], v) for k, v in states[0]["gens"].items())  # an average, not the last
    translator, _ = load_translator(tmp_path / "once", "cpu")
    used = translator.inference_module().state_dict()
    assert all(torch.equal(used[k], averaged[0][k]) for k in used)
    with pytest.raises(UserError, match=r"model.ema=1"):
        load_config(TranslateConfig, None, over + ["model.ema=1"])


def test_apply_writes_each_frame_once_and_skips_finished(synth_root, tmp_path):
    over = TINY + [f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train",
                   "epochs=1", "steps_per_epoch=2"]
    train_translator(load_config(TranslateConfig, None, over), tmp_path / "run", progress=False)
    spec = f"synthetic:{synth_root}:source"
    translator, cfg = load_translator(tmp_path / "run", "cpu")
    r = apply_translator(translator, spec, tmp_path / "out", tuple(cfg.data.size), workers=0, progress=False)
    files = sorted((tmp_path / "out" / "images").glob("*.png"))
    assert r["translated"] == 40 and len(files) == 40 and r["labels"] == 40
    assert Image.open(files[0]).size == (64, 32)  # the training size (W, H)
    # labels were resized beside the frames: the translated set reads as GTA5 again, same split
    idx = build_index(f"gta5:{tmp_path / 'out'}:train")
    assert {s.rel for s in idx.samples} == {s.rel for s in build_index(f"synthetic:{synth_root}:source-train").samples}
    assert Image.open(idx.samples[0].label).mode == "P" and Image.open(idx.samples[0].label).size == (64, 32)
    # a re-run skips everything; a deleted frame is redone, and no temp file is left behind
    files[3].unlink()
    r = apply_translator(translator, spec, tmp_path / "out", tuple(cfg.data.size), workers=0, progress=False)
    assert (r["translated"], r["skipped"]) == (1, 39)
    assert not list((tmp_path / "out").rglob("*.tmp"))
    # any size on request, and the other direction
    r = apply_translator(translator, f"synthetic:{synth_root}:target-val", tmp_path / "full", None,
                         direction="t2s", workers=0, progress=False)
    one = next((tmp_path / "full" / "leftImg8bit").rglob("*.png"))
    assert Image.open(one).size == (128, 64)
    # the picture of what the translator does: 3 rows of 6 frames at the training size
    pic = sample_grid(translator, spec, f"synthetic:{synth_root}:target-val", n=3, size=(32, 64))
    assert pic.dtype == np.uint8 and pic.shape[0] > 3 * 32 and pic.shape[1] > 6 * 64


@pytest.mark.parametrize("name", ["cyclegan", "cut"])
def test_ddp_two_gloo_processes(synth_root, tmp_path, name):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, torch.distributed as dist
        from i2iuda.config import load_config
        from i2iuda.translation import train as T
        from i2iuda.translation.methods import method

        cfg = load_config(T.TranslateConfig, None, sys.argv[2:])
        module, built = method(cfg.method), {}
        orig = module.build
        def spy(*a, **k):
            built["m"] = orig(*a, **k)
            return built["m"]
        module.build = spy
        T.train_translator(cfg, sys.argv[1], progress=False)
        flat = torch.cat([p.detach().flatten() for p in built["m"].inference_module().parameters()])
        torch.save(flat, f"{sys.argv[1]}/rank{dist.get_rank()}.pt")
        assert dist.get_world_size() == 2
    """))
    over = TINY + [f"method={name}", f"source=synthetic:{synth_root}:source-train",
                   f"target=synthetic:{synth_root}:target-train", "epochs=1", "steps_per_epoch=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), str(tmp_path / "run"), *over], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = torch.load(tmp_path / "run" / "rank0.pt"), torch.load(tmp_path / "run" / "rank1.pt")
    assert torch.equal(w0, w1)  # gradients were all-reduced: both ranks hold the same generator(s)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_random_crops_train_on_crops_and_resume_exactly(synth_root, tmp_path):
    from i2iuda.errors import UserError
    from i2iuda.translation.train import translator_data

    over = TINY + [f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train",
                   "epochs=2", "steps_per_epoch=3", "data.workers=0", "data.size=[64,128]", "data.random_crop=[32,64]"]
    cfg = load_config(TranslateConfig, None, over)
    item = translator_data(cfg)[0]
    assert item["source"].shape == item["target"].shape == (3, 32, 64)
    train_translator(cfg, tmp_path / "once", progress=False)
    train_translator(cfg, tmp_path / "twice", stop_at_step=3, progress=False)
    train_translator(cfg, tmp_path / "twice", resume=True, progress=False)
    a, b = _weights(tmp_path / "once"), _weights(tmp_path / "twice")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the crops' randomness resumes too
    for bad in ("[30,64]", "[32,256]"):  # not divisible by 4; wider than the frames
        with pytest.raises(UserError, match="data.random_crop"):
            translator_data(load_config(TranslateConfig, None, over + [f"data.random_crop={bad}"]))


def test_channels_last_on_cpu_is_refused_for_what_it_does_to_the_gradients(toy_domains, tmp_path):
    """On CPU, F(G(s)) in channels_last gives G gradients unrelated to the float64 ones (each layer
    alone is right); the default layout matches them. A translator run asking for it stops with
    one line. If a torch release fixes the kernels, the first assertion fails: lift the guard."""
    import copy

    torch.manual_seed(0)
    s = torch.rand(1, 3, 32, 64) * 2 - 1
    G, F = Generator(8, 1, "bilinear"), Generator(8, 1, "bilinear")
    Gd, Fd = copy.deepcopy(G).double(), copy.deepcopy(F).double()
    (Fd(Gd(s.double())) - 1).abs().mean().backward()
    errors = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        g, f = copy.deepcopy(G).to(memory_format=layout), copy.deepcopy(F).to(memory_format=layout)
        (f(g(s.contiguous(memory_format=layout))) - 1).abs().mean().backward()
        errors[layout] = max(float((p.grad.double() - q.grad).norm() / q.grad.norm())
                             for (n, p), q in zip(g.named_parameters(), Gd.parameters()) if n.endswith("weight"))
    assert errors[torch.channels_last] > 0.1 and errors[torch.contiguous_format] < 0.01, errors
    source, target = toy_domains
    cfg = load_config(TranslateConfig, None, TINY + [f"source={source}", f"target={target}", "channels_last=true",
                                                     "device=cpu"])
    with pytest.raises(UserError, match="channels_last=true on cpu"):
        train_translator(cfg, tmp_path / "run", progress=False)
