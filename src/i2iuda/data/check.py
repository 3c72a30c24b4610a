"""``i2iuda data check``: read every frame of a data set once and summarise what is there and
what is wrong with it (decoding in DataLoader workers)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ..errors import DataError
from ..runtime import loader_workers
from . import labels as L
from .datasets import Index, build_index, fit_label, read_image, read_label
from ..progress import track


@dataclass
class CheckReport:
    spec: str
    frames: int
    labelled: bool
    image_sizes: Counter = field(default_factory=Counter)  # (W, H) -> count
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    problems: list[str] = field(default_factory=list)
    unknown_colour_pixels: int = 0  # RGB-coded labels: pixels whose colour is not in the official table
    thickness: dict = field(default_factory=dict)  # trainId -> [(thickness px, pixels)] of its objects

    def thinnest(self, quantile: float = 0.1) -> dict[str, float | None]:
        """Per class, the object thickness (px) under which ``quantile`` of its pixels lie: weighted
        by pixels, so that the slivers occlusion leaves of every class do not decide it."""
        out = {}
        for c, name in enumerate(L.CLASS_NAMES):
            if not self.thickness.get(c):
                out[name] = None
                continue
            t, n = np.array(self.thickness[c]).T
            order = np.argsort(t)
            cum = np.cumsum(n[order]) / n.sum()
            out[name] = float(t[order][np.searchsorted(cum, quantile)])
        return out

    @property
    def class_frequency(self) -> dict[str, float]:
        valid = self.class_pixels[: L.NUM_CLASSES]
        total = max(int(self.class_pixels.sum()), 1)
        return {name: float(v) / total for name, v in zip(L.CLASS_NAMES, valid)}

    @property
    def ignore_fraction(self) -> float:
        return float(self.class_pixels[L.IGNORE]) / max(int(self.class_pixels.sum()), 1)


def object_thickness(label: np.ndarray) -> list[tuple[int, float, int]]:
    """(trainId, thickness in px, pixels) of every object of a label map: its 8-connected
    components per class, each's thickness = its pixel count / the longer side of its bounding box
    (the width of a pole, ~0.8x the diameter of a disc)."""
    out = []
    for c in np.unique(label):
        if c >= L.NUM_CLASSES:
            continue
        n, _, stats, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), connectivity=8)
        area, longest = stats[1:, cv2.CC_STAT_AREA], np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
        out += [(int(c), float(t), int(a)) for t, a in zip(area / longest, area)]
    return out


class _Probe(torch.utils.data.Dataset):
    """Decodes one frame and returns its statistics, or the problem found."""

    def __init__(self, index: Index):
        self.index = index

    def __len__(self):
        return len(self.index.samples)

    def __getitem__(self, i):
        s = self.index.samples[i]
        out = {"problems": [], "size": None, "hist": np.zeros(256, np.int64), "unknown": 0, "thickness": []}
        try:
            image = read_image(s.image)
        except DataError as e:
            out["problems"].append(str(e))
            return out
        out["size"] = (image.shape[1], image.shape[0])
        if image.std() < 1.0:
            out["problems"].append(f"{s.image}: blank frame (one colour throughout)")
        if s.label is not None and self.index.label_format:
            try:
                unknown: list[int] = []
                label = read_label(s.label, self.index.label_format, unknown)
                if unknown and unknown[0]:
                    out["unknown"] = unknown[0]
                    out["problems"].append(f"{s.label}: {unknown[0]} pixels of colours not in the official "
                                           f"table (read as ignore)")
                if label.shape != image.shape[:2]:
                    out["problems"].append(f"{s.label}: label is {label.shape[1]}x{label.shape[0]} but image is "
                                           f"{image.shape[1]}x{image.shape[0]} (resized with nearest)")
                label = fit_label(label, image.shape[:2])
                out["hist"] = np.bincount(label.ravel(), minlength=256)
                out["thickness"] = object_thickness(label)
            except DataError as e:
                out["problems"].append(str(e))
        return out


def check_dataset(spec: str, workers: int = 2, progress: bool = True) -> CheckReport:

    index = build_index(spec)
    report = CheckReport(str(index.spec), len(index.samples), index.labelled, problems=list(index.problems))
    loader = torch.utils.data.DataLoader(_Probe(index), batch_size=None, num_workers=loader_workers(workers),
                                         collate_fn=lambda x: x)
    items = track(loader, len(index.samples), "check", unit="frames") if progress else loader
    for item in items:
        report.problems += item["problems"]
        if item["size"]:
            report.image_sizes[item["size"]] += 1
        report.class_pixels += item["hist"]
        report.unknown_colour_pixels += item.get("unknown", 0)
        for c, t, a in item["thickness"]:
            report.thickness.setdefault(c, []).append((t, a))
    return report


def format_report(r: CheckReport, input_height: int | None = None, stride: int = 16) -> str:
    """The summary ``data check`` prints. Object thickness is also given in cells of a network's
    output stride ``stride`` at input height ``input_height`` (default: the frames' own)."""
    lines = [f"data set     {r.spec}", f"frames       {r.frames} ({'labelled' if r.labelled else 'unlabelled'})"]
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in r.image_sizes.most_common(4))
    more = len(r.image_sizes) - 4
    lines.append(f"image sizes  {sizes}" + (f" and {more} other sizes" if more > 0 else ""))
    if r.labelled:
        lines.append(f"ignore       {100 * r.ignore_fraction:.1f}% of pixels"
                     + (f" ({r.unknown_colour_pixels} of unknown colours)" if r.unknown_colour_pixels else ""))
        native_h = r.image_sizes.most_common(1)[0][0][1] if r.image_sizes else 1
        scale = (input_height or native_h) / native_h / stride
        lines.append(f"object thickness (its pixels / the longer side of its box; the thickness under which "
                     f"50% and 10% of the class's pixels lie) in px and in cells of output stride {stride} "
                     f"at {input_height or native_h} px high:")
        lines.append(f"{'class':>15s} {'pixels %':>9s} {'objects':>8s} {'50% under':>13s} {'10% under':>13s}")
        median, thin = r.thinnest(0.5), r.thinnest(0.1)
        for c, (name, share) in enumerate(r.class_frequency.items()):
            cells = [f"{t:5.1f} {t * scale:5.2f}c" if t else f"{'-':>12s}" for t in (median[name], thin[name])]
            lines.append(f"{name:>15s} {100 * share:9.2f} {len(r.thickness.get(c, ())):8d}  " + "  ".join(cells))
    lines.append(f"problems     {len(r.problems) or 'none'}")
    for p in r.problems[:20]:
        lines.append(f"  - {p}")
    if len(r.problems) > 20:
        lines.append(f"  ... and {len(r.problems) - 20} more")
    return "\n".join(lines)
