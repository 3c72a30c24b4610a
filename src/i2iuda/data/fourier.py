"""FDA's image operation (Yang & Soatto, CVPR 2020), as data: a source image takes a target
image's *amplitude* at low frequencies and keeps its own *phase*,

    x_{s->t} = F^{-1}( [ M_b . |F(x_t)| + (1 - M_b) . |F(x_s)| ] . exp(i . angle F(x_s)) )

with F the 2-D FFT per channel and M_b the low-frequency window: the frequencies with
|k_y| <= b and |k_x| <= b of the centred (shifted) spectrum, b = floor(min(H, W) . beta)
(the paper's L = beta; its values 0.01, 0.05, 0.09). The output is the real part of the
inverse FFT.

It lives beside the data because it is an augmentation of the source (``OnTheFly``: each
training frame restyled as it is drawn, the paper's way); translation/fda.py wraps it as a
translator for ``translate apply`` and the study.

On the definition: the reference code has two versions that differ. Its numpy one swaps a
centred (2b+1)^2 window, which contains the DC term even at b = 0 (so b = 0 swaps the mean
colour); its torch one swaps four asymmetric corner blocks of the unshifted spectrum, so the
mixed spectrum is not Hermitian-symmetric and the inverse is real only because ``irfft`` drops
the imaginary part. We use the symmetric window above (integer frequencies from ``fftfreq``,
which is the same set as the shifted spectrum's centre window): the mixed spectrum stays
Hermitian, the output is real up to float error for odd and even sizes, and b = 0 swaps exactly
the per-channel mean.

Images are 0..255 (after the geometric augmentations, before blur and normalisation); the
result is not clipped during segmenter training (as in the paper).
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

from .datasets import build_index, read_image


def band(h: int, w: int, beta: float) -> int:
    """b, the half-size of the low-frequency window, for an HxW image (0 swaps the mean alone)."""
    return int(math.floor(min(h, w) * beta))


def low_frequency_window(h: int, w: int, b: int, device=None) -> torch.Tensor:
    """HxW bool mask of the frequencies |k_y| <= b and |k_x| <= b, in the FFT's unshifted order."""
    ky = torch.fft.fftfreq(h, 1 / h, device=device).abs() <= b
    kx = torch.fft.fftfreq(w, 1 / w, device=device).abs() <= b
    return ky[:, None] & kx[None, :]


def fda_source_to_target(src: torch.Tensor, trg: torch.Tensor, beta: float) -> torch.Tensor:
    """(..., C, H, W) source and target images of one size (0..255 floats) -> the source with the
    target's low-frequency amplitude (float64 FFT; the input's dtype out)."""
    h, w = src.shape[-2:]
    if trg.shape[-2:] != (h, w):
        raise ValueError(f"FDA needs images of one size, got {tuple(src.shape[-2:])} and {tuple(trg.shape[-2:])}")
    f_s, f_t = torch.fft.fft2(src.double()), torch.fft.fft2(trg.double())
    window = low_frequency_window(h, w, band(h, w, beta), src.device)
    amplitude = torch.where(window, f_t.abs(), f_s.abs())
    return torch.fft.ifft2(torch.polar(amplitude, f_s.angle())).real.to(src.dtype)


class TargetFrames:
    """The target set's frames, read on demand and resized to the image they restyle."""

    def __init__(self, spec: str):
        self.paths = [s.image for s in build_index(spec).samples]

    def get(self, i: int, size: tuple[int, int]) -> torch.Tensor:
        img = torch.from_numpy(read_image(self.paths[i])).permute(2, 0, 1)
        return TF.resize(img, list(size), antialias=True).float()


class OnTheFly:
    """FDA inside segmenter training: each source frame, after its geometric augmentation, takes
    the amplitude of a random target frame resized to the crop. The draw uses torch's RNG, which
    the sample stream seeds per sample position (sampling.py), so a resumed run draws the same
    target frames."""

    def __init__(self, target: str, beta: float):
        self.targets, self.beta = TargetFrames(target), beta

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        t = int(torch.randint(len(self.targets.paths), ()))
        return fda_source_to_target(img.float(), self.targets.get(t, tuple(img.shape[-2:])), self.beta)
