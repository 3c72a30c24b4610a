"""``i2iuda data check``: read every frame of a data set once and summarise what is there and
what is wrong with it (decoding in DataLoader workers)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DataError
from . import labels as L
from .datasets import Index, build_index, fit_label, read_image, read_label


@dataclass
class CheckReport:
    spec: str
    frames: int
    labelled: bool
    image_sizes: Counter = field(default_factory=Counter)  # (W, H) -> count
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    problems: list[str] = field(default_factory=list)
    unknown_colour_pixels: int = 0  # RGB-coded labels: pixels whose colour is not in the official table

    @property
    def class_frequency(self) -> dict[str, float]:
        valid = self.class_pixels[: L.NUM_CLASSES]
        total = max(int(self.class_pixels.sum()), 1)
        return {name: float(v) / total for name, v in zip(L.CLASS_NAMES, valid)}

    @property
    def ignore_fraction(self) -> float:
        return float(self.class_pixels[L.IGNORE]) / max(int(self.class_pixels.sum()), 1)


class _Probe(torch.utils.data.Dataset):
    """Decodes one frame and returns its statistics, or the problem found."""

    def __init__(self, index: Index):
        self.index = index

    def __len__(self):
        return len(self.index.samples)

    def __getitem__(self, i):
        s = self.index.samples[i]
        out = {"problems": [], "size": None, "hist": np.zeros(256, np.int64), "unknown": 0}
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
                out["hist"] = np.bincount(fit_label(label, image.shape[:2]).ravel(), minlength=256)
            except DataError as e:
                out["problems"].append(str(e))
        return out


def check_dataset(spec: str, workers: int = 2, progress: bool = True) -> CheckReport:
    from ..progress import track

    index = build_index(spec)
    report = CheckReport(str(index.spec), len(index.samples), index.labelled, problems=list(index.problems))
    loader = torch.utils.data.DataLoader(_Probe(index), batch_size=None, num_workers=workers,
                                         collate_fn=lambda x: x)
    items = track(loader, len(index.samples), "check", unit="frames") if progress else loader
    for item in items:
        report.problems += item["problems"]
        if item["size"]:
            report.image_sizes[item["size"]] += 1
        report.class_pixels += item["hist"]
        report.unknown_colour_pixels += item.get("unknown", 0)
    return report


def format_report(r: CheckReport) -> str:
    lines = [f"data set     {r.spec}", f"frames       {r.frames} ({'labelled' if r.labelled else 'unlabelled'})"]
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in r.image_sizes.most_common(4))
    more = len(r.image_sizes) - 4
    lines.append(f"image sizes  {sizes}" + (f" and {more} other sizes" if more > 0 else ""))
    if r.labelled:
        lines.append(f"ignore       {100 * r.ignore_fraction:.1f}% of pixels"
                     + (f" ({r.unknown_colour_pixels} of unknown colours)" if r.unknown_colour_pixels else ""))
        lines.append("class pixel frequency (% of all pixels):")
        freq = r.class_frequency
        for i in range(0, L.NUM_CLASSES, 4):
            chunk = list(freq.items())[i:i + 4]
            lines.append("  " + "  ".join(f"{name:>13s} {100 * v:5.2f}" for name, v in chunk))
    lines.append(f"problems     {len(r.problems) or 'none'}")
    for p in r.problems[:20]:
        lines.append(f"  - {p}")
    if len(r.problems) > 20:
        lines.append(f"  ... and {len(r.problems) - 20} more")
    return "\n".join(lines)
