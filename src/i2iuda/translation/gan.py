"""The GAN parts CycleGAN and CUT share: the ResNet generator and the PatchGAN discriminator of
the CycleGAN paper (appendix 7.2), their initialisation, the least-squares GAN loss, and the
schedule both papers train with (lr constant, then decayed to zero).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as nnf

from ..runtime import Runtime


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


def init_weights(net: nn.Module, gain: float = 0.02, kind: str = "normal") -> None:
    """Zero biases and N(0, gain) weights (``normal``: CycleGAN's reference) or Xavier-normal
    weights with that gain (``xavier``: CUT's reference), for convolutions and linear layers."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "xavier":
                nn.init.xavier_normal_(m.weight, gain)
            else:
                nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean (D(x) - 1)^2 for real, mean D(x)^2 for fake."""
    target = torch.ones_like(scores) if real else torch.zeros_like(scores)
    return nnf.mse_loss(scores.float(), target.float())


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


@torch.no_grad()
def pad_and_run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fully convolutional: pad (reflect) to a multiple of 4 (two stride-2 stages), run, crop back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % 4, (-w) % 4
    if ph or pw:
        x = nnf.pad(x, (0, pw, 0, ph), mode="reflect")
    return net(x)[..., :h, :w]


def lr_factor(step: int, total: int, decay_start: float, policy: str) -> float:
    """The GAN translators' schedule: constant for the first ``decay_start`` of training, then
    linear (the CycleGAN paper) or cosine to zero."""
    t = step / max(total, 1)
    if t < decay_start:
        return 1.0
    u = (t - decay_start) / max(1 - decay_start, 1e-8)
    return max(0.0, 1 - u) if policy == "linear" else 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))


def schedulers(optimizers, tcfg, total_steps: int) -> list:
    """One per-step LambdaLR per optimiser on ``lr_factor`` (``tcfg.lr_decay`` from ``tcfg.decay_start``)."""
    return [torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s, total_steps, tcfg.decay_start, tcfg.lr_decay))
            for o in optimizers]


def distributed(net: nn.Module, rt: Runtime) -> nn.Module:
    """``net`` wrapped in DDP under torchrun (one device per process), as it is otherwise."""
    if not rt.distributed:
        return net
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
