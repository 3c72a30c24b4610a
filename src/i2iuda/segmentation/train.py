"""``i2iuda segment train``: Algorithm 1 of the seed report, on the one training loop
(training.py). Each epoch: train, then validate on the *source* validation split with all
metrics; keep the best checkpoint by mIoU. Target labels are never looked at.

RUN/config.yaml, RUN/tb/ and losses.jsonl, RUN/history.json (per-epoch train loss and val
metrics), RUN/checkpoints/last.pt (exact resume), RUN/checkpoints/best.safetensors (the best epoch's
weights), RUN/summary.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as nnf

from ..checkpoint import save_weights
from ..config import Range, adam_beta, at_least, between, fraction, open_fraction, positive, to_dict
from ..data.datasets import SegmentationDataset, build_index, check_labels
from ..data.fourier import OnTheFly
from ..data.labels import IGNORE
from ..data.sampling import MixedStreamSampler, Seeded
from ..data.transforms import AugmentConfig, train_transform
from ..errors import UserError
from ..io import write_json
from ..progress import say
from ..runtime import Runtime, init_runtime, loader_workers, unwrap
from ..training import Schedule, Trainer, resolve_run_config, train_loop
from .evaluate import EvalProtocol, evaluate
from .models import ModelConfig, build_model, load_trained


@dataclass
class SegmentData:
    size: tuple[int, int] = (180, 360)  # frames are resized to this (H, W) before augmentation
    scale: tuple[float, float] = (0.75, 1.5)  # random rescale
    crop: tuple[int, int] | None = (180, 360)  # random crop after rescaling (padded with ignore)
    # crops redrawn (10 at most) while one class covers this share of their labelled pixels
    # (mmseg's cat_max_ratio; DAFormer's GTA5 crops: 0.75); None = off
    cat_max_ratio: float | None = None
    hflip: float = 0.5
    blur: float = 0.5  # probability of a gaussian blur
    batch_size: int = 8  # per process
    workers: int = 2
    val_size: tuple[int, int] | None = None  # validation input size (None: data.size); labels resized too

    RANGES: ClassVar[dict] = {"size": at_least(16), "scale": Range(lo=0, lo_open=True, ordered=True),
                              "crop": at_least(16), "cat_max_ratio": Range(lo=0, hi=1, lo_open=True),
                              "hflip": fraction, "blur": fraction, "batch_size": at_least(1),
                              "workers": at_least(0), "val_size": at_least(16)}


@dataclass
class SegmentConfig:
    train: str = ""  # data spec of the labelled training set
    val: str = ""  # data spec of the *source* validation split (model selection)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SegmentData = field(default_factory=SegmentData)
    epochs: int = 50
    steps_per_epoch: int | None = None  # None: |train| // (batch * processes)
    # sgd (momentum) as in DeepLab and the published UDA recipes; adamw converges in far fewer
    # steps from scratch (the CPU preset, no pretrained backbone)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    backbone_lr_mult: float = 1.0  # 0.1 is common with pretrained backbones (DAFormer: the head at 10x)
    # weight decay of the backbone's parameters whose names contain "norm", times this (DAFormer: 0,
    # mmcv's paramwise custom key; a ResNet's BatchNorms are named bn and keep their decay)
    norm_decay_mult: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    log_every: int = 20
    checkpoint_every: int = 500
    # FDA (Yang & Soatto 2020) on the fly: each training frame takes the low-frequency amplitude
    # of a random frame of this (unlabelled) target set; "" = off. See data/fourier.py.
    fda_target: str = ""
    fda_beta: float = 0.01
    # Self-training: a second labelled set (pseudo-labelled target frames, ``pseudo:DIR``) in every
    # batch, ``mix_fraction`` of its frames (rounded); "" = off. Epoch length follows ``train``.
    mix: str = ""
    mix_fraction: float = 0.5
    init_from: str = ""  # a 'segment train' run whose best weights start this one (warm start); "" = fresh

    # fda_beta: above 0.5 the window covers the whole spectrum (the frame becomes the target's)
    RANGES: ClassVar[dict] = {"epochs": at_least(1), "steps_per_epoch": at_least(1), "lr": positive,
                              "momentum": adam_beta, "weight_decay": at_least(0), "poly_power": at_least(0),
                              "backbone_lr_mult": at_least(0), "norm_decay_mult": at_least(0), "seed": at_least(0),
                              "log_every": at_least(1),
                              "checkpoint_every": at_least(1), "fda_beta": between(0, 0.5),
                              "mix_fraction": open_fraction}


def resolve_config(run: Path, config, overrides: list[str], resume: bool) -> SegmentConfig:
    cfg = resolve_run_config(SegmentConfig, run, config, overrides, resume)
    if not cfg.train or not cfg.val:
        raise UserError("give --train and --val (or train:/val: in the config)")
    return cfg


def param_groups(model: torch.nn.Module, cfg: SegmentConfig) -> list[dict]:
    """The optimiser's groups: the backbone at lr x backbone_lr_mult, the rest (the head) at lr;
    with norm_decay_mult != 1, the backbone's "norm" parameters apart at weight_decay x it (as
    DAFormer's paramwise config: head lr_mult 10, norm decay_mult 0)."""
    backbone = [(n, p) for n, p in model.named_parameters() if n.startswith(("encoder.", "backbone."))]
    head = [p for n, p in model.named_parameters() if not n.startswith(("encoder.", "backbone."))]
    lr = cfg.lr * cfg.backbone_lr_mult
    if cfg.norm_decay_mult == 1.0:
        return [{"params": [p for _, p in backbone], "lr": lr}, {"params": head, "lr": cfg.lr}]
    return [{"params": [p for n, p in backbone if "norm" not in n], "lr": lr},
            {"params": [p for n, p in backbone if "norm" in n], "lr": lr,
             "weight_decay": cfg.weight_decay * cfg.norm_decay_mult},
            {"params": head, "lr": cfg.lr}]


class SegmentTrainer(Trainer):
    """DeepLab with SGD and poly lr: cross-entropy steps, and at the end of each epoch validation
    on the source val split that keeps the best checkpoint (RUN/checkpoints/best.safetensors)."""

    show = ("CE",)

    def __init__(self, cfg: SegmentConfig, rt: Runtime, total: int, val_index, run: Path):
        self.cfg, self.rt, self.val_index, self.run = cfg, rt, val_index, run
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model).to(rt.device)
        if cfg.init_from:
            model.load_state_dict(load_trained(cfg.init_from, rt.device)[0].state_dict())
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if rt.distributed and cfg.model.sync_bn:
            if rt.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif rt.is_main:
                say("model.sync_bn: SyncBatchNorm needs CUDA; on CPU each process keeps its own BatchNorm")
        groups = param_groups(model, cfg)
        if cfg.optimizer == "adamw":
            self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.PolynomialLR(self.opt, total_iters=total, power=cfg.poly_power)
        if rt.distributed:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        self.model = model.train()
        self.best, self.history = -1.0, []

    def step(self, batch: dict) -> dict:
        with self.rt.autocast():
            logits = self.model(batch["image"])
        loss = nnf.cross_entropy(logits.float(), batch["mask"], ignore_index=IGNORE)
        self.opt.zero_grad(set_to_none=True)
        self.rt.backward(loss)
        self.rt.step(self.opt)
        self.sched.step()
        return {"CE": loss.detach()}

    def end_of_epoch(self, epoch: int, step: int, mean_losses: dict) -> dict:
        d = self.cfg.data
        val = evaluate(self.model, self.val_index, self.rt, EvalProtocol(size=tuple(d.val_size or d.size)),
                       resize_mask=True, batch_size=d.batch_size, workers=d.workers)
        self.history.append({"epoch": epoch, "step": step, "train_loss": mean_losses["CE"],
                             **{k: val[k] for k in ("PA", "MPA", "mIoU", "FWIoU")}})
        if val["mIoU"] > self.best:
            self.best = val["mIoU"]
            if self.rt.is_main:
                save_weights(self.run / "checkpoints" / "best.safetensors", unwrap(self.model).state_dict(),
                             "segmenter", config=to_dict(self.cfg), epoch=epoch, step=step,
                             val={k: val[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")})
        if self.rt.is_main:
            write_json(self.run / "history.json", self.history)
        return {f"val/{k}": val[k] for k in ("PA", "MPA", "mIoU", "FWIoU")}

    def state_dict(self) -> dict:
        return {"model": unwrap(self.model).state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "best": self.best, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.best, self.history = state["best"], state["history"]

    def describe(self) -> str:
        m = self.cfg.model
        return f"{m.arch}-{m.backbone}" + (f", FDA on the fly (beta {self.cfg.fda_beta:g})" if self.cfg.fda_target else "")

    def summary(self) -> dict:
        return {"best_val_mIoU": self.best, "history": self.history}


def labelled_source(cfg: SegmentConfig, rt: Runtime):
    """What every segmenter trainer starts from: the augmentation, the labelled train and val
    indexes, the train set (FDA-restyled on the fly where asked) and the steps of an epoch."""
    d = cfg.data
    aug = AugmentConfig(size=tuple(d.size), scale=tuple(d.scale), crop=tuple(d.crop) if d.crop else None,
                        cat_max_ratio=d.cat_max_ratio, hflip=d.hflip, blur=d.blur)
    train_index = build_index(cfg.train)
    if not train_index.labelled:
        raise UserError(f"train {cfg.train}: has no labels")
    val_index = build_index(cfg.val)
    if not val_index.labelled:
        raise UserError(f"val {cfg.val}: has no labels (model selection needs a labelled source split)")
    check_labels(train_index)  # labels that read as nothing would train to NaN
    check_labels(val_index)
    restyle = OnTheFly(cfg.fda_target, cfg.fda_beta) if cfg.fda_target else None
    train_ds = SegmentationDataset(train_index, train_transform(aug, restyle))
    per_epoch = cfg.steps_per_epoch or max(len(train_ds) // (d.batch_size * rt.world_size), 1)
    return aug, train_index, val_index, train_ds, per_epoch


def train_segmenter(cfg: SegmentConfig, run: str | Path, resume: bool = False, stop_at_step: int | None = None,
                    progress: bool = True) -> dict:
    run = Path(run)
    rt = init_runtime(cfg.device, cfg.amp, cfg.channels_last)
    d = cfg.data
    aug, train_index, val_index, train_ds, per_epoch = labelled_source(cfg, rt)
    parts, sets, name = [(len(train_ds), d.batch_size)], [train_ds], f"{len(train_ds)} train"
    if cfg.mix:
        if not 0 < cfg.mix_fraction < 1:
            raise UserError(f"mix_fraction={cfg.mix_fraction}: expected a fraction strictly between 0 and 1")
        mix_index = build_index(cfg.mix)
        if not mix_index.labelled:
            raise UserError(f"mix {cfg.mix}: has no labels")
        k = min(max(round(d.batch_size * cfg.mix_fraction), 1), d.batch_size - 1)
        mix_ds = SegmentationDataset(mix_index, train_transform(aug))  # no FDA restyling: these are target frames
        parts, sets = [(len(train_ds), d.batch_size - k), (len(mix_ds), k)], [train_ds, mix_ds]
        name += f" + {len(mix_ds)} mixed in ({k} of {d.batch_size} a batch)"
    data = torch.utils.data.ConcatDataset(sets)
    total = cfg.epochs * per_epoch
    trainer = SegmentTrainer(cfg, rt, total, val_index, run)

    def make_loader(start: int, end: int):
        sampler = MixedStreamSampler(parts, cfg.seed, start, end, rt.rank, rt.world_size)
        return torch.utils.data.DataLoader(Seeded(data), batch_size=d.batch_size, sampler=sampler,
                                           num_workers=loader_workers(d.workers), pin_memory=rt.device.type == "cuda",
                                           drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))

    schedule = Schedule(total, per_epoch, cfg.log_every, cfg.checkpoint_every)
    return train_loop(trainer, make_loader, run, cfg, rt, schedule, resume, stop_at_step, progress,
                      name=f"segment ({name} / {len(val_index.samples)} val frames)")
