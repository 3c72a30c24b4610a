"""Frames/s at the real data sets' sizes: translating 1914x1052 GTA5-size frames at their full size
(``translate apply --size full``) and evaluating 2048x1024 Cityscapes-size frames at 512x1024 with
logits upsampled to the labels' full resolution (``segment eval --size 512x1024``), with the
trained runs you give (any translator run and segment run; speed, not quality, is measured).

    python benchmarks/full_size.py --translator runs/demo/translate/cyclegan \\
        --segmenter runs/demo/segment/source_only --frames 8

Frames come from ``i2iuda synth --preset real-sizes`` (written to --data if absent). Wall time of
the whole call, model loading excluded, decoding and writing included.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from i2iuda.data.synthetic import generate_real_sizes
from i2iuda.segmentation.evaluate import EvalProtocol, run_eval
from i2iuda.translation.apply import apply_translator
from i2iuda.translation.train import load_translator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--translator", type=Path, required=True)
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("data/real_sizes_bench"))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    a = p.parse_args()
    generate_real_sizes(a.data, n_source=a.frames, n_target_train=1, n_target_val=a.frames, progress=False)
    translator, _ = load_translator(a.translator, a.device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        apply_translator(translator, f"gta5:{a.data / 'gta5'}", Path(tmp) / "translated", None,
                         batch_size=1, workers=a.workers, progress=False)
        translate = a.frames / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_eval(a.segmenter, f"cityscapes:{a.data / 'cityscapes'}:val", Path(tmp) / "eval",
                 EvalProtocol(size=(512, 1024)), pictures=0, device=a.device, workers=a.workers, progress=False,
                 batch_size=a.batch_size)
        evaluate = a.frames / (time.perf_counter() - t0)
    print(f"translate --size full, 1914x1052: {translate:.3f} frames/s")
    print(f"segment eval 512x1024 -> 2048x1024: {evaluate:.3f} frames/s (model loading included)")


if __name__ == "__main__":
    main()
