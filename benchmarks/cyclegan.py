"""CycleGAN speed: training steps/s and translation images/s, on CPU or CUDA, with and without
autocast and channels_last. Random inputs (not zeros), warm-up excluded, median of timed runs.

    python benchmarks/cyclegan.py --size 256x256 --batch 1 --identity          # the reference's config
    python benchmarks/cyclegan.py --size 180x360 --batch 2 --variants fp32,bf16,fp32-cl,bf16-cl
    python benchmarks/cyclegan.py --device cuda --peak-tflops 989 ...          # prints MFU

FLOPs per step are counted with torch.utils.flop_counter (forward and backward of all nets).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from i2iuda.translation.cyclegan import CycleGANConfig, build_cyclegan, train_step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(args, variant: str) -> dict:
    device = torch.device(args.device)
    amp = "bf16" if "bf16" in variant else "fp16" if "fp16" in variant else "none"
    cl = variant.endswith("-cl")
    h, w = (int(v) for v in args.size.split("x"))
    cfg = CycleGANConfig(ngf=args.ngf, ndf=args.ndf, n_blocks=args.blocks, identity=args.identity, pool_size=args.pool)
    m = build_cyclegan(cfg, device, channels_last=cl)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if amp != "none" else torch.autocast(device.type, enabled=False))
    fmt = torch.channels_last if cl else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(args.batch, 3, h, w, generator=gen) * 2 - 1).to(device).contiguous(memory_format=fmt)
               for _ in range(4)]  # rotate inputs

    with FlopCounterMode(display=False) as fc:
        train_step(m, batches[0], batches[1], autocast)
    flops = fc.get_total_flops()
    for i in range(args.warmup):
        train_step(m, batches[i % 4], batches[(i + 1) % 4], autocast)
    times = []
    for i in range(args.steps):
        sync(device)
        t = time.perf_counter()
        train_step(m, batches[i % 4], batches[(i + 1) % 4], autocast)
        sync(device)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)

    G = m.gens.G.eval()
    with torch.no_grad(), autocast:
        for _ in range(args.warmup):
            G(batches[0])
        ttimes = []
        for i in range(args.steps):
            sync(device)
            t = time.perf_counter()
            G(batches[i % 4])
            sync(device)
            ttimes.append(time.perf_counter() - t)
    tr_s = statistics.median(ttimes)
    row = {"variant": variant, "size": args.size, "batch": args.batch, "device": str(device),
           "threads": torch.get_num_threads(), "s_per_step": round(step_s, 4), "steps_per_s": round(1 / step_s, 3),
           "tflop_per_step": round(flops / 1e12, 3), "achieved_tflops": round(flops / step_s / 1e12, 3),
           "translate_images_per_s": round(args.batch / tr_s, 2)}
    if args.peak_tflops:
        row["mfu"] = round(flops / step_s / 1e12 / args.peak_tflops, 4)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="180x360")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--blocks", type=int, default=9)
    p.add_argument("--identity", action="store_true")
    p.add_argument("--pool", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="fp32", help="comma list of fp32, bf16, fp16, each optionally with -cl")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    for v in args.variants.split(","):
        rows.append(bench(args, v))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'variant':10s} {'size':>9s} {'batch':>5s} {'s/step':>8s} {'steps/s':>8s} {'TFLOP/step':>10s} "
          f"{'TFLOP/s':>8s} {'transl img/s':>12s}")
    for r in rows:
        print(f"{r['variant']:10s} {r['size']:>9s} {r['batch']:>5d} {r['s_per_step']:8.3f} {r['steps_per_s']:8.3f} "
              f"{r['tflop_per_step']:10.3f} {r['achieved_tflops']:8.3f} {r['translate_images_per_s']:12.2f}"
              + (f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
