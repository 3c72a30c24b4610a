"""KID / FID: the formulas through torchmetrics, the weights check, the cache, and (when the FID
Inception weights are installed, as `make install` does) real features on benchmark frames."""
import pytest
import torch

from i2iuda import fid
from i2iuda.errors import UserError


def test_kid_and_fid_are_near_zero_for_one_distribution_and_grow_with_a_shift():
    g = torch.Generator().manual_seed(0)  # 64-d features: the formulas do not care, and it is fast
    a, b = torch.randn(400, 64, generator=g).double(), torch.randn(400, 64, generator=g).double()
    same, shifted = fid.kid_fid(a, b), fid.kid_fid(a, b + 0.5)
    assert same["KID_std"] is None  # 400 < 1000 frames: one subset, the whole sets
    assert abs(same["KID"]) < 0.05 * shifted["KID"]  # unbiased: ~0 for one distribution
    # FID: the squared distance of the means (64 x 0.5^2 = 16) plus the covariance term (~0 here)
    assert shifted["FID"] - same["FID"] == pytest.approx(16, abs=1.5)
    assert fid.kid_fid(a, a.clone())["FID"] == pytest.approx(0, abs=1e-3)  # a set with itself


def test_missing_or_wrong_weights_are_one_clear_line(tmp_path, monkeypatch):
    wrong = tmp_path / "default_1.pt"
    wrong.write_bytes(b"not the network")
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(wrong))
    with pytest.raises(UserError, match="default_1.pt: not the FID Inception weights"):
        fid.load_inception()
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(tmp_path / "absent.pt"))
    with pytest.raises(UserError, match="absent.pt: the FID Inception weights file is not there"):
        fid.load_inception()


def test_score_without_weights_says_how_to_get_them(monkeypatch, synth_root):
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(fid, "weights_path", lambda: None)
    assert fid.load_inception() is None
    with pytest.raises(UserError, match="make fid-weights"):
        fid.score(f"synthetic:{synth_root}:source-val", f"synthetic:{synth_root}:target-val", n=4)


@pytest.fixture(scope="module")
def inception():
    if fid.weights_path() is None:
        pytest.skip(fid.HOW_TO_GET)
    return fid.load_inception()


def test_real_weights_give_2048_d_features_that_tell_the_domains_apart(inception, synth_root, tmp_path):
    assert fid.sha1(fid.weights_path()) == fid.WEIGHTS_SHA1
    src, tgt_val, tgt_train = (f"synthetic:{synth_root}:{s}" for s in ("source", "target-val", "target-train"))
    feats = fid.features(inception, fid.frame_subset(tgt_val, 8), tmp_path / "cache")
    assert feats.shape == (8, 2048) and feats.dtype == torch.float64 and (feats >= 0).all()  # pool of ReLUs
    # cached: the second call reads the file
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert torch.equal(fid.features(inception, fid.frame_subset(tgt_val, 8), tmp_path / "cache"), feats)
    # target frames are closer to other target frames than source frames are
    across = fid.score(src, tgt_train, n=8, cache=tmp_path / "cache", net=inception)
    within = fid.score(tgt_val, tgt_train, n=8, cache=tmp_path / "cache", net=inception)
    assert within["KID"] < across["KID"] and within["FID"] < across["FID"]


def test_kid_of_whole_sets_is_the_exact_unbiased_mmd_also_for_unequal_sizes():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 5, generator=g).double(), torch.randn(11, 5, generator=g).double() + 0.3
    k = lambda a, b: (float(a @ b) / 5 + 1) ** 3  # the cubic kernel, pair by pair
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(11) for j in range(11) if i != j) / (11 * 10)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(11)) / (7 * 11)
    want = 1000 * (xx + yy - 2 * xy)
    for seed in (0, 1):  # no subsampling: every seed gives the same value, and no std
        r = fid.kid_fid(x, y, seed=seed)
        assert r["KID"] == pytest.approx(want, rel=1e-9) and r["KID_std"] is None
    # equal sizes: torchmetrics' KID with one subset of the whole sets says the same
    from torchmetrics.image.kid import KernelInceptionDistance

    z = torch.randn(11, 5, generator=g).double()
    tm = KernelInceptionDistance(feature=fid._Given(5), subset_size=11, subsets=1)
    tm.update(z, real=True)
    tm.update(y, real=False)
    assert fid.kid_fid(z, y)["KID"] == pytest.approx(1000 * float(tm.compute()[0]), rel=1e-9)
    # with more than `subset` frames on both sides: subsets, with a std
    assert fid.kid_fid(z, y, subset=8)["KID_std"] is not None
