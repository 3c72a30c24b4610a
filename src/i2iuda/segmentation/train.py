"""``i2iuda segment train``: Algorithm 1 of the seed report. Each epoch: train, then validate
on the *source* validation split with all metrics; keep the best checkpoint by mIoU; at the
end the best is what the run holds. Target labels are never looked at.

RUN/config.yaml, RUN/tb/, RUN/history.json (per-epoch train loss and val metrics),
RUN/checkpoints/last.pt (resume), RUN/checkpoints/best.pt (model weights of the best epoch).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as nnf

from ..config import resolve_run_config, to_dict
from ..data.datasets import SegmentationDataset, build_index
from ..data.labels import IGNORE
from ..data.sampling import Seeded, StreamSampler
from ..data.transforms import AugmentConfig, train_transform
from ..errors import UserError
from ..io import torch_save, write_json
from ..progress import Bar, console
from ..runtime import init_runtime, open_run_folder, rng_state, set_rng_state, unwrap
from .evaluate import evaluate
from .models import ModelConfig, build_model


@dataclass
class SegmentData:
    size: tuple[int, int] = (180, 360)  # frames are resized to this (H, W) before augmentation
    scale: tuple[float, float] = (0.75, 1.5)  # random rescale
    crop: tuple[int, int] | None = (180, 360)  # random crop after rescaling (padded with ignore)
    hflip: float = 0.5
    blur: float = 0.5  # probability of a gaussian blur
    batch_size: int = 8  # per process
    workers: int = 2
    val_size: tuple[int, int] | None = None  # validation input size (None: data.size); labels resized too


@dataclass
class SegmentConfig:
    train: str = ""  # data spec of the labelled training set
    val: str = ""  # data spec of the *source* validation split (model selection)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SegmentData = field(default_factory=SegmentData)
    epochs: int = 50
    steps_per_epoch: int | None = None  # None: |train| // (batch * processes)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    backbone_lr_mult: float = 1.0  # 0.1 is common with pretrained backbones
    seed: int = 0
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    log_every: int = 20
    checkpoint_every: int = 500


def resolve_config(run: Path, config, overrides: list[str], resume: bool) -> SegmentConfig:
    cfg = resolve_run_config(SegmentConfig, run, config, overrides, resume)
    if not cfg.train or not cfg.val:
        raise UserError("give --train and --val (or train:/val: in the config)")
    return cfg


def load_trained(run: str | Path, device: torch.device, which: str = "best") -> tuple[torch.nn.Module, dict]:
    """The model of a finished (or running) segment-train run, and its config dict."""
    path = Path(run) / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise UserError(f"--run {run}: no checkpoint at {path} (train one with 'i2iuda segment train')")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    from ..config import from_dict

    model = build_model(from_dict(ModelConfig, {**ckpt["config"]["model"], "pretrained": False}))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt["config"]


def train_segmenter(cfg: SegmentConfig, run: str | Path, resume: bool = False, stop_at_step: int | None = None,
                    progress: bool = True) -> dict:
    run = Path(run)
    rt = init_runtime(cfg.device, cfg.amp, cfg.channels_last)
    d = cfg.data
    aug = AugmentConfig(size=tuple(d.size), scale=tuple(d.scale), crop=tuple(d.crop) if d.crop else None,
                        hflip=d.hflip, blur=d.blur)
    train_index = build_index(cfg.train)
    if not train_index.labelled:
        raise UserError(f"train {cfg.train}: has no labels")
    val_index = build_index(cfg.val)
    train_ds = SegmentationDataset(train_index, train_transform(aug))
    per_epoch = cfg.steps_per_epoch or max(len(train_ds) // (d.batch_size * rt.world_size), 1)
    total = cfg.epochs * per_epoch

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rt.distributed and cfg.model.sync_bn:
        if rt.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif rt.is_main:
            console.print("model.sync_bn: SyncBatchNorm needs CUDA; on CPU each process keeps its own BatchNorm")
    backbone = [p for n, p in model.named_parameters() if n.startswith(("encoder.", "backbone."))]
    head = [p for n, p in model.named_parameters() if not n.startswith(("encoder.", "backbone."))]
    opt = torch.optim.SGD([{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult}, {"params": head, "lr": cfg.lr}],
                          lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, total) / total) ** cfg.poly_power)
    if rt.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    last_path, best_path = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    step, elapsed, best, history = 0, 0.0, -1.0, []
    epoch_sum, epoch_n = torch.zeros((), device=rt.device), 0  # this epoch's summed train loss
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location=rt.device, weights_only=False)
        unwrap(model).load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        set_rng_state(ckpt["rng"])
        step, elapsed, best, history = ckpt["step"], ckpt["elapsed"], ckpt["best"], ckpt["history"]
        epoch_sum, epoch_n = torch.tensor(ckpt["epoch_loss"][0], device=rt.device), ckpt["epoch_loss"][1]
    writer = open_run_folder(run, cfg, step) if rt.is_main else None
    if rt.is_main:
        console.print(f"segment: {len(train_ds)} train / {len(val_index.samples)} val frames, {per_epoch} steps/epoch, "
                      f"{cfg.epochs} epochs, {cfg.model.arch}-{cfg.model.backbone} on {rt.device}"
                      + (f", resuming at step {step}" if step else ""))

    def save_last():
        if rt.is_main:
            torch_save({"step": step, "elapsed": elapsed + time.perf_counter() - t0, "best": best, "history": history,
                        "epoch_loss": (float(epoch_sum), epoch_n),
                        "config": to_dict(cfg), "model": unwrap(model).state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "rng": rng_state()}, last_path)
        rt.barrier()

    end = min(total, stop_at_step) if stop_at_step is not None else total
    sampler = StreamSampler(len(train_ds), d.batch_size, cfg.seed, step, end, rt.rank, rt.world_size)
    loader = torch.utils.data.DataLoader(Seeded(train_ds), batch_size=d.batch_size, sampler=sampler,
                                         num_workers=d.workers, pin_memory=rt.device.type == "cuda", drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    model.train()
    t0, loss_sum, n_sum, last_loss = time.perf_counter(), 0.0, 0, float("nan")
    with Bar(total, "segment", unit="step", completed=step, show=progress and rt.is_main) as bar:
        for batch in loader:
            x, y = rt.to_device(batch["image"]), batch["mask"].to(rt.device, non_blocking=True)
            with rt.autocast():
                logits = model(x)
            loss = nnf.cross_entropy(logits.float(), y, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum, n_sum = loss_sum + loss.detach(), n_sum + 1
            epoch_sum, epoch_n = epoch_sum + loss.detach(), epoch_n + 1
            if step % cfg.log_every == 0 or step % per_epoch == 0 or step == end:
                last_loss = float(loss_sum) / n_sum  # one host sync per interval
                loss_sum, n_sum = 0.0, 0
                if writer:
                    writer.add_scalar("train/loss", last_loss, step)
                    writer.add_scalar("train/lr", sched.get_last_lr()[-1], step)
            bar.advance(1, loss=last_loss)
            if step % per_epoch == 0:  # end of an epoch: validate on the source val split
                val = evaluate(model, val_index, tuple(d.val_size or d.size), rt, resize_mask=True,
                               batch_size=d.batch_size, workers=d.workers)
                epoch = step // per_epoch
                history.append({"epoch": epoch, "step": step, "train_loss": float(epoch_sum) / max(epoch_n, 1),
                                **{k: val[k] for k in ("PA", "MPA", "mIoU", "FWIoU")}})
                epoch_sum, epoch_n = torch.zeros((), device=rt.device), 0
                improved = val["mIoU"] > best
                if improved:
                    best = val["mIoU"]
                    if rt.is_main:
                        torch_save({"config": to_dict(cfg), "model": unwrap(model).state_dict(), "epoch": epoch,
                                    "val": {k: val[k] for k in ("PA", "MPA", "mIoU", "FWIoU", "per_class_IoU")}},
                                   best_path)
                if writer:
                    for k in ("PA", "MPA", "mIoU", "FWIoU"):
                        writer.add_scalar(f"val/{k}", val[k], step)
                    console.print(f"epoch {epoch}/{cfg.epochs} | loss {history[-1]['train_loss']:.3f} | val "
                                  f"mIoU {val['mIoU']:.2f} PA {val['PA']:.2f}" + (" (best)" if improved else ""))
                save_last()
            elif step % cfg.checkpoint_every == 0 or step == end:
                save_last()
    if writer:
        writer.close()
    wall = elapsed + time.perf_counter() - t0
    summary = {"steps": step, "total_steps": total, "finished": step >= total, "wall_seconds": round(wall, 2),
               "steps_per_second": round(step / wall, 4) if wall else None, "best_val_mIoU": best,
               "history": history}
    if rt.is_main:
        write_json(run / "history.json", history)
        write_json(run / "summary.json", {k: v for k, v in summary.items() if k != "history"})
    return summary
