"""``i2iuda translate apply``: translate a whole data set with a trained generator.

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
import torch.nn.functional as nnf
from PIL import Image

from ..config import from_dict
from ..data.datasets import Index, SegmentationDataset, build_index, parse_spec
from ..data.transforms import denormalize, eval_transform
from ..errors import UserError
from ..io import atomic_write_bytes, encode_png, save_palette_png
from ..progress import Bar
from ..runtime import init_runtime
from .cyclegan import CycleGANConfig, Generator


def load_generator(run: str | Path, direction: str = "s2t", device: torch.device = torch.device("cpu")):
    """-> (generator in eval mode, training size (H, W)) from RUN/checkpoints/last.pt."""
    path = Path(run) / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(f"--run {run}: no checkpoint at {path} (train one with 'i2iuda translate train')")
    if direction not in ("s2t", "t2s"):
        raise UserError(f"--direction {direction!r}: expected s2t (G) or t2s (F)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    mcfg = from_dict(CycleGANConfig, ckpt["config"]["model"])
    net = Generator(mcfg.ngf, mcfg.n_blocks)
    prefix = "G." if direction == "s2t" else "F."
    net.load_state_dict({k[len(prefix):]: v for k, v in ckpt["gens"].items() if k.startswith(prefix)})
    return net.to(device).eval(), tuple(ckpt["config"]["data"]["size"])


@torch.no_grad()
def translate_batch(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fully convolutional: pad (reflect) to a multiple of 4, translate, crop back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % 4, (-w) % 4
    if ph or pw:
        x = nnf.pad(x, (0, pw, 0, ph), mode="reflect")
    return net(x)[..., :h, :w]


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
    output keeps the source's layout (the synthetic benchmark's source side is GTA5-style)."""
    kind = parse_spec(source).kind
    return f"{'gta5' if kind == 'synthetic' else kind}:{out}:{split}"


def apply_translator(run: str | Path, source: str, out: str | Path, size: tuple[int, int] | str | None = None,
                     direction: str = "s2t", batch_size: int = 4, workers: int = 2, device: str = "auto",
                     amp: str = "none", progress: bool = True) -> dict:
    """Translate every frame of ``source`` into ``out``. ``size``: (H, W), ``"full"`` for each
    frame's own size, or None for the translator's training size. Returns counts."""
    rt = init_runtime(device, amp)
    net, train_size = load_generator(run, direction, rt.device)
    if rt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    size = train_size if size is None else None if size == "full" else tuple(size)
    out = Path(out)
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
                                             batch_size=batch, num_workers=workers, shuffle=False)
        with ThreadPoolExecutor(max_workers=2) as pool, \
                Bar(len(todo), "translate", unit="frames", show=progress) as bar:
            pending = []
            for item in loader:
                x = rt.to_device(item["image"])
                with rt.autocast():
                    y = translate_batch(net, x)
                frames = denormalize(y.float())
                for name, frame in zip(item["name"], frames):
                    pending.append(pool.submit(_write_png, out / Path(name).with_suffix(".png"), frame))
                while len(pending) > 4 * batch:  # bounded: re-raises a failed write promptly
                    pending.pop(0).result()
                bar.advance(len(frames))
            for f in pending:
                f.result()
    return {"frames": len(index.samples), "translated": len(todo), "skipped": len(index.samples) - len(todo),
            "labels": labels, "out": str(out)}


def sample_grid(run: str | Path, source: str, target: str, n: int = 4, size: tuple[int, int] | None = None,
                device: str = "cpu") -> np.ndarray:
    """A picture of what the translator does: for the first ``n`` frames of each domain, rows
    of source, G(source), F(G(source)), target, F(target), G(F(target))."""
    from ..pictures import grid

    rt = init_runtime(device)
    G, train_size = load_generator(run, "s2t", rt.device)
    F, _ = load_generator(run, "t2s", rt.device)
    tf = eval_transform(size or train_size)
    pick = lambda spec: torch.stack([tf(img, None)[0] for img in _first_images(spec, n)]).to(rt.device)
    s, t = pick(source), pick(target)
    g_s = translate_batch(G, s)
    f_t = translate_batch(F, t)
    cols = [denormalize(c) for c in (s, g_s, translate_batch(F, g_s), t, f_t, translate_batch(G, f_t))]
    return grid([[c[i] for c in cols] for i in range(min(len(s), len(t)))],
                captions=["source", "G(source)", "F(G(source))", "target", "F(target)", "G(F(target))"])


def _first_images(spec: str, n: int) -> list[np.ndarray]:
    from ..data.datasets import read_image

    return [read_image(s.image) for s in build_index(spec).samples[:n]]
