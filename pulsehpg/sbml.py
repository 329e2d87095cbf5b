"""Export the deterministic model as SBML Level 3 Version 2.

The document is generated from :mod:`pulsehpg.model` and the parameter registry
(:mod:`pulsehpg.params`), never written by hand:

* one compartment (``body``, size 1; nothing in the model lives in it: every
  state is a non-constant *parameter* with a rate rule, which avoids SBML's
  amount/concentration conversions);
* a rate rule ``rate - clearance * y`` per state (slow states multiplied by
  ``accel``, which is 1 here, as in every simulation);
* an assignment rule per model ``Var`` that the rates, the pulse generator or
  the observables use, and one per observable (``lh``, ``fsh``, ``t_total``, ...);
* a constant parameter per registry symbol, in core units (hours), with the
  phenotype's and the caller's values; structural parameters (exponents) are
  inlined as numbers, as in the compiled core; infusion inputs ``inf_<drug>``
  are constant parameters with value 0;
* initial values from an equilibrated deterministic :class:`pulsehpg.Cohort`
  of one patient, so the SBML model starts at the same steady state;
* the deterministic regular GnRH pulse train as an event on the parameter
  ``next_pulse``, and each dose ``(time_h, drug, amount)`` as an event adding
  ``F * amount`` to the drug's target states (see :mod:`pulsehpg.reference` for
  the event semantics; doses at a pulse time are applied first, by priority).

Needs python-libsbml (``pip install "pulsehpg[sbml]"``).
"""

from __future__ import annotations

import ast
import math
import sys

from . import model
from .codegen import _names
from .params import BY_SYMBOL, REGISTRY

__all__ = ["SBMLError", "consistency_errors", "to_sbml"]

LEVEL, VERSION = 3, 2
_FUNCS = {"exp": "exp", "log": "ln", "sqrt": "sqrt"}
# names the L3 infix parser reads as constants or operators
_RESERVED = {"e", "pi", "time", "avogadro", "inf", "infinity", "nan", "notanumber", "true",
             "false", "exponentiale", "and", "or", "not", "xor"}
_DOSE_PRIORITY, _PULSE_PRIORITY = 2, 1


class SBMLError(RuntimeError):
    """libsbml rejected part of the generated document."""


def _libsbml():
    try:
        import libsbml
    except ImportError:
        raise ImportError("SBML export needs python-libsbml: pip install 'pulsehpg[sbml]'") \
            from None
    return libsbml


def _core_unit(unit: str) -> str:
    if unit in ("min", "h", "day", "week"):
        return "h"
    if unit.startswith("1/") and unit[2:] in ("min", "h", "day", "week"):
        return "1/h"
    return unit


class _Infix(ast.NodeVisitor):
    """A model expression (Python syntax) as SBML L3 infix text."""

    def emit(self, expr: str) -> str:
        return self.visit(ast.parse(expr, mode="eval").body)

    def visit_BinOp(self, node):
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^"}
        return f"({self.visit(node.left)} {op[type(node.op)]} {self.visit(node.right)})"

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.USub):
            return f"(-{self.visit(node.operand)})"
        raise ValueError("unsupported unary operator")

    def visit_Call(self, node):
        args = [self.visit(a) for a in node.args]
        if node.func.id == "pos":
            (x,) = args
            return f"piecewise({x}, {x} > 0, 0)"
        return f"{_FUNCS[node.func.id]}({', '.join(args)})"

    def visit_Name(self, node):
        p = BY_SYMBOL.get(node.id)
        if p is not None and p.structural:
            return repr(float(p.default))
        if node.id.lower() in _RESERVED:
            raise ValueError(f"model name {node.id!r} is reserved in SBML infix syntax")
        return node.id

    def visit_Constant(self, node):
        return repr(float(node.value))

    def generic_visit(self, node):
        raise ValueError(f"unsupported syntax in model expression: {ast.dump(node)}")


def _check(rc, what: str):
    libsbml = _libsbml()
    if rc is not None and isinstance(rc, int) and rc != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise SBMLError(f"{what}: {libsbml.OperationReturnValue_toString(rc)}")


def _math(text: str):
    libsbml = _libsbml()
    ast_ = libsbml.parseL3Formula(text)
    if ast_ is None:
        raise SBMLError(f"cannot parse {text!r}: {libsbml.getLastParseL3Error()}")
    return ast_


def _normal(x) -> float:
    x = float(x)
    return 0.0 if abs(x) < sys.float_info.min else x


def _snapshot(phenotype: str, params: dict | None, numerics):
    from .cohort import Cohort, Numerics

    c = Cohort(1, phenotype, deterministic=True, params=params or {},
               numerics=numerics or Numerics.accurate())
    return c.snapshot(0)


def to_sbml(phenotype: str = "eugonadal", params: dict | None = None, doses=(), *,
            numerics=None) -> str:
    """The deterministic model of one patient as an SBML L3V2 document (a string).

    Parameters
    ----------
    phenotype : str
        One of :data:`pulsehpg.phenotypes.PHENOTYPES`.
    params : dict, optional
        Parameter values by dotted name, in the registry's units (as for
        :class:`pulsehpg.Cohort`).
    doses : sequence of (time_h, drug, amount)
        Boluses, amount in the drug's unit, time in hours from the start.
    numerics : pulsehpg.Numerics, optional
        Numerics of the equilibration that gives the initial state
        (default ``Numerics.accurate()``).
    """
    libsbml = _libsbml()
    drugs = {d.name: d for d in model.DRUGS}
    dose_list = []
    for item in doses:
        if len(item) != 3:
            raise ValueError(f"doses: expected (time_h, drug, amount), got {item!r}")
        t, name, amount = float(item[0]), item[1], float(item[2])
        if name not in drugs:
            raise ValueError(f"doses: unknown drug {name!r}; allowed: {', '.join(drugs)}")
        if not (math.isfinite(t) and t >= 0 and math.isfinite(amount) and amount >= 0):
            raise ValueError(f"doses: time and amount must be finite and >= 0, got {item!r}")
        dose_list.append((t, drugs[name], amount))

    snap = _snapshot(phenotype, params, numerics)
    p_values = {par.sym: _normal(v) for par, v in zip(REGISTRY, snap["p"])}
    # subnormal numbers (decayed to below 2.2e-308) are written as 0: SBML readers
    # such as libroadrunner reject them
    y0 = {s.name: _normal(v) for s, v in zip(model.STATES, snap["y"])}
    next_pulse = float(snap["next_pulse"])

    em = _Infix()
    doc = libsbml.SBMLDocument(LEVEL, VERSION)
    m = doc.createModel()
    _check(m.setId("pulsehpg"), "model id")
    m.setName(f"pulsehpg deterministic HPG axis, phenotype {phenotype}")
    # time in hours
    ud = m.createUnitDefinition()
    ud.setId("hour")
    u = ud.createUnit()
    u.setKind(libsbml.UNIT_KIND_SECOND)
    u.setExponent(1)
    u.setScale(0)
    u.setMultiplier(3600.0)
    m.setTimeUnits("hour")

    comp = m.createCompartment()
    comp.setId("body")
    comp.setConstant(True)
    comp.setSize(1.0)
    comp.setSpatialDimensions(3)

    def parameter(pid: str, value: float | None, constant: bool, name: str = ""):
        par = m.createParameter()
        _check(par.setId(pid), f"parameter id {pid!r}")
        if value is not None:
            par.setValue(value)
        par.setConstant(constant)
        if name:
            par.setName(name)
        return par

    # constants: registry (core units), ln 2, infusion inputs
    for par in REGISTRY:
        if par.structural:
            continue
        parameter(par.sym, p_values[par.sym], True,
                  f"{par.name} [{_core_unit(par.unit)}]")
    parameter("LN2", math.log(2.0), True, "ln 2")
    for d in model.DRUGS:
        parameter(f"inf_{d.name}", 0.0, True, f"infusion of {d.name} [{d.unit}/h]")

    # which Vars are needed: closure over rates, clearances, pulse law and outputs
    pg = model.PULSE
    exprs = [e for s in model.STATES for e in (s.rate, s.clearance)]
    exprs += [pg.mass_mean, pg.interval_regular] + [e for _, e in pg.effects + pg.counts]
    exprs += [o.expr for o in model.OUTPUTS]
    exprs += [f for d in model.DRUGS for _, f in d.targets]
    all_vars = model.VARS + model.OUTPUT_VARS
    used = set().union(*(_names(e) for e in exprs))
    needed = []
    for v in reversed(all_vars):
        if v.name in used:
            needed.append(v)
            used |= _names(v.expr)
    needed.reverse()

    # states: parameters with rate rules
    for s in model.STATES:
        parameter(s.name, y0[s.name], False, f"{s.meaning} [{s.unit}]".strip())
    for v in needed:
        parameter(v.name, None, False, v.meaning)
        rule = m.createAssignmentRule()
        rule.setVariable(v.name)
        _check(rule.setMath(_math(em.emit(v.expr))), f"var {v.name}")
    for o in model.OUTPUTS:
        if m.getParameter(o.name) is not None:
            raise SBMLError(f"observable {o.name!r} clashes with a model name")
        parameter(o.name, None, False, f"{o.meaning} [{o.unit}]")
        rule = m.createAssignmentRule()
        rule.setVariable(o.name)
        _check(rule.setMath(_math(em.emit(o.expr))), f"observable {o.name}")
    for s in model.STATES:
        rule = m.createRateRule()
        rule.setVariable(s.name)
        text = f"({em.emit(s.rate)}) - ({em.emit(s.clearance)}) * {s.name}"
        if s.slow:
            text = f"accel * ({text})"
        _check(rule.setMath(_math(text)), f"state {s.name}")

    def event(eid: str, trigger: str, priority: int, assignments):
        ev = m.createEvent()
        ev.setId(eid)
        ev.setUseValuesFromTriggerTime(False)
        tr = ev.createTrigger()
        tr.setInitialValue(False)  # due at the start: fires at once
        tr.setPersistent(True)
        _check(tr.setMath(_math(trigger)), f"event {eid} trigger")
        pr = ev.createPriority()
        _check(pr.setMath(_math(str(priority))), f"event {eid} priority")
        for var, text in assignments:
            ea = ev.createEventAssignment()
            ea.setVariable(var)
            _check(ea.setMath(_math(text)), f"event {eid} assignment to {var}")
        return ev

    # the deterministic regular pulse train
    if math.isfinite(next_pulse):
        parameter("next_pulse", next_pulse, False, "time of the next GnRH pulse [h]")
        parameter("pulse_mass", None, False, "mean GnRH pulse mass [pg/mL]")
        rule = m.createAssignmentRule()
        rule.setVariable("pulse_mass")
        _check(rule.setMath(_math(em.emit(pg.mass_mean))), "pulse mass")
        on = "pulse_mass > 0"
        assigns = [(st, f"{st} + piecewise(({em.emit(e)}) * pulse_mass, {on}, 0)")
                   for st, e in pg.effects]
        assigns += [(st, f"{st} + piecewise({em.emit(e)}, {on}, 0)") for st, e in pg.counts]
        assigns.append(("next_pulse", f"next_pulse + ({em.emit(pg.interval_regular)})"))
        event("gnrh_pulse", "time >= next_pulse", _PULSE_PRIORITY, assigns)

    # doses
    for k, (t, d, amount) in enumerate(dose_list):
        if amount <= 0:
            continue
        assigns = [(st, f"{st} + ({em.emit(f)}) * {amount!r}") for st, f in d.targets]
        if d.marks_pulse:
            assigns += [(st, f"{st} + {em.emit(e)}") for st, e in pg.counts]
        event(f"dose_{k}_{d.name}", f"time >= {t!r}", _DOSE_PRIORITY, assigns)

    text = libsbml.writeSBMLToString(doc)
    if not text:
        raise SBMLError("libsbml could not write the document")
    return text


def consistency_errors(text: str) -> list[str]:
    """Errors (not warnings) libsbml finds in an SBML document."""
    libsbml = _libsbml()
    doc = libsbml.readSBMLFromString(text)
    doc.checkConsistency()
    errs = []
    for i in range(doc.getNumErrors()):
        e = doc.getError(i)
        if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR:
            errs.append(f"line {e.getLine()}: {e.getMessage().strip()}")
    return errs
