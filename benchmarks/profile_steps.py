"""Where a training step's time goes: one CycleGAN step and one segmenter step at a preset's
settings, profiled with torch.profiler and grouped by kind of op (convolution, normalisation,
padding, activation, optimiser, loss, other), plus the data pipeline's time per batch
(decode + augment, as the loader does it) and the per-stage times of a finished study.

    python benchmarks/profile_steps.py                            # the CPU demo's presets
    python benchmarks/profile_steps.py --study runs/demo          # + its stage times (study.json)
    python benchmarks/profile_steps.py --json before.json         # save, to compare after a change
    python benchmarks/profile_steps.py --only segmenter --segment-set model.encoder_depth=4   # the demo's segmenter
    python benchmarks/profile_steps.py --translate configs/cyclegan_paper.yaml --translate-size 128x128 \
        --only cyclegan                                           # the paper's nets

Wall times are medians over --steps steps after --warmup; the op table is summed over the timed
steps (self CPU time). Each step also gets its FLOPs (torch.utils.flop_counter, forward and
backward) and the rate it achieves, beside this machine's measured rate for one large
convolution (the practical ceiling on CPU): a step near that ceiling is compute-bound, and no
change that keeps its arithmetic can make it much faster.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

KINDS = [  # first match wins: (kind, substrings of aten op names)
    ("convolution", ("conv", "mkldnn_convolution", "slow_conv")),
    ("normalisation", ("norm", "batch_norm", "instance_norm")),
    ("padding", ("pad", "reflection")),
    ("activation", ("relu", "tanh", "leaky", "sigmoid", "threshold")),
    ("optimiser", ("adam", "sgd", "_foreach", "lerp", "addcdiv", "addcmul")),
    ("loss", ("mse", "l1_loss", "cross_entropy", "nll", "log_softmax", "smooth_l1")),
    ("resample", ("upsample", "interpolate", "grid_sampler")),
]


def kind_of(name: str) -> str:
    n = name.lower()
    for kind, keys in KINDS:
        if any(k in n for k in keys):
            return kind
    return "other"


def conv_ceiling_gflops(repeats: int = 10) -> float:
    """GFLOP/s of one large 3x3 convolution (256 -> 256 channels, 64x64, batch 8): what this
    machine's convolution kernels reach on a shape that suits them."""
    conv, x = torch.nn.Conv2d(256, 256, 3, padding=1), torch.randn(8, 256, 64, 64)
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            conv(x)
    return 2 * 8 * 64 * 64 * 256 * 256 * 9 / ((time.perf_counter() - t0) / repeats) / 1e9


def step_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def profile_step(step, steps: int, warmup: int) -> dict:
    flops = step_flops(step)
    for _ in range(warmup):
        step()
    times = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    by_kind: dict[str, float] = {}
    for e in prof.key_averages():
        if e.key.startswith("aten::") or e.key.startswith("mkldnn"):
            by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + e.self_cpu_time_total / 1e6
    total = sum(by_kind.values())
    wall = sum(times)
    median = statistics.median(times)
    return {"seconds_per_step": median, "gflop_per_step": round(flops / 1e9, 2),
            "achieved_gflops": round(flops / median / 1e9, 1),
            "ops_seconds_share": {k: round(v / wall, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "python_and_framework_share": round(max(wall - total, 0.0) / wall, 3)}


def cyclegan_step(cfg_path: str, size: tuple[int, int] | None):
    from i2iuda.config import load_config
    from i2iuda.runtime import init_runtime
    from i2iuda.translation.methods import method
    from i2iuda.translation.train import TranslateConfig

    cfg = load_config(TranslateConfig, cfg_path, [])
    h, w = size or cfg.data.random_crop or cfg.data.size
    rt = init_runtime("cpu")
    translator = method(cfg.method).build(cfg, rt, 10_000)
    b = cfg.data.batch_size
    batch = {"source": torch.rand(b, 3, h, w) * 2 - 1, "target": torch.rand(b, 3, h, w) * 2 - 1}
    return (lambda: translator.step(batch)), cfg


def segmenter_step(cfg_path: str, overrides: list[str]):
    """One step of the preset's own trainer (its optimiser, schedule and loss) on random frames."""
    from i2iuda.config import load_config
    from i2iuda.runtime import init_runtime
    from i2iuda.segmentation.train import SegmentConfig, SegmentTrainer

    cfg = load_config(SegmentConfig, cfg_path, overrides)
    trainer = SegmentTrainer(cfg, init_runtime("cpu"), 10_000, None, Path("."))
    h, w = cfg.data.crop or cfg.data.size
    b = cfg.data.batch_size
    batch = {"image": torch.randn(b, 3, h, w), "mask": torch.randint(0, 19, (b, h, w))}
    return (lambda: trainer.step(batch)), cfg


def data_time(spec: str, size, batch: int, n: int, train: bool = True, **aug) -> float:
    """Seconds per batch of decoding + augmenting, in this process (what one loader worker does)."""
    from i2iuda.data.datasets import SegmentationDataset, build_index
    from i2iuda.data.transforms import AugmentConfig, train_transform

    ds = SegmentationDataset(build_index(spec), train_transform(AugmentConfig(size=tuple(size), **aug)),
                             with_labels=False)
    t0 = time.perf_counter()
    for i in range(n * batch):
        ds[i % len(ds)]
    return (time.perf_counter() - t0) / n


def main() -> None:
    here = Path(__file__).resolve().parents[1] / "src" / "i2iuda" / "configs"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--translate", default=str(here / "cyclegan_cpu.yaml"))
    p.add_argument("--segment", default=str(here / "segment_cpu.yaml"))
    p.add_argument("--data", default="data/synthetic", help="a synthetic benchmark, for the data pipeline's time")
    p.add_argument("--study", help="a finished study folder: print its stage times")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--segment-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of the segmenter preset, e.g. model.encoder_depth=4 (the demo's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--translate-size", help="HxW for the translator step (default: its preset's crop or size)")
    p.add_argument("--only", choices=["cyclegan", "segmenter"], help="profile one step only")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "conv_ceiling_gflops": round(conv_ceiling_gflops(), 1)}
    size = tuple(int(v) for v in a.translate_size.split("x")) if a.translate_size else None
    if a.only != "segmenter":
        step, tcfg = cyclegan_step(a.translate, size)
        out["cyclegan_step"] = profile_step(step, a.steps, a.warmup)
    if a.only != "cyclegan":
        step, scfg = segmenter_step(a.segment, a.segment_set)
        out["segmenter_step"] = profile_step(step, max(a.steps // 2, 3), 2)
    if Path(a.data).is_dir() and a.only is None:
        out["data_seconds_per_batch"] = {
            "translator": data_time(f"synthetic:{a.data}:source-train", tcfg.data.size, 2 * tcfg.data.batch_size, 20),
            "segmenter": data_time(f"synthetic:{a.data}:source-train", scfg.data.size, scfg.data.batch_size, 10,
                                   scale=tuple(scfg.data.scale), crop=tuple(scfg.data.crop), hflip=scfg.data.hflip, blur=scfg.data.blur)}
    if a.study:
        study = json.loads((Path(a.study) / "study.json").read_text())
        out["study_stage_seconds"] = study["stage_seconds"]
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
