"""GPU readiness in one command: every CUDA code path of i2iuda and the hardware utilisation,
checked in a few minutes (``make gpu-check``).

    python benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]
                                   [--peak-tflops 989] [--quick]
    python benchmarks/gpu_check.py --device cpu --quick      # the same code paths on tiny inputs (the suite runs it)

Parts, each under its own time limit, the JSON rewritten after each one (a run cut off keeps
what it measured):

  env        device, driver, CUDA, cuDNN, torch and torchvision versions, memory, the peak used for MFU
  trainers   a few steps of every trainer (CycleGAN, CUT, CycleGAN with CyCADA's semantic loss,
             DeepLabV3+ R101, DeepLabV2-R101, online self-training with MIC) in fp32, bf16 autocast,
             fp16 with the GradScaler, and bf16 with channels_last: losses finite, weights moving,
             seconds per step, peak memory
  compile    torch.compile of the DeepLabV3+ R101 training step (i2iuda does not compile by default:
             this says whether it would work and pay)
  resume     a segmenter run stopped and resumed on the device: the same last loss and weights as
             the uninterrupted run, to a tolerance (cuDNN's autotuned kernels are not bitwise stable)
  ddp        ``torchrun`` over every GPU there (NCCL; gloo on CPU): a segment and a translate run
  apply      ``translate apply --size full`` of 1914x1052 frames with the paper's CycleGAN: frames/s
  eval       ``segment eval`` of DeepLabV3+ R101 at 512x1024 inputs, logits upsampled to 2048x1024: frames/s
  mfu        model FLOP utilisation (FLOPs counted by torch's FlopCounterMode / seconds / the device's
             peak) of the CycleGAN step at 256x256 and 512x1024 and of DeepLabV3+ R101 training on
             512x1024 crops (batch 2), bf16 with channels_last as in the published presets, peak memory

On CPU the CUDA-only parts (fp16, NCCL, compile) say that they were skipped and why; --quick
shrinks every input (and the nets where a part only checks a code path) so the whole runs in
about a minute. Exit code 1 if any part failed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]

# Dense bf16 tensor-core peaks (TFLOP/s) by device name, from the vendors' data sheets; a name
# not here gives no MFU unless --peak-tflops is given.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.1, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "A6000": 154.8}


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def handler(signum, frame):
        raise PartTimeout(f"cut off after its {seconds:.0f} s limit")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # the process's, so far


# --- the parts -------------------------------------------------------------------------------------

def part_env(args, device) -> dict:
    import torchvision

    out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
           "device": str(device), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(gpu=p.name, gpus=torch.cuda.device_count(), memory_gb=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   bf16=torch.cuda.is_bf16_supported())
        try:
            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            out["driver"] = None
    out["peak_bf16_tflops"] = args.peak_tflops or next(
        (v for k, v in PEAK_BF16_TFLOPS.items() if device.type == "cuda" and k in out["gpu"]), None)
    return out


def _translator(name: str, args, device, amp: str, cl: bool, size):
    from i2iuda.runtime import init_runtime
    from i2iuda.translation.methods import method
    from i2iuda.segmentation.models import FrozenSegmenter, ModelConfig, build_model
    from i2iuda.translation.train import TranslateConfig

    nets = {"ngf": 16, "ndf": 16, "n_blocks": 2, "d_layers": 1} if args.quick else {"ngf": 64, "ndf": 64, "n_blocks": 9,
                                                                                   "d_layers": 3}
    model = {**nets, "identity": True, "pool_size": 50} if name.startswith("cyclegan") else {**nets, "mode": "cut"}
    judge = None
    if name == "cyclegan_sem":  # CyCADA: f a DeepLabV3+ (its weights do not change the cost)
        model["semantic"] = 1.0
        judge = FrozenSegmenter(build_model(ModelConfig(backbone="resnet50" if not args.quick else "tu-resnet10t")))
    tcfg = TranslateConfig(method="cut" if name == "cut" else "cyclegan", model=model, device=str(device), amp=amp,
                           channels_last=cl).typed()
    rt = init_runtime(str(device), amp, cl)
    m = method(tcfg.method).build(tcfg, rt, 10_000, judge=judge)
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    frames = [(torch.rand(1, 3, *size, generator=g) * 2 - 1).to(device).contiguous(memory_format=fmt) for _ in range(3)]
    params = lambda: list(m.inference_module().parameters())  # noqa: E731 - the generator(s)
    return (lambda i: m.step({"source": frames[i % 3], "target": frames[(i + 1) % 3]})), params


def _segmenter(name: str, args, device, amp: str, cl: bool, size):
    from i2iuda.config import load_config
    from i2iuda.runtime import init_runtime
    from i2iuda.segmentation import online as O
    from i2iuda.segmentation.train import SegmentTrainer

    arch = {"deeplabv3plus_r101": ["model.arch=deeplabv3plus", "model.backbone=resnet101"],
            "deeplabv2_r101": ["model.arch=deeplabv2", "model.backbone=resnet101"],
            "online_mic": ["model.arch=deeplabv3plus", f"model.backbone={'resnet18' if args.quick else 'resnet101'}",
                           "online.mic=true"],
            "daformer_mitb5": _daformer(args)}[name]
    cfg = load_config(O.OnlineConfig, None, arch + [f"device={device}", f"amp={amp}", f"channels_last={str(cl).lower()}",
                                                   f"data.size=[{size[0]},{size[1]}]", "data.batch_size=2",
                                                   "train=x", "val=x", "target=x", "lr=0.001"])
    rt = init_runtime(str(device), amp, cl)
    online = name in ("online_mic", "daformer_mitb5")
    trainer = (O.OnlineTrainer if online else SegmentTrainer)(cfg, rt, 10_000, None, None)
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = [(torch.rand(2, 3, *size, generator=g) * 2 - 1).to(device).contiguous(memory_format=fmt) for _ in range(2)]
    y = torch.randint(0, 19, (2, *size), generator=g).to(device)
    valid = torch.ones(2, *size, dtype=torch.bool, device=device)
    step = lambda i: trainer.step({"image": x[i % 2], "mask": y, "target": x[(i + 1) % 2],  # noqa: E731
                                   "target_valid": valid})
    return step, lambda: list(trainer.model.parameters())


def _daformer(args) -> list[str]:
    """DAFormer's network and training (MiT-B5, or B0 for --quick) with the feature distance, whose
    ImageNet encoder is a file written here (its weights do not change the cost)."""
    from i2iuda.segmentation.daformer import DAFormer

    backbone = "mit_b0" if args.quick else "mit_b5"
    weights = Path(tempfile.gettempdir()) / f"i2iuda_gpu_check_{backbone}.pth"
    if not weights.is_file():
        torch.save(DAFormer(backbone).encoder.state_dict(), weights)
    return ["model.arch=daformer", f"model.backbone={backbone}", f"model.pretrained={weights}", "optimizer=adamw",
            "backbone_lr_mult=0.1", "norm_decay_mult=0", "online.alpha=0.999", "online.jitter=0.2",
            "online.feature_distance=0.005", "online.ignore_top=0.0293", "online.ignore_bottom=0.2344"]


TRAINERS = {"cyclegan": _translator, "cut": _translator, "cyclegan_sem": _translator,
            "deeplabv3plus_r101": _segmenter, "deeplabv2_r101": _segmenter, "online_mic": _segmenter,
            "daformer_mitb5": _segmenter}


def run_trainer(name: str, variant: str, args, device, steps: int) -> dict:
    amp = {"fp32": "none", "bf16": "bf16", "fp16": "fp16", "bf16-cl": "bf16"}[variant]
    cl = variant.endswith("-cl")
    translator = TRAINERS[name] is _translator
    size = (32, 32) if args.quick else ((256, 256) if translator else (512, 512))
    if args.quick and not translator:
        size = (32, 64)
    reset_peak(device)
    step, params = TRAINERS[name](name, args, device, amp, cl, size)
    before = [p.detach().float().clone() for p in params()]
    step(0)  # warm-up (and cuDNN's autotuning)
    sync(device)
    t0 = time.perf_counter()
    losses = {}
    for i in range(1, steps + 1):
        losses = step(i)
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    after = [p.detach().float() for p in params()]
    moved = sum(float((a - b).abs().sum()) for a, b in zip(after, before))
    finite = all(math.isfinite(float(v)) for v in losses.values())
    return {"trainer": name, "variant": variant, "size": list(size), "ok": finite and moved > 0, "losses_finite": finite,
            "weights_moved": moved, "s_per_step": round(dt, 4), "peak_mb": peak_mb(device),
            "losses": {k: round(float(v), 4) for k, v in losses.items()}}


def part_trainers(args, device, record) -> dict:
    variants = ["fp32", "bf16", "fp16", "bf16-cl"]
    rows, skipped = [], []
    for name in TRAINERS:
        for v in variants:
            if v == "fp16" and device.type != "cuda":
                skipped.append(f"{name} fp16: the GradScaler path is CUDA-only (amp=fp16 is refused on CPU)")
                continue
            try:
                rows.append(run_trainer(name, v, args, device, steps=2 if args.quick else 3))
            except PartTimeout:
                raise
            except Exception as e:  # noqa: BLE001 - one broken path is a result, not the end of the check
                rows.append({"trainer": name, "variant": v, "ok": False, "error": f"{type(e).__name__}: {e}"[:400]})
            record({"rows": rows, "skipped": skipped})  # keep what was measured if the part is cut off
    return {"rows": rows, "skipped": skipped, "ok": all(r["ok"] for r in rows)}


def part_compile(args, device) -> dict:
    if device.type != "cuda":
        return {"skipped": "torch.compile is checked on CUDA only (on 2 CPU cores its compile takes minutes, and "
                           "the compiled step was slower here: docs/speed.md)"}
    from i2iuda.segmentation.models import ModelConfig, build_model

    model = build_model(ModelConfig(arch="deeplabv3plus", backbone="resnet101")).to(device).to(
        memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(2, 3, 512, 1024, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 19, (2, 512, 1024), device=device)

    def step(m):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nnf.cross_entropy(m(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    out = {}
    for label, m in (("eager", model), ("compiled", torch.compile(model))):
        t0 = time.perf_counter()
        step(m)
        sync(device)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(5):
            loss = step(m)
        sync(device)
        out[label] = {"first_step_s": round(first, 2), "s_per_step": round((time.perf_counter() - t0) / 5, 4),
                      "loss_finite": math.isfinite(float(loss))}
    out["speedup"] = round(out["eager"]["s_per_step"] / out["compiled"]["s_per_step"], 3)
    out["ok"] = out["compiled"]["loss_finite"]
    return out


def _synth(work: Path, n_source=24, n_target=12) -> Path:
    from i2iuda.data.synthetic import SynthConfig, generate

    return generate(work / "bench", SynthConfig(n_source=n_source, n_target_train=n_target, n_target_val=n_target,
                                                workers=2), progress=False)


def part_resume(args, device, work: Path) -> dict:
    from i2iuda.config import load_config
    from i2iuda.segmentation.train import SegmentConfig, train_segmenter

    root = _synth(work)
    size = "[32,64]" if args.quick else "[64,128]"
    over = [f"model.backbone={'tu-resnet10t' if args.quick else 'resnet18'}", f"data.size={size}", f"data.crop={size}",
            "data.batch_size=4", "data.workers=0", f"device={device}", "epochs=2", "steps_per_epoch=3", "log_every=1",
            f"train=synthetic:{root}:source-train", f"val=synthetic:{root}:source-val",
            f"amp={'bf16' if device.type == 'cuda' else 'none'}"]
    cfg = load_config(SegmentConfig, None, over)
    a = train_segmenter(cfg, work / "once", progress=False)
    train_segmenter(cfg, work / "twice", stop_at_step=4, progress=False)
    b = train_segmenter(cfg, work / "twice", resume=True, progress=False)
    la, lb = a["history"][-1]["train_loss"], b["history"][-1]["train_loss"]
    wa = torch.load(work / "once" / "checkpoints" / "last.pt", weights_only=True)["trainer"]["model"]
    wb = torch.load(work / "twice" / "checkpoints" / "last.pt", weights_only=True)["trainer"]["model"]
    diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].is_floating_point())
    rel = abs(la - lb) / max(abs(la), 1e-8)
    return {"last_loss": [la, lb], "relative_loss_difference": rel, "max_weight_difference": diff,
            "ok": rel < 5e-2, "tolerance": "relative last-epoch loss difference < 5% (cuDNN autotuning is not "
                                            "bitwise stable; on CPU the resume is exact)"}


def part_ddp(args, device, work: Path) -> dict:
    root = _synth(work)
    n = torch.cuda.device_count() if device.type == "cuda" else 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "i2iuda.cli"]
    out = {"processes": n, "backend": "nccl" if device.type == "cuda" else "gloo"}
    seg = base + ["segment", "train", "--out", str(work / "ddp_seg"), f"--train=synthetic:{root}:source-train",
                  f"--val=synthetic:{root}:source-val", "model.backbone=resnet18", "data.size=[64,128]",
                  "data.crop=[64,128]", "data.batch_size=2", "data.workers=0", "epochs=1", "steps_per_epoch=3",
                  f"device={device.type}", f"model.sync_bn={'true' if device.type == 'cuda' else 'false'}"]
    tra = base + ["translate", "train", "--out", str(work / "ddp_cyclegan"), f"--source=synthetic:{root}:source",
                  f"--target=synthetic:{root}:target-train", "model.ngf=16", "model.ndf=16", "model.n_blocks=2",
                  "data.size=[64,128]", "data.batch_size=1", "data.workers=0", "epochs=1", "steps_per_epoch=3",
                  f"device={device.type}"]
    runs = (("segment", seg),) if args.quick else (("segment", seg), ("translate", tra))  # quick: one launch
    for label, cmd in runs:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        out[label] = {"rc": r.returncode, "seconds": round(time.perf_counter() - t0, 1),
                      "tail": (r.stdout + r.stderr)[-600:] if r.returncode else ""}
    out["ok"] = all(out[k]["rc"] == 0 for k, _ in runs)
    return out


def _real_sizes(work: Path, n_val: int) -> Path:
    from i2iuda.data.synthetic import generate_real_sizes

    return generate_real_sizes(work.parent / "real", n_source=n_val, n_target_train=2, n_target_val=n_val,
                               workers=min(8, os.cpu_count() or 2), progress=False)


def part_apply(args, device, work: Path) -> dict:
    from i2iuda.config import load_config
    from i2iuda.translation.apply import apply_translator
    from i2iuda.translation.train import TranslateConfig, load_translator, train_translator

    n = 2 if args.quick else 16
    real = _real_sizes(work, n)
    nets = ["model.ngf=8", "model.ndf=8", "model.n_blocks=1"] if args.quick else ["model.ngf=64", "model.ndf=64",
                                                                                 "model.n_blocks=9"]
    amp = "bf16" if device.type == "cuda" else "none"
    cfg = load_config(TranslateConfig, None, nets + [
        f"source=gta5:{real}/gta5", f"target=cityscapes:{real}/cityscapes:train", "data.size=[256,256]",
        "data.batch_size=1", "data.workers=0", "epochs=1", "steps_per_epoch=1", f"device={device}", f"amp={amp}",
        f"channels_last={'true' if device.type == 'cuda' else 'false'}"])
    train_translator(cfg, work / "translator", progress=False)
    translator, _ = load_translator(work / "translator", str(device), amp)
    reset_peak(device)
    t0 = time.perf_counter()
    r = apply_translator(translator, f"gta5:{real}/gta5", work / "applied", None, "s2t", 1, 2, progress=False)
    dt = time.perf_counter() - t0
    return {"frames": r["translated"], "size": "1914x1052 (full, padded to a multiple of 4)", "amp": amp,
            "nets": "tiny (quick)" if args.quick else "the paper's (ngf 64, 9 blocks)", "seconds": round(dt, 2),
            "frames_per_s": round(r["translated"] / dt, 3), "peak_mb": peak_mb(device), "ok": r["translated"] == n}


def part_eval(args, device, work: Path) -> dict:
    from i2iuda.config import load_config
    from i2iuda.segmentation.evaluate import EvalProtocol, run_eval
    from i2iuda.segmentation.train import SegmentConfig, train_segmenter

    n = 2 if args.quick else 16
    real = _real_sizes(work, n)
    backbone = "tu-resnet10t" if args.quick else "resnet101"
    cfg = load_config(SegmentConfig, None, [
        f"model.backbone={backbone}", "data.size=[512,1024]", "data.crop=[256,512]", "data.batch_size=2",
        "data.workers=2", "epochs=1", "steps_per_epoch=1", f"device={device}", "data.val_size=[256,512]",
        f"train=cityscapes:{real}/cityscapes:val", f"val=cityscapes:{real}/cityscapes:val"])
    train_segmenter(cfg, work / "segmenter", progress=False)
    reset_peak(device)
    t0 = time.perf_counter()
    m = run_eval(work / "segmenter", f"cityscapes:{real}/cityscapes:val", work / "eval",
                 EvalProtocol(size=(512, 1024)), pictures=0, device=str(device), workers=2, progress=False)
    dt = time.perf_counter() - t0
    return {"frames": m["frames"], "model": f"deeplabv3plus-{backbone}", "input": "512x1024", "labels": "2048x1024",
            "seconds": round(dt, 2), "frames_per_s": round(m["frames"] / dt, 3), "peak_mb": peak_mb(device),
            "ok": m["frames"] == n}


def part_mfu(args, device, peak: float | None) -> dict:
    rows = []
    cases = [("cyclegan", (256, 256)), ("cyclegan", (512, 1024)), ("deeplabv3plus_r101", (512, 1024))]
    if args.quick:
        cases = [("cyclegan", (32, 32)), ("deeplabv3plus_r101", (32, 64))]
    for name, size in cases:
        amp, cl = ("bf16", True) if device.type == "cuda" else ("none", False)
        reset_peak(device)
        step, _ = TRAINERS[name](name, args, device, amp, cl, size)
        with FlopCounterMode(display=False) as fc:
            step(0)
        flops = fc.get_total_flops()
        step(1)
        sync(device)
        n = 3 if args.quick else 10
        t0 = time.perf_counter()
        for i in range(n):
            step(i)
        sync(device)
        dt = (time.perf_counter() - t0) / n
        row = {"trainer": name, "size": list(size), "batch": 1 if name == "cyclegan" else 2, "amp": amp,
               "channels_last": cl, "tflop_per_step": round(flops / 1e12, 4), "s_per_step": round(dt, 4),
               "achieved_tflops": round(flops / dt / 1e12, 3), "peak_mb": peak_mb(device)}
        row["mfu"] = round(flops / dt / 1e12 / peak, 4) if peak else None
        rows.append(row)
    return {"rows": rows, "peak_bf16_tflops": peak, "ok": True,
            "note": None if peak else "no peak for this device (give --peak-tflops): FLOP/s only"}


# --- driver ----------------------------------------------------------------------------------------

# Each part's cap; on CUDA they add up to 8 minutes, so that the whole check fits a 15-minute
# device loan with its start-up and a rerun of one part.
LIMITS = {"env": 20, "trainers": 150, "compile": 90, "resume": 40, "ddp": 60, "apply": 40, "eval": 40, "mfu": 40}
QUICK_LIMITS = {"env": 30, "trainers": 240, "compile": 10, "resume": 120, "ddp": 120, "apply": 120, "eval": 120, "mfu": 90}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/gpu_check_<device>.json)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--quick", action="store_true", help="tiny inputs (CPU: the suite's run)")
    p.add_argument("--parts", default=",".join(LIMITS), help="comma list of parts to run")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: --device cuda but CUDA is not available on this machine (use --device cpu --quick)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"gpu_check_{device.type}{'_quick' if args.quick else ''}.json")
    result = {"schema": "i2iuda.gpu_check/1", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
              "parts": {}}

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(out)

    limits = QUICK_LIMITS if args.quick else LIMITS
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        for name in args.parts.split(","):
            def record(partial, name=name):
                result["parts"][name] = {**partial, "partial": True}
                write()

            t0 = time.perf_counter()
            try:
                with time_limit(limits[name]):
                    fn = {"env": lambda: part_env(args, device), "trainers": lambda: part_trainers(args, device, record),
                          "compile": lambda: part_compile(args, device),
                          "resume": lambda: part_resume(args, device, work / "resume"),
                          "ddp": lambda: part_ddp(args, device, work / "ddp"),
                          "apply": lambda: part_apply(args, device, work / "apply"),
                          "eval": lambda: part_eval(args, device, work / "eval"),
                          "mfu": lambda: part_mfu(args, device, result["parts"].get("env", {}).get("peak_bf16_tflops"))}[name]
                    r = fn()
            except PartTimeout as e:
                r = {**{k: v for k, v in result["parts"].get(name, {}).items() if k != "partial"}, "ok": False,
                     "error": str(e)}
            except Exception as e:  # noqa: BLE001 - the check goes on; the part says what broke
                r = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:600]}"}
            r["seconds"] = round(time.perf_counter() - t0, 1)
            result["parts"][name] = r
            write()
            status = "skipped" if isinstance(r.get("skipped"), str) else ("ok" if r.get("ok", True) else "FAILED")
            print(f"{name:9s} {status:8s} {r['seconds']:6.1f} s  {summary(name, r)}", flush=True)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    result["ok"] = all(r.get("ok", True) for r in result["parts"].values())
    write()
    print(f"{'all':9s} {'ok' if result['ok'] else 'FAILED':8s} {result['seconds']:6.1f} s  -> {out}")
    return 0 if result["ok"] else 1


def summary(name: str, r: dict) -> str:
    if "error" in r:
        return r["error"][:160]
    if isinstance(r.get("skipped"), str):
        return r["skipped"][:160]
    if name == "env":
        return f"{r.get('gpu', r['cpu'])}, torch {r['torch']}, CUDA {r.get('cuda')}, driver {r.get('driver')}"
    if name == "trainers":
        bad = [f"{x['trainer']}/{x['variant']}" for x in r["rows"] if not x["ok"]]
        return (f"{len(r['rows']) - len(bad)}/{len(r['rows'])} trainer x precision paths ok"
                + (f"; failed: {', '.join(bad)}" if bad else "") + (f"; {len(r['skipped'])} skipped" if r["skipped"] else ""))
    if name == "compile":
        return f"compiled {r['compiled']['s_per_step']} s/step vs eager {r['eager']['s_per_step']} ({r['speedup']}x)"
    if name == "resume":
        return f"last loss {r['last_loss'][0]:.4f} vs resumed {r['last_loss'][1]:.4f}"
    if name == "ddp":
        return f"{r['processes']} processes ({r['backend']}): " + ", ".join(
            f"{k} rc {r[k]['rc']}" for k in ("segment", "translate") if k in r)
    if name in ("apply", "eval"):
        return f"{r['frames_per_s']} frames/s over {r['frames']} frames, peak {r['peak_mb']} MB"
    if name == "mfu":
        return "; ".join(f"{x['trainer']} {x['size'][0]}x{x['size'][1]}: {x['achieved_tflops']} TFLOP/s"
                         + (f" (MFU {100 * x['mfu']:.1f}%)" if x["mfu"] else "") for x in r["rows"])
    return ""


if __name__ == "__main__":
    sys.exit(main())
