"""Atomic file writing and small image I/O helpers.

Every output is written to a temporary file in the same folder and renamed into place, so a
process killed at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def encode_png(array: np.ndarray, compression: int = 1) -> bytes:
    """HxW or HxWx3 (RGB) uint8/uint16 -> PNG bytes. OpenCV is ~3x faster than PIL here."""
    if array.ndim == 3:
        array = array[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(array))


def save_palette_png(path: str | os.PathLike, indices: np.ndarray, palette: np.ndarray) -> None:
    """Save HxW uint8 indices as a palette ('P' mode) PNG, the format of GTA5's labels."""
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(palette)] = palette
    img.putpalette(flat.flatten().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(path, buf.getvalue())
