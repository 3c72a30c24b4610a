"""docs/images/benchmark.png: the same source scenes at several source_gap values, beside target
frames (the built-in benchmark, data/synthetic.py).

    python benchmarks/benchmark_picture.py [--out docs/images/benchmark.png] [--gaps 0,0.9,2] [--n 5]
"""
import argparse

import numpy as np

from i2iuda.data.synthetic import DEFAULT_SOURCE_GAP, NoiseBank, SynthConfig, render_frame
from i2iuda.io import save_png
from i2iuda.pictures import grid

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", default="docs/images/benchmark.png")
p.add_argument("--gaps", default=f"0,{DEFAULT_SOURCE_GAP:g},2")
p.add_argument("--n", type=int, default=5)
args = p.parse_args()
bank = NoiseBank(64, 128, np.random.default_rng([0, 99]))
gaps = [float(g) for g in args.gaps.split(",")]
cols = [[render_frame("source", i, "all", SynthConfig(source_gap=g), bank)[0] for g in gaps]
        + [render_frame("target", i, "train", SynthConfig(), bank)[0]] for i in range(args.n)]
names = [f"source, gap {g:g}" + (" (default)" if g == DEFAULT_SOURCE_GAP else " (hard)" if g == 2 else "")
         for g in gaps] + ["target"]
big = [[np.kron(im, np.ones((2, 2, 1), np.uint8)) for im in row] for row in cols]
save_png(args.out, grid(big, captions=names))
print(f"wrote {args.out}")
