"""The online self-training step (DACS, + MIC; DAFormer's network with DACS, + its feature
distance) against the plain segmenter step, side by side.

    python benchmarks/online.py [--size 64x128] [--batch 8] [--steps 10] [--rounds 3] [--threads 1]
                                [--device cpu] [--depth 4] [--head 64] [--variants plain,dacs,...]
                                [--json FILE]

Variants: plain (DeepLabV3+ ResNet-10-T, the CPU preset's segmenter, one CE step), dacs, dacs+mic,
daformer (MiT-B0 with a --head-channel DAFormer head, DACS and its training: param-wise AdamW,
class-balanced crops do not enter a step), daformer+rcs+mic, daformer_head256 (the paper's head
width), lite0+fd (DeepLabV3+ on EfficientNet-Lite0 with DACS and the ImageNet feature distance).

Each variant runs in a process of its own (so that its peak memory is its own), the rounds
alternate between the variants (so that a machine's drift hits each alike); reported: seconds
per step (median over rounds), the step's share spent in the strong augmentation, and the
process's peak memory (CPU: resident set; CUDA: the allocator's peak). Random frames and labels:
the arithmetic, not the data, is measured.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

VARIANTS = ("plain", "dacs", "dacs+mic", "daformer", "daformer+mic", "daformer_head256", "lite0", "lite0+fd")


def one(variant: str, args) -> dict:
    import resource

    import torch

    from i2iuda.config import load_config
    from i2iuda.runtime import init_runtime
    from i2iuda.segmentation import online as O
    from i2iuda.segmentation.train import SegmentTrainer

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    model = ["model.backbone=tu-resnet10t", f"model.encoder_depth={args.depth}"]
    if variant.startswith("daformer"):
        head = 256 if variant == "daformer_head256" else args.head
        model = ["model.arch=daformer", "model.backbone=mit_b0", f"model.decoder_channels={head}", "norm_decay_mult=0"]
    if variant.startswith("lite0"):
        from pathlib import Path
        import tempfile

        from i2iuda.segmentation.models import ModelConfig, build_model

        weights = Path(tempfile.gettempdir()) / "i2iuda_bench_lite0.pth"  # its values do not change the cost
        torch.save(build_model(ModelConfig(backbone="tu-tf_efficientnet_lite0")).encoder.model.state_dict(), weights)
        model = ["model.backbone=tu-tf_efficientnet_lite0", f"model.pretrained={weights}",
                 f"online.feature_distance={0.005 if 'fd' in variant else 0}"]
    over = model + [f"data.size=[{h},{w}]", f"data.batch_size={args.batch}", f"device={args.device}", "optimizer=adamw",
                    "lr=0.004", "train=x", "val=x", "target=x", f"online.mic={'true' if 'mic' in variant else 'false'}"]
    cfg = load_config(O.OnlineConfig, None, over)
    rt = init_runtime(args.device)
    trainer = (SegmentTrainer if variant == "plain" else O.OnlineTrainer)(cfg, rt, 10_000, None, None)
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(args.batch, 3, h, w, generator=g) * 2 - 1,
             "mask": torch.randint(0, 19, (args.batch, h, w), generator=g),
             "target": torch.rand(args.batch, 3, h, w, generator=g) * 2 - 1,
             "target_valid": torch.ones(args.batch, h, w, dtype=torch.bool)}
    batch = {k: v.to(rt.device) for k, v in batch.items()}
    aug = [0.0]
    if variant != "plain":  # time the strong augmentation inside the step
        inner = O.strong_augment

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = inner(*a, **k)
            aug[0] += time.perf_counter() - t0
            return out

        O.strong_augment = timed
    sync = torch.cuda.synchronize if rt.device.type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up
        trainer.step(batch)
    sync()
    aug[0] = 0.0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.step(batch)
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    peak = (torch.cuda.max_memory_allocated() / 2**20 if rt.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"variant": variant, "s_per_step": dt, "augment_share": aug[0] / args.steps / dt, "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="64x128")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--head", type=int, default=64, help="the DAFormer head's channels of the daformer variants")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    runs = {v: [] for v in args.variants.split(",")}
    for r in range(args.rounds):
        for v in runs:
            cmd = [sys.executable, __file__, "--one", v] + [a for a in sys.argv[1:] if a != "--json" and not a.endswith(".json")]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            runs[v].append(json.loads(out))
            print(f"round {r + 1}: {v:9s} {runs[v][-1]['s_per_step']:.3f} s/step", flush=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    result = {"args": vars(args), "variants": {}}
    base = med([x["s_per_step"] for x in runs.get("plain") or next(iter(runs.values()))])
    for v, xs in runs.items():
        s = med([x["s_per_step"] for x in xs])
        result["variants"][v] = {"s_per_step": s, "vs_plain": s / base, "augment_share": med([x["augment_share"] for x in xs]),
                                 "peak_mb": max(x["peak_mb"] for x in xs), "rounds": [x["s_per_step"] for x in xs]}
        r = result["variants"][v]
        print(f"{v:9s} {s:.3f} s/step ({r['vs_plain']:.2f}x plain), augmentation {100 * r['augment_share']:.0f}% "
              f"of the step, peak {r['peak_mb']:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
