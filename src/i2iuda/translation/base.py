"""What every translation method provides. The methods themselves are a plain dict in
``methods.py``; adding one is one module, one entry there and one preset.

A method is a module (``cyclegan.py``, ``fda.py``) with:

    Config                      dataclass of its settings: the ``model:`` block of a translate config
    TRAINS                      whether ``translate train`` optimises anything (FDA: no checkpoint at all)
    build(tcfg, rt, total_steps, training) -> Translator
    segment_on_the_fly(tcfg)    optional: SegmentConfig overrides that apply the method inside segmenter
                                training (FDA restyles each source frame as it is drawn) instead of
                                training the segmenter on an offline-translated copy

and the ``Translator`` it builds is a ``training.Trainer`` (step, state, picture, ...) plus the
methods below. Frames go in and out normalised (mean 0.5, std 0.5 per channel: [-1, 1]).
"""
from __future__ import annotations

import math

import torch

from ..training import Trainer


class Translator(Trainer):
    directions: tuple[str, ...] = ("s2t",)  # s2t: source -> target; t2s where the method has an inverse
    weights_kind = "translator"  # RUN/checkpoints/translator.safetensors

    def translate(self, x: torch.Tensor, names: list[str], direction: str = "s2t") -> torch.Tensor:
        """A batch of frames translated; ``names`` (the frames' relative paths) seed any per-frame
        choice, e.g. FDA's target frame, so the output does not depend on batching or order."""
        raise NotImplementedError

    def samples(self, x_s: torch.Tensor, names_s: list[str], x_t: torch.Tensor) -> tuple[list[torch.Tensor], list[str]]:
        """Columns of a picture of what the method does (source frames, their translations, ...)
        and their captions."""
        raise NotImplementedError

    # weights() (training.Trainer): the tensors inference needs, written beside last.pt at every
    # checkpoint; None (the default) for a method with nothing learned.

    def inference_module(self) -> torch.nn.Module:
        """The module ``weights()`` is the state dict of (loaded strictly by ``load_translator``)."""
        raise NotImplementedError

    def describe(self, size: tuple[int, int] | None = None) -> str:
        """One line for logs and the report; ``size``: the frame size it will be applied at."""
        raise NotImplementedError

    def summary(self) -> dict:  # summary.json of a translate run names the method and its settings
        return {"description": self.describe()}

    def eval(self) -> "Translator":
        return self


def lr_factor(step: int, total: int, decay_start: float, policy: str) -> float:
    """The GAN translators' schedule: constant for the first ``decay_start`` of training, then
    linear (the CycleGAN paper) or cosine to zero."""
    t = step / max(total, 1)
    if t < decay_start:
        return 1.0
    u = (t - decay_start) / max(1 - decay_start, 1e-8)
    return max(0.0, 1 - u) if policy == "linear" else 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))


def scheduled_step(m, train_step, batch: dict) -> dict:
    """A GAN translator's ``step`` (CycleGAN, CUT): its module's ``train_step(m, real_s, real_t,
    autocast) -> (losses, outputs)``, then every lr scheduler; the outputs are kept in ``m.last``
    for the picture of the step."""
    loss, out = train_step(m, batch["source"], batch["target"], m.rt.autocast())
    for s in m.scheds:
        s.step()
    m.last = (out, batch["source"], batch["target"])
    return loss
