"""DAFormer's network and training parts, each against its definition (the paper and lhoyer/DAFormer):
the head's structure and size, the reference's key names, the param-wise learning rates and decays,
the warm-up, the feature distance on a hand-made case, the margins, the teacher without dropout, the
class-balanced crops; and a run with all of them."""
import math

import numpy as np
import pytest
import torch

from i2iuda.config import load_config
from i2iuda.runtime import init_runtime
from i2iuda.segmentation.daformer import DAFormer, DAFormerHead
from i2iuda.segmentation.models import ModelConfig, build_model
from i2iuda.segmentation.online import (OnlineConfig, OnlineSettings, OnlineTrainer, feature_distance, pooled_labels,
                                        warmup_poly, without_dropout)


def test_the_head_is_the_papers_with_its_parameter_count():
    """MiT-B5's widths and 19 classes: 3,712,275 parameters; the ASPP's 1x1 branch and separable
    dilated branches (6, 12, 18) with BN + ReLU after depthwise and pointwise, no image pooling, no
    conv bias before a norm, a 3x3 bottleneck, Dropout2d 0.1, an N(0, 0.01) classifier."""
    torch.manual_seed(0)
    head = DAFormerHead([64, 128, 320, 512], 19, 256)
    assert sum(p.numel() for p in head.parameters()) == 3_712_275
    dilations = []
    for b in head.fuse.branches:
        convs = [m for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
        dilations.append(convs[0].dilation[0])
        assert all(c.bias is None for c in convs)
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in b.modules()) == len(convs)
        assert sum(isinstance(m, torch.nn.ReLU) for m in b.modules()) == len(convs)
        if len(convs) == 2:  # depthwise (groups = channels), then pointwise
            assert convs[0].groups == convs[0].in_channels == 1024 and convs[1].kernel_size == (1, 1)
    assert dilations == [1, 6, 12, 18]
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in head.modules())
    bottleneck = head.fuse.bottleneck[0]
    assert bottleneck.kernel_size == (3, 3) and (bottleneck.in_channels, bottleneck.out_channels) == (1024, 256)
    assert isinstance(head.dropout, torch.nn.Dropout2d) and head.dropout.p == 0.1
    assert abs(float(head.classifier.weight.detach().std()) - 0.01) < 0.001 and float(head.classifier.bias.abs().sum()) == 0
    assert [e.in_features for e in head.embed] == [64, 128, 320, 512] and all(e.out_features == 256 for e in head.embed)


def test_the_network_on_mit_b5_is_the_references_size_and_output():
    net = DAFormer("mit_b5", 19)
    assert len(net.encoder.state_dict()) == 1052 and round(sum(p.numel() for p in net.encoder.parameters()) / 1e6, 1) == 81.4
    small = DAFormer("mit_b0", 19, channels=32).eval()
    x = torch.randn(2, 3, 64, 96)
    feats = small.encoder(x)[-4:]
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3]  # strides 4, 8, 16, 32
    logits = small(x)
    want = torch.nn.functional.interpolate(small.head(feats), size=(64, 96), mode="bilinear", align_corners=False)
    assert logits.shape == (2, 19, 64, 96) and torch.allclose(logits, want, atol=1e-6)


def reference_names(net: DAFormer) -> dict[str, torch.Tensor]:
    """The network's tensors under the names lhoyer/DAFormer's modules give them (written out here:
    mmcv's ConvModule holds .conv and .bn, DepthwiseSeparableConvModule .depthwise_conv and
    .pointwise_conv, SegFormer's MLP .proj, BaseDecodeHead .conv_seg)."""
    h = net.head
    out = {f"backbone.{k}": v for k, v in net.encoder.state_dict().items()}
    for i, e in enumerate(h.embed):
        out[f"decode_head.embed_layers.{i}.proj.weight"], out[f"decode_head.embed_layers.{i}.proj.bias"] = e.weight, e.bias
    aspp = "decode_head.fuse_layer.aspp_modules"
    for k, v in h.fuse.branches[0][0].state_dict().items():
        out[f"{aspp}.0.conv.{k}"] = v
    for k, v in h.fuse.branches[0][1].state_dict().items():
        out[f"{aspp}.0.bn.{k}"] = v
    for j in (1, 2, 3):
        for part, seq in (("depthwise_conv", h.fuse.branches[j][0]), ("pointwise_conv", h.fuse.branches[j][1])):
            for k, v in seq[0].state_dict().items():
                out[f"{aspp}.{j}.{part}.conv.{k}"] = v
            for k, v in seq[1].state_dict().items():
                out[f"{aspp}.{j}.{part}.bn.{k}"] = v
    for k, v in h.fuse.bottleneck[0].state_dict().items():
        out[f"decode_head.fuse_layer.bottleneck.conv.{k}"] = v
    for k, v in h.fuse.bottleneck[1].state_dict().items():
        out[f"decode_head.fuse_layer.bottleneck.bn.{k}"] = v
    out["decode_head.conv_seg.weight"], out["decode_head.conv_seg.bias"] = h.classifier.weight, h.classifier.bias
    return {k: v.detach().clone() for k, v in out.items()}


def test_a_state_dict_in_the_references_key_names_loads_into_the_network(tmp_path, capsys):
    """A DAFormer training checkpoint (student, EMA teacher, ImageNet copy) loads its student, backbone
    and head, naming what it left out; a SegFormer backbone file loads the backbone alone."""
    torch.manual_seed(1)
    source = DAFormer("mit_b0", 19)
    for p in source.parameters():
        p.data.normal_()
    student, teacher = reference_names(source), reference_names(DAFormer("mit_b0", 19))
    ckpt = {"state_dict": {**{f"model.{k}": v for k, v in student.items()},
                           **{f"ema_model.{k}": v for k, v in teacher.items()},
                           **{f"imnet_model.{k}": v for k, v in teacher.items() if k.startswith("backbone.")}},
            "meta": {"iter": 40000}}
    torch.save(ckpt, tmp_path / "daformer.pth")
    net = build_model(ModelConfig(arch="daformer", backbone="mit_b0", pretrained=str(tmp_path / "daformer.pth")))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))
    said = capsys.readouterr().err
    n_left = len(teacher) + sum(k.startswith("backbone.") for k in teacher)
    assert "backbone and head loaded" in said and f"{n_left} tensors left out (ema_model." in said
    # a bare backbone (SegFormer's mit_b0.pth, with its ImageNet classifier): the head starts fresh
    torch.save({**{k[len("backbone."):]: v for k, v in student.items() if k.startswith("backbone.")},
                "head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}, tmp_path / "mit_b0.pth")
    net = build_model(ModelConfig(arch="daformer", backbone="mit_b0", pretrained=str(tmp_path / "mit_b0.pth")))
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in source.encoder.state_dict().items())
    assert "backbone (the head starts fresh) loaded; 2 tensors left out (head.weight, head.bias)" in capsys.readouterr().err


def test_param_wise_learning_rates_and_decays_are_daformers():
    """lr 6e-5 on the backbone, 10x on everything under the head (its BN too), no weight decay for the
    backbone's parameters named norm, weight decay 0.01 elsewhere, AdamW (0.9, 0.999)."""
    from i2iuda.segmentation.train import SegmentConfig, param_groups

    cfg = load_config(SegmentConfig, None, ["model.arch=daformer", "model.backbone=mit_b0", "optimizer=adamw",
                                            "lr=6e-4", "backbone_lr_mult=0.1", "weight_decay=0.01", "norm_decay_mult=0"])
    net = build_model(cfg.model)
    groups = param_groups(net, cfg)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    for name, p in net.named_parameters():
        lr, wd = setting[id(p)]
        if name.startswith("head."):
            assert (lr, wd) == pytest.approx((6e-4, 0.01)), name
        elif "norm" in name:
            assert (lr, wd) == pytest.approx((6e-5, 0.0)), name
        else:
            assert (lr, wd) == pytest.approx((6e-5, 0.01)), name
    assert opt.defaults["betas"] == (0.9, 0.999)
    assert any("norm" in n for n, _ in net.encoder.named_parameters())  # MiT has them: the rule bites
    plain = load_config(SegmentConfig, None, ["model.backbone=tu-resnet10t", "model.encoder_depth=4"])
    assert len(param_groups(build_model(plain.model), plain)) == 2  # unchanged without the setting


def test_the_warm_up_is_mmcvs_linear_then_poly():
    """lr(t) = base * (1 - t/T)^p * (1 - (1 - t/w)(1 - 1e-6)) for t < w, then base * (1 - t/T)^p."""
    T, w = 40_000, 1500
    assert warmup_poly(0, T, w, 1.0) == pytest.approx(1e-6)
    assert warmup_poly(750, T, w, 1.0) == pytest.approx((1 - 750 / T) * (1 - 0.5 * (1 - 1e-6)))
    assert warmup_poly(1499, T, w, 1.0) == pytest.approx((1 - 1499 / T) * (1 - (1 / 1500) * (1 - 1e-6)))
    assert warmup_poly(1500, T, w, 1.0) == pytest.approx(1 - 1500 / T)
    assert warmup_poly(T, T, w, 1.0) == 0.0
    assert warmup_poly(20_000, T, w, 0.9) == pytest.approx(0.5 ** 0.9)


def test_the_feature_distance_on_a_hand_made_case():
    """4x4 labels, 2x2 features (stride 2): the top-left cell is all car (a thing), the top-right half
    road half car (under 0.75: ignored), bottom-left 3/4 person (kept), bottom-right void."""
    labels = torch.tensor([[[13, 13, 0, 13],
                            [13, 13, 0, 13],
                            [11, 11, 255, 255],
                            [11, 0, 255, 255]]])
    assert pooled_labels(labels, 2, 0.75).tolist() == [[[13, 255], [11, 255]]]
    student = torch.zeros(1, 3, 2, 2)
    imagenet = torch.zeros(1, 3, 2, 2)
    student[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # distance 5 at the car cell
    student[0, :, 1, 0] = torch.tensor([0.0, 0.0, 1.0])  # 1 at the person cell
    student[0, :, 0, 1] = 100.0  # far off at ignored cells: no effect
    student[0, :, 1, 1] = 100.0
    s = OnlineSettings()
    assert float(feature_distance(student, imagenet, labels, s)) == pytest.approx((5 + 1) / 2)
    road = torch.zeros_like(labels)  # no thing in the crop: 0, not the reference's NaN
    assert float(feature_distance(student, imagenet, road, s)) == 0.0


def test_the_teacher_runs_batch_statistics_without_dropout():
    net = without_dropout(DAFormer("mit_b0", 19, channels=16))
    kinds = {type(m).__name__: m.training for m in net.modules()}
    assert kinds["BatchNorm2d"] and not kinds["Dropout2d"] and not kinds["DropPath"]


def tiny_online(synth_root, *more):
    return load_config(OnlineConfig, None, [
        f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
        f"target=synthetic:{synth_root}:target-train", "data.size=[32,64]", "data.crop=[32,64]", "data.batch_size=2",
        "data.workers=0", "device=cpu", "epochs=1", "steps_per_epoch=3", "log_every=1", "optimizer=adamw", *more])


def test_margins_zero_the_pseudo_weight_of_the_top_and_bottom_rows(synth_root, tmp_path):
    """DAFormer's 15 and 120 of 512 rows: as fractions of the crop, here 4 and 8 of 32."""
    cfg = tiny_online(synth_root, "model.backbone=tu-resnet10t", "online.ignore_top=0.125", "online.ignore_bottom=0.25")
    trainer = OnlineTrainer(cfg, init_runtime("cpu"), 3, None, tmp_path)
    _, weight, q = trainer.pseudo_labels(torch.randn(2, 3, 32, 64), torch.ones(2, 32, 64, dtype=torch.bool))
    assert (weight[:, :4] == 0).all() and (weight[:, 24:] == 0).all() and torch.allclose(weight[:, 4:24], q)


def test_class_balanced_crops_avoid_crops_of_one_class():
    from i2iuda.data.transforms import AugmentConfig, train_transform

    torch.manual_seed(0)
    mask = np.zeros((64, 128), np.uint8)
    mask[:, 112:] = 5  # one class on most of the frame
    image = np.zeros((64, 128, 3), np.uint8)
    shares = []
    for ratio in (None, 0.75):
        tf = train_transform(AugmentConfig(size=(64, 128), crop=(32, 32), hflip=0, cat_max_ratio=ratio))
        shares.append(np.mean([len(torch.unique(tf(image, mask)[1])) > 1 for _ in range(300)]))
    assert shares[0] < 0.3 and shares[1] > 2 * shares[0]  # 10 draws at most: most crops hold both classes


def test_a_daformer_run_with_every_part_trains_and_resumes_exactly(synth_root, tmp_path):
    """DAFormer's network with DACS, RCS, warm-up, param-wise AdamW, margins and class-balanced crops,
    and the feature distance (from a weights file: the ImageNet encoder), resumed mid-run to the bit."""
    from i2iuda.segmentation.online import train_online

    torch.manual_seed(0)
    weights = tmp_path / "mit_b0.pth"
    torch.save(DAFormer("mit_b0", 19).encoder.state_dict(), weights)
    cfg = tiny_online(synth_root, "model.arch=daformer", "model.backbone=mit_b0", "model.decoder_channels=16",
                      f"model.pretrained={weights}", "lr=6e-4", "backbone_lr_mult=0.1", "norm_decay_mult=0",
                      "data.cat_max_ratio=0.75", "online.alpha=0.999", "online.rare_class_sampling=true",
                      "online.warmup=0.3", "online.ignore_top=0.1", "online.ignore_bottom=0.2",
                      "online.feature_distance=0.005", "epochs=2", "steps_per_epoch=2", "checkpoint_every=1")
    once = train_online(cfg, tmp_path / "once", progress=False)
    assert math.isfinite(once["last_losses"]["FD"]) and once["last_losses"]["FD"] >= 0
    train_online(cfg, tmp_path / "twice", stop_at_step=1, progress=False)
    train_online(cfg, tmp_path / "twice", resume=True, progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["trainer"] for r in ("once", "twice"))
    for part in ("model", "teacher"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    with pytest.raises(Exception, match="feature_distance > 0 keeps the encoder near its ImageNet weights"):
        train_online(tiny_online(synth_root, "model.backbone=tu-resnet10t", "online.feature_distance=0.005"),
                     tmp_path / "scratch", progress=False)


def test_the_cpu_studys_arms_say_which_network_and_losses_they_train(tmp_path):
    from pathlib import Path

    from i2iuda.study import Study, StudyConfig

    cfg = load_config(StudyConfig, Path(__file__).parents[1] / "configs" / "study_daformer_cpu.yaml")
    said = {a.name: a.manifest().get("description", "") for a in Study.resolve(cfg, tmp_path).arms.values()}
    assert "network daformer-mit_b0, 64-channel head" in said["daformer"] and "network" not in said["dacs"]
    assert "ImageNet-pretrained" in said["lite0_dacs"] and "feature distance" not in said["lite0_dacs"]
    assert "feature distance (weight 0.005)" in said["lite0_dacs_fd"]
