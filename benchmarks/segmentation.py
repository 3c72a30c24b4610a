"""Segmentation speed: training iterations/s and evaluation images/s for a model and size, on
CPU or CUDA, with and without autocast and channels_last. Random inputs, warm-up excluded,
median of timed runs.

    python benchmarks/segmentation.py --arch deeplabv3plus --backbone resnet18 --size 64x128 --batch 8
    python benchmarks/segmentation.py --arch deeplabv2 --backbone resnet101 --size 512x1024 --batch 2 \\
        --device cuda --variants fp32,bf16-cl --peak-tflops 989
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as nnf
from torch.utils.flop_counter import FlopCounterMode

from i2iuda.segmentation.models import ModelConfig, build_model


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, steps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(args, variant):
    device = torch.device(args.device)
    amp = "bf16" if "bf16" in variant else "fp16" if "fp16" in variant else "none"
    cl = variant.endswith("-cl")
    h, w = (int(v) for v in args.size.split("x"))
    model = build_model(ModelConfig(arch=args.arch, backbone=args.backbone, output_stride=args.output_stride)).to(device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, 3, h, w, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 19, (args.batch, h, w), device=device)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)) \
        if amp != "none" else (lambda: torch.autocast(device.type, enabled=False))

    def train_step():
        with ctx():
            logits = model(x)
        loss = nnf.cross_entropy(logits.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    with FlopCounterMode(display=False) as fc:
        train_step()
    flops = fc.get_total_flops()
    t_train = timed(train_step, device, args.steps, args.warmup)
    model.eval()

    @torch.no_grad()
    def infer():
        with ctx():
            model(x).argmax(1)

    t_eval = timed(infer, device, args.steps, args.warmup)
    row = {"variant": variant, "model": f"{args.arch}-{args.backbone}", "size": args.size, "batch": args.batch,
           "device": str(device), "train_it_per_s": round(1 / t_train, 3), "train_images_per_s": round(args.batch / t_train, 2),
           "eval_images_per_s": round(args.batch / t_eval, 2), "tflop_per_step": round(flops / 1e12, 4),
           "achieved_tflops": round(flops / t_train / 1e12, 3)}
    if args.peak_tflops:
        row["mfu"] = round(flops / t_train / 1e12 / args.peak_tflops, 4)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="deeplabv3plus")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--output-stride", type=int, default=16)
    p.add_argument("--size", default="64x128")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="fp32")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = [bench(args, v) for v in args.variants.split(",")]
    print(f"{'variant':9s} {'model':24s} {'size':>9s} {'batch':>5s} {'train it/s':>10s} {'train img/s':>11s} "
          f"{'eval img/s':>10s} {'TFLOP/s':>8s}")
    for r in rows:
        print(f"{r['variant']:9s} {r['model']:24s} {r['size']:>9s} {r['batch']:>5d} {r['train_it_per_s']:10.3f} "
              f"{r['train_images_per_s']:11.2f} {r['eval_images_per_s']:10.2f} {r['achieved_tflops']:8.3f}"
              + (f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
