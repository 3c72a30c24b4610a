"""Where and how a run executes: device, mixed precision, DDP, seeding and RNG state.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; ``init_distributed`` joins the group (NCCL on
CUDA, gloo on CPU). Everything else works the same with one process.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .errors import UserError



def loader_workers(n: int) -> int:
    """DataLoader workers for a setting of ``n``: at most the CPUs this process may run on, shared
    by the processes torchrun starts on this machine (a preset written for an 8-core GPU node
    would otherwise oversubscribe a 2-core laptop, and torch warns at every loader)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(n, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None  # fp16 only: see ``backward``

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), scaled under fp16 so that small gradients do not underflow to zero
        (bf16 has fp32's exponent range and needs no scaling)."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, *optimizers: torch.optim.Optimizer, last: bool = True) -> None:
        """optimizer.step() for each; under fp16 the scaler unscales, skips a step whose gradients
        overflowed, and adapts its scale once per training step: at the call with ``last`` (a
        method that steps one optimiser before the next backward passes ``last=False`` first)."""
        for opt in optimizers:
            self.scaler.step(opt) if self.scaler else opt.step()
        if self.scaler and last:
            self.scaler.update()

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_runtime(device: str = "auto", amp: str = "none", channels_last: bool = False) -> Runtime:
    if amp not in ("none", "bf16", "fp16"):
        raise UserError(f"amp={amp!r}: expected none, bf16 or fp16")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
        dev = torch.device("cuda", local if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UserError(f"device={device!r}: expected auto, cpu or cuda[:N]")
    if amp == "fp16" and dev.type == "cpu":
        raise UserError("amp=fp16 needs CUDA; on CPU use amp=bf16 or none")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    return Runtime(dev, rank, world, amp, channels_last, scaler)


def numpy_state_as_plain(state: tuple) -> dict:
    """numpy's legacy RNG state tuple ('MT19937', keys, pos, has_gauss, gauss) as plain data."""
    _, keys, pos, has_gauss, gauss = state
    return {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def rng_state() -> dict:
    """Every RNG's state as plain data (lists, numbers, tensors): checkpoints load with weights_only."""
    state = {"python": list(random.getstate()), "numpy": numpy_state_as_plain(np.random.get_state(legacy=True)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model

