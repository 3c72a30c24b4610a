"""Segmentation: model shapes, training beats chance on synthetic source val, best-checkpoint
selection, resume, evaluation and scoring of prediction files, DDP."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import segmenter_resumes_exactly
from i2iuda.checkpoint import load_weights
from i2iuda.config import load_config
from i2iuda.errors import DataError
from i2iuda.segmentation.evaluate import EvalProtocol, evaluate_prediction_files, run_eval
from i2iuda.segmentation.models import ModelConfig, build_model
from i2iuda.segmentation.train import SegmentConfig, train_segmenter

TINY = ["model.backbone=resnet18", "data.size=[64,128]", "data.crop=[64,128]", "data.batch_size=4",
        "data.workers=0", "device=cpu", "lr=0.02", "log_every=5", "checkpoint_every=5"]


@pytest.mark.parametrize("arch,backbone,os_", [("deeplabv3plus", "resnet18", 16), ("deeplabv3plus", "resnet50", 8),
                                               ("deeplabv3", "resnet18", 16), ("deeplabv3plus", "mobilenet_v2", 16)])
def test_model_output_shapes(arch, backbone, os_):
    m = build_model(ModelConfig(arch=arch, backbone=backbone, output_stride=os_))
    m.train()
    out = m(torch.randn(1, 3, 64, 96))  # batch size 1 in training: the ASPP pooling branch must not fail
    assert out.shape == (1, 19, 64, 96)


def test_light_deeplab_options():
    from i2iuda.errors import UserError

    def params(**kw):
        m = build_model(ModelConfig(backbone="tu-resnet10t", **kw)).train()
        assert m(torch.randn(2, 3, 64, 128)).shape == (2, 19, 64, 128)
        return sum(p.numel() for p in m.parameters())

    full, light, narrow = params(), params(encoder_depth=4), params(decoder_channels=64)
    assert light < full / 2 and narrow < full  # the 512-channel last stage gone; a narrower ASPP
    for bad in ({"encoder_depth": 3}, {"decoder_channels": 0}):
        with pytest.raises(UserError, match=list(bad)[0]):
            build_model(ModelConfig(backbone="tu-resnet10t", **bad))


def test_deeplabv2_resnet101_shape():
    m = build_model(ModelConfig(arch="deeplabv2", backbone="resnet101")).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 65, 97)).shape == (1, 19, 65, 97)
    assert 42e6 < sum(p.numel() for p in m.parameters()) < 44e6  # ResNet-101 + 4 ASPP convs


def test_pretrained_offline_is_a_clear_error(monkeypatch):
    from i2iuda.errors import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent/torch-home")
    with pytest.raises(UserError, match="model.pretrained=false"):
        build_model(ModelConfig(arch="deeplabv2", backbone="resnet101", pretrained=True))


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("seg") / "run"
    over = TINY + [f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
                   "epochs=3", "steps_per_epoch=25"]
    summary = train_segmenter(load_config(SegmentConfig, None, over), run, progress=False)
    return run, summary


def test_training_beats_chance_and_keeps_the_best(trained):
    run, summary = trained
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    best = max(hist, key=lambda h: h["mIoU"])
    _, meta = load_weights(run / "checkpoints" / "best.safetensors", "segmenter")
    assert meta["epoch"] == best["epoch"] and meta["val"]["mIoU"] == pytest.approx(best["mIoU"])
    # chance: predicting the most frequent class everywhere gives PA ~ 25%, mIoU ~ 1.3%
    assert best["PA"] > 60 and best["mIoU"] > 15, best


def test_eval_and_prediction_files_agree(trained, synth_root, tmp_path):
    run, _ = trained
    spec = f"synthetic:{synth_root}:target-val"
    r = run_eval(run, spec, tmp_path / "eval", save_predictions=True, pictures=2, device="cpu", workers=0,
                 progress=False)
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for k in ("PA", "MPA", "mIoU", "FWIoU"):
        assert 0 <= m[k] <= 100
    assert len(list((tmp_path / "eval" / "pictures").glob("*_overlay.png"))) == 2
    preds = sorted((tmp_path / "eval" / "predictions").rglob("*.png"))
    assert len(preds) == 12 and Image.open(preds[0]).size == (128, 64)  # full label resolution
    again = evaluate_prediction_files(tmp_path / "eval" / "predictions", spec)
    for k in ("PA", "MPA", "mIoU", "FWIoU"):
        assert again[k] == pytest.approx(r[k])
    assert again["confusion"] == r["confusion"]
    slid = run_eval(run, spec, tmp_path / "slide", EvalProtocol(slide=(48, 96)), pictures=0, device="cpu",
                    workers=0, progress=False)
    assert slid["sliding_window"] == [48, 96] and 0 < slid["PA"] <= 100
    # bad prediction files: wrong size, bad values, missing
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in preds:
        Image.fromarray(np.asarray(Image.open(p))).save(bad / p.name)
    Image.fromarray(np.full((64, 128), 40, np.uint8)).save(bad / preds[0].name)
    with pytest.raises(DataError, match=f"{preds[0].name}: values outside 0..18/255: \\[40\\]"):
        evaluate_prediction_files(bad, spec)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(bad / preds[0].name)
    with pytest.raises(DataError, match="prediction is 10x10 but the label is 128x64"):
        evaluate_prediction_files(bad, spec)
    (bad / preds[0].name).unlink()
    with pytest.raises(DataError, match="no prediction for"):
        evaluate_prediction_files(bad, spec)


def test_perfect_predictions_score_100(synth_root, tmp_path):
    from i2iuda.data.datasets import build_index, load_pair

    spec = f"synthetic:{synth_root}:target-val"
    idx = build_index(spec)
    for s in idx.samples:
        _, lab = load_pair(s, idx.label_format)
        Image.fromarray(lab).save(tmp_path / Path(s.rel).name.replace(".png", ".png"))
    r = evaluate_prediction_files(tmp_path, spec)
    for k in ("PA", "MPA", "mIoU", "FWIoU"):
        assert r[k] == pytest.approx(100.0)


def test_resume_is_exact(synth_root, tmp_path):
    over = TINY + [f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
                   "epochs=2", "steps_per_epoch=3", "data.workers=1"]
    segmenter_resumes_exactly(load_config(SegmentConfig, None, over), tmp_path, stop_at_step=4)


def test_ddp_two_gloo_processes(synth_root, tmp_path):
    script = tmp_path / "ddp_seg.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, torch.distributed as dist
        from i2iuda.config import load_config
        from i2iuda.segmentation import train as T
        cfg = load_config(T.SegmentConfig, None, sys.argv[2:])
        T.train_segmenter(cfg, sys.argv[1], progress=False)
        ckpt = torch.load(f"{sys.argv[1]}/checkpoints/last.pt", weights_only=True)
        assert dist.get_world_size() == 2
    """))
    over = TINY + [f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
                   "epochs=1", "steps_per_epoch=2", "model.sync_bn=true", "data.batch_size=2"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), str(tmp_path / "run"), *over], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "best.safetensors").exists()


def test_sliding_window_covers_every_pixel_once_averaged():
    from i2iuda.segmentation.evaluate import predict_logits, predict_sliding

    class PerPixel(torch.nn.Module):  # a 1x1 conv: windows cannot change its output
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 19, 1)

        def forward(self, x):
            return self.conv(x)

    net = PerPixel().eval()
    x = torch.randn(1, 3, 50, 90)
    whole = predict_logits(net, x, (50, 90))
    slid = predict_sliding(net, x, (32, 48))
    assert slid.shape == whole.shape and torch.allclose(slid, whole, atol=1e-6)


def test_pretrained_weights_from_a_local_file(tmp_path):
    """model.pretrained=PATH: a timm / torchvision checkpoint (safetensors or a weights_only state
    dict) loads into the backbone by name and shape; a file that does not fit is one line with
    the counts and the first keys."""
    import timm
    import torchvision
    from safetensors.torch import save_file

    from i2iuda.errors import UserError
    from i2iuda.segmentation.models import ModelConfig, build_model

    torch.manual_seed(3)
    timm_net = timm.create_model("resnet10t")  # a classifier's full state dict: fc and a 4th stage too
    save_file(timm_net.state_dict(), tmp_path / "r10t.safetensors")
    m = build_model(ModelConfig(backbone="tu-resnet10t", encoder_depth=4, pretrained=str(tmp_path / "r10t.safetensors")))
    assert torch.equal(m.encoder.model.conv1[0].weight, timm_net.conv1[0].weight)
    assert torch.equal(m.encoder.model.layer3[0].bn1.running_var, timm_net.layer3[0].bn1.running_var)
    # a torchvision ResNet-18 saved as a plain state dict (torch.save), into the smp encoder and DeepLabV2-style names
    tv = torchvision.models.resnet18()
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, tmp_path / "r18.pth")
    m = build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "r18.pth")))
    assert torch.equal(m.encoder.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    tv50 = torchvision.models.resnet50()
    torch.save(tv50.state_dict(), tmp_path / "r50.pth")
    v2 = build_model(ModelConfig(arch="deeplabv2", backbone="resnet50", pretrained=str(tmp_path / "r50.pth")))
    assert torch.equal(v2.backbone[7][2].conv3.weight, tv50.layer4[2].conv3.weight)
    # another network's file: one line, the counts and the first keys
    with pytest.raises(UserError, match=r"r18.pth: 34 of 55 backbone tensors fit; \d+ missing from the file "
                                         r"\(conv1\.0\.weight, .*; \d+ in the file fit nowhere \(conv1\.weight"):
        build_model(ModelConfig(backbone="tu-resnet10t", encoder_depth=4, pretrained=str(tmp_path / "r18.pth")))
    with pytest.raises(UserError, match=r"resnet18.*another shape|of another shape"):
        wide = {k: (torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k == "conv1.weight" else v)
                for k, v in tv.state_dict().items()}
        save_file(wide, tmp_path / "resnet18_wide.safetensors")
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "resnet18_wide.safetensors")))
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(UserError, match="junk.pth: not a readable weights file"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "junk.pth")))
    with pytest.raises(UserError, match="absent.safetensors: file not found"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "absent.safetensors")))
    import os as _os

    class Payload:
        def __reduce__(self):
            return _os.system, (f"touch {tmp_path / 'PWNED'}",)

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="evil.pth: refused: it holds Python objects"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "evil.pth")))
    assert not (tmp_path / "PWNED").exists()
