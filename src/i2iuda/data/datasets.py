"""Readers for GTA5, Cityscapes, SYNTHIA RAND-CITYSCAPES and plain image folders.

A data set is named by a *spec*, on the command line and in configs alike:

    KIND:PATH[:SPLIT][,limit=N][,seed=S]

    gta5:/data/GTA5:train,limit=3000,seed=0   3000 random frames of GTA5's train part
    cityscapes:/data/cityscapes:val            Cityscapes val (500 frames)
    synthia:/data/RAND_CITYSCAPES              all of SYNTHIA
    folder:/data/my_frames                     every image below a folder, unlabelled
    synthetic:runs/bench:target-val            the built-in benchmark (see synthetic.py)
    pseudo:runs/st/pseudo/round1               frames with labels written by i2iuda (``segment predict``,
                                               pseudo-labels): DIR/about.json names the frames' own
                                               spec, DIR/labels/ holds one trainId PNG per frame

GTA5 and SYNTHIA have no official validation split: ``train`` and ``val`` are a fixed holdout
chosen by a hash of each file name (``val_fraction`` of the frames, 10% by default), so the
split never changes when files are added, subsetted or reordered. ``all`` is both.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..errors import DataError, UserError
from . import labels as L

log = logging.getLogger(__name__)

KINDS = ("gta5", "cityscapes", "synthia", "folder", "synthetic", "pseudo")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Frames of the public GTA5 release that are blank (all black or all white): left out.
GTA5_BLANK_FRAMES = frozenset({"15188.png", "17705.png"})
SYNTHETIC_SPLITS = {  # synthetic split -> (layout, sub-folder, split of that layout)
    "source": ("gta5", "source", "all"),
    "source-train": ("gta5", "source", "train"),
    "source-val": ("gta5", "source", "val"),
    "target": ("cityscapes", "target", "train"),
    "target-train": ("cityscapes", "target", "train"),
    "target-val": ("cityscapes", "target", "val"),
}


@dataclass
class DataSpec:
    kind: str
    root: str
    split: str = ""  # "" = the kind's default
    limit: int | None = None  # deterministic random subset of this many frames
    seed: int = 0  # seed of that subset
    val_fraction: float = 0.1  # holdout for gta5/synthia train/val

    def __str__(self) -> str:
        text = f"{self.kind}:{self.root}" + (f":{self.split}" if self.split else "")
        if self.limit is not None:
            text += f",limit={self.limit},seed={self.seed}"
        if self.val_fraction != 0.1:
            text += f",val_fraction={self.val_fraction:g}"
        return text


def parse_spec(text: str | DataSpec) -> DataSpec:
    """Parse ``KIND:PATH[:SPLIT][,key=value...]`` (see the module docstring)."""
    if isinstance(text, DataSpec):
        return text
    head, *opts = str(text).split(",")
    kind, sep, rest = head.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise UserError(f"data spec {text!r}: expected KIND:PATH[:SPLIT] with KIND one of {', '.join(KINDS)}")
    root, split = rest, ""
    if ":" in rest:
        maybe_root, _, maybe_split = rest.rpartition(":")
        if maybe_split and "/" not in maybe_split:
            root, split = maybe_root, maybe_split
    spec = DataSpec(kind, root, split)
    for opt in opts:
        key, eq, value = opt.partition("=")
        try:
            if key == "limit":
                spec.limit = int(value)
                ok = spec.limit >= 1
            elif key == "seed":
                spec.seed = int(value)
                ok = spec.seed >= 0
            elif key == "val_fraction":
                spec.val_fraction = float(value)
                ok = 0 < spec.val_fraction < 1  # (NaN fails both)
            else:
                raise ValueError
        except ValueError:
            raise UserError(f"data spec {text!r}: bad option {opt!r} (known: limit=N, seed=S, val_fraction=F)") from None
        if not ok:
            expected = {"limit": "at least 1", "seed": ">= 0", "val_fraction": "strictly between 0 and 1"}[key]
            raise UserError(f"data spec {text!r}: {opt}: out of range (expected {key} {expected})")
    return spec


@dataclass
class Sample:
    image: Path
    label: Path | None
    rel: str  # image path relative to the data set root: keeps the layout when we write outputs


@dataclass
class Index:
    """The frames of one data set and what was wrong while listing them."""

    spec: DataSpec
    samples: list[Sample]
    label_format: str | None  # "gta5" | "cityscapes" | "synthia" | "trainid" | None (unlabelled)
    problems: list[str] = field(default_factory=list)
    root: Path = Path(".")  # the folder that Sample.rel is relative to

    @property
    def labelled(self) -> bool:
        return self.label_format is not None


def _require_dir(spec: DataSpec, path: Path, what: str) -> None:
    if not Path(spec.root).is_dir():
        raise DataError(f"{spec}: folder {spec.root} does not exist")
    if not path.is_dir():
        raise DataError(f"{spec}: expected sub-folder {what} not found under {spec.root}")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _holdout(samples: list[Sample], split: str, val_fraction: float) -> list[Sample]:
    if split in ("", "all"):
        return samples
    if split not in ("train", "val"):
        raise UserError(f"split {split!r}: expected all, train or val")
    cut = int(round(val_fraction * 10_000))
    is_val = [zlib.crc32(s.rel.encode()) % 10_000 < cut for s in samples]
    return [s for s, v in zip(samples, is_val) if v == (split == "val")]


def _subset(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    if limit is None or limit >= len(samples):
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def _pair(spec: DataSpec, images: list[Path], label_of, problems: list[str], root: Path) -> list[Sample]:
    """Pair every image with its label; images without one are left out and reported."""
    samples, missing = [], []
    for img in images:
        lbl = label_of(img)
        if lbl.is_file():
            samples.append(Sample(img, lbl, img.relative_to(root).as_posix()))
        else:
            missing.append(img.name)
    if missing:
        problems.append(f"{len(missing)} image(s) without a label, left out: {', '.join(missing[:5])}"
                        + (" ..." if len(missing) > 5 else ""))
    return samples


def _index_gta5(spec: DataSpec, problems: list[str]) -> list[Sample]:
    root = Path(spec.root)
    _require_dir(spec, root / "images", "'images/' (with 'labels/' beside it)")
    _require_dir(spec, root / "labels", "'labels/'")
    images = _list_images(root / "images")
    blank = [p for p in images if p.name in GTA5_BLANK_FRAMES]
    if blank:
        problems.append(f"known blank frame(s) left out: {', '.join(p.name for p in blank)}")
    images = [p for p in images if p.name not in GTA5_BLANK_FRAMES]
    samples = _pair(spec, images, lambda p: root / "labels" / (p.stem + ".png"), problems, root)
    stems = {p.stem for p in images}
    orphans = [p.name for p in _list_images(root / "labels") if p.stem not in stems and p.name not in GTA5_BLANK_FRAMES]
    if orphans:
        problems.append(f"{len(orphans)} label(s) without an image: {', '.join(orphans[:5])}"
                        + (" ..." if len(orphans) > 5 else ""))
    return samples


def _index_cityscapes(spec: DataSpec, problems: list[str]) -> list[Sample]:
    root = Path(spec.root)
    split = spec.split or "train"
    if split not in ("train", "val", "test"):
        raise UserError(f"{spec}: Cityscapes split must be train, val or test, not {split!r}")
    _require_dir(spec, root / "leftImg8bit" / split, f"'leftImg8bit/{split}/'")
    images = [p for p in _list_images(root / "leftImg8bit" / split) if p.name.endswith("_leftImg8bit.png")]
    if split == "test" or not (root / "gtFine" / split).is_dir():
        if split != "test":
            problems.append(f"no 'gtFine/{split}/' folder: read unlabelled")
        return [Sample(p, None, p.relative_to(root).as_posix()) for p in images]

    def label_of(img: Path) -> Path:
        stem = img.name[: -len("_leftImg8bit.png")]
        return root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"

    return _pair(spec, images, label_of, problems, root)


def _index_synthia(spec: DataSpec, problems: list[str]) -> list[Sample]:
    root = Path(spec.root)
    _require_dir(spec, root / "RGB", "'RGB/' (with 'GT/LABELS/' beside it)")
    _require_dir(spec, root / "GT" / "LABELS", "'GT/LABELS/'")
    return _pair(spec, _list_images(root / "RGB"), lambda p: root / "GT" / "LABELS" / p.name, problems, root)


def label_path(folder: Path, rel: str) -> Path:
    """Where a label written by i2iuda for frame ``rel`` lives: its relative path, as a PNG."""
    return folder / Path(rel).with_suffix(".png")


def _index_pseudo(spec: DataSpec) -> Index:
    """Frames of another data set paired with trainId labels that i2iuda wrote (DIR/labels/);
    frames without a label are left out and reported. The split of the spec is not used."""
    import json

    root = Path(spec.root)
    about = root / "about.json"
    if not about.is_file():
        raise DataError(f"{spec}: no {about} (write one with 'i2iuda segment predict ... --out {root}')")
    try:
        frames = json.loads(about.read_text())["data"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{about}: not an i2iuda prediction folder (no \"data\" spec)") from None
    inner = build_index(frames)
    samples, problems = [], list(inner.problems)
    for s in inner.samples:
        lbl = label_path(root / "labels", s.rel)
        if lbl.is_file():
            samples.append(Sample(s.image, lbl, s.rel))
    if len(samples) < len(inner.samples):
        problems.append(f"{len(inner.samples) - len(samples)} frame(s) of {frames} without a label in {root / 'labels'}, left out")
    if not samples:
        raise DataError(f"{spec}: no labels under {root / 'labels'}")
    return Index(spec, _subset(samples, spec.limit, spec.seed), "trainid", problems, inner.root)


def build_index(spec: DataSpec | str) -> Index:
    """List a data set's frames (deterministically: sorted, then split, then subsetted)."""
    spec = parse_spec(spec)
    if spec.kind == "synthetic":
        layout, sub, split = SYNTHETIC_SPLITS.get(spec.split or "source", (None, None, None))
        if layout is None:
            raise UserError(f"{spec}: synthetic split must be one of {', '.join(SYNTHETIC_SPLITS)}")
        inner = build_index(replace(spec, kind=layout, root=str(Path(spec.root) / sub), split=split))
        inner.spec = spec
        return inner
    if spec.kind == "pseudo":
        return _index_pseudo(spec)
    problems: list[str] = []
    if spec.kind == "gta5":
        samples, fmt = _holdout(_index_gta5(spec, problems), spec.split, spec.val_fraction), "gta5"
    elif spec.kind == "synthia":
        samples, fmt = _holdout(_index_synthia(spec, problems), spec.split, spec.val_fraction), "synthia"
    elif spec.kind == "cityscapes":
        samples = _index_cityscapes(spec, problems)
        fmt = "cityscapes" if samples and samples[0].label is not None else None
    else:  # folder
        if not Path(spec.root).is_dir():
            raise DataError(f"{spec}: folder {spec.root} does not exist")
        root = Path(spec.root)
        samples, fmt = [Sample(p, None, p.relative_to(root).as_posix()) for p in _list_images(root)], None
    if not samples:
        raise DataError(f"{spec}: no images found")
    return Index(spec, _subset(samples, spec.limit, spec.seed), fmt, problems, Path(spec.root))


# --- decoding ----------------------------------------------------------------------------------

def read_image(path: Path) -> np.ndarray:
    """-> HxWx3 uint8 RGB. A 16-bit frame is read at its depth (its 8 high bits: PIL does so for
    16-bit colour, and would clip 16-bit grey to white); 32-bit integer or float frames are refused."""
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16"):
                grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if img.mode in ("I", "F"):
                raise DataError(f"{path}: a {'32-bit integer' if img.mode == 'I' else 'floating-point'} image; "
                                f"expected 8- or 16-bit frames")
            return np.array(img.convert("RGB"))  # writable, for torch.from_numpy
    except DataError:
        raise
    except Exception as e:  # PIL raises several types for truncated or corrupt files
        raise DataError(f"{path}: unreadable image ({e})") from None


def read_label(path: Path, fmt: str, unknown: list[int] | None = None) -> np.ndarray:
    """-> HxW uint8 trainIds (255 = ignore). GTA5 labels stored as RGB colours (some
    redistributed copies) are read through the official colour table; pixels of a colour not in
    it become ignore, and their number is appended to ``unknown`` (for ``data check``)."""
    if fmt == "trainid":  # written by i2iuda: 8-bit trainIds, 255 = ignore, no remapping
        try:
            with Image.open(path) as img:
                if img.mode not in ("L", "P"):
                    raise DataError(f"{path}: trainId label is a {img.mode} image; expected 8-bit grey")
                return np.array(img)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: unreadable label ({e})") from None
    if fmt == "synthia":
        # 16-bit PNG that PIL cannot decode; OpenCV returns BGR, the class id is in red.
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DataError(f"{path}: unreadable label")
        ids = raw[..., 2] if raw.ndim == 3 else raw
        return L.SYNTHIA_LUT[ids]
    try:
        with Image.open(path) as img:
            if fmt == "gta5" and img.mode in ("RGB", "RGBA"):
                train_ids, n = L.colours_to_train_ids(np.asarray(img.convert("RGB")))
                if unknown is not None:
                    unknown.append(n)
                return train_ids
            if img.mode not in ("P", "L"):
                raise DataError(f"{path}: label is a {img.mode} image; expected labelIds as palette "
                                f"indices or RGB colours (GTA5) or 8-bit grey (Cityscapes)")
            ids = np.asarray(img)  # palette *indices* for GTA5, not their colours
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: unreadable label ({e})") from None
    return L.CITYSCAPES_LUT[ids]


def check_labels(index: Index, n: int = 16) -> None:
    """Refuse a labelled set whose labels read as nothing, before a run trains on it: ``n`` labels
    spread over the set, decoded as training reads them; if every one is all ignore (255), as RGB
    colours that are not in GTA5's colour table read, one line says so (``data check`` says more)."""
    if not index.labelled or not index.samples:
        return
    picks = index.samples[:: max(1, len(index.samples) // n)][:n]
    unknown: list[int] = []
    for s in picks:
        if (read_label(s.label, index.label_format, unknown) != L.IGNORE).any():
            return
    colours = f"; {sum(unknown)} of their pixels have colours not in the label colour table" if sum(unknown) else ""
    raise DataError(f"{index.spec}: all {len(picks)} labels sampled ({picks[0].label.name}, ...) read as ignore (255) "
                    f"everywhere{colours}: labels of another format than {index.label_format}'s? "
                    f"'i2iuda data check {index.spec}' shows more")


def load_pair(sample: Sample, fmt: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one frame and its trainIds. A label whose size differs from the image (some GTA5
    frames are off by a few pixels) is resized to it with nearest neighbour."""
    image = read_image(sample.image)
    if sample.label is None or fmt is None:
        return image, None
    return image, fit_label(read_label(sample.label, fmt), image.shape[:2])


def fit_label(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize trainIds to an image's (H, W) with nearest neighbour, if they differ."""
    if label.shape == tuple(shape):
        return label
    return cv2.resize(label, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


class SegmentationDataset(torch.utils.data.Dataset):
    """Frames of an Index as dicts ``{"image", "mask", "name", "index"}`` after ``transform``.

    ``transform(image_uint8_hwc, mask_or_None) -> (image_tensor, mask_tensor_or_None)``.
    A file that cannot be decoded is reported once and replaced by the next frame, so one
    corrupt file in 25,000 does not end a day-long run.
    """

    def __init__(self, index: Index, transform=None, with_labels: bool = True):
        self.index = index
        self.samples = index.samples
        self.fmt = index.label_format if with_labels else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        for attempt in range(len(self.samples)):
            j = (i + attempt) % len(self.samples)
            try:
                image, mask = load_pair(self.samples[j], self.fmt)
                break
            except DataError as e:
                log.warning("skipped: %s", e)
        else:
            raise DataError(f"{self.index.spec}: no readable frame")
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        out = {"image": image, "name": self.samples[j].rel, "index": j}
        if mask is not None:
            out["mask"] = mask
        return out
