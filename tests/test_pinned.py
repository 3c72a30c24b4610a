"""Pins of the method details that a refactor must not move: one CycleGAN step's loss terms
recomputed from the nets' outputs with the paper's weights, the history pool's swaps once
full, and evaluation's bilinear upsampling of logits. Each was found unguarded by the suite
(changing it left every other test green)."""
import copy

import torch
import torch.nn.functional as nnf

from i2iuda.segmentation.evaluate import predict_logits
from i2iuda.translation.cyclegan import CycleGANConfig, ImagePool, build_cyclegan


def test_cyclegan_step_losses_are_the_papers():
    torch.manual_seed(0)
    cfg = CycleGANConfig(ngf=8, ndf=8, n_blocks=1, d_layers=1, identity=True, pool_size=4)
    m = build_cyclegan(cfg, torch.device("cpu"))
    G, F = copy.deepcopy(m.gens.G), copy.deepcopy(m.gens.F)
    D_T, D_S = copy.deepcopy(m.discs.D_T), copy.deepcopy(m.discs.D_S)
    s, t = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    loss = m.step({"source": s, "target": t})
    lam = 10.0
    with torch.no_grad():
        fake_t, fake_s = G(s), F(t)
        expected = {
            "G_gan": ((D_T(fake_t) - 1) ** 2).mean(),  # LSGAN, generator side
            "F_gan": ((D_S(fake_s) - 1) ** 2).mean(),
            "cycle_s": lam * (F(fake_t) - s).abs().mean(),  # ||F(G(s)) - s||_1
            "cycle_t": lam * (G(fake_s) - t).abs().mean(),
            "idt_t": 0.5 * lam * (G(t) - t).abs().mean(),  # identity at 0.5 lambda
            "idt_s": 0.5 * lam * (F(s) - s).abs().mean(),
            # the pool is not full yet, so D sees this step's fakes; the D loss is halved
            "D_T": 0.5 * (((D_T(t) - 1) ** 2).mean() + (D_T(fake_t) ** 2).mean()),
            "D_S": 0.5 * (((D_S(s) - 1) ** 2).mean() + (D_S(fake_s) ** 2).mean()),
        }
    for k, v in expected.items():
        assert torch.allclose(loss[k], v, rtol=1e-5, atol=1e-6), (k, float(loss[k]), float(v))
    g_terms = ("G_gan", "F_gan", "cycle_s", "cycle_t", "idt_t", "idt_s")
    assert torch.allclose(loss["G_total"], sum(expected[k] for k in g_terms), rtol=1e-5)


def test_image_pool_swaps_half_the_time_once_full():
    pool = ImagePool(3, seed=5)
    stored = [torch.full((1, 2, 2), float(i)) for i in range(3)]
    for img in stored:  # filling: every image passes through unchanged
        assert torch.equal(pool.query(img[None])[0], img)
    swaps = 0
    for k in range(400):
        new = torch.full((1, 2, 2), 100.0 + k)
        before = {float(x[0, 0, 0]) for x in pool.images}
        out = float(pool.query(new[None])[0, 0, 0, 0])
        after = {float(x[0, 0, 0]) for x in pool.images}
        if out != 100.0 + k:  # swapped: D sees an old image, and the new one took its place
            swaps += 1
            assert out in before and out not in after and 100.0 + k in after
        else:
            assert after == before
        assert len(pool.images) == 3
    assert 150 < swaps < 250  # probability 1/2


def test_evaluation_upsamples_logits_bilinearly_without_aligned_corners():
    logits = torch.randn(1, 19, 4, 8)

    class Fixed(torch.nn.Module):  # low-resolution logits whatever the input
        def forward(self, x):
            return logits.expand(x.shape[0], -1, -1, -1)

    x = torch.zeros(1, 3, 16, 32)
    got = predict_logits(Fixed(), x, (16, 32))
    want = nnf.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=False).softmax(1)
    assert torch.allclose(got, want, atol=1e-6)
    for other in (dict(mode="nearest"), dict(mode="bilinear", align_corners=True)):
        assert not torch.allclose(got, nnf.interpolate(logits, size=(16, 32), **other).softmax(1), atol=1e-3)
