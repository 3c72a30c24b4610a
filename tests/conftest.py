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


@pytest.fixture(scope="session")
def toy_domains(tmp_path_factory, synth_root):
    """Source = synthetic source frames; target = the same kind of frames with a strong colour
    shift (red and blue swapped, darker): a gap a translator must learn."""
    import numpy as np
    from PIL import Image

    from i2iuda.data.datasets import build_index

    root = tmp_path_factory.mktemp("toy")
    src = build_index(f"synthetic:{synth_root}:source")
    (root / "target").mkdir()
    for s in src.samples:
        img = np.asarray(Image.open(s.image).convert("RGB")).astype(np.float32)
        Image.fromarray((img[..., ::-1] * 0.6).astype(np.uint8)).save(root / "target" / s.image.name)
    return f"synthetic:{synth_root}:source", f"folder:{root / 'target'}"


def color_mean(spec_or_array):
    """Mean RGB (0..255) of a data spec's frames, or of an HxWx3 array."""
    import numpy as np
    from PIL import Image

    from i2iuda.data.datasets import build_index

    if isinstance(spec_or_array, str):
        idx = build_index(spec_or_array)
        return np.mean([np.asarray(Image.open(s.image).convert("RGB")).reshape(-1, 3).mean(0) for s in idx.samples], 0)
    return spec_or_array.reshape(-1, 3).mean(0)


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


def translator_once_and_resumed(cfg, tmp_path, stop_at_step: int = 4) -> tuple[dict, dict]:
    """Train the translator ``cfg`` once straight through (tmp_path/once) and once killed at
    ``stop_at_step`` then resumed (tmp_path/twice); the two final trainer states, to compare."""
    import torch

    from i2iuda.translation.train import train_translator

    train_translator(cfg, tmp_path / "once", progress=False)
    train_translator(cfg, tmp_path / "twice", stop_at_step=stop_at_step, progress=False)
    train_translator(cfg, tmp_path / "twice", resume=True, progress=False)
    return tuple(torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["trainer"]
                 for r in ("once", "twice"))
