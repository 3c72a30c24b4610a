"""The translation methods, by name: a plain dict (see base.py for what a method module holds)."""
from __future__ import annotations

from types import ModuleType

from ..errors import UserError
from . import cut, cyclegan, fda

METHODS: dict[str, ModuleType] = {"cyclegan": cyclegan, "cut": cut, "fda": fda}


def method(name: str) -> ModuleType:
    if name not in METHODS:
        raise UserError(f"method {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]
