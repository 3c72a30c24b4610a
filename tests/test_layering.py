"""The layering CONTRIBUTING.md states ("## Layers"), held against the code: every module's imports
of i2iuda, the lazy ones inside functions included, go only to the layers its own may import;
no import circle; every module in a layer. The table is read from CONTRIBUTING.md itself, so the
manual and the check cannot drift apart."""
import ast
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "i2iuda"


def layers_of(contributing: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """From the '## Layers' table: (module prefix -> layer, layer -> the layers it may import)."""
    text = contributing.read_text()
    section = text.split("## Layers", 1)[1]
    rows = [ln for ln in section.splitlines()[1:] if ln.startswith("|")][2:]  # header and rule off
    owner, allowed, order = {}, {}, []
    for row in rows:
        layer, modules, imports = (c.strip() for c in row.strip("|").split("|")[:3])
        for m in re.findall(r"`([^`]+)`", modules):  # `__init__` is the package itself; `x/` a package
            owner["i2iuda" if m == "__init__" else "i2iuda." + m.replace("/", ".")] = layer
        order.append(layer)
        if imports.startswith("every layer above"):
            allowed[layer] = set(order)
        elif imports.startswith("every layer"):
            allowed[layer] = {"*"}
        else:
            allowed[layer] = {layer} | {x.strip() for x in imports.split(",") if x.strip() not in ("", "—", "-")}
    return owner, allowed


def modules(src: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(src.rglob("*.py")):
        parts = p.relative_to(src.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def walk(node):
    """Every node below ``node`` but those under ``if TYPE_CHECKING:`` (annotations only: no import runs)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            continue
        yield child
        yield from walk(child)


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported i2iuda module, line) of every import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("i2iuda")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("i2iuda"):
                target = node.module
            else:
                continue
            for a in node.names:  # ``from . import labels`` imports a module
                sub = f"{target}.{a.name}"
                out.append((sub if sub in known else target, node.lineno))
    return out


def layer(module: str, owner: dict[str, str]) -> str | None:
    """A module's layer: its own row's, or its package's (a row entry ending in ".", from "x/")."""
    best = max((p for p in owner if module == p or module == p.rstrip(".") or (p.endswith(".") and module.startswith(p))),
               key=len, default=None)
    return owner.get(best)


def violations(src: Path, contributing: Path) -> list[str]:
    owner, allowed = layers_of(contributing)
    mods = modules(src)
    found, graph = [], {}
    for name, path in mods.items():
        mine = layer(name, owner)
        if mine is None:
            found.append(f"{name}: in no layer of {contributing.name}")
            continue
        graph[name] = set()
        for target, line in imports(name, path, set(mods)):
            theirs = layer(target, owner)
            graph[name].add(target)
            if "*" not in allowed[mine] and theirs not in allowed[mine]:
                found.append(f"{path.relative_to(src.parent)}:{line}: {name} ({mine}) imports {target} ({theirs})")
    # no import circle (lazy imports included): depth-first search for a back edge
    state: dict[str, int] = {}

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append("import circle: " + " -> ".join(stack[stack.index(m):] + [n, m]))
            elif m in graph and not state.get(m):
                visit(m, stack + [n])
        state[n] = 2

    for n in graph:
        if not state.get(n):
            visit(n, [])
    return found


def test_the_code_keeps_the_layering_contributing_states():
    assert violations(SRC, ROOT / "CONTRIBUTING.md") == []


@pytest.mark.parametrize("where, planted", [
    ("translation/cyclegan.py", "from ..segmentation.models import load_trained\n"),  # a translator reading models
    ("data/labels.py", "def f():\n    from ..translation import fda\n"),  # lazy, inside a function
    ("report.py", "from .study import Study\n"),  # the report reading the study's code
    ("pictures.py", "from .data.transforms import AugmentConfig\n"),  # base reaching up into data
    ("data/sampling.py", "from .check import check_dataset\n"),  # within a layer: fine on its own ...
])
def test_a_planted_upward_import_is_caught(tmp_path, where, planted):
    """The check fails on an import against the table: each row plants one into a copy of the tree."""
    src = tmp_path / "i2iuda"
    shutil.copytree(SRC, src)
    (src / where).write_text((src / where).read_text() + "\n" + planted)
    found = violations(src, ROOT / "CONTRIBUTING.md")
    if where == "data/sampling.py":  # ... unless it closes a circle
        assert found == []
        (src / "data" / "check.py").write_text((src / "data" / "check.py").read_text() + "\nfrom . import sampling\n")
        found = violations(src, ROOT / "CONTRIBUTING.md")
        assert found and all("import circle" in f for f in found), found
    else:  # named with its file and line (and any circle it closes)
        assert found and found[0].startswith(f"i2iuda/{where}:") and " imports " in found[0], found
