"""CycleGAN (Zhu, Park, Isola, Efros, ICCV 2017): networks, losses and one training step.

Names follow the paper: G maps source S -> target T, F maps T -> S, D_T tells real target
frames from G(S), D_S tells real source frames from F(T).

Differences from the seed report, on purpose: the discriminators end in a plain 1-channel
convolution with **no sigmoid**, because the least-squares GAN loss the paper uses is an MSE
on raw scores (the seed report's code puts a sigmoid before it, which squashes the scores
and weakens the gradients).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as nnf


@dataclass
class CycleGANConfig:
    ngf: int = 64  # generator width (c7s1-ngf, d2ngf, d4ngf, R4ngf x n_blocks, ...)
    ndf: int = 64  # discriminator width (C ndf - C 2ndf - C 4ndf - C 8ndf)
    # PatchGAN depth: 3 gives the paper's 70x70 patches, 2 gives 34x34, 1 gives 16x16. Keep the
    # patch well below the frame: on 64x128 frames a 70x70 patch sees the whole frame height,
    # so D judges layout (where sky and buildings are) rather than texture and pushes G to
    # repaint regions whose frequency differs between the domains.
    d_layers: int = 3
    n_blocks: int = 9  # residual blocks (9 for 256x256 and larger, 6 for 128x128 in the paper)
    lambda_cycle: float = 10.0
    identity: bool = False  # identity loss ||G(t) - t|| + ||F(s) - s||, weight 0.5 * lambda_cycle
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    pool_size: int = 50  # history of generated images shown to the discriminators


# --- networks -----------------------------------------------------------------------------------

class ResnetBlock(nn.Module):
    """R_k: two 3x3 convolutions with reflection padding and instance norm, plus the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x):
        return x + self.block(x)


class Generator(nn.Module):
    """c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3, tanh (paper, appendix 7.2).

    Convolutions keep their biases (instance norm has no affine parameters), as in the
    reference implementation: 11.378 M parameters at ngf=64 with 9 blocks.
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # d128, d256
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1),
                       nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):  # u128, u64: fractionally-strided convolutions
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class Discriminator(nn.Module):
    """70x70 PatchGAN: C64-C128-C256-C512 (4x4 convs, stride 2 except the last, no norm on
    C64, LeakyReLU 0.2), then a 1-channel 4x4 convolution. 2.765 M parameters at ndf=64.

    ``n_layers`` strided layers before the last two convolutions set the patch size, as in
    pix2pix: 3 -> 70x70 (the paper's), 2 -> 34x34, 1 -> 16x16."""

    def __init__(self, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchGAN needs n_layers >= 1, got {n_layers}")
        layers = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            stride = 1 if i == n_layers - 1 else 2
            layers += [nn.Conv2d(cin, cout, 4, stride, 1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def patch_size(n_layers: int) -> int:
    """Receptive field of one PatchGAN score: n_layers stride-2 4x4 convs, then two stride-1."""
    return 9 * 2 ** n_layers - 2


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """N(0, 0.02) weights and zero biases, as in the reference implementation."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --- losses and the image pool ------------------------------------------------------------------

def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean (D(x) - 1)^2 for real, mean D(x)^2 for fake."""
    target = torch.ones_like(scores) if real else torch.zeros_like(scores)
    return nnf.mse_loss(scores.float(), target.float())


class ImagePool:
    """History of generated images (Shrivastava et al. 2017): once full, each new image is, with
    probability 1/2, swapped for a random stored one that the discriminator sees instead.
    Has its own RNG so that a resumed run draws the same swaps."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() < 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.images = [t.to(device) for t in state["images"]]
        self.rng.setstate(state["rng"])


# --- the model and one training step ------------------------------------------------------------

class Generators(nn.Module):
    """G and F in one module whose single forward computes every generator output of a step,
    so that DDP sees one forward per backward."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        self.G = Generator(cfg.ngf, cfg.n_blocks)  # S -> T
        self.F = Generator(cfg.ngf, cfg.n_blocks)  # T -> S
        self.identity = cfg.identity

    def forward(self, real_s: torch.Tensor, real_t: torch.Tensor) -> dict[str, torch.Tensor]:
        fake_t = self.G(real_s)
        fake_s = self.F(real_t)
        out = {"fake_t": fake_t, "rec_s": self.F(fake_t), "fake_s": fake_s, "rec_t": self.G(fake_s)}
        if self.identity:
            out["idt_t"] = self.G(real_t)
            out["idt_s"] = self.F(real_s)
        return out


class Discriminators(nn.Module):
    """D_T and D_S; forward returns both discriminators' least-squares losses (halved)."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        self.D_T = Discriminator(cfg.ndf, cfg.d_layers)
        self.D_S = Discriminator(cfg.ndf, cfg.d_layers)

    def forward(self, real_s, fake_s, real_t, fake_t) -> dict[str, torch.Tensor]:
        # halved so that D learns slower than G (paper, section 4)
        loss_t = 0.5 * (lsgan_loss(self.D_T(real_t), True) + lsgan_loss(self.D_T(fake_t), False))
        loss_s = 0.5 * (lsgan_loss(self.D_S(real_s), True) + lsgan_loss(self.D_S(fake_s), False))
        return {"D_T": loss_t, "D_S": loss_s}


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


@dataclass
class CycleGAN:
    """The four nets (possibly DDP-wrapped), their two Adam optimisers and the image pools."""

    cfg: CycleGANConfig
    gens: nn.Module  # Generators, or DDP(Generators)
    discs: nn.Module  # Discriminators, or DDP(Discriminators)
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    pool_s: ImagePool
    pool_t: ImagePool


def build_cyclegan(cfg: CycleGANConfig, device: torch.device, seed: int = 0, channels_last: bool = False) -> CycleGAN:
    torch.manual_seed(seed)
    gens, discs = Generators(cfg), Discriminators(cfg)
    for net in (gens, discs):
        init_weights(net)
        net.to(device)
        if channels_last:
            net.to(memory_format=torch.channels_last)
    betas = (cfg.beta1, cfg.beta2)
    return CycleGAN(cfg, gens, discs,
                    torch.optim.Adam(gens.parameters(), lr=cfg.lr, betas=betas),
                    torch.optim.Adam(discs.parameters(), lr=cfg.lr, betas=betas),
                    ImagePool(cfg.pool_size, seed + 1), ImagePool(cfg.pool_size, seed + 2))


def train_step(m: CycleGAN, real_s: torch.Tensor, real_t: torch.Tensor, autocast) -> tuple[dict, dict]:
    """One step of the paper's alternating optimisation -> (losses, generator outputs), detached
    and left on the device (no host sync).

    Every generator output is computed once and reused: with gradients for G/F's loss,
    detached (through the pools) for the discriminators'.
    """
    from ..runtime import unwrap

    discs = unwrap(m.discs)
    lam = m.cfg.lambda_cycle
    # 1. generators: fool both discriminators, and cycle back to the input.
    set_requires_grad(discs, False)  # D gets no gradients from G's loss
    with autocast:
        out = m.gens(real_s, real_t)
        loss = {
            "G_gan": lsgan_loss(discs.D_T(out["fake_t"]), True),
            "F_gan": lsgan_loss(discs.D_S(out["fake_s"]), True),
            "cycle_s": nnf.l1_loss(out["rec_s"].float(), real_s.float()) * lam,
            "cycle_t": nnf.l1_loss(out["rec_t"].float(), real_t.float()) * lam,
        }
        if m.cfg.identity:
            loss["idt_t"] = nnf.l1_loss(out["idt_t"].float(), real_t.float()) * lam * 0.5
            loss["idt_s"] = nnf.l1_loss(out["idt_s"].float(), real_s.float()) * lam * 0.5
    loss_g = sum(loss.values())
    m.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    m.opt_g.step()
    # 2. discriminators: real vs. (pooled, detached) generated images.
    set_requires_grad(discs, True)
    fake_t = m.pool_t.query(out["fake_t"])
    fake_s = m.pool_s.query(out["fake_s"])
    with autocast:
        loss_d = m.discs(real_s, fake_s, real_t, fake_t)
    m.opt_d.zero_grad(set_to_none=True)
    (loss_d["D_T"] + loss_d["D_S"]).backward()
    m.opt_d.step()
    loss.update(loss_d)
    loss["G_total"] = loss_g
    return {k: v.detach() for k, v in loss.items()}, {k: v.detach() for k, v in out.items()}
