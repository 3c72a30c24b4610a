"""CUT / FastCUT: PatchNCE, the layer mapping, the modes, one step, resume (learning a colour shift
and DDP: with CycleGAN's, in test_cyclegan.py)."""
import numpy as np
import pytest
import torch

from conftest import translator_once_and_resumed
from i2iuda.config import load_config, to_dict
from i2iuda.runtime import init_runtime
from i2iuda.translation import cut
from i2iuda.translation.gan import Generator, init_weights
from i2iuda.translation.train import TranslateConfig, load_translator, train_translator


TINY = ["method=cut", "model.ngf=8", "model.ndf=8", "model.n_blocks=1", "model.d_layers=1", "data.size=[32,64]",
        "data.batch_size=2", "data.workers=0", "device=cpu", "log_every=2", "image_every=4", "checkpoint_every=4"]


def test_patch_nce_is_small_for_matching_features_and_large_for_shuffled():
    g = torch.Generator().manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(2, 64, 256, generator=g), dim=-1)
    same = cut.patch_nce(k.clone(), k, 0.07)
    shuffled = cut.patch_nce(k[:, torch.randperm(64, generator=g)], k, 0.07)
    assert same < 0.01  # the positive (q_i . k_i = 1) dominates every negative
    assert shuffled > 3.0  # about log(64) or more: the positive is no better than a negative
    # the positive sits at index 0 and k_i is not also a negative: the loss is the diagonal form
    logits = torch.bmm(k, k.transpose(1, 2)).flatten(0, 1) / 0.07
    assert torch.allclose(same, torch.nn.functional.cross_entropy(logits, torch.arange(64).repeat(2)), atol=1e-6)


def test_patch_nce_gives_no_gradient_to_the_input_side():
    q = torch.nn.functional.normalize(torch.randn(1, 8, 16), dim=-1).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(1, 8, 16), dim=-1).requires_grad_()
    cut.patch_nce(q, k, 0.07).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None


@pytest.mark.parametrize("n_blocks, last", [(9, 14), (4, 13), (1, 10)])
def test_layers_map_onto_our_generator(n_blocks, last):
    layers = cut.nce_layers(n_blocks)
    assert layers == sorted({0, 4, 7, 10, last})
    G = Generator(8, n_blocks)
    feats = cut.encode(G, torch.randn(1, 3, 32, 64), layers)
    assert [f.shape[1] for f in feats] == cut.layer_channels(8, n_blocks)
    assert feats[0].shape[2:] == (38, 70)  # the reflection-padded input
    assert feats[1].shape[2:] == (16, 32) and feats[2].shape[2:] == (8, 16) and feats[-1].shape[2:] == (8, 16)
    assert isinstance(G.model[layers[1]], torch.nn.Conv2d) and G.model[layers[1]].stride == (2, 2)
    assert isinstance(G.model[layers[2]], torch.nn.Conv2d) and G.model[layers[2]].stride == (2, 2)


def test_modes_set_the_reference_defaults_and_explicit_settings_win():
    c, f = cut.CUTConfig(), cut.CUTConfig(mode="fastcut")
    assert (c.lambda_nce, c.nce_idt, c.flip_equivariance) == (1.0, True, False)
    assert (f.lambda_nce, f.nce_idt, f.flip_equivariance) == (10.0, False, True)
    assert cut.CUTConfig(mode="fastcut", lambda_nce=3.0).lambda_nce == 3.0
    # the saved config holds the resolved values, and loads back to the same
    cfg = load_config(TranslateConfig, None, ["method=cut", "model.mode=fastcut"])
    assert cfg.model.lambda_nce == 10.0 and cfg.model.flip_equivariance is True
    assert load_config(TranslateConfig, None, [f"model={to_dict(cfg.model)}", "method=cut"]) == cfg


def test_a_residual_g_starts_as_the_identity_and_trains():
    """model.residual, as CycleGAN's: G returns its input at step 0, then moves off it."""
    tcfg = load_config(TranslateConfig, None, TINY + ["model.residual=true", "model.lr=0.001"])
    m = cut.CUT.build(tcfg, init_runtime("cpu"), 10)
    x = torch.rand(2, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(m.gen_h.G(x), x.clamp(-0.999, 0.999), atol=1e-6)
    for _ in range(3):
        m.step({"source": x, "target": torch.rand(2, 3, 32, 64) * 2 - 1})
    with torch.no_grad():
        assert (m.gen_h.G(x) - x).abs().mean() > 1e-3
    assert "residual generator" in m.describe()


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_one_step_trains_g_heads_and_d(mode):
    tcfg = load_config(TranslateConfig, None, TINY + [f"model.mode={mode}"])
    m = cut.CUT.build(tcfg, init_runtime("cpu"), 10)
    nets = {"G": m.gen_h.G, "H": m.gen_h.H, "D": m.D}
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in nets.items()}
    batch = {"source": torch.rand(2, 3, 32, 64) * 2 - 1, "target": torch.rand(2, 3, 32, 64) * 2 - 1}
    for _ in range(2):  # FastCUT flips on about half the steps
        loss = m.step(batch)
    assert all(torch.isfinite(v) for v in loss.values())
    assert ("nce_y" in loss) == (mode == "cut")
    for k, n in nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], n.parameters())), k
    assert m.picture().dtype == np.uint8


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_resume_is_exact(synth_root, tmp_path, mode):
    over = TINY + [f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train",
                   "epochs=2", "steps_per_epoch=4", f"model.mode={mode}"]
    cfg = load_config(TranslateConfig, None, over)
    train_translator(cfg, tmp_path / "once", progress=False)
    train_translator(cfg, tmp_path / "twice", stop_at_step=4, progress=False)  # "killed" after 4 of 8
    train_translator(cfg, tmp_path / "twice", resume=True, progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["trainer"] for r in ("once", "twice"))
    for part in ("gen_h", "D"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert torch.equal(a["rng"], b["rng"])
    assert (tmp_path / "once" / "losses.jsonl").read_text() == (tmp_path / "twice" / "losses.jsonl").read_text()
    # inference loads G alone from translator.safetensors
    translator, loaded = load_translator(tmp_path / "twice", "cpu")
    assert loaded.model == cut.CUTConfig(mode=mode, ngf=8, ndf=8, n_blocks=1, d_layers=1)
    x = torch.rand(1, 3, 32, 64) * 2 - 1
    assert translator.translate(x, ["a"]).shape == x.shape


def test_the_moving_average_of_g_is_what_translates_and_resumes_exactly(synth_root, tmp_path):
    """model.ema, as CycleGAN's: the average of G's weights is kept in the checkpoint, resumes bit
    for bit, and is what translator.safetensors holds and load_translator translates with."""
    over = TINY + [f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train",
                   "epochs=2", "steps_per_epoch=4", "model.ema=0.5"]
    states = translator_once_and_resumed(load_config(TranslateConfig, None, over), tmp_path)
    averaged = [{k.removeprefix("module."): v for k, v in s["G_ema"].items() if k.startswith("module.")} for s in states]
    live = {k.removeprefix("G."): v for k, v in states[0]["gen_h"].items() if k.startswith("G.")}
    assert int(states[0]["G_ema"]["n_averaged"]) == 8 and averaged[0].keys() == live.keys()
    assert all(torch.equal(averaged[0][k], averaged[1][k]) for k in averaged[0])
    assert not all(torch.equal(averaged[0][k], v) for k, v in live.items())  # an average, not the last weights
    translator, loaded = load_translator(tmp_path / "once", "cpu")
    assert loaded.model.ema == 0.5 and "weights averaged (EMA 0.5)" in translator.describe()
    used = translator.inference_module().state_dict()
    assert all(torch.equal(used[k], averaged[0][k]) for k in used)


def test_heads_normalise_as_the_reference_does_z_over_norm_plus_eps():
    """The reference's Normalize: z / (|z| + 1e-7), not F.normalize's z / max(|z|, eps). At the
    xavier (gain 0.02) initialisation the heads' outputs are tiny, where the two differ."""
    torch.manual_seed(0)
    heads = cut.PatchHeads([8], dim=16)
    init_weights(heads, kind="xavier")
    feats = [torch.randn(2, 8, 4, 4)]
    ids = [torch.arange(16)]
    got = heads(feats, ids)[0]
    z = heads.mlps[0](feats[0].flatten(2).transpose(1, 2)[:, ids[0]])
    norm = torch.sqrt((z * z).sum(-1, keepdim=True))  # computed here, independently of the module
    assert torch.allclose(got, z / (norm + 1e-7), rtol=1e-6, atol=0)
    assert float(norm.max()) < 1e-2  # tiny at initialisation ...
    lengths = got.norm(dim=-1)
    assert float(lengths.max()) < 1 - 2e-5  # ... so the vectors are not unit length, unlike F.normalize's
    assert not torch.allclose(got, torch.nn.functional.normalize(z, dim=-1, eps=1e-7), rtol=1e-5, atol=0)
