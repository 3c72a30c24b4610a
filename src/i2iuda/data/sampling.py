"""A deterministic, resumable stream of training samples.

Training sees one endless stream of sample positions p = 0, 1, 2, ...; position p is frame
``perm_c[p % n]`` of cycle ``c = p // n`` (a fresh permutation per pass over the data), and its
random augmentation is seeded by (seed, p). So a run resumed at step k sees exactly the frames
and augmentations it would have seen, whatever the number of DataLoader workers; under DDP,
rank r of W takes positions ``step * batch * W + r * batch + [0, batch)``.

Loaders built on it get a ``generator`` of their own: a DataLoader iterator otherwise draws its
base seed from the global torch RNG, which would shift dropout masks between a run and its
resumption (they create different numbers of iterators before a given step).
"""
from __future__ import annotations

import numpy as np
import torch


class StreamSampler(torch.utils.data.Sampler):
    """Yields ``(draw_seed, index)`` for steps ``start_step .. total_steps - 1`` of this rank."""

    def __init__(self, n: int, batch: int, seed: int, start_step: int, total_steps: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.total, self.rank, self.world = start_step, total_steps, rank, world

    def __len__(self) -> int:
        return max(self.total - self.start, 0) * self.batch

    def _perm(self, cycle: int) -> np.ndarray:
        return np.random.default_rng([self.seed, cycle]).permutation(self.n)

    def __iter__(self):
        cycle, perm = -1, None
        for step in range(self.start, self.total):
            for j in range(self.batch):
                p = (step * self.world + self.rank) * self.batch + j
                if p // self.n != cycle:
                    cycle = p // self.n
                    perm = self._perm(cycle)
                yield int(np.random.default_rng([self.seed, p, 7]).integers(2**62)), int(perm[p % self.n])


class Seeded(torch.utils.data.Dataset):
    """Runs ``dataset[index]`` with torch's RNG seeded by the draw, so transforms are reproducible."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        draw, index = key
        # the CPU generator only, as fork_rng restores: the transforms run on the CPU, and
        # torch.manual_seed would also reseed every accelerator's generator for good (and, before
        # CUDA starts, record a stack trace each frame: 1-2% of a CPU training step)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(draw)
            return self.dataset[index]


class MixedStreamSampler(torch.utils.data.Sampler):
    """Batches with fixed shares of several data sets (self-training: translated source and
    pseudo-labelled target). ``parts`` = [(frames, frames per batch), ...]; each part is its own
    StreamSampler (the first with ``seed``, so one part alone is the plain stream), and its
    indices are offset into the ConcatDataset of the parts, in order. Position-based like
    StreamSampler: a resumed run sees the same frames and augmentations."""

    def __init__(self, parts: list[tuple[int, int]], seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world: int = 1):
        self.parts = [(n, b) for n, b in parts if b > 0]
        self.offsets = np.cumsum([0] + [n for n, _ in parts])[:-1][[i for i, (_, b) in enumerate(parts) if b > 0]]
        self.streams = [StreamSampler(n, b, seed + 7919 * i, start_step, total_steps, rank, world)
                        for i, (n, b) in enumerate(parts) if b > 0]
        self.batch = sum(b for _, b in self.parts)

    def __len__(self) -> int:
        return len(self.streams[0]) // self.streams[0].batch * self.batch if self.streams else 0

    def __iter__(self):
        iters = [iter(s) for s in self.streams]
        for _ in range(len(self) // max(self.batch, 1)):
            for it, (_, b), off in zip(iters, self.parts, self.offsets):
                for _ in range(b):
                    draw, index = next(it)
                    yield draw, int(off) + index
