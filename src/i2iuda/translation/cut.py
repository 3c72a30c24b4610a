"""CUT and FastCUT (Park, Efros, Zhang, Zhu, ECCV 2020): contrastive unpaired translation.

One generator G: S -> T and one PatchGAN D (the CycleGAN ones, gan.py), no inverse and no
cycle. What ties the output to the input is PatchNCE: a patch of G(x) must be closer to the
patch of x at the same place than to x's patches elsewhere, in the feature space of G's own
encoder plus a small MLP head H_l per layer (paper, eq. 2 and 4):

    l(v, v+, v-)      = -log exp(v.v+/tau) / (exp(v.v+/tau) + sum_n exp(v.v-_n/tau))
    PatchNCE(G, H, X) = mean over layers l and sampled locations s of
                        l(z^_l^s, z_l^s, z_l^{S\\s}),  z_l = H_l(G_enc^l(x)), z^_l = H_l(G_enc^l(G(x)))
    L = L_GAN(G, D, X, Y) + lambda_X PatchNCE(G, H, X) + lambda_Y PatchNCE(G, H, Y)      (eq. 5)

CUT: lambda_X = lambda_Y = 1 (the identity term PatchNCE(G, H, Y) on target frames G(y), averaged
with the first, as in the reference code). FastCUT: lambda_X = 10, no identity term, and
flip-equivariance (the input is flipped with probability 1/2 before G and the output's features
flipped back).

**Layers.** The reference takes features at layers 0, 4, 8, 12, 16 of its generator: the
(reflection-padded) RGB input, the stride-1 convolution of each anti-aliased down-sampling stage
(full and half resolution, before its norm), the first and the fifth residual block. With
``sampling: antialias`` (the reference's blur-pool and blurred up-sampling, gan.py) our generator
is the reference's and the five are its indices; with strided convolutions (``transposed``, the
default here, and ``resize``) they map onto ``Generator.model`` as

    0  -> model[0]          the reflection-padded RGB input              3 channels, H x W (+6)
    4  -> model[4]          the first stride-2 convolution, before norm  2 ngf, H/2 x W/2
    8  -> model[7]          the second stride-2 convolution, before norm 4 ngf, H/4 x W/4
    12 -> model[10]         the first residual block                     4 ngf, H/4 x W/4
    16 -> model[10 + 4]     the fifth residual block (the last one when there are fewer
                            than five, as in the CPU preset's 4)         4 ngf, H/4 x W/4

**Patches.** Per layer, 256 random locations (all of them if the map is smaller) are drawn once
and shared by the input's and the output's features and by the images of the batch; the
negatives of a location are the other sampled locations of the same image; the input's features
are constants (no gradient flows through them); logits are divided by tau = 0.07, and the loss
is the cross-entropy with the positive at index 0. The heads H_l (Linear(C_l, 256), ReLU,
Linear(256, 256), then z / (|z| + 1e-7) as in the reference) have their own Adam and are built
with the nets, not lazily on the first batch as in the reference (which breaks resume and DDP).

Training follows the reference's order: one forward of G, then D's step on the detached output,
then G's (and H's) step against the updated D. LSGAN loss, no image pool, Adam 2e-4 with
betas (0.5, 0.999), lr constant then decayed linearly (translate config), Xavier-normal
initialisation with gain 0.02 (the reference's default for CUT).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as nnf
from torch.optim.swa_utils import AveragedModel

from ..config import Range, adam_beta, at_least, between, positive
from ..pictures import tensor_rows
from ..runtime import Runtime, unwrap
from .base import Translator
from .gan import (Discriminator, Generator, distributed, init_weights, lsgan_loss, moving_average, pad_and_run,
                  patch_size, schedulers, set_requires_grad)

MODES = {  # the reference's --CUT_mode defaults: (lambda_nce, nce_idt, flip_equivariance)
    "cut": (1.0, True, False),
    "fastcut": (10.0, False, True),
}


@dataclass
class CUTConfig:
    mode: Literal["cut", "fastcut"] = "cut"
    ngf: int = 64
    ndf: int = 64
    d_layers: int = 3  # PatchGAN depth: 3 -> 70x70 patches, 2 -> 34x34, 1 -> 16x16 (see gan.py)
    # down- and up-sampling of G and D: transposed (CycleGAN's), resize, bilinear, conv_bilinear,
    # antialias (the reference's default); gan.py's docstring
    sampling: Literal["transposed", "resize", "bilinear", "conv_bilinear", "antialias"] = "transposed"
    n_blocks: int = 9
    lambda_gan: float = 1.0
    # None: the mode's value (cut: 1.0, on, off; fastcut: 10.0, off, on); filled in when loaded
    lambda_nce: float | None = None
    nce_idt: bool | None = None  # the identity term PatchNCE(G, H, Y) on G(target)
    flip_equivariance: bool | None = None
    num_patches: int = 256  # locations per layer
    nce_tau: float = 0.07
    head_dim: int = 256  # width of the MLP heads H_l
    # decay of an exponential moving average of G's weights, the G translation then uses (as
    # CycleGAN's model.ema; Yazici et al., ICLR 2019); 0 = off (the paper's)
    ema: float = 0.0
    # G paints a change to its input, tanh(atanh(x) + net(x)), starting as the identity (CycleGAN's
    # model.residual, gan.Generator; not the paper's)
    residual: bool = False
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    RANGES: ClassVar[dict] = {"ngf": at_least(1), "ndf": at_least(1), "d_layers": between(1, 5), "n_blocks": at_least(1),
                              "lambda_gan": at_least(0), "lambda_nce": at_least(0), "num_patches": at_least(1),
                              "nce_tau": positive, "head_dim": at_least(1), "ema": Range(lo=0, hi=1, hi_open=True),
                              "lr": positive, "beta1": adam_beta,
                              "beta2": adam_beta}

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: expected cut or fastcut")
        lam, idt, flip = MODES[self.mode]
        self.lambda_nce = lam if self.lambda_nce is None else self.lambda_nce
        self.nce_idt = idt if self.nce_idt is None else self.nce_idt
        self.flip_equivariance = flip if self.flip_equivariance is None else self.flip_equivariance



# --- PatchNCE -----------------------------------------------------------------------------------

def nce_layers(n_blocks: int, G: Generator | None = None) -> list[int]:
    """Indices into ``Generator.model`` of the reference's layers 0, 4, 8, 12, 16 (module docstring):
    the padded input, the two down-sampling convolutions, the first and the fifth residual block
    (with anti-aliased sampling the reference's own indices)."""
    if n_blocks < 1:
        raise ValueError("CUT needs at least one residual block")
    down, first = (G.down_convs, G.first_block) if G is not None else ([4, 7], 10)
    return sorted({0, *down, first, first + min(4, n_blocks - 1)})


def layer_channels(ngf: int, n_blocks: int) -> list[int]:
    """The channels at the five layers: RGB, 2 ngf, 4 ngf, then 4 ngf in the residual blocks."""
    return [3, 2 * ngf, 4 * ngf, 4 * ngf, 4 * ngf][:len(nce_layers(n_blocks))]


def encode(G: Generator, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    """G's encoder features at ``layers`` (it stops after the last one)."""
    feats, h = [], x
    for i, layer in enumerate(G.model):
        h = layer(h)
        if i in layers:
            feats.append(h)
        if i == layers[-1]:
            return feats
    return feats


class PatchHeads(nn.Module):
    """H_l: one MLP per layer mapping a location's C_l features to an L2-normalised vector."""

    def __init__(self, channels: list[int], dim: int = 256):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in channels)

    def forward(self, feats: list[torch.Tensor], ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """(B, C, H, W) maps and flat location ids per layer -> (B, N, dim) unit vectors."""
        out = []
        for mlp, f, i in zip(self.mlps, feats, ids):
            z = f.flatten(2).transpose(1, 2)[:, i]  # (B, N, C): the sampled locations
            out.append(l2_normalise(mlp(z.float())))
        return out


def l2_normalise(z: torch.Tensor) -> torch.Tensor:
    """z / (|z| + 1e-7), the reference's ``Normalize``. Not ``F.normalize`` (z / max(|z|, eps)): at
    initialisation (xavier, gain 0.02) the heads' outputs have norms of 1e-5 to 4e-3, where the
    two differ by up to a percent in the loss and by a fifth in its gradient."""
    return z / (z.norm(dim=-1, keepdim=True) + 1e-7)


def sample_locations(feats: list[torch.Tensor], n: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Per layer, ``n`` distinct random locations (all of them if the map has fewer)."""
    ids = []
    for f in feats:
        hw = f.shape[2] * f.shape[3]
        ids.append(torch.randperm(hw, generator=gen)[:min(n, hw)].to(f.device))
    return ids


def patch_nce(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """l(v, v+, v-) of eq. 2 averaged over locations and images. q: (B, N, D) output features,
    k: (B, N, D) input features at the same N locations (constants). For location i the logits are
    [q_i.k_i, q_i.k_j for j != i] / tau and the target is index 0."""
    k = k.detach()
    b, n, _ = q.shape
    pos = (q * k).sum(-1, keepdim=True)  # (B, N, 1)
    neg = torch.bmm(q, k.transpose(1, 2))  # (B, N, N): q_i . k_j
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    neg = neg.masked_fill(eye, float("-inf"))  # k_i is the positive, not a negative
    logits = torch.cat([pos, neg], dim=-1).flatten(0, 1) / tau  # (B*N, 1 + N)
    return nnf.cross_entropy(logits, torch.zeros(b * n, dtype=torch.long, device=q.device))


# --- the model and one training step ------------------------------------------------------------

class NCEGenerator(nn.Module):
    """G and the heads H in one module whose single forward computes everything G's loss needs
    but the adversarial term (G(x), G(y) and the PatchNCE terms), so that DDP sees one forward
    per backward."""

    def __init__(self, cfg: CUTConfig):
        super().__init__()
        self.cfg = cfg
        self.G = Generator(cfg.ngf, cfg.n_blocks, cfg.sampling, cfg.residual)
        self.H = PatchHeads(layer_channels(cfg.ngf, cfg.n_blocks), cfg.head_dim)
        self.layers = nce_layers(cfg.n_blocks, self.G)

    def nce(self, x: torch.Tensor, y: torch.Tensor, flipped: bool, gen: torch.Generator) -> torch.Tensor:
        """PatchNCE(x -> y = G(x)) averaged over layers (lambda applied by the caller)."""
        with torch.no_grad():  # the input's side is constant (the reference detaches it)
            feat_k = encode(self.G, x, self.layers)
            ids = sample_locations(feat_k, self.cfg.num_patches, gen)
            k = self.H(feat_k, ids)
        feat_q = encode(self.G, y, self.layers)
        if flipped:  # y came from the flipped x: flip its features back onto x's locations
            feat_q = [f.flip(3) for f in feat_q]
        q = self.H(feat_q, ids)
        return sum(patch_nce(a, b, self.cfg.nce_tau) for a, b in zip(q, k)) / len(q)

    def forward(self, real_s: torch.Tensor, real_t: torch.Tensor, flipped: bool, gen: torch.Generator) -> dict:
        c = self.cfg
        n = real_s.shape[0]
        real = torch.cat([real_s, real_t]) if c.nce_idt else real_s  # one pass of G for both
        fake = self.G(real.flip(3) if flipped else real)
        out = {"fake_t": fake[:n]}
        if c.lambda_nce > 0:
            out["nce_x"] = self.nce(real_s, out["fake_t"], flipped, gen)
            if c.nce_idt:
                out["idt_t"] = fake[n:]
                out["nce_y"] = self.nce(real_t, out["idt_t"], flipped, gen)
        if flipped:  # the outputs the loss and the pictures compare with the unflipped inputs
            out["fake_t"] = out["fake_t"].flip(3)
            if "idt_t" in out:
                out["idt_t"] = out["idt_t"].flip(3)
        return out


@dataclass
class CUT(Translator):
    """G with its heads (possibly DDP-wrapped), D, three Adam optimisers and their schedulers,
    and the generator that draws flips and patch locations; for inference only ``gen_h``."""

    Config: ClassVar[type] = CUTConfig
    TRAINS: ClassVar[bool] = True
    show: ClassVar[tuple[str, ...]] = ("G_total", "NCE", "D")

    cfg: CUTConfig
    gen_h: nn.Module  # NCEGenerator, or DDP(NCEGenerator)
    D: nn.Module | None = None
    opt_g: torch.optim.Optimizer | None = None
    opt_h: torch.optim.Optimizer | None = None
    opt_d: torch.optim.Optimizer | None = None
    scheds: list = field(default_factory=list)
    rng: torch.Generator = field(default_factory=torch.Generator)
    rt: Runtime = field(default_factory=lambda: Runtime(torch.device("cpu")))
    last: tuple | None = None
    G_ema: AveragedModel | None = None  # the moving average of G (ema > 0), for translation

    @classmethod
    def build(cls, tcfg, rt: Runtime, total_steps: int, training: bool = True, judge: nn.Module | None = None) -> "CUT":
        """Nets and heads built before the optimisers, on ``rt``'s device, DDP-wrapped under
        torchrun, lr constant then decayed per step. CUT has no semantic loss: ``judge`` is unused."""
        cfg = tcfg.model
        torch.manual_seed(tcfg.seed)
        gen_h = NCEGenerator(cfg)
        init_weights(gen_h, kind="xavier")
        gen_h.to(rt.device)
        if not training:
            return cls(cfg, gen_h, rt=rt)
        D = Discriminator(cfg.ndf, cfg.d_layers, cfg.sampling)
        init_weights(D, kind="xavier")
        D.to(rt.device)
        if rt.channels_last:
            gen_h.to(memory_format=torch.channels_last)
            D.to(memory_format=torch.channels_last)
        betas = (cfg.beta1, cfg.beta2)
        opts = [torch.optim.Adam(p, lr=cfg.lr, betas=betas) for p in (gen_h.G.parameters(), gen_h.H.parameters(),
                                                                      D.parameters())]
        # flips and patch locations: their own generator (saved in checkpoints), one stream per rank
        rng = torch.Generator().manual_seed(10_007 * tcfg.seed + 101 * rt.rank + 1)
        return cls(cfg, distributed(gen_h, rt), distributed(D, rt), *opts, scheds=schedulers(opts, tcfg, total_steps),
                   rng=rng, rt=rt, G_ema=moving_average(gen_h.G, cfg.ema))

    # -- training (training.Trainer) --
    def step(self, batch: dict) -> dict:
        """One step as in the reference: G's forward, D's step on the detached G(x), then G's and
        the heads' step on L_GAN + PatchNCE against the updated D, then the lr schedulers ->
        losses, detached."""
        real_s, real_t = batch["source"], batch["target"]
        c, D = self.cfg, unwrap(self.D)
        flipped = bool(c.flip_equivariance) and bool(torch.rand((), generator=self.rng) < 0.5)
        with self.rt.autocast():
            out = self.gen_h(real_s, real_t, flipped, self.rng)
        # 1. D: real target frames vs G(source), halved as in the reference; one forward of both
        #    (instance norm is per image), so that a DDP-wrapped D sees one forward per backward
        set_requires_grad(D, True)
        n = real_t.shape[0]
        with self.rt.autocast():
            scores = self.D(torch.cat([real_t, out["fake_t"].detach()]))
            loss_d = 0.5 * (lsgan_loss(scores[:n], True) + lsgan_loss(scores[n:], False))
        self.opt_d.zero_grad(set_to_none=True)
        self.rt.backward(loss_d)
        self.rt.step(self.opt_d, last=False)
        # 2. G and H: fool the updated D, keep the content (PatchNCE; with the identity term, the
        #    mean of the two as in the reference)
        set_requires_grad(D, False)
        with self.rt.autocast():
            loss = {"G_gan": lsgan_loss(D(out["fake_t"]), True)}
        terms = [out[k] for k in ("nce_x", "nce_y") if k in out]
        nce = c.lambda_nce * sum(terms) / len(terms) if terms else torch.zeros((), device=real_s.device)
        loss_g = c.lambda_gan * loss["G_gan"] + nce
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_h.zero_grad(set_to_none=True)
        self.rt.backward(loss_g)
        self.rt.step(self.opt_g, self.opt_h)
        set_requires_grad(D, True)
        for s in self.scheds:
            s.step()
        if self.G_ema is not None:
            self.G_ema.update_parameters(unwrap(self.gen_h).G)
        loss.update({k: out[k] for k in ("nce_x", "nce_y") if k in out}, NCE=nce, D=loss_d, G_total=loss_g)
        self.last = ({k: v.detach() for k, v in out.items() if k in ("fake_t", "idt_t")}, real_s, real_t)
        return {k: v.detach() for k, v in loss.items()}

    def state_dict(self) -> dict:
        return {"gen_h": unwrap(self.gen_h).state_dict(), "D": unwrap(self.D).state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_h": self.opt_h.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched": [s.state_dict() for s in self.scheds], "rng": self.rng.get_state(),
                **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.gen_h).load_state_dict(state["gen_h"])
        unwrap(self.D).load_state_dict(state["D"])
        for name in ("opt_g", "opt_h", "opt_d"):
            getattr(self, name).load_state_dict(state[name])
        for s, sd in zip(self.scheds, state["sched"]):
            s.load_state_dict(sd)
        self.rng.set_state(state["rng"].cpu())
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"])

    def weights(self) -> dict[str, torch.Tensor]:  # inference needs G only
        return self.inference_module().state_dict()

    def inference_module(self) -> nn.Module:
        """The G that translates: its moving average where there is one."""
        return self.G_ema.module if self.G_ema is not None else unwrap(self.gen_h).G

    def end_of_epoch(self, epoch: int, step: int, mean_losses: dict) -> dict:
        return {"lr": self.scheds[0].get_last_lr()[0]}

    def picture(self):
        """Rows of real S, G(S), real T (and G(T) with the identity term) for the last step."""
        out, real_s, real_t = self.last
        cols, names = [real_s, out["fake_t"], real_t], ["real S", "G(S)", "real T"]
        if "idt_t" in out:
            cols, names = cols + [out["idt_t"]], names + ["G(T)"]
        return tensor_rows(cols, names, n=2)

    def describe(self, size: tuple[int, int] | None = None) -> str:
        c = self.cfg
        p = patch_size(c.d_layers)
        return (f"{'FastCUT' if c.mode == 'fastcut' else 'CUT'} ngf={c.ngf}, {c.n_blocks} blocks, {p}x{p} PatchGAN, "
                f"lambda_NCE={c.lambda_nce:g}, NCE identity {'on' if c.nce_idt else 'off'}, "
                f"flip-equivariance {'on' if c.flip_equivariance else 'off'}, {c.num_patches} patches/layer"
                + (f", {c.sampling} sampling" if c.sampling != "transposed" else "")
                + (f", weights averaged (EMA {c.ema:g})" if c.ema else "")
                + (", residual generator (starts as the identity)" if c.residual else ""))

    # -- inference (Translator) --
    @torch.no_grad()
    def translate(self, x: torch.Tensor, names: list[str], direction: str = "s2t") -> torch.Tensor:
        return pad_and_run(self.inference_module(), x)

    @torch.no_grad()
    def samples(self, x_s, names_s, x_t):
        G = self.inference_module()
        return [x_s, pad_and_run(G, x_s), x_t, pad_and_run(G, x_t)], ["source", "G(source)", "target", "G(target)"]

    def eval(self) -> "CUT":
        self.gen_h.eval()
        return self
