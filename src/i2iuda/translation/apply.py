"""``i2iuda translate apply``: translate a whole data set with any method's translator.

The output keeps the input's layout (``images/00001.png`` stays ``images/00001.png``) and gets
the input's labels beside it (hard-linked, or copied, or resized with nearest neighbour when
the frames were translated at another size), so translated GTA5 is read as ``gta5:OUT``.
Decoding runs in DataLoader workers and PNG encoding/writing in a thread pool, both off the
main thread. Every file is written atomically and finished files are skipped, so an
interrupted job is simply run again.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..data.datasets import Index, SegmentationDataset, build_index, parse_spec, read_image
from ..data.transforms import eval_transform
from ..errors import UserError
from ..io import atomic_write_bytes, encode_png, save_palette_png
from ..pictures import denormalize, tensor_rows
from ..progress import Bar
from ..runlock import holding
from ..runtime import loader_workers
from .base import Translator


def _copy_label(src: Path, dst: Path, size: tuple[int, int] | None, fmt: str) -> None:
    """Put the label beside the translated frame: linked if sizes match, else resized (nearest)."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if size is None:
        tmp = dst.with_name(f".{dst.name}.tmp")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return
    h, w = size
    if fmt == "synthia":
        raw = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        ok, buf = cv2.imencode(".png", cv2.resize(raw, (w, h), interpolation=cv2.INTER_NEAREST))
        atomic_write_bytes(dst, buf.tobytes())
        return
    with Image.open(src) as img:
        resized = img.resize((w, h), Image.NEAREST)  # keeps mode P (GTA5) / L (Cityscapes) and palette
        if img.mode == "P":
            save_palette_png(dst, np.asarray(resized), np.array(img.getpalette()[:768], np.uint8).reshape(-1, 3))
        else:
            atomic_write_bytes(dst, encode_png(np.asarray(resized)))


def _write_png(path: Path, frame: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(frame))  # OpenCV releases the GIL while encoding


def translated_spec(source: str, out: str | Path, split: str) -> str:
    """The spec that reads what ``apply_translator`` wrote from ``source`` into ``out``: the
    output keeps the source's layout (the synthetic benchmark's source side is GTA5-style) and
    its train/val holdout (the same file names, so the same ``val_fraction``)."""
    spec = parse_spec(source)
    holdout = f",val_fraction={spec.val_fraction:g}" if spec.val_fraction != 0.1 else ""
    return f"{'gta5' if spec.kind == 'synthetic' else spec.kind}:{out}:{split}{holdout}"


def apply_translator(translator: Translator, source: str, out: str | Path, size: tuple[int, int] | None,
                     direction: str = "s2t", batch_size: int = 4, workers: int = 2, progress: bool = True) -> dict:
    """Translate every frame of ``source`` into ``out`` at ``size`` (H, W), or at each frame's own
    size with ``size=None``. Returns counts."""
    if direction not in translator.directions:
        raise UserError(f"--direction {direction!r}: this method translates {' or '.join(translator.directions)}")
    rt = translator.rt
    out = Path(out)
    with holding(out):  # one writer; sweeps what a killed run left half-written
        index = build_index(source)
        todo = [s for s in index.samples if not (out / Path(s.rel).with_suffix(".png")).exists()]
        labels = 0
        if index.labelled:
            for s in index.samples:
                _copy_label(s.label, out / s.label.relative_to(index.root), size, index.label_format)
                labels += 1
        if todo:
            sub = Index(index.spec, todo, None, root=index.root)
            batch = batch_size if size is not None else 1  # full-size frames differ in size
            loader = torch.utils.data.DataLoader(SegmentationDataset(sub, eval_transform(size), with_labels=False),
                                                 batch_size=batch, num_workers=loader_workers(workers), shuffle=False)
            with ThreadPoolExecutor(max_workers=2) as pool, \
                    Bar(len(todo), "translate", unit="frames", show=progress) as bar:
                pending = []
                for item in loader:
                    x = rt.to_device(item["image"])
                    with rt.autocast():
                        y = translator.translate(x, item["name"], direction)
                    frames = denormalize(y.float())  # clipped to 0..255
                    for name, frame in zip(item["name"], frames):
                        pending.append(pool.submit(_write_png, out / Path(name).with_suffix(".png"), frame))
                    while len(pending) > 4 * batch:  # bounded: re-raises a failed write promptly
                        pending.pop(0).result()
                    bar.advance(len(frames))
                for f in pending:
                    f.result()
        return {"frames": len(index.samples), "translated": len(todo), "skipped": len(index.samples) - len(todo),
                "labels": labels, "out": str(out)}


def sample_grid(translator: Translator, source: str, target: str, n: int = 4,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """A picture of what a translator does to the first ``n`` frames of ``source`` (the method
    chooses the columns: CycleGAN shows both cycles, FDA the target whose amplitude it took)."""
    rt = translator.rt
    tf = eval_transform(size)
    s_index, t_index = build_index(source), build_index(target)
    pick = lambda index: torch.stack([tf(read_image(s.image), None)[0] for s in index.samples[:n]]).to(rt.device)
    x_s, x_t = pick(s_index), pick(t_index)
    k = min(len(x_s), len(x_t))
    cols, captions = translator.samples(x_s[:k], [s.rel for s in s_index.samples[:k]], x_t[:k])
    return tensor_rows(cols, captions, n=k)
