import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny synthetic benchmark, generated once per test session."""
    from i2iuda.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(height=64, width=128, n_source=40, n_target_train=24, n_target_val=12, workers=1),
             progress=False)
    return root


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")


def segmenter_resumes_exactly(cfg, tmp_path, stop_at_step: int) -> dict:
    """Train ``cfg`` once straight through and once killed at ``stop_at_step`` then resumed; assert the
    two end with bit-identical weights and history, and return the final trainer state."""
    import torch

    from i2iuda.segmentation.train import train_segmenter

    train_segmenter(cfg, tmp_path / "once", progress=False)
    train_segmenter(cfg, tmp_path / "twice", stop_at_step=stop_at_step, progress=False)
    train_segmenter(cfg, tmp_path / "twice", resume=True, progress=False)
    a = torch.load(tmp_path / "once" / "checkpoints" / "last.pt", weights_only=True)["trainer"]
    b = torch.load(tmp_path / "twice" / "checkpoints" / "last.pt", weights_only=True)["trainer"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["history"] == b["history"]
    return a
