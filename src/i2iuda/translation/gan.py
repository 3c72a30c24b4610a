"""The GAN parts CycleGAN and CUT share: the ResNet generator and the PatchGAN discriminator of
the CycleGAN paper (appendix 7.2), their initialisation, the least-squares GAN loss, and the
schedule both papers train with (lr constant, then decayed to zero).

How they resample (``sampling``), read against the reference code (junyanz/pytorch-CycleGAN-and-pix2pix
and taesungp/contrastive-unpaired-translation, models/networks.py):

    transposed   the CycleGAN paper's: stride-2 3x3 convolutions down, ConvTranspose2d(3, stride 2)
                 up, whose kernel overlaps unevenly (every other output pixel gets 2 taps a side or
                 1): the checkerboard of Odena, Dumoulin & Olah ("Deconvolution and checkerboard
                 artifacts", Distill 2016), which fades only with long training
    resize       down as transposed; up by nearest-neighbour resizing then a 3x3 convolution (Odena et
                 al.'s resize-convolution: every output pixel gets the same taps)
    bilinear     resize-convolution with bilinear resizing (no 2x2 blocks for the convolution to keep)
    conv_bilinear  the order reversed: the 3x3 convolution at the low resolution (the cost of the
                 transposed one, a quarter of bilinear's), then bilinear x2 resizing, whose filter
                 [1, 3, 3, 1] / 4 a side adds nothing at period 2; a pattern the convolution paints
                 at half resolution still passes, at period 4 (docs/translation.md measures it)
    antialias    CUT's reference (its default): down by a stride-1 convolution, norm and activation,
                 then a fixed [1, 2, 1] x [1, 2, 1] blur with stride 2 (Zhang's blur-pool, reflect
                 padding); up by a fixed [1, 3, 3, 1] x [1, 3, 3, 1] transposed blur with stride 2
                 (replicate padding), then a 3x3 convolution; the discriminator's stride-2
                 convolutions likewise become a stride-1 convolution and a blur-pool
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as nnf
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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


SAMPLINGS = ("transposed", "resize", "bilinear", "conv_bilinear", "antialias")


def blur_filter(taps: list[float]) -> torch.Tensor:
    """The outer product of a binomial row with itself, normalised to sum 1."""
    row = torch.tensor(taps, dtype=torch.float32)
    f = row[:, None] * row[None, :]
    return f / f.sum()


class BlurPool(nn.Module):
    """Anti-aliased down-sampling (CUT's ``Downsample``): reflect-pad by 1, a fixed [1, 2, 1]^2 blur
    per channel with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", blur_filter([1.0, 2.0, 1.0])[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        return nnf.conv2d(nnf.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class BlurUpsample(nn.Module):
    """Anti-aliased up-sampling (CUT's ``Upsample``): replicate-pad by 1, a fixed [1, 3, 3, 1]^2
    transposed blur (times 4, the stride squared) with stride 2, cropped to twice the size."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", (blur_filter([1.0, 3.0, 3.0, 1.0]) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        y = nnf.conv_transpose2d(nnf.pad(x, (1, 1, 1, 1), mode="replicate"), self.filt, stride=2, padding=2,
                                 groups=x.shape[1])
        return y[:, :, 1:-1, 1:-1]


class Generator(nn.Module):
    """c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3, tanh (paper, appendix 7.2), with
    its down- and up-sampling by ``sampling`` (module docstring).

    ``residual`` (not the paper's): the net paints a *change* to its input frame x in tanh's
    argument, G(x) = tanh(atanh(x) + net(x)), as SimGAN's refiner refines rather than redraws; with
    its output convolution zeroed (``start_as_identity``, which ``init_weights`` calls) it starts
    as the identity, so a young generator keeps the source's edges wherever the discriminator has
    not yet asked for a change, where a net learning to redraw the frame smears them
    (docs/translation.md measures both).

    Convolutions keep their biases (instance norm has no affine parameters), as in the
    reference implementation: 11.378 M parameters at ngf=64 with 9 blocks. ``down_convs`` and
    ``first_block`` are the indices in ``model`` of the down-sampling convolutions and of the first
    residual block (CUT reads its features there)."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9, sampling: str = "transposed", residual: bool = False):
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling {sampling!r}: expected one of {', '.join(SAMPLINGS)}")
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        self.down_convs = []
        for mult in (1, 2):  # d128, d256
            self.down_convs.append(len(layers))
            c = ngf * mult * 2
            if sampling == "antialias":
                layers += [nn.Conv2d(ngf * mult, c, 3, padding=1), nn.InstanceNorm2d(c), nn.ReLU(True), BlurPool(c)]
            else:
                layers += [nn.Conv2d(ngf * mult, c, 3, stride=2, padding=1), nn.InstanceNorm2d(c), nn.ReLU(True)]
        self.first_block = len(layers)
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):  # u128, u64
            c = ngf * mult // 2
            if sampling == "transposed":  # fractionally-strided convolutions
                up = [nn.ConvTranspose2d(ngf * mult, c, 3, stride=2, padding=1, output_padding=1)]
            elif sampling in ("resize", "bilinear"):
                mode = {"resize": "nearest", "bilinear": "bilinear"}[sampling]
                up = [nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(ngf * mult, c, 3, padding=1)]
            elif sampling == "conv_bilinear":
                up = [nn.Conv2d(ngf * mult, c, 3, padding=1), nn.Upsample(scale_factor=2, mode="bilinear")]
            else:
                up = [BlurUpsample(ngf * mult), nn.Conv2d(ngf * mult, c, 3, padding=1)]
            layers += [*up, nn.InstanceNorm2d(c), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7)] + ([] if residual else [nn.Tanh()])
        self.model = nn.Sequential(*layers)
        self.residual = residual

    def start_as_identity(self) -> None:
        """Zero the output convolution: a residual generator then returns its input."""
        out = self.model[-1]
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)

    def forward(self, x):
        if not self.residual:
            return self.model(x)
        # frames are in [-1, 1]; atanh(+-0.999) = +-3.8 keeps the saturated pixels reachable
        return torch.tanh(torch.atanh(x.clamp(-0.999, 0.999)) + self.model(x))


class Discriminator(nn.Module):
    """70x70 PatchGAN: C64-C128-C256-C512 (4x4 convs, stride 2 except the last, no norm on
    C64, LeakyReLU 0.2), then a 1-channel 4x4 convolution. 2.765 M parameters at ndf=64.

    ``n_layers`` strided layers before the last two convolutions set the patch size, as in
    pix2pix: 3 -> 70x70 (the paper's), 2 -> 34x34, 1 -> 16x16."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, sampling: str = "transposed"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchGAN needs n_layers >= 1, got {n_layers}")
        aa = sampling == "antialias"  # a stride-2 conv becomes a stride-1 conv, its activation, a blur-pool
        layers = ([nn.Conv2d(3, ndf, 4, 1, 1), nn.LeakyReLU(0.2, True), BlurPool(ndf)] if aa else
                  [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)])
        widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            stride = 1 if i == n_layers - 1 or aa else 2
            layers += [nn.Conv2d(cin, cout, 4, stride, 1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2, True)]
            if aa and i < n_layers - 1:
                layers.append(BlurPool(cout))
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def patch_size(n_layers: int) -> int:
    """Receptive field of one PatchGAN score: n_layers stride-2 4x4 convs, then two stride-1 (the
    anti-aliased discriminator's blur widens it by a few pixels)."""
    return 9 * 2 ** n_layers - 2


def init_weights(net: nn.Module, gain: float = 0.02, kind: str = "normal") -> None:
    """Zero biases and N(0, gain) weights (``normal``: CycleGAN's reference) or Xavier-normal
    weights with that gain (``xavier``: CUT's reference), for convolutions and linear layers; a
    residual generator's output convolution then zeroed, so that it starts as the identity."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "xavier":
                nn.init.xavier_normal_(m.weight, gain)
            else:
                nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in net.modules():
        if isinstance(m, Generator) and m.residual:
            m.start_as_identity()


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


def moving_average(net: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``net``'s weights (``model.ema``; Yazici et al., "The
    unusual effectiveness of averaging in GAN training", ICLR 2019), None for ``decay`` 0: its first
    ``update_parameters`` copies the weights, each later one moves the average by 1 - decay towards
    them; ``.module`` is the averaged net."""
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None


def distributed(net: nn.Module, rt: Runtime) -> nn.Module:
    """``net`` wrapped in DDP under torchrun (one device per process), as it is otherwise."""
    if not rt.distributed:
        return net
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
