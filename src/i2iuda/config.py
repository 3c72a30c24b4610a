"""Typed configs: dataclasses, read from YAML, overridden with ``key.sub=value`` pairs, and
saved with every run as YAML.

    cfg = load_config(TranslateConfig, "configs/x.yaml", ["model.ngf=32", "data.size=[64,128]"])
    save_config(cfg, run / "config.yaml")

Every numeric option with a bounded meaning has its range in its dataclass's ``RANGES`` table,
beside the fields (``RANGES = {"epochs": at_least(1), "lr": positive, ...}``), checked whenever
the dataclass is loaded: a value out of range is refused with one line naming the key, the value
and the range, before anything runs.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError
from .io import write_yaml
from .progress import say

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option; of each element, for a tuple such as a size."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False
    off: float | None = None  # one more allowed value, meaning "off" (e.g. 0)
    multiple_of: int | None = None
    at_most: str = ""  # each element at most the same element of this other option (crop <= size)
    ordered: bool = False  # a pair (low, high) with low <= high

    def __str__(self) -> str:
        parts = []
        if self.lo is not None and self.hi is not None:
            parts.append(f"{self.lo:g} {'<' if self.lo_open else '<='} x {'<' if self.hi_open else '<='} {self.hi:g}")
        elif self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        elif self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.at_most:
            parts.append(f"at most {self.at_most}")
        if self.ordered:
            parts.append("low <= high")
        text = ", ".join(parts)
        return text + (f" (or {self.off:g}: off)" if self.off is not None else "")

    def allows(self, value, cfg) -> bool:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        bound = getattr(cfg, self.at_most) if self.at_most else None
        for i, v in enumerate(values):
            if not math.isfinite(v):  # NaN compares false with every bound: it would pass them all
                return False
            if self.off is not None and v == self.off:
                continue
            if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
                return False
            if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
                return False
            if self.multiple_of and v % self.multiple_of:
                return False
            if bound is not None and v > (bound[i] if isinstance(bound, (list, tuple)) else bound):
                return False
        return not (self.ordered and len(values) == 2 and values[0] > values[1])


def at_least(lo: float, **kw) -> Range:
    return Range(lo=lo, **kw)


def between(lo: float, hi: float, **kw) -> Range:
    return Range(lo=lo, hi=hi, **kw)


positive = Range(lo=0, lo_open=True)  # > 0
fraction = Range(lo=0, hi=1)  # a probability or share, 0..1
open_fraction = Range(lo=0, hi=1, lo_open=True, hi_open=True)  # strictly between 0 and 1
adam_beta = Range(lo=0, hi=1, hi_open=True)  # 0 <= beta < 1


def out_of_range(cfg: Any) -> tuple[str, Any, Range] | None:
    """The first option of ``cfg`` outside its dataclass's RANGES: (key, value, range), or None."""
    for key, allowed in getattr(type(cfg), "RANGES", {}).items():
        value = getattr(cfg, key)
        if value is not None and not isinstance(value, bool) and not allowed.allows(value, cfg):
            return key, list(value) if isinstance(value, tuple) else value, allowed
    return None


def check_ranges(cfg: Any, where: str) -> None:
    """Refuse, with one line, any option of ``cfg`` outside its dataclass's RANGES."""
    if bad := out_of_range(cfg):
        key, value, allowed = bad
        raise UserError(f"{where}.{key}={value}: out of range (expected {allowed})")


def to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) > 1:  # e.g. list[str] | dict[str, dict]: the first whose container type matches
            for a in args:
                if isinstance(value, typing.get_origin(a) or a):
                    return _convert(a, value, where)
            names = " or ".join((typing.get_origin(a) or a).__name__ for a in args)
            raise UserError(f"{where}: expected a {names}, got {value!r}")
        return _convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise UserError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_convert(typing.get_args(tp)[0], v, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        item = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        if dataclasses.is_dataclass(item) or item is dict or typing.get_origin(item) is dict:
            # a mapping of entries (arms, per-method settings): an entry set to null is dropped (a
            # preset's arm removed by the file that includes it); a dataclass entry is typed
            return {k: _convert(item, v, f"{where}.{k}") if dataclasses.is_dataclass(item) else v
                    for k, v in value.items() if v is not None}
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, typing.get_args(tp)))}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 4e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):  # no setting means NaN or infinity
        raise UserError(f"{where}={value}: expected a finite number")
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(names))})")
    # missing keys keep their defaults
    try:
        cfg = cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()})
    except ValueError as e:  # a dataclass's own check (__post_init__)
        raise UserError(f"{where}: {e}") from None
    check_ranges(cfg, where)
    # a field whose type another field decides (a translator's settings: its method's Config)
    # is typed last, by the dataclass's own ``typed(where)``
    return cfg.typed(where) if hasattr(cfg, "typed") else cfg


def merge(base: dict, extra: dict) -> dict:
    """``base`` updated with ``extra``, mappings key by key (a preset or an override adds and
    changes keys of the mapping it updates); an empty mapping empties it (merging nothing would
    be a no-op, never what ``self_train={}`` means), anything else replaces."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and v and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """'model.ngf=32' -> {'model': {'ngf': 32}} (the value is read as YAML)."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise UserError(f"override {text!r}: expected key=value, e.g. model.ngf=32")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    node: dict = {}
    cur = node
    parts = key.split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = parsed
    return node


def read_yaml_config(path: str | Path, including: tuple[Path, ...] = ()) -> dict:
    """A YAML config file as a dict. A mapping anywhere in it with ``_base: FILE`` stands for
    FILE (a path relative to this file) updated with the mapping's other keys, so a study preset
    reuses the stage presets and states only where it differs. ``including``: the files whose
    ``_base`` led here (a file that includes itself, at any depth, is refused)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: file not found" if not including else
                        f"{including[-1]}: _base {path}: file not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping at the top level")

    def resolve(node):
        if not isinstance(node, dict):
            return node
        out = {k: resolve(v) for k, v in node.items() if k != "_base"}
        if "_base" in node:
            base = path.parent / str(node["_base"])
            chain = (*including, path)
            if base.resolve() == path.resolve():
                raise UserError(f"{path}: _base names the file itself")
            if base.resolve() in [c.resolve() for c in chain]:
                raise UserError(f"{path}: _base {node['_base']} makes a cycle ("
                                + " -> ".join(c.name for c in (*chain, base)) + ")")
            out = merge(read_yaml_config(base, chain), out)
        return out

    return resolve(loaded)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = (), base: T | None = None) -> T:
    """Defaults (or ``base``) <- YAML file <- overrides."""
    data = to_dict(base if base is not None else cls())
    where = "config"
    if path is not None:
        data, where = merge(data, read_yaml_config(path)), str(path)
    if overrides:
        from_dict(cls, data, where)  # the file's own errors name the file, the overrides' say override
        where = "override"
    for o in overrides:
        override = parse_override(o)
        check_emptied(cls, override, data, o)
        data = merge(data, override)
    return from_dict(cls, data, where)


def check_emptied(cls: type, override: dict, data: dict, text: str) -> None:
    """``key={}`` in an override: refused on a settings section (a dataclass: it would silently
    become the code's defaults, not the preset's), said on the console for a mapping of entries
    (``self_train={}``, ``translate.settings={}``: the preset's entries dropped)."""
    for key, value in override.items():
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        tp = hints.get(key)
        if tp is None:
            continue
        if isinstance(value, dict) and value:
            if dataclasses.is_dataclass(tp):
                check_emptied(tp, value, (data or {}).get(key) or {}, text)
        elif value == {} and dataclasses.is_dataclass(tp):
            raise UserError(f"override {text}: {key} is a section of settings, which {{}} cannot empty (it would "
                            f"be the code's defaults, not the preset's); set the keys to change instead")
        elif value == {} and (data or {}).get(key):
            say(f"override {text}: emptied (the preset's {', '.join(map(str, data[key]))} dropped)")


def save_config(cfg: Any, path: str | Path) -> None:
    write_yaml(path, to_dict(cfg))
