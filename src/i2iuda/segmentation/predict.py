"""Predictions on any data set, and pseudo-labels for self-training.

``i2iuda segment predict --run RUN [--run RUN2 ...] --data SPEC --out DIR`` writes, per frame,

    DIR/labels/REL.png       the class (trainId) of the mean softmax of the runs at the frame's
                             own size (several runs: FDA's multi-band ensemble, MBT)
    DIR/confidence/REL.png   the mean softmax's maximum, 8-bit (x 255) or 16-bit (x 65535) grey
    DIR/about.json           the frames' spec, the runs, the protocol: ``pseudo:DIR`` reads DIR as a
                             labelled data set (the frames of that spec with these labels)

streamed (one batch in memory), resumable (a frame whose two files exist is skipped; every file
is written atomically) and in the input size / flip / scales of ``segment eval``.

Pseudo-labels (``pseudo_labels``) follow the published self-training recipes (BDL's SSL.py, FDA's
getSudoLabel): for each class c, among the pixels predicted c, the p-th percentile of their
confidence (p = 50 in BDL, 66 in FDA; as in their scripts, element round(n p) of the n sorted
confidences), capped at 0.9, is the class's threshold; pixels predicted
c with a lower confidence become ignore (255). A per-class threshold keeps every class, rare
ones included, instead of the confident majority classes alone (class-balanced self-training,
Zou et al. 2018). Two streaming passes over DIR/confidence: one for per-class histograms (the
percentile read from them, never all pixels in memory), one to write the labels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image

from ..data import labels as L
from ..data.datasets import Index, SegmentationDataset, build_index, label_path, read_label
from ..data.transforms import eval_transform
from ..errors import DataError, UserError
from ..io import save_png, write_json
from ..progress import Bar
from ..runlock import holding
from ..runtime import init_runtime, loader_workers
from .evaluate import EvalProtocol, predict_logits
from .models import load_trained

CAP = 0.9  # the published recipes' cap on a class's threshold


def _read_grey(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img)
    except Exception as e:
        raise DataError(f"{path}: unreadable ({e})") from None


def confidence_to_float(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float32) / (65535.0 if raw.dtype == np.uint16 else 255.0)


@torch.no_grad()
def predict(runs: list[str | Path], data: str, out: str | Path, protocol: EvalProtocol = EvalProtocol(),
            confidence_bits: int = 16, device: str = "auto", workers: int = 0, batch_size: int = 8,
            progress: bool = True) -> dict:
    """Write DIR/labels, DIR/confidence and DIR/about.json (module docstring); returns about."""

    if confidence_bits not in (8, 16):
        raise UserError(f"--confidence-bits {confidence_bits}: expected 8 or 16")
    if not runs:
        raise UserError("give at least one --run")
    out = Path(out)
    rt = init_runtime(device)
    models, sizes = [], set()
    for r in runs:
        model, cfg = load_trained(r, rt.device)
        models.append(model)
        sizes.add(tuple(cfg["data"]["size"]))
    size = tuple(protocol.size) if protocol.size else sizes.pop() if len(sizes) == 1 else None
    if size is None:
        raise UserError(f"the runs were trained at different sizes {sorted(sizes)}: give --size")
    index = build_index(data)
    about = {"data": str(index.spec), "runs": [str(Path(r).resolve()) for r in runs], "input_size": list(size),
             "flip": protocol.flip, "scales": list(protocol.scales), "confidence_bits": confidence_bits}
    with holding(out):  # one writer (it makes the folder); sweeps the temporaries of a killed run
        old = out / "about.json"
        if old.is_file() and {k: v for k, v in json.loads(old.read_text()).items() if k in about} != about:
            raise UserError(f"--out {out}: holds predictions of other runs or settings ({old}); use another folder")
        write_json(old, about)
        labels, conf = out / "labels", out / "confidence"
        todo = [s for s in index.samples
                if not (label_path(labels, s.rel).is_file() and label_path(conf, s.rel).is_file())]
        ds = SegmentationDataset(Index(index.spec, todo, None, root=index.root), eval_transform(size),
                                 with_labels=False)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=loader_workers(workers))
        views = len(protocol.scales) * (2 if protocol.flip else 1) * len(models)
        scale = 65535 if confidence_bits == 16 else 255
        with Bar(len(index.samples), "predict", unit="frames", completed=len(index.samples) - len(todo),
                 show=progress) as bar:
            for item in loader:
                x = rt.to_device(item["image"])
                # every run's softmax at the input size, averaged; each frame upsampled to its own size
                prob = sum(predict_logits(m, x, tuple(x.shape[-2:]), protocol.flip, protocol.scales, softmax=True)
                           for m in models) / views
                for k, i in enumerate(item["index"].tolist()):
                    s = todo[i]
                    with Image.open(s.image) as img:  # the frame's own size, from its header
                        w, h = img.size
                    p = nnf.interpolate(prob[k:k + 1], size=(h, w), mode="bilinear", align_corners=False)[0]
                    top, cls = p.max(0)
                    save_png(label_path(conf, s.rel), (top.clamp(0, 1) * scale).round().cpu().numpy()
                             .astype(np.uint16 if confidence_bits == 16 else np.uint8))
                    # last: marks the frame done
                    save_png(label_path(labels, s.rel), cls.to(torch.uint8).cpu().numpy())
                bar.advance(len(item["index"]))
    return about


def class_thresholds(pred_dir: str | Path, percentile: float, cap: float = CAP, progress: bool = False) -> dict:
    """Pass 1: per class c, the ``percentile``-th percentile of the confidence of the pixels
    predicted c (from per-class histograms at the stored precision), capped at ``cap``."""
    pred_dir = Path(pred_dir)
    about = json.loads((pred_dir / "about.json").read_text())
    bins = 65536 if about["confidence_bits"] == 16 else 256
    hist = np.zeros(L.NUM_CLASSES * bins, dtype=np.int64)
    index = build_index(f"pseudo:{pred_dir}")
    with Bar(len(index.samples), "thresholds", unit="frames", show=progress) as bar:
        for s in index.samples:
            cls = read_label(s.label, "trainid").astype(np.int64)
            conf = _read_grey(label_path(pred_dir / "confidence", s.rel)).astype(np.int64)
            valid = cls < L.NUM_CLASSES
            hist += np.bincount((cls * bins + conf)[valid], minlength=L.NUM_CLASSES * bins)
            bar.advance()
    hist = hist.reshape(L.NUM_CLASSES, bins)
    thresholds, pixels = [], []
    for c in range(L.NUM_CLASSES):
        n = int(hist[c].sum())
        pixels.append(n)
        if n == 0:
            thresholds.append(cap)
            continue
        # as BDL's and FDA's scripts: the sorted confidences' element round(n * p) (0-based, the last at most)
        rank = min(int(np.round(n * percentile / 100.0)), n - 1)
        k = int(np.searchsorted(np.cumsum(hist[c]), rank + 1))
        thresholds.append(min(k / (bins - 1), cap))
    return {"percentile": percentile, "cap": cap, "thresholds": thresholds, "predicted_pixels": pixels}


def pseudo_labels(pred_dir: str | Path, out: str | Path, percentile: float = 50.0, cap: float = CAP,
                  progress: bool = False) -> dict:
    """Pseudo-labels from a ``predict`` folder: class thresholds (pass 1), then OUT/labels/REL.png
    with pixels below their class's threshold set to ignore (pass 2), OUT/about.json with the
    thresholds. ``pseudo:OUT`` then reads the frames with these labels."""
    pred_dir, out = Path(pred_dir), Path(out)
    if not 0 < percentile <= 100:
        raise UserError(f"percentile {percentile}: expected 0 < p <= 100")
    th = class_thresholds(pred_dir, percentile, cap, progress)
    about = json.loads((pred_dir / "about.json").read_text())
    lut = np.asarray(th["thresholds"] + [2.0] * (256 - L.NUM_CLASSES), dtype=np.float32)  # 255 stays 255
    index = build_index(f"pseudo:{pred_dir}")
    with holding(out):
        kept = total = 0
        with Bar(len(index.samples), "pseudo-labels", unit="frames", show=progress) as bar:
            for s in index.samples:
                cls = read_label(s.label, "trainid")
                conf = confidence_to_float(_read_grey(label_path(pred_dir / "confidence", s.rel)))
                label = np.where(conf >= lut[cls], cls, L.IGNORE).astype(np.uint8)
                save_png(label_path(out / "labels", s.rel), label)
                kept += int((label != L.IGNORE).sum())
                total += label.size
                bar.advance()
        result = {**th, "data": about["data"], "predictions": str(pred_dir.resolve()), "runs": about["runs"],
                  "kept_fraction": kept / max(total, 1)}
        write_json(out / "about.json", result)
    return result


def pseudo_label_quality(pseudo_dir: str | Path, truth: str) -> dict:
    """Per class: precision (pixels pseudo-labelled c that truly are c) and coverage (pixels truly c
    that got a pseudo-label, of any class) against the frames' true labels. A diagnostic for the
    synthetic benchmark only: a real user has no target labels."""
    pseudo = build_index(f"pseudo:{pseudo_dir}")
    true_index = build_index(truth)
    truth_of = {s.rel: s for s in true_index.samples}
    conf = np.zeros((L.NUM_CLASSES, L.NUM_CLASSES + 1), dtype=np.int64)  # [true, pseudo (last: ignore)]
    for s in pseudo.samples:
        t = truth_of.get(s.rel)
        if t is None:
            continue
        true = read_label(t.label, true_index.label_format)
        lab = read_label(s.label, "trainid").astype(np.int64)
        valid = true != L.IGNORE
        lab = np.where(lab == L.IGNORE, L.NUM_CLASSES, lab)
        conf += np.bincount(true[valid].astype(np.int64) * (L.NUM_CLASSES + 1) + lab[valid],
                            minlength=L.NUM_CLASSES * (L.NUM_CLASSES + 1)).reshape(L.NUM_CLASSES, -1)
    labelled = conf[:, :L.NUM_CLASSES]
    out = {}
    for c, name in enumerate(L.CLASS_NAMES):
        as_c, true_c = int(labelled[:, c].sum()), int(conf[c].sum())
        out[name] = {"precision": 100 * labelled[c, c] / as_c if as_c else None,
                     "coverage": 100 * labelled[c].sum() / true_c if true_c else None}
    diag = np.trace(labelled)
    return {"per_class": out, "precision": 100 * diag / max(int(labelled.sum()), 1),
            "coverage": 100 * int(labelled.sum()) / max(int(conf.sum()), 1)}
