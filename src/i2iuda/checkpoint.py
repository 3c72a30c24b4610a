"""Checkpoints that cannot run code.

Run folders and their checkpoints get shared like model weights, so nothing here ever unpickles
a Python object. Two kinds of file:

    RUN/checkpoints/last.pt         the whole training state, for exact resume: nets, optimisers,
                                    schedulers, GradScaler, RNG states, image pools, step, loss sums.
                                    torch.save of tensors, numbers, strings and plain containers only
                                    (``save_state`` checks), read back with torch.load(weights_only=True),
                                    which refuses anything else before it can run.
    RUN/checkpoints/*.safetensors   what a model is *used* with: a translator's inference nets
                                    (translator.safetensors), a segmenter's best-on-source-val model
                                    (best.safetensors), with the run's config as JSON metadata.

Why safetensors for the weights: it is a JSON header plus raw tensor bytes, with no code path at
all (weights_only=True is a restricted unpickler: safe by allow-list, and it has had holes), it
loads without a copy, and it is what other tools read. The training state stays torch.save
because optimiser states are nested dicts with integer keys that safetensors cannot hold, and
because only ``--resume`` reads it.

Every failure is one line naming the file (``UserError``): truncated, not a checkpoint, another
kind or method, another net width. Older i2iuda runs (a pickled numpy RNG state in last.pt,
best.pt, no translator.safetensors) are refused with the command that converts them,
``i2iuda checkpoint convert RUN``, which unpickles them once, at the user's explicit request.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .io import atomic_write_bytes, torch_save
from .runtime import numpy_state_as_plain

STATE_FORMAT = "i2iuda.state/1"
WEIGHTS_FORMAT = "i2iuda.weights/1"


def older_run(run: str | Path, found: str) -> UserError:
    """A run folder from before these formats (``found``: what it has instead)."""
    return UserError(f"--run {run}: an older run ({found}); convert it once with 'i2iuda checkpoint convert "
                     f"{run}' (that unpickles it: only for a run you trust)")


def _convert_hint(path: Path) -> str:
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return (f"if it is an older i2iuda run you trust, convert it once with 'i2iuda checkpoint convert {run}' "
            f"(that unpickles it)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _check_plain(obj: Any, where: str = "state") -> None:
    """Refuse (as a bug) anything torch.load(weights_only=True) would refuse to read back."""
    if isinstance(obj, (torch.Tensor, int, float, bool, str, type(None))):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint {where}: key {k!r} is not a str or int")
            _check_plain(v, f"{where}[{k!r}]")
    else:
        raise TypeError(f"checkpoint {where}: {type(obj).__name__} is not plain data (tensor, number, str, "
                        f"list, tuple, dict)")


# --- training state (last.pt) -------------------------------------------------------------------

def save_state(state: dict, path: str | Path) -> None:
    state = {"format": STATE_FORMAT, **state}
    _check_plain(state)
    torch_save(state, path)


def load_state(path: str | Path, device: torch.device | str = "cpu") -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        why = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln][:1]
        raise UserError(f"{path}: refused: it holds Python objects, not only tensors and plain data, and "
                        f"loading it could run code ({(why or [_first_line(e)])[0][:160]}); "
                        f"{_convert_hint(path)}") from None
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except Exception as e:  # truncated zip, not a torch file, ...
        raise UserError(f"{path}: not a readable checkpoint ({_first_line(e)})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not an i2iuda training checkpoint (no format {STATE_FORMAT!r}); "
                        + _convert_hint(path))
    return state


# --- weights (*.safetensors) ----------------------------------------------------------------------

def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], kind: str, **meta: Any) -> None:
    """``kind``: "translator" or "segmenter"; ``meta`` (config, method, step, ...) is stored as JSON."""
    from safetensors.torch import save

    # one metadata entry: safetensors keeps the header in a hash map, so several entries would come
    # out in a different order from one process to the next (and the same weights in other bytes)
    header = {"i2iuda": json.dumps({"format": WEIGHTS_FORMAT, "kind": kind, **meta})}
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header))


def load_weights(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (tensors on the CPU, metadata) of a weights file of this ``kind``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
    try:
        meta = json.loads(header["i2iuda"])
        if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
            raise ValueError
    except (KeyError, ValueError):
        raise UserError(f"{path}: not an i2iuda weights file (no format {WEIGHTS_FORMAT!r} in its header)") from None
    if meta.get("kind") != kind:
        raise UserError(f"{path}: holds a {meta.get('kind')}'s weights, not a {kind}'s")
    return tensors, meta


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Weights with a NaN or an infinity would train or predict nothing but NaN: refused, naming them."""
    if bad := non_finite(tensors):
        raise UserError(f"{path}: {len(bad)} tensor(s) hold NaN or infinite values ({', '.join(bad[:3])}"
                        f"{', ...' if len(bad) > 3 else ''}): the weights are damaged (or from a diverged run)")


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``module.load_state_dict(tensors)`` (strict), a mismatch as one line naming the file;
    weights that are not finite are refused."""
    check_finite(tensors, path)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        details = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise UserError(f"{path}: does not fit {what}: {(details or [_first_line(e)])[0][:300]}") from None


def fits(path: Path, e: BaseException) -> UserError:
    """A training state that loaded but does not match the trainer (keys, shapes, another method)."""
    return UserError(f"{path}: does not fit this run ({type(e).__name__}: {_first_line(e)})")


# --- older runs: converted once, on the user's word ------------------------------------------------

def _plain_rng(rng: dict) -> dict:
    """An older checkpoint's RNG states (numpy's as a pickled ndarray tuple) as plain data."""
    out = dict(rng)
    if isinstance(rng.get("numpy"), tuple):
        out["numpy"] = numpy_state_as_plain(rng["numpy"])
    if isinstance(rng.get("python"), tuple):
        out["python"] = list(rng["python"])
    return out


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays in an older checkpoint's metadata -> Python numbers and lists."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.tolist() if hasattr(obj, "tolist") and not isinstance(obj, torch.Tensor) else obj


def convert_folder(ckpts: Path) -> list[str]:
    """Rewrite the older checkpoints in one ``checkpoints/`` folder in the safe formats: last.pt as
    plain data, best.pt as best.safetensors. UNPICKLES them: only for files the user trusts.
    Returns what it did, a line per file."""
    done = []
    last = ckpts / "last.pt"
    if last.is_file():
        try:
            load_state(last)
        except UserError:
            old = torch.load(last, map_location="cpu", weights_only=False)  # the user asked for this
            state = {k: v for k, v in old.items() if k != "format"}
            state["rng"] = _plain_rng(state["rng"])
            state["config"] = _plain(state["config"])
            save_state(state, last)
            done.append(f"{last}: rewritten as plain data")
    best = ckpts / "best.pt"
    if best.is_file():
        old = torch.load(best, map_location="cpu", weights_only=False)  # the user asked for this
        save_weights(ckpts / "best.safetensors", old["model"], "segmenter", config=_plain(old["config"]),
                     epoch=_plain(old.get("epoch")), val=_plain(old.get("val")))
        best.unlink()
        done.append(f"{best}: now best.safetensors")
    return done
