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
