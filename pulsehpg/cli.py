"""The ``pulsehpg`` command line.

Every command is a click command registered on :data:`cli`; :func:`main` is the
console-script entry point (``pulsehpg = pulsehpg.cli:main``) and ``python -m
pulsehpg`` runs the same thing.

User errors (bad options, unknown names, unreadable values) are reported as a
single line on stderr, naming what is wrong and what is allowed, with exit
status 2; a failed simulation exits with status 1. Neither prints a traceback.

To add a command, decorate a function with ``@cli.command()``. The parameter
types below (:data:`DURATION`, :class:`DoseSpec`, :class:`PumpSpec`,
:class:`ParamAssignment`) and :func:`user_errors` turn the library's
``ValueError`` messages into click usage errors, so new commands report bad
input the same way.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import math
import os
import sys
from pathlib import Path
from dataclasses import dataclass

import click
import numpy as np

from . import __version__, model
from .cohort import MAX_PATIENTS
from .params import REGISTRY, Param, lookup, settable
from .phenotypes import PHENOTYPES
from .units import MAX_SPAN_H, parse_duration

__all__ = [
    "DURATION",
    "Dose",
    "DoseSpec",
    "ParamAssignment",
    "Pump",
    "PumpSpec",
    "cli",
    "main",
    "params_markdown",
    "render_params",
    "user_errors",
]

PROG = "pulsehpg"
FORMATS = ("table", "markdown", "csv")
DRUGS = {d.name: d for d in model.DRUGS}
UNITS = {o.name: o.unit for o in model.OUTPUTS}
SUMMARY_OUTPUTS = ("lh", "fsh", "t_total", "t_free", "e2", "itt", "inhibin_b", "sperm_conc",
                   "motility")
MIN_DOSE_INTERVAL_H = 0.25  # repeated boluses more often than this belong on a pump


# ---------------------------------------------------------------------------
# Error handling
# ---------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_NoArgsIsHelpError = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class PulseGroup(click.Group):
    """A click group that reports usage errors on one line and suggests commands."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and self.get_command(ctx, name) is None \
                and not name.startswith("-"):
            commands = self.list_commands(ctx)
            close = difflib.get_close_matches(name, commands, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise click.UsageError(
                f"unknown command '{name}'{hint} (commands: {', '.join(commands)})", ctx)
        return super().resolve_command(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except _NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else (prog_name or PROG)
            click.echo(f"{where}: error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except MemoryError as e:  # numpy names the size it could not allocate
            click.echo(f"{prog_name or PROG}: error: out of memory "
                       f"({_one_line(e) or 'an allocation failed'}): run fewer patients (-n), "
                       f"sample traces less often, or run a sweep, which simulates in blocks",
                       err=True)
            sys.exit(2)
        except click.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):  # Ctrl-C: the shell's 128 + SIGINT
                click.echo(f"{prog_name or PROG}: interrupted", err=True)
                sys.exit(130)
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class CommandError(click.ClickException):
    """A failure that is not a usage error (exit status 1), reported on one line."""

    def __init__(self, message: str):
        super().__init__(message)
        self.ctx = click.get_current_context(silent=True)


@contextlib.contextmanager
def user_errors(param_hint: str | None = None):
    """Turn a ValueError from the library into a one-line usage error (exit 2)."""
    try:
        yield
    except ValueError as e:
        if param_hint:
            raise click.BadParameter(_one_line(e), param_hint=param_hint) from None
        raise click.UsageError(_one_line(e)) from None


# ---------------------------------------------------------------------------
# Parameter types shared by commands
# ---------------------------------------------------------------------------
def _format_hours(h: float) -> str:
    for unit, size in (("week", 168.0), ("day", 24.0), ("h", 1.0), ("min", 1 / 60)):
        k = h / size
        if h >= size and abs(k - round(k)) < 1e-9:
            k = round(k)
            return f"{k} {unit}" + ("s" if k != 1 and unit in ("week", "day") else "")
    return f"{h:g} h"


def _drug(name: str) -> model.Drug:
    try:
        return DRUGS[name]
    except KeyError:
        close = difflib.get_close_matches(name, DRUGS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown drug '{name}'; {hint}allowed: {', '.join(DRUGS)}") from None


def _amount(text: str, drug: model.Drug, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} '{text}' is not a number ({drug.unit} of {drug.name})") \
            from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number of {drug.unit}, got '{text}'")
    return value


class DurationType(click.ParamType):
    """A duration such as '90 min' or '12 weeks' (a bare number is hours), as hours."""

    name = "duration"

    def convert(self, value, param, ctx):
        try:
            return parse_duration(value, param.name if param is not None else "duration")
        except ValueError as e:
            self.fail(_one_line(e), param, ctx)


DURATION = DurationType()

MAX_DAYS = MAX_SPAN_H / 24.0  # 36525: the bound of a config's phases


class PositiveNumber(click.ParamType):
    """A finite number in (0, upper]: click's FloatRange lets 'nan' and 'inf' through."""

    name = "number"

    def __init__(self, upper: float = math.inf, unit: str = ""):
        self.upper, self.unit = upper, unit

    def convert(self, value, param, ctx):
        unit = f" {self.unit}" if self.unit else ""
        allowed = (f"a number in (0, {self.upper:g}]{unit}" if math.isfinite(self.upper)
                   else f"a finite number > 0{unit}")
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"'{value}' is not a number; allowed: {allowed}", param, ctx)
        if not (math.isfinite(x) and 0 < x <= self.upper):
            self.fail(f"{value!r} is not allowed; allowed: {allowed}", param, ctx)
        return x


@dataclass(frozen=True)
class Dose:
    drug: str
    amount: float  # in the drug's unit
    every: float | None  # hours; None: a single dose at the start

    def times(self, end: float) -> np.ndarray:
        """Dose times in [0, end) hours."""
        if self.every is None:
            return np.zeros(1)
        return np.arange(math.ceil(end / self.every - 1e-9)) * self.every

    def describe(self, end: float) -> str:
        unit = DRUGS[self.drug].unit
        if self.every is None:
            return f"{self.drug} {self.amount:g} {unit} once at day 0"
        k = self.times(end).size
        return (f"{self.drug} {self.amount:g} {unit} every {_format_hours(self.every)} "
                f"from day 0 ({k} dose{'s' if k != 1 else ''})")


@dataclass(frozen=True)
class Pump:
    drug: str
    dose: float
    interval: float  # hours
    interval_text: str  # as written, for messages

    def describe(self) -> str:
        unit = DRUGS[self.drug].unit
        return (f"{self.drug} pump: {self.dose:g} {unit} every "
                f"{_format_hours(self.interval)} from day 0")


class DoseSpec(click.ParamType):
    """``DRUG:AMOUNT[:EVERY]``: a bolus, repeated every EVERY if given."""

    name = "DRUG:AMOUNT[:EVERY]"

    def convert(self, value, param, ctx):
        if isinstance(value, Dose):
            return value
        parts = [s.strip() for s in str(value).split(":")]
        if len(parts) not in (2, 3) or not all(parts):
            self.fail(f"expected DRUG:AMOUNT[:EVERY], e.g. 'testosterone_enanthate:200:1 week',"
                      f" got '{value}'", param, ctx)
        try:
            drug = _drug(parts[0])
            amount = _amount(parts[1], drug, "amount")
            every = None
            if len(parts) == 3:
                every = parse_duration(parts[2], "EVERY")
                if every < MIN_DOSE_INTERVAL_H:
                    raise ValueError(f"EVERY must be at least 15 min, got '{parts[2]}' "
                                     f"(use --pump for frequent boluses)")
        except ValueError as e:
            self.fail(f"{_one_line(e)} (in '{value}')", param, ctx)
        return Dose(drug.name, amount, every)


class PumpSpec(click.ParamType):
    """``DRUG:DOSE:INTERVAL``: a pump giving DOSE every INTERVAL (15 min to 8 h)."""

    name = "DRUG:DOSE:INTERVAL"

    def convert(self, value, param, ctx):
        if isinstance(value, Pump):
            return value
        parts = [s.strip() for s in str(value).split(":")]
        if len(parts) != 3 or not all(parts):
            self.fail(f"expected DRUG:DOSE:INTERVAL, e.g. 'gonadorelin:10:90 min', got '{value}'",
                      param, ctx)
        try:
            drug = _drug(parts[0])
            dose = _amount(parts[1], drug, "dose")
            interval = parse_duration(parts[2], "INTERVAL")
        except ValueError as e:
            self.fail(f"{_one_line(e)} (in '{value}')", param, ctx)
        return Pump(drug.name, dose, interval, parts[2])


class ParamAssignment(click.ParamType):
    """``NAME=VALUE``: a registry parameter set to VALUE (in the registry's unit)."""

    name = "NAME=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        name, sep, text = str(value).partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            self.fail(f"expected NAME=VALUE, e.g. 'steroid.shbg=50', got '{value}'", param, ctx)
        try:
            par = settable(name)  # unknown, compiled in, or set by the cohort itself
        except ValueError as e:
            self.fail(_one_line(e), param, ctx)
        try:
            v = float(text)
        except ValueError:
            self.fail(f"{par.name}: '{text}' is not a number", param, ctx)
        if not (par.lower <= v <= par.upper):
            self.fail(f"{par.name}: {text} is outside the allowed range "
                      f"[{par.lower:g}, {par.upper:g}] {par.unit}", param, ctx)
        return (par.name, v)


# options shared by the commands that take a regimen on the command line
DOSE_OPTION = click.option(
    "--dose", "doses", type=DoseSpec(), multiple=True,
    help="Bolus of AMOUNT (in the drug's unit, see `pulsehpg drugs`) at time 0, repeated "
         "every EVERY if given until --days, e.g. 'testosterone_enanthate:200:1 week'. "
         "Repeatable.")


def _one_pump_per_drug(ctx, param, pumps):
    # a patient has one pump per drug: a second would silently replace the first
    seen = set()
    for p in pumps:
        if p.drug in seen:
            raise click.BadParameter(f"two pumps of {p.drug}; a patient has one pump per drug "
                                     f"(give one --pump per drug)", param_hint="'--pump'")
        seen.add(p.drug)
    return pumps


PUMP_OPTION = click.option(
    "--pump", "pumps", type=PumpSpec(), multiple=True, callback=_one_pump_per_drug,
    help="Pump giving DOSE every INTERVAL (15 min to 8 h) from time 0, "
         "e.g. 'gonadorelin:10:90 min'. Repeatable, one per drug.")
SET_OPTION = click.option(
    "--set", "overrides", type=ParamAssignment(), multiple=True,
    help="Set a parameter, in its registry unit (see `pulsehpg params`), e.g. "
         "'steroid.shbg=50'. Repeatable.")


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(headers, rows, fmt: str, right=()) -> str:
    """Rows as an aligned text table, a Markdown table or CSV."""
    rows = [[str(c) for c in r] for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(headers)
        w.writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---:" if i in right else "---" for i in range(len(headers)))
                 + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        out = [c.rjust(w) if i in right else c.ljust(w)
               for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])]
                     + [line(r) for r in rows]) + "\n"


PARAM_HEADERS = ("name", "symbol", "unit", "default", "range", "cv", "meaning", "source")


def _param_row(p: Param, fmt: str) -> list[str]:
    name = f"`{p.name}`" if fmt == "markdown" else p.name
    sym = f"`{p.sym}`" if fmt == "markdown" else p.sym
    meaning = p.meaning + (" (structural: compiled into the core)" if p.structural else "")
    if fmt == "csv":
        return [p.name, p.sym, p.unit, f"{p.default:g}", f"{p.lower:g}", f"{p.upper:g}",
                f"{p.cv:g}", meaning, p.source]
    cv = f"{p.cv:g}" if p.cv > 0 else "-"
    return [name, sym, p.unit, f"{p.default:g}", f"[{p.lower:g}, {p.upper:g}]", cv, meaning,
            p.source]


def _match(p: Param, needle: str) -> bool:
    hay = f"{p.name} {p.sym} {p.unit} {p.meaning} {p.source}".lower()
    return needle.lower() in hay


MARKDOWN_INTRO = """\
# Model parameters

This file is generated from the parameter registry (`pulsehpg/params.py`) by

    pulsehpg params --format markdown > docs/parameters.md

Do not edit it by hand: `tests/test_docs.py` fails when it is out of date.

Each parameter has a dotted name (used in overrides such as
`Cohort(params={{"steroid.shbg": 50}})`, `Cohort.set_params` and
`pulsehpg simulate --set steroid.shbg=50`) and a short symbol (used in the
equations in `pulsehpg/model.py`). Values are in the unit shown; time constants
are converted to hours for the core. *range* is the interval an override must
lie in. *cv* is the coefficient of variation of the log-normal multiplier that
makes patients differ (`-`: the same in every patient); draws are clipped to the
range. Phenotypes (`pulsehpg phenotypes`) change some defaults. A
*structural* parameter is compiled into the core as a constant: change it in
`pulsehpg/params.py`, regenerate `csrc/model_gen.h` (`python -m pulsehpg.codegen`)
and rebuild.

Sources marked "calibrated: Sx" were fitted so that the model reproduces
validation scenario Sx; "assumed" marks a value with no direct human
measurement.

{n} parameters.
"""


def params_markdown(params=REGISTRY) -> str:
    """The Markdown document committed as docs/parameters.md."""
    out = [MARKDOWN_INTRO.format(n=len(params))]
    groups: dict[str, list[Param]] = {}
    for p in params:
        groups.setdefault(p.name.split(".", 1)[0], []).append(p)
    for group, members in groups.items():
        out.append(f"\n## {group}\n\n")
        out.append(render(PARAM_HEADERS, [_param_row(p, "markdown") for p in members],
                          "markdown", right=(3, 5)))
    return "".join(out)


def render_params(fmt: str = "table", grep: str | None = None) -> str:
    """The registry (optionally filtered by a case-insensitive substring) as text."""
    params = [p for p in REGISTRY if grep is None or _match(p, grep)]
    if fmt == "markdown":
        return params_markdown(params)
    return render(PARAM_HEADERS if fmt != "csv" else
                  ("name", "symbol", "unit", "default", "lower", "upper", "cv", "meaning",
                   "source"),
                  [_param_row(p, fmt) for p in params], fmt, right=(3,))


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
FORMAT_OPTION = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                             show_default=True, help="Output format.")


@click.group(cls=PulseGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name=PROG)
def cli():
    """Pulse-by-pulse simulation of the male hypothalamic-pituitary-gonadal axis
    for cohorts of virtual patients."""


@cli.command("params")
@FORMAT_OPTION
@click.option("--grep", metavar="TEXT",
              help="Only parameters whose name, symbol, unit, meaning or source contains TEXT "
                   "(case-insensitive).")
def params_cmd(fmt, grep):
    """List the model parameters: name, unit, default, range, between-patient CV,
    meaning and source."""
    if grep is not None and not any(_match(p, grep) for p in REGISTRY):
        raise CommandError(
            f"no parameter matches '{grep}' (searched names, symbols, units, meanings and "
            f"sources of {len(REGISTRY)} parameters)")
    click.echo(render_params(fmt, grep), nl=False)


@cli.command("drugs")
@FORMAT_OPTION
def drugs_cmd(fmt):
    """List the drugs that can be dosed, with the unit of a dose."""
    rows = [[d.name, d.unit, d.meaning] for d in model.DRUGS]
    click.echo(render(("drug", "dose unit", "meaning"), rows, fmt), nl=False)


def _phenotype_changes(ph) -> str:
    changes = [f"{k} x{v:g}" for k, v in ph.scale.items()]
    changes += [f"{k} = {v:g}" for k, v in ph.set.items()]
    return ", ".join(changes) or "registry defaults"


@cli.command("phenotypes")
@FORMAT_OPTION
def phenotypes_cmd(fmt):
    """List the patient phenotypes and the parameters each one changes."""
    rows = [[ph.name, ph.meaning, _phenotype_changes(ph)] for ph in PHENOTYPES.values()]
    click.echo(render(("phenotype", "meaning", "changes"), rows, fmt), nl=False)


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a == 0:
        return "0"
    if a < 1e-6:
        return "~0"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2g}"


def summary_table(names, baseline: dict, end: dict, days: float) -> str:
    """Median and 10-90 % range of each observable at baseline and at the end."""
    rows = []
    for k in names:
        b10, b50, b90 = np.percentile(baseline[k], [10, 50, 90])
        e10, e50, e90 = np.percentile(end[k], [10, 50, 90])
        rows.append([k, UNITS[k], _num(b50), f"{_num(b10)} - {_num(b90)}", _num(e50),
                     f"{_num(e10)} - {_num(e90)}"])
    headers = ("output", "unit", "median", "10-90 %", "median", "10-90 %")
    table = render(headers, rows, "table", right=(2, 3, 4, 5)).splitlines()
    widths = [len(c) for c in table[1].split("  ")]
    left = sum(widths[:2]) + 4
    base_w = widths[2] + widths[3] + 2
    end_w = widths[4] + widths[5] + 2
    over = ("".ljust(left) + "baseline (day 0)".center(base_w) + "  "
            + f"end (day {days:g})".center(end_w)).rstrip()
    return "\n".join([over] + table) + "\n"


@cli.command("simulate")
@click.option("--phenotype", type=click.Choice(tuple(PHENOTYPES)), default="eugonadal",
              show_default=True, help="Patient phenotype (see `pulsehpg phenotypes`).")
@click.option("-n", "--patients", "n", type=click.IntRange(min=1, max=MAX_PATIENTS),
              default=100,
              show_default=True, help="Number of virtual patients.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed gives the same patients.")
@click.option("--days", type=PositiveNumber(MAX_DAYS, "days"), default=28.0,
              show_default=True, help="Days to simulate after baseline.")
@DOSE_OPTION
@PUMP_OPTION
@SET_OPTION
@click.option("--show", "shown", type=click.Choice(tuple(UNITS)), multiple=True,
              help="Observable to summarize (repeatable; default: the reproductive panel).")
@click.option("--deterministic", is_flag=True,
              help="No randomness: mean pulse intervals and masses, identical patients.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="OpenMP threads.")
def simulate_cmd(phenotype, n, seed, days, doses, pumps, overrides, shown, deterministic,
                 threads):
    """Simulate a cohort and print a summary of the reproductive panel at baseline
    and at the end."""
    from .cohort import Cohort

    end = days * 24.0
    params = dict(overrides)
    try:
        cohort = Cohort(n, phenotype, seed, params=params, deterministic=deterministic,
                        threads=threads)
    except ValueError as e:
        raise click.UsageError(_one_line(e)) from None
    except FloatingPointError as e:
        raise CommandError(f"simulation failed during equilibration: {e}") from None
    baseline = cohort.observe()
    for p in pumps:
        with user_errors("'--pump'"):
            cohort.set_pump(p.drug, p.dose, p.interval_text)
    events: dict[float, list[Dose]] = {}
    for d in doses:
        for t in d.times(end):
            events.setdefault(float(t), []).append(d)
    try:
        for t in sorted(events):
            cohort.advance_to(t)
            for d in events[t]:
                cohort.dose(d.drug, d.amount)
        cohort.advance_to(end)
    except FloatingPointError as e:
        raise CommandError(f"simulation failed: {e}") from None
    final = cohort.observe()

    click.echo(f"{phenotype}: {n} patient{'s' if n != 1 else ''}, seed {seed}, {days:g} days"
               + (", deterministic" if deterministic else ""))
    for d in doses:
        click.echo(f"  {d.describe(end)}")
    for p in pumps:
        click.echo(f"  {p.describe()}")
    for name, v in overrides:
        click.echo(f"  {name} = {v:g} {lookup(name).unit}")
    if not doses and not pumps:
        click.echo("  no treatment")
    click.echo()
    click.echo(summary_table(shown or SUMMARY_OUTPUTS, baseline, final, days), nl=False)


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------
def _load(path: str):
    from .scenario import load_scenario

    with user_errors():
        return load_scenario(path)


@cli.command("check")
@click.argument("scenario", metavar="SCENARIO.toml")
def check_cmd(scenario):
    """Validate a scenario file without running it."""
    sc = _load(scenario)
    phases = ", ".join(f"{p.name} ({p.duration / 24:g} d)" for p in sc.phases) or "dose records"
    click.echo(f"{scenario}: ok: {sc.cohort.n} patients ({sc.cohort.phenotype}), "
               f"phases: {phases}")
    if (note := sc.records_note(sc.cohort.n)) is not None:
        click.echo(f"note: {note}")


@cli.command("run")
@click.argument("scenario", metavar="SCENARIO.toml")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="write results to this HDF5 file")
@click.option("-n", "--patients", "n", type=click.IntRange(min=1, max=MAX_PATIENTS),
              default=None,
              help="number of patients (default: the scenario's)")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="root seed (default: the scenario's)")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="OpenMP threads for the core")
@click.option("--traces", "traces", metavar="EVERY", default=None,
              help="also write traces of every patient sampled every EVERY (e.g. '10 min'; "
                   "overrides the scenario's [output] traces)")
def run_cmd(scenario, out, n, seed, threads, traces):
    """Run a scenario and print a summary (and write HDF5 with -o)."""
    from . import store
    from .run import run

    sc = _load(scenario)
    if traces is not None:
        with user_errors():
            sc = sc.with_traces(traces)
    if out is not None:
        try:
            store.check_writable(out)
        except store.StoreError as e:
            raise click.BadParameter(_one_line(e), param_hint="--out") from None
    with user_errors():
        result = run(sc, n=n, seed=seed, threads=threads)
    click.echo(result.summary())
    if out is not None:
        try:
            path = result.save(out)
        except store.StoreError as e:
            raise click.UsageError(_one_line(e)) from None
        click.echo(f"results: {path}")


@cli.command("inspect")
@click.argument("path", metavar="RESULTS.h5")
def inspect_cmd(path):
    """Summarize what is in a results file."""
    from . import store

    try:
        click.echo(store.inspect(path))
    except (store.StoreError, OSError, ValueError) as e:
        raise click.UsageError(_one_line(e)) from None


@cli.command("plot")
@click.argument("path", metavar="RESULTS.h5")
@click.option("--kind", type=click.Choice(("labs", "recovery", "sweep", "traces")),
              required=True,
              help="labs: lab trajectories at visits with reference ranges; recovery: "
                   "Kaplan-Meier recovery of sperm concentration per sweep point; sweep: an "
                   "outcome against a swept axis; traces: sampled observables (if saved)")
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True,
              help="the figure (PNG; the suffix picks the format)")
@click.option("--threshold", type=PositiveNumber(unit="M/mL"), default=None,
              help="recovery, sweep: sperm concentration in M/mL (default: 20)")
@click.option("--x", "x", metavar="AXIS", default=None,
              help="sweep: the swept axis on x (default: the first /points column)")
@click.option("--y", "y", metavar="OUTCOME", default=None,
              help="sweep: plot the median of this per-patient outcome (default: fraction "
                   "recovered to --threshold by --at)")
@click.option("--at", "at", metavar="DURATION", default=None,
              help="sweep: the time after time zero of the recovery fraction, e.g. '6 "
                   "months' (default: 12 months, or the longest follow-up of any point); a "
                   "point whose men all left before it, some without the event, has no value")
@click.option("--by", "by", metavar="AXIS", default=None,
              help="sweep: a second swept axis; draws the outcome as a surface over --x and "
                   "--by (other axes pooled)")
@click.option("--patients", metavar="ROWS", default=None,
              help="traces: patient rows to draw, e.g. '0,3,7' (default: every patient of a "
                   "file with at most six, else the median and 10-90 % band)")
@click.option("--start", metavar="TIME", default=None,
              help="traces: start of the time window, e.g. '12 weeks' (default: the first "
                   "sample)")
@click.option("--span", metavar="DURATION", default=None,
              help="traces: length of the time window, e.g. '1 day' (default: to the end)")
def plot_cmd(path, kind, out, threshold, x, y, by, at, patients, start, span):
    """Draw a figure of a results file (needs pip install 'pulsehpg[results]')."""
    from . import store

    rows = None
    if patients is not None:
        try:
            rows = [int(x) for x in patients.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated row numbers such as '0,3', "
                                     f"got {patients!r}", param_hint="--patients") from None
    try:
        from .results import plot

        written = plot(path, kind, out, threshold=threshold, x=x, y=y, by=by, at=at,
                       patients=rows, start=start, span=span)
    except ImportError as e:
        raise click.UsageError(_one_line(e)) from None
    except (store.StoreError, ValueError) as e:
        raise click.UsageError(_one_line(e)) from None
    click.echo(f"wrote {written}")


# ---------------------------------------------------------------------------
# Validation against published numbers
# ---------------------------------------------------------------------------
def _default_threads() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _writable_folder(out: str) -> None:
    import os
    import tempfile
    from pathlib import Path

    if Path(out).exists() and not Path(out).is_dir():
        raise click.BadParameter(f"'{out}' is a file; the report needs a folder (it is created "
                                 f"if needed)", param_hint="--out")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".pulsehpg-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise click.BadParameter(f"cannot write to folder '{out}': "
                                 f"{e.strerror or _one_line(e)}", param_hint="--out") from None


@cli.command("validate")
@click.argument("paths", nargs=-1, metavar="[FILE_OR_DIR]...")
@click.option("-o", "--out", default="validation-report", show_default=True,
              help="folder for report.md and one PNG figure per scenario (created if needed; "
                   "figures need the results extra)")
@click.option("-n", "--patients", "n", type=click.IntRange(min=1, max=MAX_PATIENTS),
              default=None,
              help="patients per arm (default: each file's cohort.n, 200 for most; "
                   "deterministic single-patient arms keep theirs)")
@click.option("--only", metavar="IDS", default=None,
              help="comma-separated scenario ids to run, e.g. 'S4,S16' (default: all)")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="root seed for every arm (default: each file's)")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="OpenMP threads for the core (default: every core available)")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="bootstrap resamples of patients for the 95 % intervals (0: none)")
@click.option("--metrics", "list_metrics", is_flag=True,
              help="list the metrics a [[validation.quantity]] can use, and exit")
def validate_cmd(paths, out, n, only, seed, threads, bootstrap, list_metrics):
    """Run the validation scenarios (examples/validation/*.toml, or the files and folders
    given) and compare each quantity with its published target: a table (point estimate
    and 95 % bootstrap interval over patients; pass when the point estimate is in the
    accepted range), OUT/report.md and one figure per scenario. Exit status 0 when every
    quantity passes, 1 when one fails."""
    from pathlib import Path

    from . import store
    from . import validation as val
    from .scenario import ScenarioError

    if list_metrics:
        import textwrap

        click.echo("Metrics of [[validation.quantity]] (args in [] are optional). A value is a "
                   "table {arm, and one of: outcome; lab and visit; obs and at; trace and days "
                   "or at; pulses}; see pulsehpg/validation.py.\n")
        for m in val.METRICS.values():
            args = ", ".join(list(m.args) + [f"[{k}]" for k in m.optional])
            click.echo(f"{m.name}({args})")
            click.echo(textwrap.fill(m.doc, 92, initial_indent="    ",
                                     subsequent_indent="    "))
        return 0
    try:
        files = val.discover(paths)
    except FileNotFoundError as e:
        raise click.UsageError(_one_line(e)) from None
    if not files:
        where = ", ".join(paths) if paths else str(val.default_dir())
        raise click.UsageError(f"no validation files (TOML with a [validation] table) in "
                               f"{where}")
    specs = []
    for f in files:
        try:
            specs.append(val.load(f))
        except ScenarioError as e:
            raise click.UsageError(f"{f}: {_one_line(e)}") from None
    ids = [s.id for s in specs]
    if only is not None:
        wanted = [x.strip() for x in only.split(",") if x.strip()]
        by_id = {s.id.lower(): s for s in specs}
        unknown = [x for x in wanted if x.lower() not in by_id]
        if unknown or not wanted:
            raise click.BadParameter(
                f"unknown scenario id{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(x) for x in unknown) or repr(only)}; allowed: "
                f"{', '.join(ids)}", param_hint="--only")
        specs = [by_id[x.lower()] for x in dict.fromkeys(wanted)]
    specs.sort(key=lambda s: val.scenario_order(s.id))
    created = not Path(out).exists()
    _writable_folder(out)
    threads = threads or _default_threads()
    # everything that changes the numbers (threads do not: the same bits on any number)
    command = "pulsehpg validate" + "".join(f" {p}" for p in paths) + "".join(
        f" {k} {v}" for k, v in (("--out", out), ("-n", n), ("--seed", seed),
                                  ("--only", ",".join(s.id for s in specs) if only else None),
                                  ("--bootstrap", bootstrap if bootstrap != 1000 else None))
        if v is not None)
    try:
        try:
            report = val.validate(specs, n=n, seed=seed, threads=threads, bootstrap=bootstrap,
                                  out=Path(out), command=command,
                                  progress=lambda text: click.echo(text, err=True))
        except BaseException:
            if created and not any(Path(out).iterdir()):  # leave no empty folder behind
                Path(out).rmdir()
            raise
    except FloatingPointError as e:
        raise CommandError(f"simulation failed: {_one_line(e)}") from None
    except store.StoreError as e:  # the report or a figure could not be written
        raise click.UsageError(_one_line(e)) from None
    except (KeyError, ValueError) as e:  # a metric that cannot be computed from its arms
        raise click.UsageError(_one_line(e.args[0] if isinstance(e, KeyError) and e.args
                                         else e)) from None
    if report.no_figures:
        click.echo(f"no figures: {report.no_figures}", err=True)
    click.echo(val.table(report.rows), nl=False)
    fails = report.failures
    click.echo(f"\n{len(report.rows) - len(fails)} of {len(report.rows)} quantities pass"
               + (f"; FAIL: {', '.join(f'{r.scenario} {r.quantity.id}' for r in fails)}"
                  if fails else "")
               + f" ({report.seconds:.0f} s). Report: {Path(out) / 'report.md'}")
    return 1 if fails else 0


# ---------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------
def _store_error(e) -> click.UsageError:
    hint = ""
    if getattr(e, "errno", None) in (28, 122):  # ENOSPC, EDQUOT
        hint = " (finished blocks are kept: free some space, then rerun with --resume)"
    return click.UsageError(_one_line(str(e)) + hint)


@cli.command("sweep")
@click.argument("config", metavar="CONFIG.toml")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="merged HDF5 results file (default: NAME.h5 for the sweep's name); block "
                   "files go to OUT.blocks/")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="worker processes (default: one per CPU core available; with --executor "
                   "mpi: the MPI pool's size)")
@click.option("--executor", type=click.Choice(("process", "mpi")), default="process",
              show_default=True,
              help="'process': local processes; 'mpi': mpi4py.futures.MPIPoolExecutor (run "
                   "under mpiexec/srun; pip install 'pulsehpg[mpi]')")
@click.option("--shard", metavar="K/N", default=None,
              help="run only blocks k with k % N == K and do not merge (then `pulsehpg merge "
                   "OUT`); '/N' takes K from SLURM_ARRAY_TASK_ID")
@click.option("--resume", is_flag=True,
              help="keep finished blocks, delete stale temporary files, run the rest "
                   "(refused if the config changed)")
@click.option("--consolidate", is_flag=True,
              help="copy the blocks into OUT instead of virtual views onto OUT.blocks/")
@click.option("-n", "--patients", type=click.IntRange(min=1, max=MAX_PATIENTS),
              default=None,
              help="patients per point and replicate (default: the config's)")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="root seed (default: the config's)")
@click.option("--dry-run", is_flag=True, help="validate and describe the sweep; run nothing")
@click.option("-q", "--quiet", is_flag=True, help="no progress line")
@click.option("-k", "--keep-going", is_flag=True,
              help="a block that fails does not stop the others; the failed ones are named at "
                   "the end (then fix and --resume, or merge --allow-missing)")
def sweep_cmd(config, out, workers, executor, shard, resume, consolidate, patients, seed,
              dry_run, quiet, keep_going):
    """Run a parameter sweep of a scenario (grid, random, Latin hypercube or Sobol points x
    replicates), one HDF5 block file per block of points, merged into OUT."""
    from . import store
    from .sweep import SweepError, SweepInterrupted, SweepUsageError, load_config, parse_shard
    from .sweep import sweep as run_sweep

    with user_errors():
        cfg = load_config(config, patients=patients, seed=seed)
        shard = parse_shard(shard)
    axes = "; ".join(f"{a.name} [{a.unit}]" for a in cfg.axes)
    click.echo(f"{config}: {cfg.method}, {cfg.n_points} points x {cfg.replicates} replicate(s) "
               f"x {cfg.patients} patients = {cfg.n_patients} patients in {cfg.n_blocks} "
               f"block(s) of {cfg.block_size} point(s); axes: {axes}")
    if dry_run:
        return
    try:
        res = run_sweep(cfg, out, workers=workers, executor=executor, shard=shard,
                        resume=resume, consolidate=consolidate, progress=not quiet,
                        keep_going=keep_going)
    except SweepInterrupted as e:
        click.echo(f"{PROG} sweep: {_one_line(e)}", err=True)
        sys.exit(e.exit_status)
    except SweepUsageError as e:
        raise click.UsageError(_one_line(e)) from None
    except ValueError as e:  # ScenarioError of a point
        raise click.UsageError(_one_line(e)) from None
    except store.StoreError as e:
        raise _store_error(e) from None
    except SweepError as e:
        raise CommandError(_one_line(e)) from None
    for p in res.removed_temps:
        click.echo(f"removed stale temporary file {p}", err=True)
    done = (f"ran {res.blocks_run} block(s), {res.patients_run} patients in "
            f"{res.seconds:.1f} s ({res.patients_per_second:.3g} patients/s)"
            if res.blocks_run else "nothing to run")
    if res.blocks_skipped:
        done += f"; {res.blocks_skipped} block(s) were already done"
    if res.shard is not None:
        k, n = res.shard
        click.echo(f"shard {k}/{n}: {done}; blocks in {res.blocks_dir}/. When every shard is "
                   f"done: {PROG} merge {res.out}")
    else:
        how = "copied from" if consolidate else "virtual views onto"
        click.echo(f"{done}; results: {res.out} ({how} {res.blocks_dir}/)")


@cli.command("merge")
@click.argument("out", metavar="OUT.h5")
@click.option("--consolidate", is_flag=True,
              help="copy the blocks' rows into OUT (default: virtual views onto OUT.blocks/, "
                   "which must stay beside OUT)")
@click.option("--allow-missing", is_flag=True,
              help="merge the blocks that exist; missing ones are listed in OUT "
                   "(virtual views: their rows read as NaN / -1 until they appear)")
def merge_cmd(out, consolidate, allow_missing):
    """Merge the block files of a (sharded) sweep in OUT.blocks/ into OUT."""
    from . import store
    from .sweep import SweepUsageError, blocks_dir, merge

    try:
        res = merge(out, consolidate=consolidate, allow_missing=allow_missing)
    except SweepUsageError as e:
        raise click.UsageError(_one_line(e)) from None
    except store.MissingBlocksError as e:
        target = getattr(e, "out", out)
        blocks = getattr(e, "blocks", [])
        shown = ", ".join(map(str, blocks[:20])) + (f" ... and {len(blocks) - 20} more"
                                                    if len(blocks) > 20 else "")
        shards = getattr(e, "shards", None)
        run = f"{PROG} sweep CONFIG --out {target} --resume"
        if shards:
            n, ks = shards
            how = (f"`{run} --shard K/{n}` for K = {', '.join(map(str, ks))} (Slurm: sbatch "
                   f"--array={','.join(map(str, ks))} ... CONFIG {target} {n})")
        else:
            how = f"`{run}`" + (f" (blocks {shown}; with --shard K/N, block k belongs to "
                                "K = k % N)" if blocks else "")
        raise CommandError(
            f"{len(e.missing)} of {e.n_expected} blocks are missing or incomplete in "
            f"{blocks_dir(target)}/ ({', '.join(Path(m).name for m in e.missing[:5])}"
            f"{' ...' if len(e.missing) > 5 else ''}); finish them with {how}; or merge the "
            "rest with --allow-missing") from None
    except (store.StoreError, ValueError) as e:
        raise click.UsageError(_one_line(e)) from None
    missing = f", {len(res.missing)} block(s) missing: {', '.join(res.missing)}" \
        if res.missing else ""
    click.echo(f"merged {len(res.blocks) - len(res.missing)} of {len(res.blocks)} blocks "
               f"({res.n_points} points, {res.n_patients} patients) into {res.path}{missing}")


# ---------------------------------------------------------------------------
# SBML export
# ---------------------------------------------------------------------------
def _flatten(table: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat |= _flatten(v, name + ".")
        else:
            flat[name] = v
    return flat


def _params_file(path: str) -> dict:
    """Parameter values from a TOML file: dotted names (or a [params] table) -> numbers."""
    import tomllib

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e.strerror}", param_hint="--params") \
            from None
    except tomllib.TOMLDecodeError as e:
        raise click.BadParameter(f"{path}: not valid TOML: {_one_line(e)}",
                                 param_hint="--params") from None
    if set(doc) == {"params"} and isinstance(doc["params"], dict):
        doc = doc["params"]
    values = {}
    for name, v in _flatten(doc).items():
        try:
            par = lookup(name)
        except ValueError as e:
            raise click.BadParameter(f"{path}: {_one_line(e)}", param_hint="--params") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise click.BadParameter(f"{path}: {name}: expected a number, got {v!r}",
                                     param_hint="--params")
        values[par.name] = float(v)
    return values


@cli.command("export-sbml")
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True,
              help="write the SBML document to this file")
@click.option("--phenotype", type=click.Choice(tuple(PHENOTYPES)), default="eugonadal",
              show_default=True, help="patient phenotype")
@click.option("--params", "params_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.toml",
              help="parameter values by dotted name, in the registry's units")
@SET_OPTION
@DOSE_OPTION
@PUMP_OPTION
@click.option("--days", type=PositiveNumber(MAX_DAYS, "days"), default=30.0,
              show_default=True,
              help="span covered by repeated --dose boluses (one SBML event each)")
@click.option("--records", "records_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.csv",
              help="NONMEM-style dose records of one patient (ID, TIME, DRUG, AMT, II, ADDL, "
                   "RATE, EVID; see `pulsehpg run`): boluses and timed infusions become "
                   "events, observation rows are ignored")
def export_sbml_cmd(out, phenotype, params_path, overrides, doses, pumps, days, records_path):
    """Write the deterministic model of one equilibrated patient as SBML L3V2.

    The patient is equilibrated as pulsehpg equilibrates a deterministic cohort; its
    GnRH pulses are a regular train, and every dose, infusion change and pump is an
    SBML event (time 0 is the equilibrated state)."""
    from . import store

    try:  # before the work: the export would replace its own input
        store.check_not_input(out, (params_path, records_path))
    except store.StoreError as e:
        raise click.BadParameter(_one_line(e), param_hint="--out") from None
    params = _params_file(params_path) if params_path is not None else {}
    params |= dict(overrides)
    end = days * 24.0
    bolus = [(float(t), d.drug, d.amount) for d in doses for t in d.times(end)]
    pump_list = [(0.0, p.drug, p.dose, p.interval) for p in pumps]
    infusions = []
    if records_path is not None:
        more, infusions = _sbml_records(records_path)
        bolus += more
    if len(bolus) + len(infusions) > MAX_SBML_EVENTS:
        raise click.UsageError(
            f"the regimen gives {len(bolus) + len(infusions)} dosing events; an SBML export "
            f"holds at most {MAX_SBML_EVENTS} (one event each): shorten --days or dose less "
            f"often, or use --pump for frequent boluses (one event per bolus at run time)")
    try:
        from .sbml import to_sbml
    except ImportError as e:  # pragma: no cover - sbml.py imports libsbml lazily
        raise click.UsageError(_one_line(e)) from None
    try:
        with user_errors():
            text = to_sbml(phenotype, params, doses=bolus, infusions=infusions, pumps=pump_list)
    except ImportError as e:
        raise click.UsageError(_one_line(e)) from None
    try:
        store.write_text(out, text)
    except store.StoreError as e:
        raise click.BadParameter(_one_line(e), param_hint="--out") from None
    n_events = len(bolus) + len(infusions) + len(pump_list)
    click.echo(f"wrote {out} (phenotype {phenotype}, {len(model.STATES)} states, "
               f"{n_events} dosing event{'s' if n_events != 1 else ''})")


MAX_SBML_EVENTS = 100_000


def _sbml_records(path: str) -> tuple[list, list]:
    """Boluses (time, drug, amount) and infusion changes (time, drug, rate) of the one
    patient of a dose-record file."""
    from .nonmem import expand_records, infusion_rates, patient_count, read_dose_records

    if not os.path.isfile(path):
        raise click.BadParameter(f"no such file: {path}", param_hint="--records")
    with user_errors("'--records'"):
        records = read_dose_records(path)
    if (ids := patient_count(records)) != 1:
        raise click.BadParameter(f"{path}: holds records of {ids} patients; an SBML "
                                 f"model is one patient: keep the rows of one ID",
                                 param_hint="--records")
    events, _visits = expand_records(records)
    bolus = [(t, drug, value) for t, kind, _p, drug, value in events if kind == "dose"]
    # overlapping infusions of one drug add up, as in `pulsehpg run`
    infusions = [(t, drug, rate) for t, _p, drug, rate in infusion_rates(events)]
    return bolus, infusions


def main(argv=None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name=PROG)


if __name__ == "__main__":
    main()
