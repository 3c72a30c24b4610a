"""The arm kinds, by name: a plain dict of classes behind one protocol (base.py), in the order a
study lists its arms. Adding a kind is one module here and one entry below (and, for its
settings, a field of StudyConfig: CONTRIBUTING.md)."""
from __future__ import annotations

from .base import Arm
from .online import Online
from .oracle import Oracle
from .self_train import SelfTraining
from .source_only import SourceOnly
from .translation import Translation

KINDS: dict[str, type[Arm]] = {k.KIND: k for k in (SourceOnly, Translation, SelfTraining, Online, Oracle)}

__all__ = ["KINDS", "Arm", "Online", "Oracle", "SelfTraining", "SourceOnly", "Translation"]
