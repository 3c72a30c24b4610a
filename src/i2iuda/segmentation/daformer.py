"""DAFormer's network (Hoyer, Dai, Van Gool, CVPR 2022; lhoyer/DAFormer): a Mix Transformer encoder
(SegFormer's MiT-B0 ... B5, here segmentation-models-pytorch's ``mit_b*``, the same module names
and tensor shapes as the reference's backbone, so a SegFormer ``mit_b5.pth`` loads as is) and the
DAFormer head with context-aware feature fusion (decode_heads/daformer_head.py with
configs/_base_/models/daformer_sepaspp_mitb5.py):

    e_i   = Linear(C_i, 256)(f_i), each of the four encoder stages embedded
    e     = concat_i resize(e_i, to the first stage's 1/4 size, bilinear, align_corners=False)   (4 x 256)
    a_1   = ReLU(BN(Conv1x1(e)))                                             the ASPP's 1x1 branch
    a_d   = ReLU(BN(Conv1x1(ReLU(BN(DWConv3x3_d(e))))))  for d = 6, 12, 18   depthwise-separable, dilated
    h     = ReLU(BN(Conv3x3(concat(a_1, a_6, a_12, a_18))))                   the bottleneck to 256
    logits = Conv1x1(Dropout2d_0.1(h))                                        N(0, 0.01) weights

with no image pooling in the ASPP and no bias in a convolution a norm follows: 3,712,275 head
parameters for MiT-B5's widths (64, 128, 320, 512) and 19 classes. The logits (1/4 of the input)
are upsampled bilinearly to the input size, as the reference's loss and inference do.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as nnf


def conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """mmcv's ConvModule with BN and ReLU: no conv bias (the norm has one)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                                   groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SeparableASPP(nn.Module):
    """The context-aware fusion: a 1x1 branch and depthwise-separable 3x3 branches at ``dilations``
    (norm and activation after the depthwise and after the pointwise conv), concatenated, then a
    3x3 bottleneck; no image pooling."""

    def __init__(self, cin: int, channels: int, dilations=(1, 6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            conv_bn_relu(cin, channels, 1) if d == 1 else
            nn.Sequential(conv_bn_relu(cin, cin, 3, d, groups=cin), conv_bn_relu(cin, channels, 1))
            for d in dilations)
        self.bottleneck = conv_bn_relu(len(dilations) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([b(x) for b in self.branches], 1))


class DAFormerHead(nn.Module):
    """Per-stage Linear embeddings to ``channels``, fused at 1/4 by the separable ASPP, classified."""

    def __init__(self, in_channels: list[int], num_classes: int = 19, channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.ModuleList(nn.Linear(c, channels) for c in in_channels)
        self.fuse = SeparableASPP(len(in_channels) * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        embedded = []
        for f, linear in zip(feats, self.embed):
            n, _, h, w = f.shape
            e = linear(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)
            embedded.append(e if (h, w) == size else nnf.interpolate(e, size=size, mode="bilinear", align_corners=False))
        return self.classifier(self.dropout(self.fuse(torch.cat(embedded, 1))))


class DAFormer(nn.Module):
    """An smp encoder with four stages (``mit_b0`` ... ``mit_b5``; any smp encoder works) and the
    DAFormer head: (N, 3, H, W) -> logits (N, classes, H, W). ``encoder`` is the backbone (its
    parameters are the backbone's for the optimiser; its output is what the feature distance reads)."""

    def __init__(self, backbone: str = "mit_b5", num_classes: int = 19, channels: int = 256, pretrained: bool = False):
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        self.encoder = get_encoder(backbone, in_channels=3, depth=5, weights="imagenet" if pretrained else None)
        stages = [c for c in self.encoder.out_channels[-4:]]
        self.head = DAFormerHead(stages, num_classes, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.encoder(x)[-4:])
        return nnf.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# The reference's names (mmseg's EncoderDecoder with DAFormerHead: mmcv ConvModules hold .conv and
# .bn, a DepthwiseSeparableConvModule .depthwise_conv and .pointwise_conv) -> this module's.
REFERENCE_NAMES = [
    (r"^backbone\.", "encoder."),
    (r"^decode_head\.embed_layers\.(\d+)\.proj\.", r"head.embed.\1."),
    (r"^decode_head\.fuse_layer\.aspp_modules\.0\.conv\.", "head.fuse.branches.0.0."),
    (r"^decode_head\.fuse_layer\.aspp_modules\.0\.bn\.", "head.fuse.branches.0.1."),
    (r"^decode_head\.fuse_layer\.aspp_modules\.(\d+)\.depthwise_conv\.conv\.", r"head.fuse.branches.\1.0.0."),
    (r"^decode_head\.fuse_layer\.aspp_modules\.(\d+)\.depthwise_conv\.bn\.", r"head.fuse.branches.\1.0.1."),
    (r"^decode_head\.fuse_layer\.aspp_modules\.(\d+)\.pointwise_conv\.conv\.", r"head.fuse.branches.\1.1.0."),
    (r"^decode_head\.fuse_layer\.aspp_modules\.(\d+)\.pointwise_conv\.bn\.", r"head.fuse.branches.\1.1.1."),
    (r"^decode_head\.fuse_layer\.bottleneck\.conv\.", "head.fuse.bottleneck.0."),
    (r"^decode_head\.fuse_layer\.bottleneck\.bn\.", "head.fuse.bottleneck.1."),
    (r"^decode_head\.conv_seg\.", "head.classifier."),
]
# A DAFormer training checkpoint holds three networks: the student (model.), its EMA teacher
# (ema_model.) and the frozen ImageNet copy of the feature distance (imnet_model.).
PARTS = ("model.", "ema_model.", "imnet_model.")


def reference_state(tensors: dict[str, torch.Tensor], part: str = "model.") -> tuple[dict, list[str]]:
    """A reference state dict (a DAFormer release or training checkpoint, an mmseg segmentor, or a
    SegFormer ``mit_bX.pth`` backbone) in this module's names -> ({name: (its name in the file,
    tensor)}, names in the file left out): of a checkpoint with several networks, ``part``'s (the
    student by default)."""
    import re

    named = {(k[len("module."):] if k.startswith("module.") else k): k for k in tensors}
    if any(k.startswith(PARTS) for k in named):
        left = [named[k] for k in named if not k.startswith(part)]
        named = {k[len(part):]: orig for k, orig in named.items() if k.startswith(part)}
    else:
        left = []
    if not any(k.startswith(("backbone.", "decode_head.")) for k in named):  # a bare backbone (SegFormer)
        named = {f"backbone.{k}": orig for k, orig in named.items()}
    out = {}
    for k, orig in named.items():
        for pattern, repl in REFERENCE_NAMES:
            new, n = re.subn(pattern, repl, k)
            if n:
                out[new] = (orig, tensors[orig])
                break
        else:
            left.append(orig)
    return out, left
