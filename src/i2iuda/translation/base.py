"""What every translation method is: one class behind the ``Translator`` protocol below, found
by name in the plain dict of ``methods.py``. Adding a method is one module (its settings, nets,
losses and step), one entry there and one preset; a test
checks every entry against this protocol.

A translator is a ``training.Trainer`` (step, state, picture, ...) that also translates. Frames
go in and out normalised (mean 0.5, std 0.5 per channel: [-1, 1]).
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from ..runtime import Runtime
from ..training import Trainer


@runtime_checkable
class Translator(Trainer, Protocol):
    Config: ClassVar[type]  # the dataclass of its settings: the ``model:`` block of a translate config
    TRAINS: ClassVar[bool]  # whether ``translate train`` optimises anything (FDA: no checkpoint at all)
    directions: ClassVar[tuple[str, ...]] = ("s2t",)  # s2t: source -> target; t2s where it has an inverse
    weights_kind = "translator"  # RUN/checkpoints/translator.safetensors
    rt: Runtime  # where it runs (device, AMP, DDP)

    @classmethod
    def build(cls, tcfg: Any, rt: Runtime, total_steps: int, training: bool = True,
              judge: torch.nn.Module | None = None) -> "Translator":
        """Its nets on ``rt``'s device (DDP-wrapped under torchrun) from a TranslateConfig whose
        ``model`` is a ``Config``; for inference only (``training=False``) what ``translate``
        needs. ``judge``: a frozen segmenter a semantic loss reads frames with (CyCADA's f), built
        and loaded by the caller, so that translators know no segmentation code."""
        ...

    @classmethod
    def judge_run(cls, model: Any) -> str | None:
        """The ``segment train`` run whose frozen segmenter the method's semantic loss reads
        (CyCADA's f): None without such a loss; "" while no run is named (a study names its
        source-only run: ``with_judge_run``). The caller loads it and passes it to ``build``."""
        return None

    @classmethod
    def with_judge_run(cls, model: Any, run: str) -> Any:
        """``model`` (its Config) with ``run`` named as the judge's."""
        return model

    @classmethod
    def source_labels(cls, model: Any) -> bool:
        """Whether a training batch needs the source frames' labels (``source_label``)."""
        return False

    @classmethod
    def on_the_fly(cls, tcfg: Any) -> dict | None:
        """SegmentConfig settings that apply the method inside segmenter training instead of
        training on an offline-translated copy (FDA restyles each source frame as it is drawn);
        None: the method is applied offline."""
        return None

    def translate(self, x: torch.Tensor, names: list[str], direction: str = "s2t") -> torch.Tensor:
        """A batch of frames translated; ``names`` (the frames' relative paths) seed any per-frame
        choice, e.g. FDA's target frame, so the output does not depend on batching or order."""
        ...

    def samples(self, x_s: torch.Tensor, names_s: list[str], x_t: torch.Tensor) -> tuple[list[torch.Tensor], list[str]]:
        """Columns of a picture of what the method does (source frames, their translations, ...)
        and their captions."""
        ...

    def inference_module(self) -> torch.nn.Module | None:
        """The module ``weights()`` is the state dict of (loaded strictly by ``load_translator``);
        None for a method with nothing learned."""
        ...

    def describe(self, size: tuple[int, int] | None = None) -> str:
        """One line for logs and the report; ``size``: the frame size it will be applied at."""
        ...

    def summary(self) -> dict:  # summary.json of a translate run names the method and its settings
        return {"description": self.describe()}

    def eval(self) -> "Translator":
        return self
