"""The one training loop of i2iuda: translators and segmenters alike.

A trainer is reduced to its step and its state, the ``Trainer`` protocol below (its optional
parts have defaults: a class that subclasses it gets them). The loop owns the rest, once for
every trainer: the run folder with its resolved config, TensorBoard and ``losses.jsonl``, the
progress bar, atomic checkpoints (``last.pt``, plain data loaded with weights_only: see
checkpoint.py) at the end of every epoch, every ``checkpoint_every`` steps and at the end, exact
resume (trainer state, the fp16 gradient scaler, RNG states, step, the running epoch's loss
sums), one writer per run folder (runlock.py), DDP barriers, and ``summary.json``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from . import runlock
from .checkpoint import fits, load_state, save_state, save_weights
from .config import load_config, save_config, to_dict
from .errors import UserError
from .io import atomic_write_text, save_png, write_json
from .progress import Bar, say
from .runtime import Runtime, rng_state, set_rng_state


@dataclass
class Schedule:
    total: int  # steps of the whole run
    per_epoch: int  # steps between end_of_epoch calls (and checkpoints)
    log_every: int = 50  # steps between loss logs: the only host syncs
    checkpoint_every: int = 500
    image_every: int | None = None  # steps between trainer.picture() grids (None: never)


@runtime_checkable
class Trainer(Protocol):
    """What the loop trains. ``step``, ``state_dict``, ``load_state_dict`` and ``describe`` are
    each trainer's own; the rest have defaults here (subclass the protocol to get them)."""

    show: tuple[str, ...] = ()  # loss names shown on the progress bar
    weights_kind: str | None = None  # checkpoints/<weights_kind>.safetensors: what inference loads

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimisation step (the batch already on the device) -> its losses, detached scalar
        tensors left on the device (the loop syncs once per log interval)."""
        ...

    def state_dict(self) -> dict:
        """What a checkpoint holds besides the loop's own state: tensors and plain data only."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...

    def describe(self) -> str:
        """One line printed at the start."""
        ...

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The tensors inference needs, written at every checkpoint (None: nothing to write)."""
        return None

    def end_of_epoch(self, epoch: int, step: int, mean_losses: dict[str, float]) -> dict:
        """Validate, keep the best, ...; returns scalars to log."""
        return {}

    def picture(self):
        """HxWx3 uint8 grid of the last step's images, or None."""
        return None

    def summary(self) -> dict:
        """Extra fields of summary.json."""
        return {}


class Diverged(UserError):
    """A loss became NaN or infinite: the run stopped, its last checkpoint as it was."""


class FiniteWatch:
    """Stops a run whose loss becomes NaN or infinite. Each step's losses are checked one step
    late (the check of step t waits for it while step t+1 is already queued: no stall on a GPU),
    and at once before anything is logged, validated or saved, so no checkpoint holds a
    diverged state. Under fp16 the gradient scaler skips a step that overflowed, which a
    non-finite loss can be: then only ``patience`` such steps in a row stop the run."""

    def __init__(self, run: Path, patience: int = 1):
        self.run, self.patience = run, patience
        self.pending, self.saved, self.bad_in_a_row = None, None, 0  # saved: the step of the last checkpoint

    def add(self, step: int, loss: dict[str, torch.Tensor]) -> None:
        previous = self.pending
        self.pending = (step, loss, torch.stack([torch.isfinite(v).all() for v in loss.values()]))
        if previous is not None:
            self.check(*previous)

    def flush(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.check(*pending)

    def check(self, step: int, loss: dict[str, torch.Tensor], finite: torch.Tensor) -> None:
        if bool(finite.all()):
            self.bad_in_a_row = 0
            return
        self.bad_in_a_row += 1
        if self.bad_in_a_row < self.patience:
            return
        bad = ", ".join(f"{k} = {float(v)}" for (k, v), ok in zip(loss.items(), finite.tolist()) if not ok)
        kept = (f"{self.run / 'checkpoints' / 'last.pt'} (step {self.saved}) is as it was"
                if self.saved is not None else "no checkpoint was written")
        raise Diverged(f"{self.run}: step {step}: the loss is not finite ({bad}): the run diverged and stopped; "
                       f"{kept}. Look at the learning rate and loss weights, the pretrained weights and the labels "
                       f"(all ignored?), then resume (--resume; a study resumes by itself)")


def _on_device(batch: dict, rt: Runtime) -> dict:
    return {k: rt.to_device(v) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class LossLog:
    """TensorBoard scalars and RUN/losses.jsonl (the file the report plots, one JSON line per
    log interval). A resumed run first drops the lines a killed run wrote after its checkpoint."""

    def __init__(self, run: Path, step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run / "losses.jsonl"
        if self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines() if _logged_step(ln) <= step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        self.file = open(self.path, "a")
        self.tb = SummaryWriter(str(run / "tb"), purge_step=step if step else None)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        for k, v in values.items():
            self.tb.add_scalar(f"{prefix}{k}", v, step)
        self.file.write(json.dumps({"step": step, **{prefix + k: v for k, v in values.items()}}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def _logged_step(line: str) -> float:
    """The step of a losses.jsonl line; a line cut short by a kill counts as after any checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def train_loop(trainer: Trainer, make_loader: Callable[[int, int], Any], run: str | Path, cfg: Any, rt: Runtime,
               schedule: Schedule, resume: bool = False, stop_at_step: int | None = None,
               progress: bool = True, name: str = "train") -> dict:
    """Train ``trainer`` on the batches of ``make_loader(start_step, end_step)`` in ``run``.
    ``stop_at_step`` ends early after a checkpoint (for tests and time-boxed runs); the run
    resumes later with ``resume=True``. Returns the summary (also RUN/summary.json)."""
    with runlock.holding(run):
        return _loop(trainer, make_loader, Path(run), cfg, rt, schedule, resume, stop_at_step, progress, name)


def _loop(trainer, make_loader, run: Path, cfg, rt: Runtime, schedule: Schedule, resume: bool,
          stop_at_step: int | None, progress: bool, name: str) -> dict:
    ckpt_path = run / "checkpoints" / "last.pt"
    step, elapsed, epoch_sums, epoch_n = 0, 0.0, {}, 0
    if resume and ckpt_path.exists():
        ckpt = load_state(ckpt_path, rt.device)
        try:
            trainer.load_state_dict(ckpt["trainer"])
            # runs from before the loop saved the scaler hold it in the trainer's state
            scaler = ckpt["scaler"] if "scaler" in ckpt else ckpt["trainer"].get("scaler")
            if rt.scaler and scaler:
                rt.scaler.load_state_dict(scaler)
            set_rng_state(ckpt["rng"])
            step, elapsed = ckpt["step"], ckpt["elapsed"]
            epoch_sums = {k: torch.tensor(v, device=rt.device) for k, v in ckpt["epoch_sums"].items()}
            epoch_n = ckpt["epoch_n"]
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise fits(ckpt_path, e) from None
    log = None
    if rt.is_main:
        run.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run / "config.yaml")
        log = LossLog(run, step)
        say(f"{name}: {trainer.describe()}, {schedule.per_epoch} steps/epoch, {schedule.total} steps, "
                      f"{rt.world_size} process(es) on {rt.device}" + (f", resuming at step {step}" if step else ""))

    watch = FiniteWatch(run, patience=20 if rt.scaler else 1)
    watch.saved = step if resume and ckpt_path.exists() else None

    def save_checkpoint() -> None:
        watch.saved = step
        if rt.is_main:
            config, weights = to_dict(cfg), trainer.weights()
            if weights is not None:
                save_weights(ckpt_path.parent / f"{trainer.weights_kind}.safetensors", weights,
                             trainer.weights_kind, config=config, step=step)
            save_state({"step": step, "elapsed": elapsed + time.perf_counter() - t0, "config": config,
                        "epoch_sums": {k: float(v) for k, v in epoch_sums.items()}, "epoch_n": epoch_n,
                        "rng": rng_state(), "trainer": trainer.state_dict(),
                        "scaler": rt.scaler.state_dict() if rt.scaler else None}, ckpt_path)
        rt.barrier()

    end = min(schedule.total, stop_at_step) if stop_at_step is not None else schedule.total
    sums: dict[str, torch.Tensor] = {}
    n_sum, last = 0, {}
    t0 = t_epoch = time.perf_counter()
    try:
        with Bar(schedule.total, name, unit="step", completed=step, show=progress and rt.is_main) as bar:
            for batch in make_loader(step, end):
                loss = trainer.step(_on_device(batch, rt))
                step += 1
                watch.add(step, loss)
                epoch_end = step % schedule.per_epoch == 0
                if (epoch_end or step % schedule.log_every == 0 or step % schedule.checkpoint_every == 0 or step == end
                        or (schedule.image_every and step % schedule.image_every == 0)):
                    watch.flush()  # nothing is logged, pictured, validated or saved from a diverged step
                n_sum, epoch_n = n_sum + 1, epoch_n + 1
                for k, v in loss.items():
                    sums[k] = sums.get(k, 0) + v
                    epoch_sums[k] = epoch_sums.get(k, 0) + v
                if step % schedule.log_every == 0 or epoch_end or step == end:
                    last = {k: float(v) / n_sum for k, v in sums.items()}  # the host sync, once per interval
                    sums, n_sum = {}, 0
                    if log:
                        log.scalars(step, last, "loss/")
                if log and schedule.image_every and (step % schedule.image_every == 0 or step == end):
                    picture = trainer.picture()
                    if picture is not None:
                        save_png(run / "images" / f"step_{step:07d}.png", picture)
                        log.tb.add_image("images", picture, step, dataformats="HWC")
                bar.advance(1, **{k: last[k] for k in trainer.show if k in last})
                if epoch_end:
                    epoch = step // schedule.per_epoch
                    means = {k: float(v) / max(epoch_n, 1) for k, v in epoch_sums.items()}
                    epoch_sums, epoch_n = {}, 0
                    logged = trainer.end_of_epoch(epoch, step, means) or {}
                    if log:
                        log.scalars(step, logged)
                        dt, t_epoch = time.perf_counter() - t_epoch, time.perf_counter()
                        eta = round((schedule.total - step) * dt / schedule.per_epoch)
                        who = "" if progress else f"{name} {run.name}: "  # without a bar (a study's lanes)
                        say(f"{who}epoch {epoch}/{schedule.total // schedule.per_epoch} step {step} | "
                                      + " ".join(f"{k} {v:.4g}" for k, v in {**means, **logged}.items()
                                                 if isinstance(v, float))
                                      + f" | {schedule.per_epoch / dt:.2f} step/s, eta {eta // 60}:{eta % 60:02d}")
                if epoch_end or step % schedule.checkpoint_every == 0 or step == end:
                    save_checkpoint()
    finally:
        if log:
            log.close()
    wall = elapsed + time.perf_counter() - t0
    summary = {"steps": step, "total_steps": schedule.total, "finished": step >= schedule.total,
               "wall_seconds": round(wall, 2), "steps_per_second": round(step / wall, 4) if wall > 0 else None,
               "last_losses": last, **trainer.summary()}
    if rt.is_main:
        write_json(run / "summary.json", summary)
    return summary


def resolve_run_config(cls: type, run: Path, config: str | Path | None, overrides: list[str], resume: bool):
    """The config of a training run: its saved config when resuming (no changes allowed), else
    defaults <- --config <- overrides, refusing to overwrite a run that is already there."""
    run = Path(run)
    runlock.check_free(run)  # a live process writing there: say which, before anything else
    saved = run / "config.yaml"
    if resume:
        if not saved.is_file():
            raise UserError(f"--resume: {saved} not found (nothing to resume in {run})")
        if config or overrides:
            raise UserError("--resume continues a run with its saved config: drop --config and overrides")
        return load_config(cls, saved)
    if (run / "checkpoints" / "last.pt").exists():
        raise UserError(f"--out {run}: a run is already there; pass --resume to continue it or choose another folder")
    return load_config(cls, config, overrides)
