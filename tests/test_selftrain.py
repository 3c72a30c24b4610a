"""Self-training: predictions and their ensemble, class-wise pseudo-label thresholds, trainId
label folders, segmenters trained on two data sets at once."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from i2iuda.config import load_config
from i2iuda.data import labels as L
from i2iuda.data.datasets import build_index, load_pair, read_label
from i2iuda.data.sampling import MixedStreamSampler, StreamSampler
from i2iuda.io import save_png, write_json
from i2iuda.segmentation.predict import class_thresholds, predict, pseudo_label_quality, pseudo_labels
from i2iuda.segmentation.train import SegmentConfig, train_segmenter

from conftest import segmenter_resumes_exactly

TINY = ["model.backbone=tu-resnet10t", "data.size=[32,64]", "data.crop=[32,64]", "data.batch_size=4",
        "data.workers=0", "device=cpu", "log_every=2", "checkpoint_every=2", "optimizer=adamw", "lr=0.004"]


def fake_predictions(tmp_path, frames: list[tuple[np.ndarray, np.ndarray]], bits: int = 16):
    """A predict folder by hand: frames of a folder: spec with given class and confidence maps."""
    images, pred = tmp_path / "frames", tmp_path / "pred"
    for i, (cls, conf) in enumerate(frames):
        save_png(images / f"f{i}.png", np.zeros((*cls.shape, 3), np.uint8))
        save_png(pred / "labels" / f"f{i}.png", cls.astype(np.uint8))
        scale = 65535 if bits == 16 else 255
        save_png(pred / "confidence" / f"f{i}.png", np.round(conf * scale).astype(np.uint16 if bits == 16 else np.uint8))
    write_json(pred / "about.json", {"data": f"folder:{images}", "runs": [], "confidence_bits": bits})
    return pred


def test_class_thresholds_are_percentiles_capped_and_low_confidence_is_ignored(tmp_path):
    # class 0: confidences 0.1 .. 1.0 (ten values) over two frames; class 5: all 0.95; class 7: 0.2, 0.4
    c0 = np.linspace(0.1, 1.0, 10)
    cls1 = np.array([[0, 0, 0, 0, 0], [5, 5, 5, 7, 255]])
    conf1 = np.array([[c0[0], c0[1], c0[2], c0[3], c0[4]], [0.95, 0.95, 0.95, 0.2, 1.0]])
    cls2 = np.array([[0, 0, 0, 0, 0], [7, 5, 5, 5, 5]])
    conf2 = np.array([[c0[5], c0[6], c0[7], c0[8], c0[9]], [0.4, 0.95, 0.95, 0.95, 0.95]])
    pred = fake_predictions(tmp_path, [(cls1, conf1), (cls2, conf2)])
    th = class_thresholds(pred, 50)["thresholds"]
    # BDL's / FDA's definition: the sorted confidences' element round(n * p), at 16-bit precision
    assert th[0] == pytest.approx(c0[5], abs=2e-5)  # 0.6
    assert th[5] == pytest.approx(0.9)  # 0.95 everywhere: capped at 0.9
    assert th[7] == pytest.approx(0.4, abs=2e-5)  # n = 2: element round(1.0) = 1
    assert th[3] == pytest.approx(0.9)  # never predicted: the cap (no pixel uses it)
    assert class_thresholds(pred, 66)["thresholds"][0] == pytest.approx(c0[7], abs=2e-5)  # round(6.6) = 7
    assert class_thresholds(pred, 100)["thresholds"][0] == pytest.approx(0.9)  # the largest, capped
    r = pseudo_labels(pred, tmp_path / "pseudo", 50)
    lab1 = read_label(tmp_path / "pseudo" / "labels" / "f0.png", "trainid")
    lab2 = read_label(tmp_path / "pseudo" / "labels" / "f1.png", "trainid")
    # class 0 keeps confidences >= 0.6, class 5 keeps all (0.95 >= 0.9), class 7 (threshold 0.4) keeps 0.4
    assert lab1[0].tolist() == [255, 255, 255, 255, 255] and lab2[0].tolist() == [0, 0, 0, 0, 0]
    assert lab1[1].tolist() == [5, 5, 5, 255, 255] and lab2[1].tolist() == [7, 5, 5, 5, 5]
    assert r["kept_fraction"] == pytest.approx(13 / 20)
    # the pseudo-labelled set reads back through the same readers, labels unchanged
    index = build_index(f"pseudo:{tmp_path / 'pseudo'}")
    assert index.label_format == "trainid" and [s.rel for s in index.samples] == ["f0.png", "f1.png"]
    assert np.array_equal(load_pair(index.samples[1], index.label_format)[1], lab2)


def test_pseudo_label_quality_counts_precision_and_coverage(tmp_path):
    cls = np.array([[1, 1, 2, 2]])
    pred = fake_predictions(tmp_path, [(cls, np.ones((1, 4)))])
    pseudo_labels(pred, tmp_path / "pseudo", 50)
    # the truth as a trainId set of the same frames: 1 1 1 3
    truth = tmp_path / "truth"
    save_png(truth / "labels" / "f0.png", np.array([[1, 1, 1, 3]], np.uint8))
    write_json(truth / "about.json", {"data": f"folder:{tmp_path / 'frames'}"})
    q = pseudo_label_quality(tmp_path / "pseudo", f"pseudo:{truth}")
    assert q["per_class"]["sidewalk"] == {"precision": 100.0, "coverage": pytest.approx(100.0)}  # class 1
    assert q["per_class"]["building"] == {"precision": 0.0, "coverage": None}  # class 2: truly 1 and 3
    assert q["per_class"]["wall"] == {"precision": None, "coverage": 100.0}  # class 3: labelled, as 2
    assert q["precision"] == 50.0 and q["coverage"] == 100.0


def test_trainid_labels_must_be_grey(tmp_path):
    from i2iuda.errors import DataError

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="trainId label is a RGB image"):
        read_label(path, "trainid")
    with pytest.raises(DataError, match="no .*about.json"):
        build_index(f"pseudo:{tmp_path}")


@pytest.fixture(scope="module")
def two_runs(synth_root, tmp_path_factory):
    runs = []
    for seed in (0, 1):
        run = tmp_path_factory.mktemp("st") / f"run{seed}"
        over = TINY + [f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
                       "epochs=1", "steps_per_epoch=3", f"seed={seed}"]
        train_segmenter(load_config(SegmentConfig, None, over), run, progress=False)
        runs.append(run)
    return runs


def test_ensemble_prediction_is_the_mean_softmax_and_resumes(two_runs, synth_root, tmp_path):
    from i2iuda.data.transforms import eval_transform
    from i2iuda.segmentation.models import load_trained

    spec = f"synthetic:{synth_root}:target-train,limit=6,seed=0"
    out = tmp_path / "pred"
    predict(two_runs, spec, out, device="cpu", batch_size=4, progress=False)
    index = build_index(spec)
    models = [load_trained(r, torch.device("cpu"))[0] for r in two_runs]
    for s in index.samples[:2]:
        image, _ = load_pair(s, None)
        x = eval_transform((32, 64))(image, None)[0][None]
        with torch.no_grad():
            p = sum(torch.nn.functional.interpolate(m(x).softmax(1), size=image.shape[:2], mode="bilinear",
                                                    align_corners=False) for m in models)[0] / 2
        conf = np.asarray(Image.open(out / "confidence" / s.rel)).astype(np.float64) / 65535
        cls = np.asarray(Image.open(out / "labels" / s.rel))
        assert np.abs(conf - p.max(0).values.numpy()).max() < 2e-4
        top2 = p.topk(2, 0).values
        clear = (top2[0] - top2[1] > 1e-4).numpy()  # where the argmax is not a float tie
        assert np.array_equal(cls[clear], p.argmax(0).numpy()[clear])
    # resumable: a deleted frame is redone, the others are left alone
    first = out / "labels" / index.samples[0].rel
    stamp = (out / "labels" / index.samples[1].rel).stat().st_mtime_ns
    first.unlink()
    predict(two_runs, spec, out, device="cpu", progress=False)
    assert first.is_file() and (out / "labels" / index.samples[1].rel).stat().st_mtime_ns == stamp
    from i2iuda.errors import UserError
    with pytest.raises(UserError, match="holds predictions of other runs"):
        predict(two_runs[:1], spec, out, device="cpu", progress=False)


def test_one_part_mix_is_the_plain_stream_and_parts_keep_their_shares():
    plain = list(StreamSampler(10, 4, 3, 2, 7))
    assert list(MixedStreamSampler([(10, 4)], 3, 2, 7)) == plain
    mixed = list(MixedStreamSampler([(10, 3), (5, 1)], 3, 0, 6))
    assert len(mixed) == 24
    for b in range(6):
        batch = [i for _, i in mixed[4 * b:4 * b + 4]]
        assert all(i < 10 for i in batch[:3]) and 10 <= batch[3] < 15
    assert sorted([i for _, i in mixed if i >= 10][:5]) == [10, 11, 12, 13, 14]  # a full pass over the second set


def test_mixed_training_resumes_exactly(two_runs, synth_root, tmp_path):
    spec = f"synthetic:{synth_root}:target-train,limit=8,seed=0"
    predict(two_runs[:1], spec, tmp_path / "pred", device="cpu", progress=False)
    pseudo_labels(tmp_path / "pred", tmp_path / "pseudo", 50)
    over = TINY + [f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val",
                   "epochs=2", "steps_per_epoch=2", f"mix=pseudo:{tmp_path / 'pseudo'}", "mix_fraction=0.5",
                   f"init_from={two_runs[0]}", "data.val_size=[16,32]"]
    state = segmenter_resumes_exactly(load_config(SegmentConfig, None, over), tmp_path, stop_at_step=3)
    assert len(state["history"]) == 2
    assert json.loads((tmp_path / "once" / "summary.json").read_text())["steps"] == 4
