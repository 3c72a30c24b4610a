"""The interfaces written as code, checked: every translation method (``METHODS``) against the
``Translator`` protocol, every trainer against ``Trainer``, every arm kind (``KINDS``) against
``Arm``: each member there, each method callable as the protocol calls it (same parameters, in
order; more only with defaults), and a built instance that ``isinstance`` accepts."""
import ast
import inspect
import textwrap

import pytest

from i2iuda.config import load_config
from i2iuda.runtime import init_runtime
from i2iuda.segmentation.online import OnlineTrainer
from i2iuda.segmentation.train import SegmentTrainer
from i2iuda.study.arms import KINDS, Arm
from i2iuda.training import Trainer
from i2iuda.translation.base import Translator
from i2iuda.translation.methods import METHODS
from i2iuda.translation.train import TranslateConfig


def members(protocol) -> list[str]:
    return sorted(n for n in vars(protocol) | {k: 1 for k in getattr(protocol, "__annotations__", {})}
                  if not n.startswith("_") and n not in ("typed",))


def callable_as(impl, spec) -> bool:
    """``impl`` accepts every call ``spec`` allows: its parameters, in order, then only defaults."""
    a, b = list(inspect.signature(impl).parameters.values()), list(inspect.signature(spec).parameters.values())
    return [p.name for p in a[:len(b)]] == [p.name for p in b] and all(p.default is not p.empty or p.kind in (
        p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in a[len(b):])


def required(func) -> bool:
    """A protocol member without a default: its body is a docstring and ``...`` alone."""
    func = getattr(func, "__func__", func)
    body = ast.parse(textwrap.dedent(inspect.getsource(func))).body[0].body
    body = [b for b in body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str))]
    return len(body) == 1 and isinstance(body[0], ast.Expr) and body[0].value.value is Ellipsis


def check(cls, protocol) -> None:
    assert protocol in cls.__mro__, f"{cls.__name__} does not subclass {protocol.__name__}"  # (issubclass: methods-only protocols)
    for name in members(protocol) + (members(Trainer) if protocol is Translator else []):
        assert hasattr(cls, name) or name in getattr(cls, "__dataclass_fields__", {}) or name in ("rt", "name", "study"), \
            f"{cls.__name__}.{name} missing"
        owner = next((p for p in (protocol, Trainer) if name in vars(p)), None)
        spec = vars(owner)[name] if owner else None
        if callable(getattr(owner, name, None)) and not isinstance(getattr(owner, name), type):
            impl = getattr(cls, name)
            assert callable_as(impl, getattr(owner, name)), f"{cls.__name__}.{name}{inspect.signature(impl)}"
            if required(spec):  # the protocol's placeholder, inherited: not implemented
                assert getattr(impl, "__func__", impl) is not getattr(spec, "__func__", spec), f"{cls.__name__}.{name}"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_a_translator(name, synth_root):
    cls = METHODS[name]
    check(cls, Translator)
    assert isinstance(cls.TRAINS, bool) and hasattr(cls.Config, "__dataclass_fields__")
    tcfg = load_config(TranslateConfig, None, [f"method={name}", f"target=synthetic:{synth_root}:target-train",
                                               "model.ngf=8", "model.ndf=8", "model.n_blocks=1"]
                       if name != "fda" else [f"method={name}", f"target=synthetic:{synth_root}:target-train"])
    assert isinstance(tcfg.model, cls.Config)  # typed once, when the config is loaded
    built = cls.build(tcfg, init_runtime("cpu"), 10, training=cls.TRAINS)
    assert isinstance(built, Translator) and isinstance(built, Trainer)


@pytest.mark.parametrize("cls", [SegmentTrainer, OnlineTrainer], ids=lambda c: c.__name__)
def test_every_trainer_is_a_trainer(cls):
    check(cls, Trainer)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_arm_kind_is_an_arm(name):
    cls = KINDS[name]
    check(cls, Arm)
    assert cls.KIND == name and cls.BOUND in (None, "lower", "upper")
