"""The translation methods, by name: a plain dict of classes behind one protocol (base.py)."""
from __future__ import annotations

from ..errors import UserError
from .base import Translator
from .cut import CUT
from .cyclegan import CycleGAN
from .fda import FDA

METHODS: dict[str, type[Translator]] = {"cyclegan": CycleGAN, "cut": CUT, "fda": FDA}


def method(name: str) -> type[Translator]:
    if name not in METHODS:
        raise UserError(f"method {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]
