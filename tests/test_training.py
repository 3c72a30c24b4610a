"""The one training loop's own parts: the fp16 gradient scaler path of Runtime, the stop of a
diverging run."""
import pytest
import torch

from i2iuda.runtime import Runtime


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def test_scaled_backward_and_step_equal_the_plain_ones():
    x = torch.randn(8, 4)
    plain, scaled = _model(), _model()
    rt_plain = Runtime(torch.device("cpu"))
    rt_scaled = Runtime(torch.device("cpu"), scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    for net, rt in ((plain, rt_plain), (scaled, rt_scaled)):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        rt.backward(net(x).pow(2).mean())
        rt.step(opt)
    for a, b in zip(plain.parameters(), scaled.parameters()):
        assert torch.allclose(a, b, atol=1e-6)  # the scale is divided out before the step


def test_a_step_whose_gradients_overflow_is_skipped_and_the_scale_backs_off():
    net = _model()
    before = [p.detach().clone() for p in net.parameters()]
    rt = Runtime(torch.device("cpu"), scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    rt.backward(net(torch.full((2, 4), float("inf"))).mean())
    rt.step(opt)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert rt.scaler.get_scale() < 2.0 ** 12


def test_loader_workers_never_exceed_the_cpus_shared_by_this_machines_ranks(monkeypatch):
    import os
    from i2iuda.runtime import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # a 2-core laptop
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert (loader_workers(8), loader_workers(1), loader_workers(0)) == (2, 1, 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 ranks on 16 cores: 4 workers each at most
    assert (loader_workers(8), loader_workers(2)) == (4, 2)


def test_a_diverging_run_stops_within_a_step_keeps_its_last_checkpoint_and_resumes_once_fixed(synth_root, tmp_path,
                                                                                               monkeypatch):
    """A NaN put into a weight at step 5 (of 8, checkpoints every 2 steps): the run stops after one
    more step with one line naming the step and the loss, last.pt stays the step-4 one, and once the
    cause is gone --resume ends where an uninterrupted run ends, bit for bit."""
    from i2iuda.checkpoint import load_state
    from i2iuda.config import load_config
    from i2iuda.segmentation.train import SegmentConfig, SegmentTrainer, train_segmenter
    from i2iuda.training import Diverged

    cfg = load_config(SegmentConfig, None, [
        f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
        "model.backbone=tu-resnet10t", "model.encoder_depth=4", "model.decoder_channels=16", "optimizer=adamw",
        "lr=0.001", "data.size=[32,64]", "data.crop=[32,64]", "data.batch_size=2", "data.workers=0", "device=cpu",
        "epochs=2", "steps_per_epoch=4", "checkpoint_every=2", "log_every=4"])
    train_segmenter(cfg, tmp_path / "once", progress=False)
    step, calls = SegmentTrainer.step, []

    def poisoned(self, batch):
        calls.append(1)
        if len(calls) == 5:  # a weight goes NaN before step 5
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return step(self, batch)

    monkeypatch.setattr(SegmentTrainer, "step", poisoned)
    with pytest.raises(Diverged, match=r"step 5: the loss is not finite \(CE = nan\).*last\.pt \(step 4\) is as it was"):
        train_segmenter(cfg, tmp_path / "run", progress=False)
    assert len(calls) == 6  # stopped one step after it
    assert load_state(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4
    assert all(torch.isfinite(v).all() for v in load_state(tmp_path / "run" / "checkpoints" / "last.pt")
               ["trainer"]["model"].values() if v.is_floating_point())
    monkeypatch.setattr(SegmentTrainer, "step", step)  # the cause removed
    train_segmenter(cfg, tmp_path / "run", resume=True, progress=False)
    a, b = (load_state(tmp_path / r / "checkpoints" / "last.pt")["trainer"]["model"] for r in ("once", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_that_are_not_finite_are_refused_at_load(tmp_path):
    from safetensors.torch import save_file

    from i2iuda.errors import UserError
    from i2iuda.segmentation.models import ModelConfig, build_model

    net = build_model(ModelConfig(backbone="resnet18"))
    state = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(tmp_path / "r18.safetensors"))
    with pytest.raises(UserError, match=r"r18\.safetensors: 1 tensor\(s\) hold NaN or infinite values \(layer1\.0\.conv1\.weight\)"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "r18.safetensors")))
