"""Export the deterministic model as SBML Level 3 Version 2.

The document is generated from :mod:`pulsehpg.model` and the parameter registry
(:mod:`pulsehpg.params`), never written by hand:

* one compartment (``body``, 1 L; nothing in the model lives in it: every
  state is a non-constant *parameter* with a rate rule, which avoids SBML's
  amount/concentration conversions);
* a rate rule ``rate - clearance * y`` per state (slow states multiplied by
  ``accel``, or ``accel_R`` for the spermatogonial reserve, which are 1 here, as in every
  simulation);
* an assignment rule per model ``Var`` that the rates, the pulse generator or
  the observables use, and one per observable (``lh``, ``fsh``, ``t_total``, ...);
* a constant parameter per registry symbol, in core units (hours), with the
  phenotype's and the caller's values; structural parameters (exponents) are
  inlined as numbers, as in the compiled core;
* initial values from an equilibrated deterministic :class:`pulsehpg.Cohort`
  of one patient, so the SBML model starts at the same steady state;
* the deterministic regular GnRH pulse train as an event on the parameter
  ``next_pulse``;
* the regimen, with the event semantics of :mod:`pulsehpg.reference` (and of the
  core): each dose ``(time_h, drug, amount)`` is an event adding ``F * amount``
  to the drug's target states; each infusion change ``(time_h, drug, rate)``
  an event setting the input ``inf_<drug>`` (unit/h; a non-constant parameter
  that the rate rules read, 0 until then); each pump change ``(time_h, drug,
  dose, interval_h)`` an event setting the pump's ``pump_dose_<drug>``,
  ``pump_interval_<drug>`` (0 stops it) and ``pump_next_<drug>`` (the first
  bolus is due at once), and the pump's boluses one event ``pump_<drug>`` that
  fires whenever ``time >= pump_next_<drug>`` while the interval is positive.
  At one time, user actions (in the order doses, infusions, pumps, each as
  given) come first, then the GnRH pulse, then pump boluses in drug order: the
  events' priorities say so. Pump bolus events are not persistent, so a bolus
  due when its pump is stopped is not given, as in the core.

Units
-----
Model time is in hours (``timeUnits="hour"``). Every parameter, state and
observable has a declared unit: registry parameters their core unit (``min``
and ``day`` become ``h``), states and observables the unit :mod:`pulsehpg.model`
gives them, infusion inputs ``<drug unit>/h``, the pulse and pump times hours.
The intermediate quantities (model ``Var``\\ s) get the unit their expression
gives, worked out here from the declared ones. SBML has no base unit for
international units: ``IU`` is declared as the base unit ``item`` (a count of
activity units) and ``M`` (million sperm) as 10^6 items. Every number written
in an expression carries a unit too (``sbml:units``): ``dimensionless``, except
the conversion factors listed in ``_LITERAL_UNITS`` (1000 ug/L to pg/mL,
28.84 nmol/L to ng/dL, ...), event times (hours) and dose amounts (the drug's
unit). libsbml's unit consistency check then finds nothing to report, not even
a warning (:func:`unit_warnings`; tests/test_sbml.py holds it to that). libsbml
requires the operands of a sum or comparison to have the same unit, scale
factor included (so a missing conversion factor is found), but compares a
rule's expression with its variable's unit by dimensions only.

Needs python-libsbml (``pip install "pulsehpg[sbml]"``).
"""

from __future__ import annotations

import ast
import math
import re
import sys
from fractions import Fraction

from . import model
from .codegen import _names
from .params import BY_SYMBOL, REGISTRY

__all__ = ["SBMLError", "consistency_errors", "to_sbml", "unit_warnings"]

LEVEL, VERSION = 3, 2
_FUNCS = {"exp": "exp", "log": "ln", "sqrt": "sqrt"}
# names the L3 infix parser reads as constants or operators
_RESERVED = {"e", "pi", "time", "avogadro", "inf", "infinity", "nan", "notanumber", "true",
             "false", "exponentiale", "and", "or", "not", "xor"}
_DRUG_NAMES = tuple(d.name for d in model.DRUGS)
# Pump intervals, as pulsehpg.Cohort.set_pump allows them (hours)
PUMP_INTERVAL_RANGE = (0.25, 8.0)

# ---------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------
# unit symbol -> (SBML base unit kind, scale (power of 10), multiplier)
_SYMBOLS = {
    "h": ("second", 0, 3600.0), "min": ("second", 0, 60.0), "day": ("second", 0, 86400.0),
    "week": ("second", 0, 604800.0), "year": ("second", 0, 31557600.0),  # Julian year
    "L": ("litre", 0, 1.0), "dL": ("litre", -1, 1.0), "mL": ("litre", -3, 1.0),
    "g": ("gram", 0, 1.0), "mg": ("gram", -3, 1.0), "ug": ("gram", -6, 1.0),
    "ng": ("gram", -9, 1.0), "pg": ("gram", -12, 1.0),
    "mol": ("mole", 0, 1.0), "nmol": ("mole", -9, 1.0),
    "IU": ("item", 0, 1.0),  # international units of activity, counted
    "M": ("item", 6, 1.0),  # million (sperm)
    "%": ("dimensionless", -2, 1.0),
}
_ID_WORDS = {"h": "hour", "%": "percent", "1": "one"}

# Numbers in model expressions that carry a unit: (where, value) -> unit. "where" is
# the Var, observable or state whose expression holds the number; any other number
# is dimensionless.
_LITERAL_UNITS = {
    ("C_gon", 1000.0): "pg/mL per ug/L",
    ("C_clo", 1000.0): "ng/mL per mg/L",
    ("C_tam", 1000.0): "ng/mL per mg/L",
    ("C_ana", 1000.0): "ng/mL per mg/L",
    ("T_exo", 3467.0): "nmol/mg",  # testosterone, 288.4 g/mol
    ("t_total", 28.84): "ng/dL per nmol/L",
    ("t_free", 1e-9): "mol/L per nmol/L",
    ("t_free", 2.8842e11): "pg/mL per mol/L",
    ("bV", 1e-9): "mol/L per nmol/L",
    ("shbg_m", 1e-9): "mol/L per nmol/L",
    ("shbg_m", 40.0): "year",
    ("agef", 40.0): "year",
    ("Nssc", 35.0): "year",
    ("Rsv", 35.0): "year",
    ("nV", 69000.0): "g/mol",  # albumin
}


class _Unit:
    """A unit as SBML sees it: base-unit exponents and one scale factor."""

    __slots__ = ("dims", "factor")

    def __init__(self, dims=None, factor: float = 1.0):
        self.dims = {k: Fraction(e) for k, e in (dims or {}).items()
                     if e != 0 and k != "dimensionless"}
        self.factor = float(factor)

    def __mul__(self, other):
        dims = dict(self.dims)
        for k, e in other.dims.items():
            dims[k] = dims.get(k, 0) + e
        return _Unit(dims, self.factor * other.factor)

    def __pow__(self, power):
        power = Fraction(power)
        return _Unit({k: e * power for k, e in self.dims.items()},
                     self.factor ** float(power))

    def inverse(self):
        return self ** -1

    def same_dims(self, other) -> bool:
        return self.dims == other.dims

    def key(self):
        return (tuple(sorted(self.dims.items())), f"{self.factor:.9e}")


_ONE = _Unit()


def parse_unit(text: str) -> _Unit:
    """A unit string of the model or registry ('pg/mL', 'IU/L/h', 'pg/mL per nmol/L
    per h', '1/h', '%', '1') as a unit; 'A per B' is A / B."""
    unit = _ONE
    for k, group in enumerate(text.split(" per ")):
        parts = [s.strip() for s in group.split("/")]
        g = _ONE
        for i, sym in enumerate(parts):
            if sym == "1":
                continue
            if sym not in _SYMBOLS:
                raise ValueError(f"unit {text!r}: unknown symbol {sym!r}")
            kind, scale, mult = _SYMBOLS[sym]
            u = _Unit({kind: 1}, mult * 10.0 ** scale)
            g = g * (u if i == 0 else u.inverse())
        unit = unit * (g if k == 0 else g.inverse())
    return unit


def _unit_id(text: str) -> str:
    if text == "1":
        return "dimensionless"
    if text == "h":
        return "hour"
    words = []
    for k, group in enumerate(text.split(" per ")):
        for i, sym in enumerate(group.split("/")):
            sym = sym.strip()
            if sym == "1" and i == 0:
                continue
            if k > 0 or i > 0:
                words.append("per")
            words.append(_ID_WORDS.get(sym, sym))
    uid = re.sub(r"\W", "_", "_".join(words))
    return uid if not uid[0].isdigit() else "u_" + uid


def _core_unit(unit: str) -> str:
    if unit in ("min", "h", "day", "week"):
        return "h"
    if unit.startswith("1/") and unit[2:] in ("min", "h", "day", "week"):
        return "1/h"
    return unit


class _Infix(ast.NodeVisitor):
    """A model expression (Python syntax) as SBML L3 infix text, numbers with units.

    ``units(name)`` gives the unit of a name (a :class:`_Unit` or None if unknown);
    the unit of the whole expression is worked out alongside (None where the
    dimensions do not match), so that ``pos(x)`` gets a zero of x's unit.
    """

    def __init__(self, units, unit_ids):
        self.units = units
        self.unit_ids = unit_ids  # (text or _Unit) -> id, adds a definition when new
        self.where = ""

    def emit(self, expr: str, where: str = "") -> str:
        return self.emit_with_unit(expr, where)[0]

    def emit_with_unit(self, expr: str, where: str = ""):
        self.where = where
        return self.visit(ast.parse(expr, mode="eval").body)

    def visit_BinOp(self, node):
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^"}
        (a, ua), (b, ub) = self.visit(node.left), self.visit(node.right)
        unit = None
        if isinstance(node.op, (ast.Add, ast.Sub)):
            if ua is not None and ub is not None and ua.same_dims(ub):
                unit = ua
        elif ua is not None and ub is not None:
            if isinstance(node.op, ast.Mult):
                unit = ua * ub
            elif isinstance(node.op, ast.Div):
                unit = ua * ub.inverse()
            elif isinstance(node.right, ast.Constant):
                unit = ua ** Fraction(node.right.value).limit_denominator(1000)
            elif not ua.dims and not ub.dims:
                unit = _ONE
        return f"({a} {op[type(node.op)]} {b})", unit

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.USub):
            x, u = self.visit(node.operand)
            return f"(-{x})", u
        raise ValueError("unsupported unary operator")

    def visit_Call(self, node):
        args = [self.visit(a) for a in node.args]
        name = node.func.id
        if name == "pos":  # max(x, 0), with a zero of x's unit
            ((x, u),) = args
            zero = self._number(0.0, u)
            return f"piecewise({x}, {x} > {zero}, {zero})", u
        ((x, u),) = args
        unit = None
        if u is not None:
            if name == "sqrt":
                unit = u ** Fraction(1, 2)
            elif not u.dims:
                unit = _ONE
        return f"{_FUNCS[name]}({x})", unit

    def visit_Name(self, node):
        p = BY_SYMBOL.get(node.id)
        if p is not None and p.structural:
            return repr(float(p.default)) + " dimensionless", _ONE
        if node.id.lower() in _RESERVED:
            raise ValueError(f"model name {node.id!r} is reserved in SBML infix syntax")
        return node.id, self.units(node.id)

    def visit_Constant(self, node):
        value = float(node.value)
        text = _LITERAL_UNITS.get((self.where, value))
        unit = parse_unit(text) if text is not None else _ONE
        return self._number(value, unit, text), unit

    def _number(self, value: float, unit, text=None) -> str:
        if unit is None:
            return repr(value)  # units unknown: libsbml will say so
        return f"{value!r} {self.unit_ids(text if text is not None else unit)}"

    def generic_visit(self, node):
        raise ValueError(f"unsupported syntax in model expression: {ast.dump(node)}")


def _libsbml():
    try:
        import libsbml
    except ImportError:
        raise ImportError("SBML export needs python-libsbml: pip install 'pulsehpg[sbml]'") \
            from None
    return libsbml


def _check(rc, what: str):
    libsbml = _libsbml()
    if rc is not None and isinstance(rc, int) and rc != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise SBMLError(f"{what}: {libsbml.OperationReturnValue_toString(rc)}")


class SBMLError(RuntimeError):
    """libsbml rejected part of the generated document."""


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


def _regimen(doses, infusions, pumps):
    """User actions as (time, seq, kind, index, drug, *values), sorted as the core applies them."""
    acts = []
    for kind, items, width, what in (
            ("dose", doses, 3, "(time_h, drug, amount)"),
            ("infusion", infusions, 3, "(time_h, drug, rate)"),
            ("pump", pumps, 4, "(time_h, drug, dose, interval_h)")):
        for k, item in enumerate(items):
            if len(item) != width:
                raise ValueError(f"{kind}s: expected {what}, got {item!r}")
            name = item[1]
            if name not in _DRUG_NAMES:
                raise ValueError(f"{kind}s: unknown drug {name!r}; allowed: "
                                 f"{', '.join(_DRUG_NAMES)}")
            try:
                t, *vals = (float(item[0]), *(float(v) for v in item[2:]))
            except (TypeError, ValueError):
                raise ValueError(f"{kind}s: time and amounts must be numbers, got {item!r}") \
                    from None
            if not all(math.isfinite(v) and v >= 0 for v in (t, *vals)):
                raise ValueError(f"{kind}s: time and amounts must be finite and >= 0, "
                                 f"got {item!r}")
            if kind == "pump" and vals[1] > 0:
                lo, hi = PUMP_INTERVAL_RANGE
                if not (lo - 1e-9 <= vals[1] <= hi + 1e-9):
                    raise ValueError(f"pumps: interval must be between {lo:g} and {hi:g} h "
                                     f"(0 stops the pump), got {item!r}")
            acts.append((t, len(acts), kind, k, model.DRUGS[_DRUG_NAMES.index(name)], *vals))
    acts.sort(key=lambda a: (a[0], a[1]))
    return acts


def to_sbml(phenotype: str = "eugonadal", params: dict | None = None, doses=(),
            infusions=(), pumps=(), *, numerics=None) -> str:
    """The deterministic model of one patient as an SBML L3V2 document (a string).

    The regimen arguments are those of :func:`pulsehpg.reference.run`, times in
    hours from the start of the simulation.

    Parameters
    ----------
    phenotype : str
        One of :data:`pulsehpg.phenotypes.PHENOTYPES`.
    params : dict, optional
        Parameter values by dotted name, in the registry's units (as for
        :class:`pulsehpg.Cohort`).
    doses : sequence of (time_h, drug, amount)
        Boluses, amount in the drug's unit (:meth:`pulsehpg.Cohort.dose`).
    infusions : sequence of (time_h, drug, rate)
        The drug's infusion rate (unit/h) from that time on; 0 stops it
        (:meth:`pulsehpg.Cohort.start_infusion`).
    pumps : sequence of (time_h, drug, dose, interval_h)
        A pump giving ``dose`` every ``interval_h`` hours (15 min to 8 h), the
        first bolus at ``time_h`` (:meth:`pulsehpg.Cohort.set_pump`); interval 0
        stops the drug's pump (:meth:`pulsehpg.Cohort.stop_pump`).
    numerics : pulsehpg.Numerics, optional
        Numerics of the equilibration that gives the initial state
        (default ``Numerics.accurate()``).
    """
    libsbml = _libsbml()
    acts = _regimen(doses, infusions, pumps)
    infused = {a[4].name for a in acts if a[2] == "infusion"}
    pumped = [d for d in model.DRUGS if any(a[2] == "pump" and a[4] is d for a in acts)]

    snap = _snapshot(phenotype, params, numerics)
    p_values = {par.sym: _normal(v) for par, v in zip(REGISTRY, snap["p"])}
    # subnormal numbers (decayed to below 2.2e-308) are written as 0: SBML readers
    # such as libroadrunner reject them
    y0 = {s.name: _normal(v) for s, v in zip(model.STATES, snap["y"])}
    next_pulse = float(snap["next_pulse"])

    doc = libsbml.SBMLDocument(LEVEL, VERSION)
    m = doc.createModel()
    _check(m.setId("pulsehpg"), "model id")
    m.setName(f"pulsehpg deterministic HPG axis, phenotype {phenotype}")

    # -- units ---------------------------------------------------------------
    unit_defs: dict = {}  # _Unit.key() -> id
    derived_count = [0]

    def define(uid: str, unit: _Unit, parts=None):
        ud = m.createUnitDefinition()
        _check(ud.setId(uid), f"unit {uid!r}")
        if parts is None:  # one unit per base kind, the scale factor on the first
            parts = [(kind, float(e), 0, 1.0) for kind, e in sorted(unit.dims.items())]
            if parts:
                k, e, s, _ = parts[0]
                parts[0] = (k, e, s, unit.factor ** (1.0 / e))
            else:
                parts = [("dimensionless", 1.0, 0, unit.factor)]
        for kind, e, scale, mult in parts:
            u = ud.createUnit()
            u.setKind(libsbml.UnitKind_forName(kind))
            u.setExponent(e)
            u.setScale(scale)
            u.setMultiplier(mult)
        unit_defs[unit.key()] = uid

    def unit_id(spec) -> str:
        """Id of a unit (a model unit string or a _Unit), defined on first use."""
        if isinstance(spec, str):
            unit = parse_unit(spec)
            if unit.key() in unit_defs:
                return unit_defs[unit.key()]
            if spec == "1" or (not unit.dims and unit.factor == 1.0):
                unit_defs[unit.key()] = "dimensionless"
                return "dimensionless"
            parts = []
            for k, group in enumerate(spec.split(" per ")):
                for i, sym in enumerate(s.strip() for s in group.split("/")):
                    if sym == "1":
                        continue
                    kind, scale, mult = _SYMBOLS[sym]
                    sign = 1.0 if (k == 0) == (i == 0) else -1.0
                    parts.append((kind, sign, scale, mult))
            # merge repeated kinds (pg/mL per nmol/L per h has litre twice)
            by_kind: dict = {}
            for kind, e, scale, mult in parts:
                by_kind.setdefault(kind, []).append((e, scale, mult))
            if any(len(v) > 1 for v in by_kind.values()) or "dimensionless" in by_kind:
                parts = None
            define(_unit_id(spec), unit, parts)
            return unit_defs[unit.key()]
        if spec.key() in unit_defs:
            return unit_defs[spec.key()]
        if not spec.dims and spec.factor == 1.0:
            return "dimensionless"
        derived_count[0] += 1
        define(f"derived_unit_{derived_count[0]}", spec)
        return unit_defs[spec.key()]

    # model-level units: time in hours
    m.setTimeUnits(unit_id("h"))

    known_units: dict[str, _Unit | None] = {}
    em = _Infix(lambda name: known_units.get(name), unit_id)

    comp = m.createCompartment()
    comp.setId("body")
    comp.setConstant(True)
    comp.setSize(1.0)
    comp.setSpatialDimensions(3)
    comp.setUnits("litre")

    def parameter(pid: str, value: float | None, constant: bool, name: str = "",
                  unit: str | _Unit | None = None):
        par = m.createParameter()
        _check(par.setId(pid), f"parameter id {pid!r}")
        if value is not None:
            par.setValue(value)
        par.setConstant(constant)
        if name:
            par.setName(name)
        if unit is not None:
            _check(par.setUnits(unit_id(unit)), f"units of {pid!r}")
            known_units[pid] = parse_unit(unit) if isinstance(unit, str) else unit
        return par

    # constants: registry (core units), ln 2, infusion inputs
    for par in REGISTRY:
        if par.structural:
            continue
        unit = _core_unit(par.unit)
        parameter(par.sym, p_values[par.sym], True, f"{par.name} [{unit}]", unit)
    parameter("LN2", math.log(2.0), True, "ln 2", "1")
    for d in model.DRUGS:
        parameter(f"inf_{d.name}", 0.0, d.name not in infused,
                  f"infusion of {d.name} [{d.unit}/h]", f"{d.unit}/h")

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
        parameter(s.name, y0[s.name], False, f"{s.meaning} [{s.unit}]".strip(), s.unit)

    def assignment(var: str, text: str, what: str):
        rule = m.createAssignmentRule()
        rule.setVariable(var)
        _check(rule.setMath(_math(text)), what)

    # Vars, in evaluation order, with the unit of their expression
    for v in needed:
        text, unit = em.emit_with_unit(v.expr, v.name)
        parameter(v.name, None, False, v.meaning, unit)
        assignment(v.name, text, f"var {v.name}")
    for o in model.OUTPUTS:
        if m.getParameter(o.name) is not None:
            raise SBMLError(f"observable {o.name!r} clashes with a model name")
        parameter(o.name, None, False, f"{o.meaning} [{o.unit}]", o.unit)
        assignment(o.name, em.emit(o.expr, o.name), f"observable {o.name}")
    for s in model.STATES:
        rule = m.createRateRule()
        rule.setVariable(s.name)
        rate = None if s.rate.strip() in ("0", "0.0") else f"({em.emit(s.rate, s.name)})"
        loss = (None if s.clearance.strip() in ("0", "0.0")
                else f"({em.emit(s.clearance, s.name)}) * {s.name}")
        if rate and loss:
            text = f"{rate} - {loss}"
        elif rate or loss:  # a zero term left out (it would be a number without a unit)
            text = rate or f"-({loss})"
        else:
            text = f"0.0 {unit_id(parse_unit(s.unit) * parse_unit('1/h'))}"
        if s.slow:
            text = f"{s.speedup} * ({text})"
        _check(rule.setMath(_math(text)), f"state {s.name}")

    def event(eid: str, trigger: str, priority: int, assignments, persistent=True):
        ev = m.createEvent()
        ev.setId(eid)
        ev.setUseValuesFromTriggerTime(False)
        tr = ev.createTrigger()
        tr.setInitialValue(False)  # due at the start: fires at once
        # not persistent: a bolus whose pump is stopped at the same time is cancelled
        tr.setPersistent(persistent)
        _check(tr.setMath(_math(trigger)), f"event {eid} trigger")
        pr = ev.createPriority()
        _check(pr.setMath(_math(f"{priority} dimensionless")), f"event {eid} priority")
        for var, text in assignments:
            ea = ev.createEventAssignment()
            ea.setVariable(var)
            _check(ea.setMath(_math(text)), f"event {eid} assignment to {var}")
        return ev

    def hours(t: float) -> str:
        return f"{t!r} {unit_id('h')}"

    def state_zero(st: str) -> str:
        return f"0.0 {unit_id(next(s.unit for s in model.STATES if s.name == st))}"

    def bolus(d, amount: str, counts: bool):
        """Assignments of a bolus of drug d (amount: infix text with its unit)."""
        out = [(st, f"{st} + ({em.emit(f)}) * {amount}") for st, f in d.targets]
        if counts and d.marks_pulse:
            out += [(st, f"{st} + {em.emit(e)}") for st, e in pg.counts]
        return out

    # Priorities at one time: user actions (in order), the pulse, pumps (drug order).
    n_pumps = len(model.DRUGS)
    pulse_priority = n_pumps + 1
    action_priority = pulse_priority + 1 + len(acts)

    # the deterministic regular pulse train
    if math.isfinite(next_pulse):
        parameter("next_pulse", next_pulse, False, "time of the next GnRH pulse [h]", "h")
        mass_text, mass_unit = em.emit_with_unit(pg.mass_mean, "pulse_mass")
        parameter("pulse_mass", None, False, "mean GnRH pulse mass [pg/mL]", mass_unit)
        assignment("pulse_mass", mass_text, "pulse mass")
        on = f"pulse_mass > 0.0 {unit_id(mass_unit)}"
        assigns = [(st, (f"{st} + piecewise(({em.emit(e)}) * pulse_mass, {on}, "
                         f"{state_zero(st)})")) for st, e in pg.effects]
        assigns += [(st, f"{st} + piecewise({em.emit(e)}, {on}, {state_zero(st)})")
                    for st, e in pg.counts]
        assigns.append(("next_pulse", f"next_pulse + ({em.emit(pg.interval_regular)})"))
        event("gnrh_pulse", "time >= next_pulse", pulse_priority, assigns)

    # pumps: state and boluses
    for d in pumped:
        parameter(f"pump_dose_{d.name}", 0.0, False, f"{d.name} pump bolus [{d.unit}]", d.unit)
        parameter(f"pump_interval_{d.name}", 0.0, False,
                  f"{d.name} pump interval [h], 0: off", "h")
        parameter(f"pump_next_{d.name}", 0.0, False, f"{d.name} pump: next bolus [h]", "h")
        j = _DRUG_NAMES.index(d.name)
        assigns = bolus(d, f"pump_dose_{d.name}", True)
        assigns.append((f"pump_next_{d.name}",
                        f"pump_next_{d.name} + pump_interval_{d.name}"))
        event(f"pump_{d.name}", f"(time >= pump_next_{d.name}) && "
              f"(pump_interval_{d.name} > {hours(0.0)})", n_pumps - j, assigns,
              persistent=False)

    # user actions
    for rank, (t, _seq, kind, k, d, *vals) in enumerate(acts):
        priority = action_priority - rank
        if kind == "dose":
            if vals[0] <= 0:
                continue
            amount = f"{vals[0]!r} {unit_id(d.unit)}"
            event(f"dose_{k}_{d.name}", f"time >= {hours(t)}", priority,
                  bolus(d, amount, True))
        elif kind == "infusion":
            event(f"infusion_{k}_{d.name}", f"time >= {hours(t)}", priority,
                  [(f"inf_{d.name}", f"{vals[0]!r} {unit_id(d.unit + '/h')}")])
        else:
            dose, interval = vals
            assigns = [(f"pump_dose_{d.name}", f"{dose!r} {unit_id(d.unit)}"),
                       (f"pump_interval_{d.name}", hours(interval))]
            if interval > 0:
                assigns.append((f"pump_next_{d.name}", hours(t)))
            event(f"pump_set_{k}_{d.name}", f"time >= {hours(t)}", priority, assigns)

    text = libsbml.writeSBMLToString(doc)
    if not text:
        raise SBMLError("libsbml could not write the document")
    return text


def _issues(text: str, keep) -> list[str]:
    libsbml = _libsbml()
    doc = libsbml.readSBMLFromString(text)
    doc.checkConsistency()
    out = []
    for i in range(doc.getNumErrors()):
        e = doc.getError(i)
        if keep(libsbml, e):
            out.append(f"line {e.getLine()}: [{e.getErrorId()}] {e.getMessage().strip()}")
    return out


def consistency_errors(text: str) -> list[str]:
    """Errors (not warnings) libsbml finds in an SBML document."""
    return _issues(text, lambda lib, e: e.getSeverity() >= lib.LIBSBML_SEV_ERROR)


def unit_warnings(text: str) -> list[str]:
    """Everything libsbml's unit consistency check reports (warnings included):
    inconsistent units, and expressions or objects whose units are not declared."""
    return _issues(text, lambda lib, e: e.getCategory() == lib.LIBSBML_CAT_UNITS_CONSISTENCY
                   or e.getErrorId() in (20702, 80701))
