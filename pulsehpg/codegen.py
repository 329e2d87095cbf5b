"""Generate executable forms of :mod:`pulsehpg.model`.

* :func:`c_header` writes ``csrc/model_gen.h``, the right-hand side the compiled
  core integrates (run ``python -m pulsehpg.codegen`` after editing the model; a
  test fails when the committed header is stale).
* :func:`python_functions` builds the same functions as plain Python for the
  SciPy reference.

Parameters whose value depends on nothing but other parameters (clearances,
stage transit rates) are evaluated once per patient into a "derived" vector.

Coarse states (``State.coarse``) get their own right-hand side. Every maximal
sub-expression of their rates that reads fast states only becomes a *forcing*
term: the fast right-hand side evaluates it at every stage (the core integrates
it over each fast step), and the coarse right-hand side reads its time average
over the coarse step instead. Coarse states that the fast rates read
(*coupled* states) reach the fast right-hand side through a separate vector, so
the core can hand it their values extrapolated to each stage time.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path

from . import model
from .params import BY_SYMBOL, REGISTRY

__all__ = ["Layout", "LAYOUT", "c_header", "python_functions", "write_header"]

_FUNCS_C = {"exp": "exp", "log": "log", "sqrt": "sqrt", "pos": "ph_pos"}
_FUNCS_PY = {"exp": "_exp", "log": "_log", "sqrt": "_sqrt", "pos": "_pos"}


# the parameters that speed slow states up while a cohort equilibrates (1 in simulation)
SPEEDUPS = frozenset(s.speedup for s in model.STATES if s.slow)


def _speedups(states) -> set[str]:
    return {s.speedup for s in states if s.slow}


def _names(expr: str) -> set[str]:
    tree = ast.parse(expr, mode="eval")
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - called


def coarse_observables() -> frozenset[str]:
    """The observables whose expressions read a coarse state (through any Var): a sample
    of only the others needs no coarse step (csrc/engine.h, ph_peek)."""
    coarse = {s.name for s in model.STATES if s.coarse}
    defs = {v.name: v.expr for v in model.VARS + model.OUTPUT_VARS}

    def reads(expr: str, seen: set[str]) -> bool:
        for name in _names(expr):
            if name in coarse:
                return True
            if name in defs and name not in seen:
                seen.add(name)
                if reads(defs[name], seen):
                    return True
        return False

    return frozenset(o.name for o in model.OUTPUTS if reads(o.expr, set()))


@dataclass(frozen=True)
class Layout:
    """Indices of everything the core and the reference address by position."""

    states: tuple[str, ...]
    params: tuple[str, ...]  # symbols, registry order
    inputs: tuple[str, ...]  # inf_<drug>, DRUGS order
    derived: tuple[model.Var, ...]  # param-only vars (clearances come first, unnamed)
    dynamic: tuple[model.Var, ...]  # vars that depend on the state
    outputs: tuple[str, ...]
    # the model's expressions with their parameter-only parts moved into `derived`
    rates: tuple[str, ...]
    pulse: tuple[str, ...]  # interval mean, mass mean, interval shape, mass CV, regular interval
    output_exprs: tuple[str, ...]
    output_vars: tuple[model.Var, ...]
    # multirate split (see the module docstring)
    n_fast: int  # states [0, n_fast) are stepped in the fast loop, the rest are coarse
    forcing: tuple[str, ...]  # fast-only sub-expressions of the coarse rates
    coarse_rates: tuple[str, ...]  # rates of the coarse states, forcing replaced by _fbar<k>
    coarse_vars: tuple[model.Var, ...]  # state-dependent vars the coarse rates need
    coupled: tuple[str, ...]  # coarse states read by the fast rates
    n_endo: int  # fast states [n_endo, n_fast) are drug states: zero until a drug is given

    @property
    def n_derived(self) -> int:
        return len(self.states) + len(self.derived)

    def state_index(self, name: str) -> int:
        return self.states.index(name)

    def param_index(self, sym: str) -> int:
        return self.params.index(sym)


class _Hoister(ast.NodeTransformer):
    """Replace sub-expressions of parameters only by names of derived quantities."""

    def __init__(self, const: set[str], table: dict[str, str]):
        self.const, self.table = const, table

    def _is_const(self, node) -> bool:
        names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
        calls = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call)}
        return bool(names) and set(names) - calls <= self.const

    def _name(self, node) -> ast.Name:
        name = self.table.setdefault(ast.unparse(node), f"_k{len(self.table)}")
        return ast.copy_location(ast.Name(name, ast.Load()), node)

    def visit(self, node):
        if isinstance(node, (ast.BinOp, ast.Call, ast.UnaryOp)) and self._is_const(node):
            return self._name(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) \
                and self._is_const(node.right):
            # x / c -> x * (1 / c): a multiplication in the hot loop, the division once
            inv = ast.BinOp(ast.Constant(1.0), ast.Div(), node.right)
            return ast.BinOp(self.visit(node.left), ast.Mult(), self._name(inv))
        return self.generic_visit(node)

    def __call__(self, expr: str) -> str:
        return ast.unparse(self.visit(ast.parse(expr, mode="eval")))


def _build_layout() -> Layout:
    states = tuple(s.name for s in model.STATES)
    params = tuple(p.sym for p in REGISTRY)
    inputs = tuple(f"inf_{d.name}" for d in model.DRUGS)
    param_like = set(params) | {"LN2"}
    derived, dynamic = [], []
    for v in model.VARS:
        if _names(v.expr) <= param_like:
            derived.append(v)
            param_like.add(v.name)
        else:
            dynamic.append(v)
    known = set(params) | set(states) | set(inputs) | {"LN2"} | {v.name for v in model.VARS}
    for s in model.STATES:
        for e in (s.rate, s.clearance):
            unknown = _names(e) - known
            if unknown:
                raise ValueError(f"state {s.name}: unknown names {sorted(unknown)}")
        if not _names(s.clearance) <= param_like:
            raise ValueError(f"state {s.name}: clearance must depend on parameters only")
    # the speed-ups multiply slow rates outside the expressions: never hoist them with them
    table: dict[str, str] = {}
    hoist = _Hoister(param_like - SPEEDUPS, table)
    dynamic = [model.Var(v.name, hoist(v.expr), v.meaning) for v in dynamic]
    rates = tuple(hoist(s.rate) for s in model.STATES)
    pg = model.PULSE
    # then the log-normal mass's sigma^2 and sigma, log(1 + CV^2) and its root: parameter
    # only, so computed once per patient instead of at every pulse
    sig2 = f"log(1.0 + ({pg.mass_cv}) * ({pg.mass_cv}))"
    pulse = tuple(hoist(e) for e in (pg.interval_mean, pg.mass_mean, pg.interval_shape,
                                      pg.mass_cv, pg.interval_regular, sig2, f"sqrt({sig2})"))
    output_vars = tuple(model.Var(v.name, hoist(v.expr), v.meaning) for v in model.OUTPUT_VARS)
    output_exprs = tuple(hoist(o.expr) for o in model.OUTPUTS)
    derived += [model.Var(name, src, "parameter-only part of an expression")
                for src, name in table.items()]
    return Layout(states, params, inputs, tuple(derived), tuple(dynamic),
                  tuple(o.name for o in model.OUTPUTS), rates, pulse, output_exprs,
                  output_vars, *_multirate(states, dynamic, rates),
                  _drug_block(states, inputs, dynamic))


class _Forcing(ast.NodeTransformer):
    """Replace maximal sub-expressions that read fast states (and no coarse ones) by
    names of forcing terms."""

    def __init__(self, kind: dict[str, str], table: dict[str, str]):
        self.kind, self.table = kind, table

    def kinds(self, node) -> set[str]:
        return {self.kind[n.id] for n in ast.walk(node)
                if isinstance(n, ast.Name) and n.id in self.kind}

    def visit(self, node):
        k = self.kinds(node)
        if "F" in k and "C" not in k and isinstance(node, ast.expr):
            name = self.table.setdefault(ast.unparse(node), f"_fbar{len(self.table)}")
            return ast.copy_location(ast.Name(name, ast.Load()), node)
        if isinstance(node, ast.Name):
            return node
        return self.generic_visit(node)

    def __call__(self, expr: str) -> str:
        return ast.unparse(self.visit(ast.parse(expr, mode="eval")))


def _nonlinear_uses(node, names: set[str], linear: bool = True) -> set[str]:
    """Names from `names` that occur anywhere but in sums, products and numerators."""
    if isinstance(node, ast.Name):
        return set() if linear or node.id not in names else {node.id}
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        return (_nonlinear_uses(node.left, names, linear)
                | _nonlinear_uses(node.right, names, linear))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _nonlinear_uses(node.left, names, linear) | _nonlinear_uses(node.right, names, False)
    if isinstance(node, ast.UnaryOp):
        return _nonlinear_uses(node.operand, names, linear)
    return set().union(set(), *(_nonlinear_uses(c, names, False)
                                for c in ast.iter_child_nodes(node)))


def _multirate(states, dynamic, rates):
    """The coarse/fast split: (n_fast, forcing, coarse rates, coarse vars, coupled)."""
    coarse = [s.coarse for s in model.STATES]
    n_fast = coarse.index(True) if any(coarse) else len(coarse)
    if not all(coarse[n_fast:]):
        raise ValueError("coarse states must come last in model.STATES")
    kind = {s: ("C" if c else "F") for s, c in zip(states, coarse)}
    for v in dynamic:  # a var is coarse if it reads any coarse state, else fast
        ks = {kind[n] for n in _names(v.expr) if n in kind}
        if ks:
            kind[v.name] = "C" if "C" in ks else "F"
    table: dict[str, str] = {}
    force = _Forcing(kind, table)
    coarse_rates = tuple(force(rates[i]) for i in range(n_fast, len(states)))
    used = set().union(*(_names(e) for e in coarse_rates)) if coarse_rates else set()
    needed = []
    for v in reversed(dynamic):  # only the coarse vars the coarse rates need
        if kind.get(v.name) == "C" and v.name in used:
            expr = force(v.expr)
            needed.append(model.Var(v.name, expr, v.meaning))
            used |= _names(expr)
    needed.reverse()
    # forcing terms are averaged over a coarse step: only exact where they enter linearly
    carrying = set(table.values())
    for v in needed:
        if _names(v.expr) & carrying:
            carrying.add(v.name)
    for where, expr in [(v.name, v.expr) for v in needed] + list(
            zip(states[n_fast:], coarse_rates)):
        bad = _nonlinear_uses(ast.parse(expr, mode="eval").body, carrying)
        if bad:
            raise ValueError(f"{where}: fast inputs {sorted(bad)} enter a coarse rate "
                             "non-linearly (in a division, power or function)")
    if used & set(states[:n_fast]):
        raise ValueError("coarse rates read fast states outside forcing terms: "
                         f"{sorted(used & set(states[:n_fast]))}")
    # coarse states the fast rates and the forcing terms read (through vars)
    fast_used = set().union(*(_names(e) for e in list(rates[:n_fast]) + list(table)))
    for v in reversed(dynamic):
        if v.name in fast_used:
            fast_used |= _names(v.expr)
    coupled = tuple(s for s in states[n_fast:] if s in fast_used)
    pulse_used = set().union(*(_names(e) for e in (model.PULSE.interval_mean,
                                                   model.PULSE.mass_mean)))
    for v in reversed(dynamic):
        if v.name in pulse_used:
            pulse_used |= _names(v.expr)
    targets = {st for dr in model.DRUGS for st, _ in dr.targets}
    targets |= {st for st, _ in model.PULSE.effects + model.PULSE.counts}
    bad = (pulse_used | targets) & set(states[n_fast:])
    if bad:
        raise ValueError(f"the pulse law and doses must not touch coarse states: {sorted(bad)}")
    forcing = tuple(src for src, _ in sorted(table.items(), key=lambda kv: int(kv[1][5:])))
    return n_fast, forcing, coarse_rates, tuple(needed), coupled


class _Zeros(ast.NodeTransformer):
    """Set some names to zero and fold what follows (0 * x, x + 0, 1 * x, constants), as
    IEEE arithmetic does for finite x: the folded expression gives the same bits."""

    def __init__(self, zero: dict[str, float]):
        self.const = dict(zero)

    @staticmethod
    def _c(node):
        return node.value if isinstance(node, ast.Constant) else None

    def visit_Name(self, node):
        if node.id in self.const:
            return ast.copy_location(ast.Constant(float(self.const[node.id])), node)
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        v = self._c(node.operand)
        return ast.Constant(-v) if v is not None and isinstance(node.op, ast.USub) else node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        a, b, op = self._c(node.left), self._c(node.right), node.op
        if a is not None and b is not None and not isinstance(op, ast.Pow) \
                and not (isinstance(op, ast.Div) and b == 0.0):
            return ast.Constant({ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b,
                                 ast.Div: a / b if b else 0.0}[type(op)])
        if isinstance(op, ast.Mult):
            if a == 0.0 or b == 0.0:
                return ast.Constant(0.0)
            if a == 1.0:
                return node.right
            if b == 1.0:
                return node.left
        if isinstance(op, ast.Div):
            if a == 0.0:
                return ast.Constant(0.0)
            if b == 1.0:
                return node.left
        if isinstance(op, ast.Add):
            if a == 0.0:
                return node.right
            if b == 0.0:
                return node.left
        if isinstance(op, ast.Sub) and b == 0.0:
            return node.left
        if isinstance(op, ast.Pow) and a == 0.0 and b is not None and b > 0:
            return ast.Constant(0.0)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if node.func.id == "pos" and self._c(node.args[0]) is not None:
            return ast.Constant(max(self._c(node.args[0]), 0.0))
        return node

    def __call__(self, expr: str) -> str:
        return ast.unparse(self.visit(ast.parse(expr, mode="eval")))


def _drug_block(states, inputs, dynamic) -> int:
    """First index of the drug states: the dose targets and the states their rates feed,
    whose rates read only drug states, inputs and parameters. They must be the last fast
    states; while all of them and every input are zero they stay zero, and the core
    steps only the states before them."""
    expanded = {}
    for v in dynamic:
        names = _names(v.expr)
        expanded[v.name] = set().union(names, *(expanded.get(n, set()) for n in names))

    def reads(expr):
        names = _names(expr)
        return set().union(names, *(expanded.get(n, set()) for n in names)) & set(states)

    rate = dict(zip(states, (s.rate for s in model.STATES)))
    block = {st for dr in model.DRUGS for st, _ in dr.targets}
    block |= {s for s in states if _names(rate[s]) & set(inputs)}
    grown = True
    while grown:
        new = {s for s in states if s not in block and reads(rate[s]) & block
               and reads(rate[s]) <= block}
        block |= new
        grown = bool(new)
    pulse = {st for st, _ in model.PULSE.effects + model.PULSE.counts}
    block -= pulse
    idx = sorted(states.index(s) for s in block)
    if idx and idx != list(range(idx[0], idx[0] + len(idx))):
        raise ValueError("drug states must be contiguous in model.STATES")
    if any(reads(rate[s]) - block for s in block):
        raise ValueError("drug states' rates must read drug states only")
    return idx[0] if idx else len(states)


LAYOUT = _build_layout()


class _Emitter(ast.NodeVisitor):
    """Translate a Python-syntax expression into C or Python source."""

    def __init__(self, lang: str):
        self.lang = lang

    def emit(self, expr: str) -> str:
        return self.visit(ast.parse(expr, mode="eval").body)

    def visit_BinOp(self, node):
        a, b = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Pow):
            exp = node.right
            if isinstance(exp, ast.Name) and exp.id in BY_SYMBOL and BY_SYMBOL[exp.id].structural:
                exp = ast.Constant(BY_SYMBOL[exp.id].default)
            if isinstance(exp, ast.Constant) and float(exp.value).is_integer() and 1 <= exp.value <= 8:
                return "(" + " * ".join([f"({a})"] * int(exp.value)) + ")"
            return f"pow({a}, {b})" if self.lang == "c" else f"(({a}) ** ({b}))"
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(node.op)]
        return f"({a} {op} {b})"

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.USub):
            return f"(-{self.visit(node.operand)})"
        raise ValueError("unsupported unary operator")

    def visit_Call(self, node):
        table = _FUNCS_C if self.lang == "c" else _FUNCS_PY
        args = ", ".join(self.visit(a) for a in node.args)
        return f"{table[node.func.id]}({args})"

    def visit_Name(self, node):
        if node.id == "LN2":
            return "PH_LN2" if self.lang == "c" else "_LN2"
        p = BY_SYMBOL.get(node.id)
        if p is not None and p.structural:
            return repr(float(p.default))
        return node.id

    def visit_Constant(self, node):
        return repr(float(node.value))

    def generic_visit(self, node):
        raise ValueError(f"unsupported syntax in model expression: {ast.dump(node)}")


def _slow_factor(state: model.State) -> str:
    return f" * {state.speedup}" if state.slow else ""


def _body(lang: str) -> dict[str, list[str]]:
    """Statement lists (language-neutral shape) for each generated function."""
    em = _Emitter(lang)
    L = LAYOUT
    decl = "const double " if lang == "c" else ""
    end = ";" if lang == "c" else ""
    out: dict[str, list[str]] = {}

    def unpack_params(used: set[str]) -> list[str]:
        return [f"{decl}{s} = p[{i}]{end}" for i, s in enumerate(L.params)
                if s in used and not BY_SYMBOL[s].structural]

    def unpack_derived(used: set[str]) -> list[str]:
        return [f"{decl}{v.name} = d[{len(L.states) + j}]{end}"
                for j, v in enumerate(L.derived) if v.name in used]

    def unpack_states(used: set[str]) -> list[str]:
        return [f"{decl}{s} = y[{i}]{end}" for i, s in enumerate(L.states) if s in used]

    def unpack_inputs(used: set[str]) -> list[str]:
        return [f"{decl}{s} = u[{i}]{end}" for i, s in enumerate(L.inputs) if s in used]

    def closure(exprs: list[str], vars_: tuple[model.Var, ...]) -> tuple[set[str], list[model.Var]]:
        """Names used by exprs, pulling in the dynamic vars they need, in order."""
        used = set().union(*(_names(e) for e in exprs)) if exprs else set()
        needed = []
        for v in reversed(vars_):
            if v.name in used:
                needed.append(v)
                used |= _names(v.expr)
        return used, list(reversed(needed))

    # derived: clearances then param-only vars
    lines = []
    d_used = set().union(*(_names(v.expr) for v in L.derived))
    d_used |= set().union(*(_names(s.clearance) for s in model.STATES)) | SPEEDUPS
    lines += unpack_params(d_used)
    for j, v in enumerate(L.derived):
        lines.append(f"{decl}{v.name} = {em.emit(v.expr)}{end}")
        lines.append(f"d[{len(L.states) + j}] = {v.name}{end}")
    for i, s in enumerate(model.STATES):
        lines.append(f"d[{i}] = ({em.emit(s.clearance)}){_slow_factor(s)}{end}")
    out["derived"] = lines

    # rate (without clearance)
    rates = list(L.rates)
    used, needed = closure(rates, L.dynamic)
    used |= _speedups(model.STATES)
    lines = unpack_params(used) + unpack_derived(used) + unpack_states(used) + unpack_inputs(used)
    lines += [f"{decl}{v.name} = {em.emit(v.expr)}{end}" for v in needed]
    for i, s in enumerate(model.STATES):
        lines.append(f"r[{i}] = ({em.emit(L.rates[i])}){_slow_factor(s)}{end}")
    out["rate"] = lines

    # multirate: the fast rates with the forcing terms, and the coarse rates
    nf = L.n_fast
    exprs = list(L.rates[:nf]) + list(L.forcing)
    used, needed = closure(exprs, L.dynamic)
    used |= _speedups(model.STATES[:nf])
    lines = unpack_params(used) + unpack_derived(used)
    lines += [f"{decl}{s} = y[{i}]{end}" for i, s in enumerate(L.states[:nf]) if s in used]
    lines += [f"{decl}{s} = cv[{k}]{end}" for k, s in enumerate(L.coupled) if s in used]
    lines += unpack_inputs(used)
    lines += [f"{decl}{v.name} = {em.emit(v.expr)}{end}" for v in needed]
    for i, s in enumerate(model.STATES[:nf]):
        lines.append(f"r[{i}] = ({em.emit(L.rates[i])}){_slow_factor(s)}{end}")
    lines += _forcing_lines([em.emit(e) for e in L.forcing], lang)
    out["rate_fast"] = lines
    # the same with every drug state and input at zero (the compiler folds them away)
    ne = L.n_endo
    zero = _Zeros({s: 0.0 for s in list(L.states[ne:nf]) + list(L.inputs)})
    folded = []
    for v in needed:
        e = zero(v.expr)
        if isinstance(ast.parse(e, mode="eval").body, ast.Constant):
            zero.const[v.name] = float(ast.parse(e, mode="eval").body.value)
        else:
            folded.append(model.Var(v.name, e))
    exprs = [zero(L.rates[i]) for i in range(ne)] + [zero(e) for e in L.forcing]
    used2, needed2 = closure(exprs, tuple(folded))
    used2 |= _speedups(model.STATES[:ne])
    lines = unpack_params(used2) + unpack_derived(used2)
    lines += [f"{decl}{s} = y[{i}]{end}" for i, s in enumerate(L.states[:ne]) if s in used2]
    lines += [f"{decl}{s} = cv[{k}]{end}" for k, s in enumerate(L.coupled) if s in used2]
    lines += [f"{decl}{v.name} = {em.emit(v.expr)}{end}" for v in needed2]
    for i, s in enumerate(model.STATES[:ne]):
        lines.append(f"r[{i}] = ({em.emit(exprs[i])}){_slow_factor(s)}{end}")
    lines += _forcing_lines([em.emit(e) for e in exprs[ne:]], lang)
    out["rate_nodrug"] = lines
    used, needed = closure(list(L.coarse_rates), L.coarse_vars)
    used |= _speedups(model.STATES[nf:])
    lines = unpack_params(used) + unpack_derived(used)
    lines += [f"{decl}{s} = y[{i}]{end}" for i, s in enumerate(L.states) if s in used and i >= nf]
    lines += unpack_inputs(used)
    lines += [f"{decl}_fbar{k} = fbar[{k}]{end}" for k in range(len(L.forcing))
              if f"_fbar{k}" in used]
    lines += [f"{decl}{v.name} = {em.emit(v.expr)}{end}" for v in needed]
    for i, s in enumerate(model.STATES[nf:], start=nf):
        lines.append(f"r[{i}] = ({em.emit(L.coarse_rates[i - nf])}){_slow_factor(s)}{end}")
    out["rate_coarse"] = lines

    # pulse generator: mean interval and mass, shape and CV, regular interval, mass sigma^2
    # and sigma
    pg = model.PULSE
    exprs = list(L.pulse)
    used, needed = closure(exprs, L.dynamic)
    lines = unpack_params(used) + unpack_derived(used) + unpack_states(used)
    lines += [f"{decl}{v.name} = {em.emit(v.expr)}{end}" for v in needed]
    lines += [f"g[{k}] = {em.emit(e)}{end}" for k, e in enumerate(exprs)]
    out["pulse"] = lines

    # apply a pulse of given mass
    exprs = [e for _, e in pg.effects] + [e for _, e in pg.counts]
    used, needed = closure(exprs, L.dynamic)
    lines = unpack_params(used) + unpack_derived(used)
    for st, e in pg.effects:
        lines.append(f"y[{L.state_index(st)}] += ({em.emit(e)}) * mass{end}")
    for st, e in pg.counts:
        lines.append(f"y[{L.state_index(st)}] += {em.emit(e)}{end}")
    out["apply_pulse"] = lines
    out["marker"] = [f"y[{L.state_index(st)}] += {em.emit(e)}{end}" for st, e in pg.counts]
    out["marker_used"] = sorted(set().union(*(_names(e) for _, e in pg.counts)))

    # outputs
    exprs = list(L.output_exprs)
    vars_all = L.dynamic + L.output_vars
    used, needed = closure(exprs, vars_all)
    lines = unpack_params(used) + unpack_derived(used) + unpack_states(used) + unpack_inputs(used)
    lines += [f"{decl}{v.name} = {em.emit(v.expr)}{end}" for v in needed]
    lines += [f"o[{k}] = {em.emit(e)}{end}" for k, e in enumerate(L.output_exprs)]
    out["outputs"] = lines
    return out


def _forcing_lines(exprs: list[str], lang: str) -> list[str]:
    """The forcing terms, only when asked for (the compiler drops what only they need)."""
    if lang != "c" or not exprs:
        return [f"f[{k}] = {e}" for k, e in enumerate(exprs)]
    return ["if (want_f) {"] + [f"    f[{k}] = {e};" for k, e in enumerate(exprs)] + ["}"]


def _ident(name: str) -> str:
    return name.upper()


_CALL = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*\s*\(")
_LITERAL_RHS = re.compile(r"^(\s*[a-z]\[\d+\] = )\(?\s*(-?[0-9.]+(?:e[-+]?\d+)?)\s*\)?;$")


def _lanes(lines: list[str], vec: str = "ph_v4d") -> list[str] | None:
    """The same statements on lanes of patients, one per element of the vector type vec
    (GCC/Clang vector extension): each lane does the scalar operations in the scalar
    order, so its result is the scalar one bit for bit. None where a statement calls a
    function or branches on a value (no lane form; the core then steps patients one at a
    time)."""
    out = []
    for ln in lines:
        if ln.startswith(("if (want_f)", "}", "(void)")):
            out.append(ln)
            continue
        if "?" in ln or _CALL.search(ln.split("=", 1)[1]):
            return None
        m = _LITERAL_RHS.match(ln)
        if m:  # a vector cannot be assigned a plain number
            ln = f"{m.group(1)}{vec.upper()}_SPLAT({m.group(2)});"
        out.append(ln.replace("const double ", f"const {vec} "))
    return out


# lane widths of the vector rates: 4 (AVX2, or two SSE2 registers) and 8 (AVX-512)
LANE_WIDTHS = (4, 8)


def c_header() -> str:
    L = LAYOUT
    b = _body("c")
    h = [
        "/* Generated by `python -m pulsehpg.codegen` from pulsehpg/model.py. Do not edit. */",
        "#ifndef PULSEHPG_MODEL_GEN_H",
        "#define PULSEHPG_MODEL_GEN_H",
        "#include <math.h>",
        "",
        f"#define PH_NS {len(L.states)}  /* states */",
        f"#define PH_NP {len(L.params)}  /* parameters */",
        f"#define PH_NI {len(L.inputs)}  /* drugs (infusion inputs) */",
        f"#define PH_ND {L.n_derived}  /* derived: clearances, then param-only quantities */",
        f"#define PH_NO {len(L.outputs)}  /* observables */",
        "#define PH_LN2 0.69314718055994530942",
        f"#define PH_NF {L.n_fast}  /* states [0, NF) in the fast loop; [NF, NS) coarse */",
        f"#define PH_NE {L.n_endo}  /* fast states [NE, NF) are drug states */",
        f"#define PH_NFRC {len(L.forcing)}  /* forcing terms of the coarse rates */",
        f"#define PH_NCPL {len(L.coupled)}  /* coarse states the fast rates read */",
        "",
    ]
    for i, s in enumerate(L.states):
        h.append(f"#define PH_S_{_ident(s)} {i}")
    for i, s in enumerate(L.params):
        h.append(f"#define PH_P_{_ident(s)} {i}")
    h.append("")
    h.append("static inline double ph_pos(double x) { return x > 0.0 ? x : 0.0; }")
    h.append("")

    def fn(sig, lines):
        h.append(sig + " {")
        h.extend("    " + ln for ln in lines)
        h.append("}")
        h.append("")

    fn("static inline void ph_derived(const double *restrict p, double *restrict d)", b["derived"])
    fn("/* rates of the fast states [0, NF), and with want_f the forcing terms f; coupled\n"
       " * coarse states from cv. Called with a constant want_f: without it the compiler\n"
       " * leaves out the arithmetic only the forcing terms need. */\n"
       "static inline void ph_rate(const double *restrict y, "
       "const double *restrict p, const double *restrict d, const double *restrict u, "
       "const double *restrict cv, double *restrict r, double *restrict f, const int want_f)",
       ["(void)cv; (void)f; (void)want_f;"] + b["rate_fast"])
    fn("/* ph_rate for the states [0, NE) while every drug state and input is zero */\n"
       "static inline void ph_rate_nodrug("
       "const double *restrict y, const double *restrict p, const double *restrict d, "
       "const double *restrict u, const double *restrict cv, double *restrict r, "
       "double *restrict f, const int want_f)", ["(void)u; (void)cv; (void)f; (void)want_f;"]
       + b["rate_nodrug"])
    # the fast rates on lanes of four and of eight patients (csrc/lanes.h)
    fast_head = ["(void)cv; (void)f; (void)want_f;"] + b["rate_fast"]
    nodrug_head = ["(void)u; (void)cv; (void)f; (void)want_f;"] + b["rate_nodrug"]
    have = _lanes(fast_head) is not None and _lanes(nodrug_head) is not None
    h.append(f"#define PH_HAVE_LANES {int(have)}")
    h.append("")
    for w in LANE_WIDTHS if have else ():
        vec = f"ph_v{w}d"
        h.append(f"typedef double {vec} __attribute__((vector_size({8 * w})));")
        h.append(f"#define {vec.upper()}_SPLAT(x) (({vec}){{{', '.join(['(x)'] * w)}}})")
        h.append("")
        vsig = (f"const {vec} *restrict y, const {vec} *restrict p, const {vec} *restrict d, "
                f"const {vec} *restrict u, const {vec} *restrict cv, {vec} *restrict r, "
                f"{vec} *restrict f, const int want_f")
        fn(f"/* ph_rate on {w} lanes */\nstatic inline __attribute__((always_inline)) void "
           f"ph_rate_v{w}({vsig})", _lanes(fast_head, vec))
        fn(f"/* ph_rate_nodrug on {w} lanes */\nstatic inline __attribute__((always_inline)) "
           f"void ph_rate_nodrug_v{w}({vsig})", _lanes(nodrug_head, vec))
    fn("/* rates of the coarse states [NF, NS), with the forcing terms' averages fbar */\n"
       "static inline void ph_rate_coarse(const double *restrict y, const double *restrict p, "
       "const double *restrict d, const double *restrict u, const double *restrict fbar, "
       "double *restrict r)", ["(void)fbar;"] + b["rate_coarse"])
    fn("static inline void ph_pulse_law(const double *restrict y, const double *restrict p, "
       "const double *restrict d, double *restrict g)", b["pulse"])
    fn("static inline void ph_apply_pulse(double *restrict y, const double *restrict p, "
       "const double *restrict d, double mass)", ["(void)p; (void)d;"] + b["apply_pulse"])
    fn("static inline void ph_outputs(const double *restrict y, const double *restrict p, "
       "const double *restrict d, const double *restrict u, double *restrict o)",
       ["(void)u;"] + b["outputs"])
    # doses
    em = _Emitter("c")
    dose_used = set().union(*(_names(f) for dr in model.DRUGS for _, f in dr.targets))
    dose_used |= set().union(*(_names(e) for _, e in model.PULSE.counts))
    lines = ["(void)d;"]
    lines += [f"const double {s} = p[{i}];" for i, s in enumerate(L.params)
              if s in dose_used and not BY_SYMBOL[s].structural]
    lines.append("switch (drug) {")
    for j, dr in enumerate(model.DRUGS):
        lines.append(f"case {j}: /* {dr.name} */")
        for st, f in dr.targets:
            lines.append(f"    y[{L.state_index(st)}] += ({em.emit(f)}) * amount;")
        if dr.marks_pulse:
            for st, e in model.PULSE.counts:
                lines.append(f"    y[{L.state_index(st)}] += {em.emit(e)};")
        lines.append("    break;")
    lines.append("default: break;")
    lines.append("}")
    fn("static inline void ph_dose(double *restrict y, const double *restrict p, "
       "const double *restrict d, int drug, double amount)", lines)
    bound_used = _names(model.COARSE_LOSS_BOUND)
    fn("/* upper bound (1/h) on the loss rates inside the coarse rates (model.COARSE_LOSS_BOUND),\n"
       " * with the speed-ups of equilibration */\n"
       "static inline double ph_coarse_loss_bound(const double *restrict p)",
       [f"const double {s} = p[{i}];" for i, s in enumerate(L.params) if s in bound_used]
       + [f"return {em.emit(model.COARSE_LOSS_BOUND)};"])
    cpl = ", ".join(str(L.state_index(st)) for st in L.coupled) or "-1"
    h.append(f"static const int PH_CPL[PH_NCPL > 0 ? PH_NCPL : 1] = {{{cpl}}};")
    # coarse states with the same clearance share their ETD coefficients (the coarse step
    # computes one set per group): each coarse state's group, numbered in the order of the
    # groups' first states, and each group's first state
    keys = [(s.clearance, s.slow) for s in model.STATES[L.n_fast:]]
    firsts = sorted(set(keys.index(k) for k in keys))
    h.append(f"#define PH_NCGROUP {max(len(firsts), 1)}")
    slot = ", ".join(str(firsts.index(keys.index(k))) for k in keys) or "0"
    h.append(f"static const int PH_CSLOT[PH_NS - PH_NF > 0 ? PH_NS - PH_NF : 1] = {{{slot}}};")
    h.append(f"static const int PH_CFIRST[PH_NCGROUP] = {{{', '.join(map(str, firsts)) or '0'}}};")
    fast = ", ".join("1" if dr.fast else "0" for dr in model.DRUGS)
    h.append(f"static const int PH_DRUG_FAST[PH_NI] = {{{fast}}};")
    h.append("")
    h.append("#endif")
    return "\n".join(h) + "\n"


def python_functions() -> dict:
    """Plain-Python versions of derived, rate, pulse law, apply-pulse, outputs and dose."""
    L = LAYOUT
    b = _body("py")
    src = []

    def fn(sig, lines):
        src.append(f"def {sig}:")
        src.extend("    " + ln for ln in lines)
        src.append("")

    fn("derived(p, d)", b["derived"])
    fn("rate(y, p, d, u, r)", b["rate"])
    fn("pulse_law(y, p, d, g)", b["pulse"])
    fn("apply_pulse(y, p, d, mass)", b["apply_pulse"] + ["return None"])
    fn("outputs(y, p, d, u, o)", b["outputs"])
    ns = {"_exp": math.exp, "_log": math.log, "_sqrt": math.sqrt,
          "_pos": lambda x: x if x > 0.0 else 0.0, "_LN2": math.log(2.0)}
    exec(compile("\n".join(src), "<pulsehpg.model>", "exec"), ns)  # noqa: S102 - generated from the model

    em = _Emitter("py")
    targets = []
    for dr in model.DRUGS:
        ts = tuple((L.state_index(st), em.emit(f)) for st, f in dr.targets)
        targets.append(ts)
    marker = [(L.state_index(st), e) for st, e in model.PULSE.counts]

    def dose(y, p, drug, amount):
        env = {s: p[i] for i, s in enumerate(L.params)}
        env.update(ns)
        for idx, f in targets[drug]:
            y[idx] += eval(f, env) * amount  # noqa: S307 - expression from the model
        if model.DRUGS[drug].marks_pulse:
            for idx, e in marker:
                y[idx] += eval(e, env)  # noqa: S307

    return {k: ns[k] for k in ("derived", "rate", "pulse_law", "apply_pulse", "outputs")} | {
        "dose": dose}


HEADER_PATH = Path(__file__).resolve().parent.parent / "csrc" / "model_gen.h"


def write_header(path: Path = HEADER_PATH) -> Path:
    path.write_text(c_header())
    return path


if __name__ == "__main__":
    print(write_header())
