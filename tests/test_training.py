"""The one training loop's own parts: the fp16 gradient scaler path of Runtime."""
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
