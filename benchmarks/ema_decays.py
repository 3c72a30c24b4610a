"""Which decay of the generators' moving average (CycleGAN's ``model.ema``) lowers the colour cast at
the demo's budget: one training run of the demo's CycleGAN (bilinear, 3 blocks, lr 4e-4, 600 steps,
lr decayed linearly from the middle), with a moving average of G kept beside it per decay, averaged
as ``model.ema`` averages (gan.moving_average: the first step's weights, then the EMA; the
averages do not change the training), and every 150 steps the cast, chroma shift and checkerboard
score (appearance.py) of G(source val) against the target train frames, for the last weights and
for each average. Frames are drawn by its own simple sampler (random pairs, random flips), not the
translator's data pipeline: a comparison of decays on one trajectory, not the demo's numbers.
``--starts`` adds averages that begin later (at the lr decay's start, say): before its start step
an average is not updated, and its first update copies the weights, as ``model.ema``'s first does.

    python benchmarks/ema_decays.py SEED 0.99,0.995,0.999 [--steps 540] [--starts 0,270] [--sampling bilinear] [--json FILE]

The benchmark's frames must exist (``make demo`` generates them into data/synthetic).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from i2iuda import appearance
from i2iuda.study.diagnostics import frames_of
from i2iuda.translation.cyclegan import CycleGANConfig, build_cyclegan
from i2iuda.translation.gan import moving_average, pad_and_run, schedulers

ROOT = Path(__file__).resolve().parents[1]


def as_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).permute(2, 0, 1).float().div(127.5).sub(1)


@torch.no_grad()
def look(G: torch.nn.Module, val: torch.Tensor, target_colour: dict) -> dict:
    out = pad_and_run(G, val)
    translated = [((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for t in out]
    shift = appearance.colour_shift(appearance.colour(translated), target_colour)
    return {"cast": round(shift["cast"], 2), "chroma": round(shift["chroma"], 2),
            "checkerboard_db": round(appearance.checkerboard_db(translated), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seed", type=int)
    ap.add_argument("decays", help="comma-separated, e.g. 0.99,0.995,0.999")
    ap.add_argument("--sampling", default="bilinear")
    ap.add_argument("--root", default=str(ROOT / "data" / "synthetic"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--starts", default="0", help="comma-separated steps the averages start after")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    decays = [float(d) for d in a.decays.split(",")]
    starts = [int(x) for x in a.starts.split(",")]
    spec = lambda split: f"synthetic:{a.root}:{split}"  # noqa: E731
    source = [as_tensor(f) for f in frames_of(spec("source-train"), None)]
    target = [as_tensor(f) for f in frames_of(spec("target-train"), None)]
    val = torch.stack([as_tensor(f) for f in frames_of(spec("source-val"), 200)])
    target_colour = appearance.colour(frames_of(spec("target-train"), 200))
    cfg = CycleGANConfig(ngf=16, ndf=16, n_blocks=3, d_layers=1, identity=True, sampling=a.sampling, lr=4e-4)
    m = build_cyclegan(cfg, torch.device("cpu"), a.seed)
    m.scheds = schedulers((m.opt_g, m.opt_d), SimpleNamespace(lr_decay="linear", decay_start=0.5), a.steps)
    averages = {f"ema {d:g}" + (f" from {s0}" if s0 else ""): (s0, moving_average(m.gens.G, d))
                for d in decays for s0 in starts}
    rng = torch.Generator().manual_seed(a.seed)
    rows = {}
    for step in range(1, a.steps + 1):
        s = source[int(torch.randint(len(source), (), generator=rng))]
        t = target[int(torch.randint(len(target), (), generator=rng))]
        s = s.flip(-1) if torch.rand((), generator=rng) < 0.5 else s
        t = t.flip(-1) if torch.rand((), generator=rng) < 0.5 else t
        m.step({"source": s[None], "target": t[None]})
        for s0, avg in averages.values():
            if step > s0:
                avg.update_parameters(m.gens.G)
        if step % 150 == 0 or step == a.steps:
            rows[step] = {"last": look(m.gens.G, val, target_colour),
                          **{name: look(avg.module, val, target_colour) for name, (s0, avg) in averages.items() if step > s0}}
            print(a.seed, step, json.dumps(rows[step]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
