"""Metrics against hand-computed confusion matrices."""
from pathlib import Path

import numpy as np
import pytest
import torch

from i2iuda.metrics import confusion_matrix, scores

NAMES = ("a", "b", "c", "d")


def test_confusion_matrix_by_bincount_ignores_255():
    gt = torch.tensor([[0, 0, 1, 255], [2, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 3], [2, 0, 2, 1]])
    conf = confusion_matrix(pred, gt, 4)
    expected = np.zeros((4, 4), int)
    for g, p in [(0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (2, 2), (1, 1)]:
        expected[g, p] += 1
    assert conf.tolist() == expected.tolist()


def test_scores_hand_computed():
    # rows = ground truth, columns = prediction
    p = np.array([[3, 1, 0, 0],
                  [0, 2, 0, 0],
                  [1, 0, 1, 0],
                  [0, 0, 0, 0]])  # class d: absent from ground truth and prediction
    s = scores(p, names=NAMES)
    total = 8
    assert s["PA"] == pytest.approx(100 * 6 / total)
    assert s["MPA"] == pytest.approx(100 * np.mean([3 / 4, 2 / 2, 1 / 2]))
    iou = [3 / (4 + 4 - 3), 2 / (2 + 3 - 2), 1 / (2 + 1 - 1)]
    assert s["mIoU"] == pytest.approx(100 * np.mean(iou))
    assert s["FWIoU"] == pytest.approx(100 * (4 / 8 * iou[0] + 2 / 8 * iou[1] + 2 / 8 * iou[2]))
    assert s["per_class_IoU"]["d"] is None and s["per_class_acc"]["d"] is None


def test_class_predicted_but_absent_counts_as_zero_iou():
    p = np.array([[2, 2], [0, 0]])  # class b never in ground truth, but predicted twice
    s = scores(p, names=("a", "b"))
    assert s["per_class_IoU"]["b"] == 0.0 and s["per_class_acc"]["b"] is None
    assert s["mIoU"] == pytest.approx(100 * (0.5 + 0) / 2)
    assert s["MPA"] == pytest.approx(50.0)


def test_perfect_prediction_is_100_everywhere():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.integers(0, 19, (4, 32, 32)))
    gt[0, :4] = 255
    s = scores(confusion_matrix(gt.clamp(max=18), gt, 19))
    for k in ("PA", "MPA", "mIoU", "FWIoU"):
        assert s[k] == pytest.approx(100.0)


def test_subset_means_use_full_matrix_values():
    p = np.array([[5, 0, 0], [0, 0, 3], [0, 0, 2]])  # class 1 excluded; its pixels predicted as 2
    s = scores(p, classes=(0, 2), names=("a", "b", "c"))
    assert set(s["per_class_IoU"]) == {"a", "c"}
    assert s["per_class_IoU"]["c"] == pytest.approx(100 * 2 / 5)  # the 3 false positives still count
    assert s["mIoU"] == pytest.approx(100 * (1 + 0.4) / 2)
    assert s["PA"] == pytest.approx(100 * 7 / 7)


def test_a_prediction_of_255_is_no_prediction_and_left_out(synth_root, tmp_path):
    """A prediction file may hold 255 where it predicts nothing (evaluate's check allows it): that pixel
    is left out, as a void ground-truth pixel is, and the rest scores as it would alone."""
    from PIL import Image

    from i2iuda.data.datasets import build_index, read_label
    from i2iuda.segmentation.evaluate import evaluate_prediction_files

    spec = f"synthetic:{synth_root}:target-val"
    index = build_index(spec)
    conf = torch.zeros(19, 19, dtype=torch.int64)
    for k, s in enumerate(index.samples):
        label = read_label(s.label, index.label_format)
        pred = label.copy()
        pred[: label.shape[0] // 2] = 255  # the top half: no prediction
        pred[-1, :] = (label[-1, :] + 1) % 19 if k % 2 else label[-1, :]  # some mistakes on the bottom row
        pred[-1, label[-1, :] == 255] = 255
        Image.fromarray(pred.astype(np.uint8)).save(tmp_path / Path(s.rel).name)
        valid = (label != 255) & (pred != 255)
        np.add.at(conf.numpy(), (label[valid].astype(int), pred[valid].astype(int)), 1)
    r = evaluate_prediction_files(tmp_path, spec)
    assert r["confusion"] == conf.tolist() and r["mIoU"] == pytest.approx(scores(conf)["mIoU"])
