"""Segmentation metrics from one confusion matrix accumulated over a whole data set.

p[i, j] = number of pixels of ground-truth class i predicted as class j (ignore pixels are
left out). With the definitions of Long et al. (FCN, 2015):

    PA     = sum_i p_ii / sum_ij p_ij
    MPA    = mean_i  p_ii / sum_j p_ij                      (per-class recall)
    IoU_i  = p_ii / (sum_j p_ij + sum_j p_ji - p_ii)
    mIoU   = mean_i IoU_i
    FWIoU  = sum_i freq_i * IoU_i,  freq_i = sum_j p_ij / sum_ij p_ij

A class absent from both the ground truth and the predictions has no IoU (NaN in the
per-class table) and is left out of the means. A class absent from the ground truth but
predicted somewhere has IoU 0 (its false positives count) and no per-class accuracy (NaN).
The seed report's printed formulas differ by typos (MPA divided by the predicted instead of
the true pixel count; FWIoU without the frequency weight): we implement the definitions above.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.labels import CLASS_NAMES, IGNORE


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE) -> torch.Tensor:
    """Confusion matrix of one batch by ``bincount``, on the tensors' device (int64). Pixels whose
    label is ``ignore_index`` are left out, and so are those whose prediction is (a prediction file
    may hold 255 where it makes no prediction: that pixel is not scored)."""
    valid = (target != ignore_index) & (pred != ignore_index)
    idx = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(conf: np.ndarray | torch.Tensor, classes: tuple[int, ...] | None = None,
           names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """PA, MPA, mIoU, FWIoU (in %) and per-class IoU/accuracy from a confusion matrix.
    ``classes`` restricts the means to a subset (e.g. SYNTHIA's 16 or 13 classes)."""
    # Per-class values come from the full matrix (a terrain pixel predicted as vegetation is a
    # false positive of vegetation even when terrain is not scored); the subset only selects
    # which classes enter the means, as in the 16/13-class SYNTHIA protocols.
    p = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    n = p.shape[0]
    tp = np.diag(p)
    gt = p.sum(1)
    predicted = p.sum(0)
    union = gt + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    sel = np.arange(n) if classes is None else np.asarray(classes)
    total = gt[sel].sum()
    freq = gt[sel] / total if total > 0 else np.zeros(len(sel))
    pa = tp[sel].sum() / total if total > 0 else np.nan
    return {
        "PA": 100 * float(pa),
        "MPA": 100 * float(np.nanmean(acc[sel])) if np.isfinite(acc[sel]).any() else float("nan"),
        "mIoU": 100 * float(np.nanmean(iou[sel])) if np.isfinite(iou[sel]).any() else float("nan"),
        "FWIoU": 100 * float(np.nansum(freq * iou[sel])),
        "per_class_IoU": {names[i]: (100 * float(iou[i]) if np.isfinite(iou[i]) else None) for i in sel},
        "per_class_acc": {names[i]: (100 * float(acc[i]) if np.isfinite(acc[i]) else None) for i in sel},
        "pixels": int(total),
    }


def flip_table(conf: np.ndarray | torch.Tensor, names: tuple[str, ...] = CLASS_NAMES, top: int = 8,
               min_share: float = 1.0) -> dict:
    """What a translation did to each class's meaning, from a confusion matrix of (what a pixel is
    in the reference: the source label, or a judge's reading of the source frame) x (what a judge
    reads in the translated frame): per class c, the share (%) of its pixels still read as c, and
    the largest flips c -> c' (c' != c) of at least ``min_share`` % of c's pixels, largest first."""
    p = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    rows = p.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = 100 * p / rows[:, None]
    kept = {names[c]: float(share[c, c]) for c in range(len(names)) if rows[c] > 0}
    flips = [{"from": names[c], "to": names[d], "share": float(share[c, d]), "pixels": int(p[c, d])}
             for c in range(len(names)) for d in range(len(names))
             if c != d and rows[c] > 0 and share[c, d] >= min_share]
    return {"kept": kept, "top": sorted(flips, key=lambda f: -f["share"])[:top]}
