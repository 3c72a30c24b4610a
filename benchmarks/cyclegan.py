"""Translator speed: training steps/s and translation images/s of CycleGAN, CyCADA (CycleGAN with
the semantic loss, f an untrained DeepLabV3+ of --segmenter: the time does not depend on its
weights), CUT and FastCUT, on
CPU or CUDA, with and without autocast and channels_last. Random inputs (not zeros), warm-up
excluded, median of timed runs; with several methods, rounds alternate between them so that a
machine's drift hits all alike.

    python benchmarks/cyclegan.py --size 256x256 --batch 1 --identity          # the reference's config
    python benchmarks/cyclegan.py --size 180x360 --batch 2 --variants fp32,bf16,fp32-cl,bf16-cl
    python benchmarks/cyclegan.py --methods cyclegan,cut,fastcut --size 256x256 --batch 1 --identity --rounds 3
    python benchmarks/cyclegan.py --device cuda --peak-tflops 989 ...          # prints MFU
    python benchmarks/cyclegan.py --methods cyclegan,cyclegan@bilinear,cyclegan@conv_bilinear,cyclegan@antialias --size 64x128 --batch 1 \
        --ngf 16 --ndf 16 --blocks 3 --d-layers 1 --identity --rounds 3 --steps 20   # the demo's, per up-sampling
    python benchmarks/cyclegan.py --reference PATH --size 128x128 --batch 1 --identity --rounds 3 --steps 3

--reference PATH adds junyanz/pytorch-CycleGAN-and-pix2pix's CycleGANModel (a checkout of it at PATH:
its models/ and util/ packages) as method "reference", same nets, same inputs, fp32, its own
optimize_parameters(): the side-by-side comparison of one training step.

FLOPs per step are counted with torch.utils.flop_counter (forward and backward of all nets);
"saved MB" is what autograd keeps for the backward pass in one step (the activations: what
makes a method heavy or light in training memory, on any device); on CUDA also the peak
allocated memory.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode



def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Reference:
    """junyanz's CycleGANModel behind the two calls bench() makes: step(batch) and inference_module()."""

    def __init__(self, args):
        sys.path.insert(0, args.reference)
        try:
            from models.cycle_gan_model import CycleGANModel
        except ImportError as e:
            raise SystemExit(f"--reference {args.reference}: not a pytorch-CycleGAN-and-pix2pix checkout ({e})")
        if args.blocks not in (6, 9):
            raise SystemExit(f"--blocks {args.blocks}: the reference builds 6 or 9 residual blocks only")
        opt = SimpleNamespace(  # its options, at the values its CycleGAN training uses
            gpu_ids=[0] if args.device.startswith("cuda") else [], isTrain=True, checkpoints_dir="/tmp", name="bench",
            preprocess="resize_and_crop", input_nc=3, output_nc=3, ngf=args.ngf, ndf=args.ndf,
            netG=f"resnet_{args.blocks}blocks", netD="n_layers", n_layers_D=args.d_layers, norm="instance",
            no_dropout=True, init_type="normal", init_gain=0.02, pool_size=args.pool, gan_mode="lsgan",
            lambda_A=10.0, lambda_B=10.0, lambda_identity=0.5 if args.identity else 0.0, lr=2e-4, beta1=0.5,
            direction="AtoB")
        self.model = CycleGANModel(opt)

    def step(self, batch):
        self.model.set_input({"A": batch["source"], "B": batch["target"], "A_paths": [], "B_paths": []})
        self.model.optimize_parameters()

    def inference_module(self):
        return self.model.netG_A


def build(args, name: str, variant: str):
    """(translator, autocast, batches) for a method name: cyclegan, cyclegan_sem, cut, fastcut or reference,
    optionally @ an up-sampling of the generator (cyclegan@bilinear)."""
    from i2iuda.runtime import init_runtime
    from i2iuda.translation.methods import method
    from i2iuda.segmentation.models import FrozenSegmenter, ModelConfig, build_model
    from i2iuda.translation.train import TranslateConfig

    device = torch.device(args.device)
    amp = "bf16" if "bf16" in variant else "fp16" if "fp16" in variant else "none"
    cl = variant.endswith("-cl")
    model = {"ngf": args.ngf, "ndf": args.ndf, "n_blocks": args.blocks, "d_layers": args.d_layers}
    h, w = (int(v) for v in args.size.split("x"))
    gen = torch.Generator().manual_seed(0)
    if name == "reference":
        if variant != "fp32":
            raise SystemExit(f"--variants {variant}: the reference is measured in fp32 only")
        batches = [(torch.rand(args.batch, 3, h, w, generator=gen) * 2 - 1).to(device) for _ in range(4)]
        return Reference(args), init_runtime(args.device, "none", False), batches
    name, _, sampling = name.partition("@")
    if sampling:
        model["sampling"] = sampling
    cyclegan = name.startswith("cyclegan")
    if cyclegan:
        model.update(identity=args.identity, pool_size=args.pool)
    else:
        model.update(mode=name)
    judge = None
    if name == "cyclegan_sem":
        model["semantic"] = 1.0
        judge = FrozenSegmenter(build_model(ModelConfig(backbone=args.segmenter)))
    tcfg = TranslateConfig(method="cyclegan" if cyclegan else "cut", model=model, device=args.device, amp=amp,
                           channels_last=cl).typed()
    rt = init_runtime(args.device, amp, cl)
    m = method(tcfg.method).build(tcfg, rt, 10_000, judge=judge)
    fmt = torch.channels_last if cl else torch.contiguous_format
    batches = [(torch.rand(args.batch, 3, h, w, generator=gen) * 2 - 1).to(device).contiguous(memory_format=fmt)
               for _ in range(4)]  # rotate inputs
    return m, rt, batches


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs."""
    total = [0]

    def pack(x):
        total[0] += x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fn()
    return total[0]


def bench(args, name: str, variant: str, built=None) -> dict:
    m, rt, batches = built or build(args, name, variant)
    device = rt.device
    step = lambda i: m.step({"source": batches[i % 4], "target": batches[(i + 1) % 4]})
    with FlopCounterMode(display=False) as fc:
        step(0)
    flops = fc.get_total_flops()
    saved = saved_bytes(lambda: step(1))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup):
        step(i)
    times = []
    for i in range(args.steps):
        sync(device)
        t = time.perf_counter()
        step(i)
        sync(device)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)

    G = m.inference_module()
    G = G.G if hasattr(G, "G") else G  # CycleGAN's module holds G and F
    G.eval()
    with torch.no_grad(), rt.autocast():
        for _ in range(args.warmup):
            G(batches[0])
        ttimes = []
        for i in range(args.steps):
            sync(device)
            t = time.perf_counter()
            G(batches[i % 4])
            sync(device)
            ttimes.append(time.perf_counter() - t)
    G.train()
    tr_s = statistics.median(ttimes)
    row = {"method": name, "variant": variant, "size": args.size, "batch": args.batch, "device": str(device),
           "threads": torch.get_num_threads(), "s_per_step": round(step_s, 4), "steps_per_s": round(1 / step_s, 3),
           "tflop_per_step": round(flops / 1e12, 3), "achieved_tflops": round(flops / step_s / 1e12, 3),
           "saved_mb": round(saved / 2**20, 1), "translate_images_per_s": round(args.batch / tr_s, 2)}
    if device.type == "cuda":
        row["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
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
    p.add_argument("--d-layers", type=int, default=3, help="PatchGAN depth (3: 70x70 patches)")
    p.add_argument("--identity", action="store_true", help="CycleGAN's identity loss")
    p.add_argument("--methods", default="cyclegan", help="comma list of cyclegan, cyclegan_sem, cut, fastcut, each optionally @transposed, @resize, "
                   "@bilinear, @conv_bilinear or @antialias")
    p.add_argument("--reference", default=None, metavar="PATH",
                   help="a pytorch-CycleGAN-and-pix2pix checkout: adds its CycleGAN step as method 'reference'")
    p.add_argument("--segmenter", default="tu-resnet10t", help="CyCADA's f (cyclegan_sem): the CPU preset's backbone")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds over the methods")
    p.add_argument("--pool", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="fp32", help="comma list of fp32, bf16, fp16, each optionally with -cl")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.reference and "reference" not in args.methods.split(","):
        args.methods += ",reference"
    rows = []
    # everything is built before anything is timed: the reference turns on cudnn.benchmark
    # globally when built, and every method is to be measured under the same settings
    built = {(name, v): build(args, name, v) for v in args.variants.split(",") for name in args.methods.split(",")}
    for r in range(args.rounds):
        for v in args.variants.split(","):
            for name in args.methods.split(","):
                rows.append({"round": r, **bench(args, name, v, built[name, v])})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'method':18s} {'variant':8s} {'size':>9s} {'batch':>5s} {'s/step':>8s} {'steps/s':>8s} {'TFLOP/step':>10s} "
          f"{'TFLOP/s':>8s} {'saved MB':>8s} {'transl img/s':>12s}")
    for r in rows:
        print(f"{r['method']:18s} {r['variant']:8s} {r['size']:>9s} {r['batch']:>5d} {r['s_per_step']:8.3f} "
              f"{r['steps_per_s']:8.3f} {r['tflop_per_step']:10.3f} {r['achieved_tflops']:8.3f} {r['saved_mb']:8.1f} "
              f"{r['translate_images_per_s']:12.2f}" + (f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
