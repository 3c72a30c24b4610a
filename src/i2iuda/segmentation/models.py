"""Segmentation models: DeepLabV3+ and DeepLabV3 from segmentation-models-pytorch, and
DeepLabV2-ResNet101 (the model of the published UDA tables) on torchvision's ResNet.

Every model maps (N, 3, H, W) to logits (N, classes, H, W).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as nnf

from ..checkpoint import check_finite, fits, load_into, load_state, load_weights, older_run
from ..config import at_least, from_dict
from ..errors import UserError
from ..progress import say


@dataclass
class ModelConfig:
    # daformer: DAFormer's head on a Mix Transformer (backbone mit_b0 ... mit_b5; segmentation/daformer.py)
    arch: Literal["deeplabv3plus", "deeplabv3", "deeplabv2", "daformer"] = "deeplabv3plus"
    backbone: str = "resnet101"  # resnet18 | resnet50 | resnet101 | mobilenet_v2 (light, for CPU) | mit_b5 | any smp encoder
    output_stride: Literal[8, 16] = 16
    # DeepLabV3/V3+ (smp) only: how many encoder stages feed the ASPP (4 drops the last ResNet
    # stage, the dilated 512/2048-channel one: a light net for small frames); and the width of
    # the ASPP and decoder (DAFormer's head: its embedding and fusion width, 256 in the paper)
    encoder_depth: Literal[4, 5] = 5
    decoder_channels: int = 256
    # ImageNet weights for the backbone: true (through smp / torchvision's download cache), or the
    # path of a weights file (safetensors, or a state dict read with weights_only) for machines
    # without internet: its tensors must fit the backbone by name and shape (load_backbone); for
    # daformer also a DAFormer (mmseg) checkpoint, backbone and head (load_reference)
    pretrained: bool | str = False
    num_classes: int = 19
    sync_bn: bool = False  # SyncBatchNorm under DDP

    RANGES: ClassVar[dict] = {"decoder_channels": at_least(8), "num_classes": at_least(1)}


class PoolingBatchNorm(nn.BatchNorm2d):
    """BatchNorm of the ASPP image-pooling branch. Its input is 1x1, so with batch size 1 there
    is a single value per channel and batch statistics are undefined (plain BatchNorm raises);
    then it normalises with the running statistics instead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return nnf.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _fix_pooling_bn(model: nn.Module) -> None:
    for module in model.modules():
        if type(module).__name__ == "ASPPPooling":
            for i, layer in enumerate(module):
                if isinstance(layer, nn.BatchNorm2d) and not isinstance(layer, PoolingBatchNorm):
                    new = PoolingBatchNorm(layer.num_features, layer.eps, layer.momentum)
                    new.load_state_dict(layer.state_dict())
                    module[i] = new


class DeepLabV2(nn.Module):
    """DeepLabV2 (Chen et al. 2017): dilated ResNet-101 (output stride 8) and an ASPP of four
    3x3 convolutions with dilations 6, 12, 18, 24 whose outputs are summed."""

    def __init__(self, num_classes: int = 19, pretrained: bool = False, backbone: str = "resnet101"):
        super().__init__()
        import torchvision

        if backbone not in ("resnet50", "resnet101"):
            raise UserError(f"model.backbone={backbone!r}: DeepLabV2 takes resnet50 or resnet101")
        weights = "IMAGENET1K_V1" if pretrained else None
        net = getattr(torchvision.models, backbone)(weights=weights, replace_stride_with_dilation=[False, True, True])
        self.backbone = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                                      net.layer3, net.layer4)
        self.aspp = nn.ModuleList(nn.Conv2d(2048, num_classes, 3, padding=d, dilation=d) for d in (6, 12, 18, 24))
        for conv in self.aspp:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        out = sum(conv(f) for conv in self.aspp)
        return nnf.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_model(cfg: ModelConfig) -> nn.Module:
    if isinstance(cfg.pretrained, str):  # a local weights file: built without, then loaded
        model = build_model(replace(cfg, pretrained=False))
        (load_reference if cfg.arch == "daformer" else load_backbone)(model, cfg.pretrained)
        return model
    try:
        if cfg.arch == "deeplabv2":
            return DeepLabV2(cfg.num_classes, cfg.pretrained, cfg.backbone)
        if cfg.arch == "daformer":
            from .daformer import DAFormer

            if cfg.decoder_channels < 8:
                raise UserError(f"model.decoder_channels={cfg.decoder_channels!r}: expected at least 8")
            return DAFormer(cfg.backbone, cfg.num_classes, cfg.decoder_channels, bool(cfg.pretrained))
        import segmentation_models_pytorch as smp

        cls = {"deeplabv3plus": smp.DeepLabV3Plus, "deeplabv3": smp.DeepLabV3}.get(cfg.arch)
        if cls is None:
            raise UserError(f"model.arch={cfg.arch!r}: expected deeplabv3plus, deeplabv3 or deeplabv2")
        # ASPP rates of the DeepLabV3 paper: (6, 12, 18) at output stride 16, doubled at 8
        rates = (6, 12, 18) if cfg.output_stride == 16 else (12, 24, 36)
        if cfg.encoder_depth not in (4, 5):
            raise UserError(f"model.encoder_depth={cfg.encoder_depth!r}: expected 4 or 5")
        if cfg.decoder_channels < 8:
            raise UserError(f"model.decoder_channels={cfg.decoder_channels!r}: expected at least 8")
        model = cls(encoder_name=cfg.backbone, encoder_weights="imagenet" if cfg.pretrained else None,
                    encoder_depth=cfg.encoder_depth, encoder_output_stride=cfg.output_stride,
                    decoder_atrous_rates=rates, decoder_channels=cfg.decoder_channels, classes=cfg.num_classes)
    except UserError:
        raise
    except (KeyError, ValueError) as e:
        raise UserError(f"model.backbone={cfg.backbone!r}: not available for {cfg.arch} ({e})") from None
    except Exception as e:  # offline, missing cache, hub errors
        if not cfg.pretrained:
            raise
        raise UserError(f"could not load ImageNet weights for {cfg.backbone} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}). Download them once on a machine with internet "
                        f"(they are cached under ~/.cache/torch or ~/.cache/huggingface and copied along), "
                        f"or set model.pretrained=PATH (a local weights file) or model.pretrained=false") from None
    _fix_pooling_bn(model)
    return model


# torchvision's ResNet names of DeepLabV2's backbone (an nn.Sequential: 0 conv1, 1 bn1, 4..7 layer1..4)
_V2_NAMES = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A weights file's tensors: safetensors, or a (nested) state dict loaded with weights_only."""
    where = f"model.pretrained {path}"
    if not path.is_file():
        raise UserError(f"{where}: file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable file is one line
            raise UserError(f"{where}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    import pickle

    try:  # weights_only: tensors and plain containers, never code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # a pickled object: the allow-list said no
            raise UserError(f"{where}: refused: it holds Python objects, not only tensors, and loading it could "
                            f"run code") from None
        raise UserError(f"{where}: not a readable weights file") from None
    except Exception as e:  # noqa: BLE001 - not a torch file, truncated, ...
        raise UserError(f"{where}: not a readable weights file ({str(e).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{where}: not a state dict of tensors")
    return state


def load_backbone(model: nn.Module, path: str | Path) -> None:
    """Load a weights file into the backbone, by name and shape: a timm or torchvision ImageNet
    checkpoint of the same network (a leading ``module.``, ``encoder.``, ``backbone.`` or
    ``model.`` is dropped). Every backbone tensor must be in the file; file tensors that fit
    nowhere (a classifier, a stage the net leaves out) are named and skipped; anything else is
    one line naming the counts and the first keys that do not fit."""
    path = Path(path)
    tensors = _read_tensors(path)
    check_finite(tensors, f"model.pretrained {path}")
    for prefix in ("module.", "encoder.", "backbone.", "model."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    if isinstance(model, DeepLabV2):
        target = model.backbone
        rename = lambda k: _V2_NAMES.get(k.split(".")[0], "?") + k[len(k.split(".")[0]):]  # noqa: E731
    else:  # smp: the timm network inside a "tu-" encoder, else the encoder itself
        target = getattr(model.encoder, "model", model.encoder)
        rename = lambda k: k  # noqa: E731
    want = target.state_dict()
    given = {rename(k): (k, v) for k, v in tensors.items()}
    missing = [k for k in want if k not in given and not k.endswith("num_batches_tracked")]
    shapes = [f"{given[k][0]} {tuple(given[k][1].shape)} vs {tuple(v.shape)}" for k, v in want.items()
              if k in given and given[k][1].shape != v.shape]
    unused = [orig for k, (orig, _) in given.items() if k not in want and not k.endswith("num_batches_tracked")]
    if missing or shapes:
        first = lambda xs: ", ".join(xs[:3]) + (", ..." if len(xs) > 3 else "")  # noqa: E731
        n = sum(not k.endswith("num_batches_tracked") for k in want)  # BatchNorm's counters are not weights
        raise UserError(f"model.pretrained {path}: {n - len(missing) - len(shapes)} of {n} backbone tensors fit; "
                        + "; ".join(part for part in (
                            f"{len(missing)} missing from the file ({first(missing)})" if missing else "",
                            f"{len(shapes)} of another shape ({first(shapes)})" if shapes else "",
                            f"{len(unused)} in the file fit nowhere ({first(unused)})" if unused else "") if part))
    target.load_state_dict({k: given[k][1] for k in want if k in given}, strict=False)
    if unused:
        n = sum(not k.endswith("num_batches_tracked") for k in want)
        say(f"model.pretrained {path}: {n} backbone tensors loaded; {len(unused)} in the file "
                      f"left out ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})")


# The weights a run is evaluated with: ``segment train`` keeps the best epoch on source val
# (best.safetensors), ``segment adapt`` its last student (student.safetensors; best.safetensors in
# runs made before the name said so).
SELECTED = ("best", "student")


def load_reference(model: nn.Module, path: str | Path) -> None:
    """Load DAFormer weights from a file in the reference's names (``daformer.reference_state``): a
    SegFormer ``mit_bX.pth`` (the backbone), an mmseg segmentor or a DAFormer checkpoint (backbone
    and head; of its three networks the student). Every backbone tensor must fit; the head loads
    whole or not at all (then it starts fresh); what is left out is named."""
    from .daformer import reference_state

    path = Path(path)
    tensors = _read_tensors(path)
    check_finite(tensors, f"model.pretrained {path}")
    mapped, left = reference_state(tensors)
    want = model.state_dict()
    fit = {k: v for k, (_, v) in mapped.items() if k in want and want[k].shape == v.shape}
    left += [orig for k, (orig, _) in mapped.items() if k not in fit]
    first = lambda xs: ", ".join(xs[:3]) + (", ..." if len(xs) > 3 else "")  # noqa: E731
    counted = lambda part: [k for k in want if k.startswith(part) and not k.endswith("num_batches_tracked")]  # noqa: E731
    missing = [k for k in counted("encoder.") if k not in fit]
    head = counted("head.")
    head_missing = [k for k in head if k not in fit]
    if missing or (head_missing and len(head_missing) < len(head)):
        part, lost, n = ("backbone", missing, len(counted("encoder."))) if missing else ("head", head_missing, len(head))
        raise UserError(f"model.pretrained {path}: {n - len(lost)} of {n} {part} tensors fit ({len(lost)} missing or "
                        f"of another shape: {first(lost)})")
    model.load_state_dict(fit, strict=False)
    what = "backbone and head" if not head_missing else "backbone (the head starts fresh)"
    say(f"model.pretrained {path}: {what} loaded" + (f"; {len(left)} tensors left out ({first(left)})" if left else ""))


def load_trained(run: str | Path, device: torch.device, which: str = "selected") -> tuple[nn.Module, dict]:
    """The model of a finished (or running) ``segment train`` or ``segment adapt`` run in eval mode,
    and its config dict: ``selected`` (the one it is evaluated with: SELECTED), ``teacher`` (an
    adapt run's EMA teacher) or ``last`` (the training state's model)."""
    ckpts = Path(run) / "checkpoints"
    if which != "last":
        names = SELECTED if which == "selected" else (which,)
        path = next((ckpts / f"{n}.safetensors" for n in names if (ckpts / f"{n}.safetensors").is_file()), None)
        if path is None:
            if (ckpts / "best.pt").is_file():
                raise older_run(run, "checkpoints/best.pt")
            raise UserError(f"--run {run}: no checkpoint at {ckpts / (names[0] + '.safetensors')} (train one with "
                            f"'i2iuda segment train' or 'segment adapt')")
        tensors, meta = load_weights(path, "segmenter")
        config = meta.get("config") or {}
    else:
        path = ckpts / "last.pt"
        if not path.is_file():
            raise UserError(f"--run {run}: no checkpoint at {path} (train one with 'i2iuda segment train')")
        state = load_state(path)
        try:
            tensors, config = state["trainer"]["model"], state["config"]
        except (KeyError, TypeError) as e:
            raise fits(path, e) from None
    try:
        model = build_model(from_dict(ModelConfig, {**config["model"], "pretrained": False}))
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: its config names no usable segmentation model ({e})") from None
    load_into(model, tensors, path, f"a {config['model'].get('arch')}-{config['model'].get('backbone')}")
    return model.to(device).eval(), config


def encoder_of(model: nn.Module) -> nn.Module:
    """The backbone of a segmenter: an smp model's and DAFormer's encoder, DeepLabV2's backbone."""
    return model.backbone if isinstance(model, DeepLabV2) else model.encoder


def last_stage(features) -> torch.Tensor:
    """An encoder's last stage: the last of an smp encoder's feature list, or the tensor itself."""
    return features[-1] if isinstance(features, (list, tuple)) else features


class EncoderTap:
    """Keeps what ``encoder`` returned in its last forward (with its graph): the segmenter's
    features from the same forward as its logits, through DDP too (a hook, not a second call)."""

    def __init__(self, encoder: nn.Module):
        self.output = None
        encoder.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.output = output

    def __getstate__(self):  # the trainer is never pickled with a graph in it
        return {"output": None}


class FrozenSegmenter(nn.Module):
    """A trained segmenter that reads a translator's frames (normalised with mean 0.5, std 0.5),
    re-normalised to its own input normalisation, in eval mode (BatchNorm statistics frozen) with no
    gradient to its weights: the gradient flows through it into whatever made the frames (CyCADA's
    f, a label-cycle loss)."""

    def __init__(self, net: nn.Module, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        # x01 = 0.5 * x + 0.5, then (x01 - mean) / std, as one affine map per channel
        mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.register_buffer("scale", 0.5 / std, persistent=False)
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)

    def train(self, mode: bool = True) -> "FrozenSegmenter":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale + self.shift)


def frozen_segmenter(run: str | Path, device: torch.device) -> FrozenSegmenter:
    """The segmenter of a ``segment train`` run as a ``FrozenSegmenter`` on ``device``."""
    if not run:
        raise UserError("model.semantic > 0 needs model.semantic_model: a 'segment train' run trained on the source")
    net, cfg = load_trained(run, device)
    data = cfg.get("data") or {}
    return FrozenSegmenter(net, data.get("mean", (0.5, 0.5, 0.5)), data.get("std", (0.5, 0.5, 0.5))).to(device)
