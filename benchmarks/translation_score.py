"""Translation quality as the CycleGAN paper measures it (its "FCN-score"): a segmenter trained
on real target frames (the judge, e.g. a study's oracle) segments the translated source frames,
scored against the source labels. A translator that keeps every region's meaning while taking
the target's look scores close to the judge's own score on target val; one that repaints trees
as facades scores low. Used to tune the CPU preset's translator without a whole study per try.

    i2iuda segment train --out runs/judge --config configs/segment_cpu.yaml \\
        --train synthetic:data/synthetic:target-train --val synthetic:data/synthetic:target-val
    i2iuda translate train --out runs/cg --config my_translate.yaml \\
        --source synthetic:data/synthetic:source-train --target synthetic:data/synthetic:target-train
    python benchmarks/translation_score.py --translator runs/cg --judge runs/judge \\
        --source synthetic:data/synthetic:source-val

``--translator none`` scores the raw source frames (no translation), the floor to beat.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from i2iuda.segmentation.evaluate import run_eval
from i2iuda.translation.apply import apply_translator, translated_spec
from i2iuda.translation.train import load_translator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--translator", required=True, help="translate-train run folder (any method), or 'none'")
    p.add_argument("--judge", required=True, help="segmentation run folder trained on target labels")
    p.add_argument("--source", required=True, help="labelled source spec, e.g. synthetic:data/synthetic:source-val")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.translator == "none":
            data = args.source
        else:
            translator, cfg = load_translator(args.translator, args.device)
            apply_translator(translator, args.source, tmp, tuple(cfg.data.size), workers=1, batch_size=16,
                             progress=False)
            data = translated_spec(args.source, tmp, "all")
        r = run_eval(Path(args.judge), data, Path(tmp) / "eval", pictures=0, device=args.device, workers=1,
                     progress=False)
    print(json.dumps({"translator": args.translator, "judge": args.judge, "source": args.source,
                      "mIoU": round(r["mIoU"], 2), "PA": round(r["PA"], 2)}))


if __name__ == "__main__":
    main()
