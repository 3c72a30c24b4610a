"""``i2iuda translate train``: train CycleGAN source -> target in a run folder.

RUN/config.yaml         the resolved config
RUN/tb/                 TensorBoard: every loss, the learning rate, image grids
RUN/images/*.png        grids every ``image_every`` steps: real S, G(S), F(G(S)), real T, F(T), G(F(T))
RUN/checkpoints/last.pt nets, optimisers, schedulers, image pools, RNG states, step (atomic)
RUN/summary.json        steps, wall time, speed, last losses
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..config import resolve_run_config, to_dict
from ..data.datasets import SegmentationDataset, build_index
from ..data.sampling import Seeded, StreamSampler
from ..data.transforms import AugmentConfig, denormalize, train_transform
from ..errors import UserError
from ..io import save_png, torch_save, write_json
from ..pictures import grid
from ..progress import Bar, console
from ..runtime import Runtime, init_runtime, open_run_folder, rng_state, set_rng_state, unwrap
from .cyclegan import CycleGAN, CycleGANConfig, build_cyclegan, train_step


@dataclass
class TranslateData:
    size: tuple[int, int] = (180, 360)  # (H, W) frames are resized to; both divisible by 4
    hflip: float = 0.5
    batch_size: int = 2  # per process
    workers: int = 2  # decoding workers per process


@dataclass
class TranslateConfig:
    source: str = ""  # data spec, e.g. gta5:/data/GTA5:train,limit=3000,seed=0
    target: str = ""  # e.g. cityscapes:/data/cityscapes:train,limit=3000,seed=0
    model: CycleGANConfig = field(default_factory=CycleGANConfig)
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


def lr_factor(step: int, total: int, decay_start: float, policy: str) -> float:
    """Constant for the first ``decay_start`` of training, then linear or cosine to zero."""
    t = step / max(total, 1)
    if t < decay_start:
        return 1.0
    u = (t - decay_start) / max(1 - decay_start, 1e-8)
    return max(0.0, 1 - u) if policy == "linear" else 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))


class UnpairedDataset(torch.utils.data.Dataset):
    """Item i: source frame i and a random target frame (seeded by Seeded), as in the paper."""

    def __init__(self, source: SegmentationDataset, target: SegmentationDataset):
        self.source, self.target = source, target

    def __len__(self) -> int:
        return max(len(self.source), len(self.target))

    def __getitem__(self, i: int) -> dict:
        t = int(torch.randint(len(self.target), ()))
        return {"source": self.source[i % len(self.source)]["image"], "target": self.target[t]["image"]}


def resolve_config(run: Path, config: str | Path | None, overrides: list[str], resume: bool) -> TranslateConfig:
    cfg = resolve_run_config(TranslateConfig, run, config, overrides, resume)
    h, w = cfg.data.size
    if h % 4 or w % 4:
        raise UserError(f"data.size={h}x{w}: both sides must be divisible by 4 (two stride-2 stages)")
    if not cfg.source or not cfg.target:
        raise UserError("give --source and --target (or source:/target: in the config)")
    return cfg


def make_loader(cfg: TranslateConfig, rt: Runtime, start_step: int, total_steps: int, n_items: int, dataset):
    sampler = StreamSampler(n_items, cfg.data.batch_size, cfg.seed, start_step, total_steps, rt.rank, rt.world_size)
    return torch.utils.data.DataLoader(Seeded(dataset), batch_size=cfg.data.batch_size, sampler=sampler,
                                       num_workers=cfg.data.workers, pin_memory=rt.device.type == "cuda",
                                       persistent_workers=False, drop_last=True,
                                       generator=torch.Generator().manual_seed(cfg.seed))


def save_checkpoint(path: Path, m: CycleGAN, scheds, step: int, cfg: TranslateConfig, elapsed: float) -> None:
    torch_save({
        "step": step, "elapsed": elapsed, "config": to_dict(cfg),
        "gens": unwrap(m.gens).state_dict(), "discs": unwrap(m.discs).state_dict(),
        "opt_g": m.opt_g.state_dict(), "opt_d": m.opt_d.state_dict(),
        "sched": [s.state_dict() for s in scheds],
        "pool_s": m.pool_s.state_dict(), "pool_t": m.pool_t.state_dict(), "rng": rng_state(),
    }, path)


def load_checkpoint(path: Path, m: CycleGAN, scheds, device: torch.device) -> dict:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    unwrap(m.gens).load_state_dict(ckpt["gens"])
    unwrap(m.discs).load_state_dict(ckpt["discs"])
    m.opt_g.load_state_dict(ckpt["opt_g"])
    m.opt_d.load_state_dict(ckpt["opt_d"])
    for s, state in zip(scheds, ckpt["sched"]):
        s.load_state_dict(state)
    m.pool_s.load_state_dict(ckpt["pool_s"], device)
    m.pool_t.load_state_dict(ckpt["pool_t"], device)
    set_rng_state(ckpt["rng"])
    return ckpt


def snapshot(out: dict, real_s: torch.Tensor, real_t: torch.Tensor, n: int = 2):
    """Rows of real S, G(S), F(G(S)), real T, F(T), G(F(T)) for the first n frames."""
    cols = [real_s, out["fake_t"], out["rec_s"], real_t, out["fake_s"], out["rec_t"]]
    imgs = [denormalize(c[:n]) for c in cols]
    return grid([[im[i] for im in imgs] for i in range(min(n, len(imgs[0])))],
                captions=["real S", "G(S)", "F(G(S))", "real T", "F(T)", "G(F(T))"])


def train_translator(cfg: TranslateConfig, run: str | Path, resume: bool = False,
                     stop_at_step: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) a CycleGAN run. ``stop_at_step`` ends early after a checkpoint (for
    tests and time-boxed runs); the run can be resumed later. Returns the summary."""
    run = Path(run)
    rt = init_runtime(cfg.device, cfg.amp, cfg.channels_last)
    aug = AugmentConfig(size=tuple(cfg.data.size), hflip=cfg.data.hflip)
    tf = train_transform(aug)
    source = SegmentationDataset(build_index(cfg.source), tf, with_labels=False)
    target = SegmentationDataset(build_index(cfg.target), tf, with_labels=False)
    data = UnpairedDataset(source, target)
    per_epoch = cfg.steps_per_epoch or max(len(data) // (cfg.data.batch_size * rt.world_size), 1)
    total = cfg.epochs * per_epoch

    m = build_cyclegan(cfg.model, rt.device, cfg.seed, rt.channels_last)
    if rt.distributed:
        ddp = dict(device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        m.gens = torch.nn.parallel.DistributedDataParallel(m.gens, **ddp)
        m.discs = torch.nn.parallel.DistributedDataParallel(m.discs, **ddp)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s, total, cfg.decay_start, cfg.lr_decay))
              for o in (m.opt_g, m.opt_d)]
    ckpt_path = run / "checkpoints" / "last.pt"
    step, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, m, scheds, rt.device)
        step, elapsed = ckpt["step"], ckpt["elapsed"]
    writer = open_run_folder(run, cfg, step) if rt.is_main else None
    if rt.is_main:
        console.print(f"translate: {len(source)} source + {len(target)} target frames, {per_epoch} steps/epoch, "
                      f"{cfg.epochs} epochs, {rt.world_size} process(es) on {rt.device}"
                      + (f", resuming at step {step}" if step else ""))
    end = min(total, stop_at_step) if stop_at_step is not None else total
    loader = make_loader(cfg, rt, step, end, len(data), data)
    sums: dict[str, torch.Tensor] = {}
    n_sum, last = 0, {}
    t0, t_epoch = time.perf_counter(), time.perf_counter()
    with Bar(total, "translate", unit="step", completed=step, show=progress and rt.is_main) as bar:
        try:
            for batch in loader:
                real_s, real_t = rt.to_device(batch["source"]), rt.to_device(batch["target"])
                loss, out = train_step(m, real_s, real_t, rt.autocast())
                for s in scheds:
                    s.step()
                for k, v in loss.items():
                    sums[k] = sums.get(k, 0) + v
                n_sum += 1
                step += 1
                if step % cfg.log_every == 0 or step == end:
                    last = {k: float(v) / n_sum for k, v in sums.items()}  # the host sync, once per interval
                    sums, n_sum = {}, 0
                    if writer:
                        for k, v in last.items():
                            writer.add_scalar(f"loss/{k}", v, step)
                        writer.add_scalar("lr", scheds[0].get_last_lr()[0], step)
                if writer and (step % cfg.image_every == 0 or step == end):
                    picture = snapshot(out, real_s, real_t)
                    save_png(run / "images" / f"step_{step:07d}.png", picture)
                    writer.add_image("translation", picture, step, dataformats="HWC")
                if step % cfg.checkpoint_every == 0 or step == end:
                    if rt.is_main:
                        save_checkpoint(ckpt_path, m, scheds, step, cfg, elapsed + time.perf_counter() - t0)
                    rt.barrier()
                bar.advance(1, **({"G": last.get("G_total", 0.0), "D": last.get("D_T", 0.0) + last.get("D_S", 0.0)}
                                  if last else {}))
                if step % per_epoch == 0 and rt.is_main:
                    dt = time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    console.print(f"epoch {step // per_epoch}/{cfg.epochs} step {step} | "
                                  + " ".join(f"{k} {v:.3f}" for k, v in last.items())
                                  + f" | {per_epoch / dt:.2f} step/s | lr {scheds[0].get_last_lr()[0]:.2e}")
        finally:
            if writer:
                writer.close()
    wall = elapsed + time.perf_counter() - t0
    summary = {"steps": step, "total_steps": total, "finished": step >= total, "wall_seconds": round(wall, 2),
               "steps_per_second": round(step / wall, 4) if wall > 0 else None, "last_losses": last}
    if rt.is_main:
        write_json(run / "summary.json", summary)
    return summary
