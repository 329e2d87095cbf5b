"""pulsehpg/_core.pyi describes the compiled core as built: the same public names, and
each function's and method's parameters in the same order with the same defaults."""

import ast
import inspect
from pathlib import Path

from pulsehpg import _core

STUB = Path(__file__).resolve().parents[1] / "pulsehpg" / "_core.pyi"


def _stub():
    tree = ast.parse(STUB.read_text())
    names, funcs = set(), {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and not node.target.id.startswith("_"):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
            funcs[node.name] = node
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for m in node.body:
                if isinstance(m, ast.FunctionDef):
                    funcs[f"{node.name}.{m.name}"] = m
    return names, funcs


def _params(fn: ast.FunctionDef):
    args = fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + fn.args.defaults
    return [(a.arg, None if d is None else ast.literal_eval(d)) for a, d in zip(args, defaults)]


def test_stub_names_match_the_extension():
    names, _ = _stub()
    assert names == {n for n in dir(_core) if not n.startswith("_")}


def test_stub_signatures_match_the_extension():
    _, funcs = _stub()
    for name, fn in funcs.items():
        if name.endswith("__init__"):  # Cython hides __init__'s signature; checked by use
            continue
        obj = _core
        for part in name.split("."):
            obj = getattr(obj, part)
        real = [(p.name, None if p.default is inspect.Parameter.empty else p.default)
                for p in inspect.signature(obj).parameters.values()]
        assert real == _params(fn), name


def test_stub_init_matches_the_source():
    """Engine.__init__'s parameters as written in csrc/_core.pyx."""
    import re

    src = (STUB.parents[1] / "csrc" / "_core.pyx").read_text()
    m = re.search(r"cdef class Engine:.*?def __init__\(self,(.*?)\):", src, re.S)
    args = re.sub(r"\[[^\]]*\]", "", m.group(1))  # memoryview shapes hold commas
    pyx = [w.split()[-1] for w in args.split(",")]
    _, funcs = _stub()
    assert [p for p, _ in _params(funcs["Engine.__init__"])][1:] == pyx
