"""FDA: Fourier Domain Adaptation (Yang & Soatto, CVPR 2020) as a translator. No network, nothing
to train: a source frame takes a target frame's low-frequency amplitude (the image operation and
its definition: data/fourier.py, where segmenter training applies it on the fly, the paper's way).

Offline outputs (``translate apply``) are clipped to 0..255 when written as PNGs.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..config import between
from ..data.fourier import TargetFrames, band, fda_source_to_target
from ..runtime import Runtime
from .base import Translator


@dataclass
class FDAConfig:
    beta: float = 0.01  # the window's half-size as a fraction of min(H, W): b = floor(min(H, W) * beta)

    # above 0.5 the window covers the whole spectrum: the frame would become the target frame
    RANGES: ClassVar[dict] = {"beta": between(0, 0.5)}


def _to_255(x: torch.Tensor) -> torch.Tensor:  # normalised [-1, 1] frames (mean = std = 0.5) -> 0..255
    return (x.float() * 0.5 + 0.5) * 255


def _from_255(x: torch.Tensor) -> torch.Tensor:
    return x / 255 * 2 - 1


class FDA(Translator):
    """FDA as a translator for ``translate apply``, samples and the study: source frame ``name``
    takes the amplitude of target frame number ``hash(seed, name)``, whatever the batching."""

    Config: ClassVar[type] = FDAConfig
    TRAINS: ClassVar[bool] = False

    def __init__(self, cfg: FDAConfig, target: str, seed: int, rt: Runtime):
        self.cfg, self.seed, self.rt = cfg, seed, rt
        self.targets = TargetFrames(target)

    @classmethod
    def build(cls, tcfg, rt: Runtime, total_steps: int = 0, training: bool = True, judge=None) -> "FDA":
        return cls(tcfg.model, tcfg.target, tcfg.seed, rt)

    @classmethod
    def on_the_fly(cls, tcfg) -> dict:
        """The study trains an FDA arm's segmenter with FDA on the fly against the target train set."""
        return {"fda_target": tcfg.target, "fda_beta": tcfg.model.beta}

    # nothing to train: the loop never runs it (``translate train`` writes the settings it uses)
    def step(self, batch: dict) -> dict:
        raise RuntimeError("FDA trains nothing")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def inference_module(self) -> None:
        return None

    def pick(self, name: str) -> int:
        return int(np.random.default_rng([self.seed, zlib.crc32(name.encode())]).integers(len(self.targets.paths)))

    def translate(self, x: torch.Tensor, names: list[str], direction: str = "s2t") -> torch.Tensor:
        size = tuple(x.shape[-2:])
        trg = torch.stack([self.targets.get(self.pick(n), size) for n in names]).to(x.device)
        return _from_255(fda_source_to_target(_to_255(x), trg, self.cfg.beta))

    def samples(self, x_s, names_s, x_t):
        y = _from_255(fda_source_to_target(_to_255(x_s), _to_255(x_t), self.cfg.beta))
        return [x_s, x_t, y], ["source", "target (amplitude from)", "FDA(source)"]

    def describe(self, size: tuple[int, int] | None = None) -> str:
        at = f": b = {band(*size, self.cfg.beta)} at {size[0]}x{size[1]}" if size else ""
        return f"FDA beta={self.cfg.beta:g} (band b = floor(min(H, W) * beta){at})"
