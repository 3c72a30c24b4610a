"""``i2iuda translate train``: train a translator source -> target in a run folder, with the
one training loop (training.py). The method (``method: cyclegan``, ``cut`` or ``fda``, methods.py) and
its settings (``model:``, typed by the method's Config when the config is loaded) are part of the
config.

RUN/config.yaml         the resolved config (method settings included)
RUN/tb/, losses.jsonl   every loss and the learning rate (TensorBoard, and one JSON line per log)
RUN/images/*.png        the method's picture of a training step every ``image_every`` steps
RUN/checkpoints/last.pt the method's state (nets, optimisers, schedulers, pools), RNG states, step:
                        plain data for exact resume (checkpoint.py)
RUN/checkpoints/translator.safetensors   the nets inference needs (what ``translate apply`` loads)
RUN/summary.json        steps, wall time, speed, last losses, the method's one-line description

A method that trains nothing (FDA) gets a run folder with the settings it uses and a summary: there is
no checkpoint to fake, and ``translate apply --run`` builds it from the config.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from ..checkpoint import fits, load_into, load_state, load_weights, older_run, save_weights
from ..config import at_least, fraction, from_dict, load_config, to_dict
from ..data.datasets import SegmentationDataset, build_index
from ..data.sampling import Seeded, StreamSampler
from ..data.transforms import AugmentConfig, train_transform
from ..errors import UserError
from ..io import write_json, write_yaml
from ..runlock import holding
from ..runtime import init_runtime, loader_workers
from ..training import Schedule, resolve_run_config, train_loop
from .methods import method


@dataclass
class TranslateData:
    size: tuple[int, int] = (180, 360)  # (H, W) frames are resized to; both divisible by 4
    # (H, W) random crops of those frames to train on (the paper trains on 256x256 crops of
    # 286x286 frames); None: whole frames. Translation (apply) always runs on whole frames.
    random_crop: tuple[int, int] | None = None
    hflip: float = 0.5
    batch_size: int = 2  # per process
    workers: int = 2  # decoding workers per process

    RANGES: ClassVar[dict] = {"size": at_least(16), "random_crop": at_least(16, multiple_of=4, at_most="size"),
                              "hflip": fraction, "batch_size": at_least(1), "workers": at_least(0)}


@dataclass
class TranslateConfig:
    method: str = "cyclegan"  # a key of translation.methods.METHODS
    source: str = ""  # data spec, e.g. gta5:/data/GTA5:train,limit=3000,seed=0
    target: str = ""  # e.g. cityscapes:/data/cityscapes:train,limit=3000,seed=0
    # the method's settings: an instance of its Config, typed from a mapping when the config is
    # loaded (``typed``), its defaults filled in
    model: Any = None
    data: TranslateData = field(default_factory=TranslateData)
    epochs: int = 200
    steps_per_epoch: int | None = None  # None: max(|S|, |T|) // (batch * processes)
    lr_decay: Literal["linear", "cosine"] = "linear"  # to zero, over the second part of training
    decay_start: float = 0.5  # fraction of training with a constant lr (paper: 100 of 200 epochs)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:N]
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    log_every: int = 50  # steps between loss logs (the only host syncs)
    image_every: int = 500  # steps between image grids
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)

    RANGES: ClassVar[dict] = {"epochs": at_least(1), "steps_per_epoch": at_least(1), "decay_start": fraction,
                              "seed": at_least(0), "log_every": at_least(1), "image_every": at_least(1),
                              "checkpoint_every": at_least(1)}

    def typed(self, where: str = "config") -> TranslateConfig:
        """``model`` as the method's Config (a mapping checked against it, its defaults filled in)."""
        settings = method(self.method).Config
        if isinstance(self.model, settings):
            return self
        return replace(self, model=from_dict(settings, dict(self.model or {}), f"{where}.model"))


def resolve_config(run: Path, config: str | Path | None, overrides: list[str], resume: bool) -> TranslateConfig:
    cfg = resolve_run_config(TranslateConfig, run, config, overrides, resume)
    h, w = cfg.data.random_crop or cfg.data.size
    if h % 4 or w % 4:
        raise UserError(f"data.size={h}x{w}: both sides of the frames trained on must be divisible by 4 "
                        f"(two stride-2 stages)")
    if not cfg.source or not cfg.target:
        raise UserError("give --source and --target (or source:/target: in the config)")
    return cfg


class UnpairedDataset(torch.utils.data.Dataset):
    """Item i: source frame i and a random target frame (seeded by Seeded), as in the paper; and
    source frame i's label when the source set is read with labels (CyCADA's TLlib variant)."""

    def __init__(self, source: SegmentationDataset, target: SegmentationDataset):
        self.source, self.target = source, target

    def __len__(self) -> int:
        return max(len(self.source), len(self.target))

    def __getitem__(self, i: int) -> dict:
        t = int(torch.randint(len(self.target), ()))
        s = self.source[i % len(self.source)]
        out = {"source": s["image"], "target": self.target[t]["image"]}
        if "mask" in s:
            out["source_label"] = s["mask"]
        return out


def translator_data(cfg: TranslateConfig) -> UnpairedDataset:
    """The unpaired source/target frames a translator trains on, resized (and randomly cropped)."""
    crop = cfg.data.random_crop
    if crop is not None:
        crop = tuple(crop)
        if len(crop) != 2 or crop[0] % 4 or crop[1] % 4 or crop[0] > cfg.data.size[0] or crop[1] > cfg.data.size[1]:
            raise UserError(f"data.random_crop={list(crop)}: (H, W) within data.size={list(cfg.data.size)}, both "
                            "divisible by 4 (two stride-2 stages)")
    tf = train_transform(AugmentConfig(size=tuple(cfg.data.size), crop=crop, hflip=cfg.data.hflip))
    source_labels = method(cfg.method).source_labels(cfg.model)
    source = SegmentationDataset(build_index(cfg.source), tf, with_labels=source_labels)
    target = SegmentationDataset(build_index(cfg.target), tf, with_labels=False)
    return UnpairedDataset(source, target)


def train_translator(cfg: TranslateConfig, run: str | Path, resume: bool = False, stop_at_step: int | None = None,
                     progress: bool = True, judge: torch.nn.Module | None = None) -> dict:
    """Train (or resume) a translator run. ``stop_at_step`` ends early after a checkpoint (for
    tests and time-boxed runs); the run can be resumed later. ``judge``: the frozen segmenter of a
    semantic loss (CyCADA's f), loaded by the caller. Returns the summary."""
    run = Path(run)
    cfg = cfg.typed()
    rt = init_runtime(cfg.device, cfg.amp, cfg.channels_last)
    m = method(cfg.method)
    if m.TRAINS and rt.channels_last and rt.device.type == "cpu":
        # each layer is right alone, but through F(G(s)) G's gradients come out unrelated to the
        # float64 ones, and the demo's CycleGAN learned nothing (docs/speed.md)
        raise UserError("channels_last=true on cpu: torch's CPU kernels compute the generators' gradients wrongly "
                        "in that layout (docs/speed.md, 'channels_last on CPU'); set channels_last=false on CPU")
    if not m.TRAINS:
        translator = m.build(cfg, rt, 0, training=False)
        summary = {"steps": 0, "trains": False, "description": translator.describe()}
        if rt.is_main:
            with holding(run):  # only the settings it uses (epochs, lr, cadence would mislead)
                used = {k: v for k, v in to_dict(cfg).items() if k in ("method", "source", "target", "model", "seed")}
                write_yaml(run / "config.yaml", {**used, "data": {"size": list(cfg.data.size)}})
                write_json(run / "summary.json", summary)
        return summary
    data = translator_data(cfg)
    per_epoch = cfg.steps_per_epoch or max(len(data) // (cfg.data.batch_size * rt.world_size), 1)
    total = cfg.epochs * per_epoch
    translator = m.build(cfg, rt, total, judge=judge)

    def make_loader(start: int, end: int):
        sampler = StreamSampler(len(data), cfg.data.batch_size, cfg.seed, start, end, rt.rank, rt.world_size)
        return torch.utils.data.DataLoader(Seeded(data), batch_size=cfg.data.batch_size, sampler=sampler,
                                           num_workers=loader_workers(cfg.data.workers), pin_memory=rt.device.type == "cuda",
                                           drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))

    schedule = Schedule(total, per_epoch, cfg.log_every, cfg.checkpoint_every, cfg.image_every)
    return train_loop(translator, make_loader, run, cfg, rt, schedule, resume, stop_at_step, progress,
                      name=f"translate ({len(data.source)} source + {len(data.target)} target frames)")


def load_translator(run: str | Path, device: str = "auto", amp: str = "none"):
    """-> (translator ready for inference, its TranslateConfig) from a ``translate train`` run."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"--run {run}: no config.yaml (not a 'i2iuda translate train' run folder)")
    cfg = load_config(TranslateConfig, run / "config.yaml")
    rt = init_runtime(device, amp)
    m = method(cfg.method)
    translator = m.build(cfg, rt, 0, training=False)
    if m.TRAINS:
        path = run / "checkpoints" / "translator.safetensors"
        if not path.is_file():
            if (run / "checkpoints" / "last.pt").is_file():
                raise older_run(run, "checkpoints/last.pt, no translator.safetensors")
            raise UserError(f"--run {run}: no checkpoint at {path} (train one with 'i2iuda translate train')")
        tensors, meta = load_weights(path, "translator")
        theirs = (meta.get("config") or {}).get("method")
        if theirs != cfg.method:
            raise UserError(f"{path}: holds a {theirs} translator, but {run / 'config.yaml'} says {cfg.method}")
        load_into(translator.inference_module(), tensors, path, f"the {cfg.method} of {run / 'config.yaml'}")
    return translator.eval(), cfg


def export_weights(run: str | Path) -> Path:
    """Write RUN/checkpoints/translator.safetensors from RUN/checkpoints/last.pt (for runs made
    before the weights file existed; ``i2iuda checkpoint convert`` calls it)."""
    run = Path(run)
    cfg = load_config(TranslateConfig, run / "config.yaml")
    translator = method(cfg.method).build(cfg, init_runtime("cpu"), 1)
    path = run / "checkpoints" / "last.pt"
    state = load_state(path)
    try:
        translator.load_state_dict(state["trainer"])
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise fits(path, e) from None
    out = run / "checkpoints" / "translator.safetensors"
    save_weights(out, translator.weights(), "translator", config=to_dict(cfg), step=state["step"])
    return out
