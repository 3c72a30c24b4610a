"""Atomic file writing and small image I/O helpers.

Every output is written to a temporary file in the same folder and renamed into place, so a
process killed at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import fnmatch
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from PIL import Image

from .errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place. A write that
    fails (disk full, no permission) removes its temporary file, leaves any previous ``path``
    untouched, and raises one line naming the path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _MODE)
        if _PAUSE_ENV in os.environ:
            _pause_for_tests(path)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UserError(f"{path}: cannot write it ({e.strerror or e}); nothing there was changed") from None
        raise


_PAUSE_ENV = "I2IUDA_TEST_PAUSE_IN_WRITE"
_writes: dict[str, int] = {}


def _pause_for_tests(path: Path) -> None:
    """Test hook: with I2IUDA_TEST_PAUSE_IN_WRITE="GLOB:K" the process stops inside its K-th write of
    a file whose name matches GLOB (data written, not yet renamed into place) and says so on
    stderr, so that a test can kill -9 it exactly there."""
    pattern, k = os.environ[_PAUSE_ENV].rsplit(":", 1)
    if fnmatch.fnmatch(path.name, pattern):
        _writes[pattern] = n = _writes.get(pattern, 0) + 1
        if n == int(k):
            print(f"i2iuda-test: paused in write {n} of {path}", file=sys.stderr, flush=True)
            while True:
                time.sleep(60)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _read_run_file(path: str | os.PathLike, default: Any, parse, fmt: str) -> Any:
    """A file a run folder holds, parsed, or one line naming the file and what is wrong with it
    (``default`` instead when the file is absent, if given)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        if default is not ...:
            return default
        raise UserError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable ({getattr(e, 'strerror', None) or e})") from None
    try:
        return parse(text)
    except (ValueError, yaml.YAMLError) as e:
        what = "empty" if not text.strip() else f"not valid {fmt} ({str(e).splitlines()[0]})"
        raise UserError(f"{path}: {what}: the file is damaged") from None


def read_json(path: str | os.PathLike, default: Any = ...) -> Any:
    """A JSON file a run folder holds (metrics.json, study.json, stages.json, history.json, ...)."""
    return _read_run_file(path, default, json.loads, "JSON")


def read_yaml(path: str | os.PathLike, default: Any = ...) -> Any:
    """A YAML file a run folder holds (its config.yaml)."""
    return _read_run_file(path, default, yaml.safe_load, "YAML")


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
