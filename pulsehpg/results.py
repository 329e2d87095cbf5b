"""Results files as labelled arrays (xarray) and the figures of ``pulsehpg plot``.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg
backend (no pyplot, no display, no change to the session's backend).

:func:`open_results` reads a results file (run, sweep block or merged sweep) through
:func:`pulsehpg.store.read` and returns an :class:`xarray.Dataset` with the dimensions

- ``point``: sweep points (index coordinate ``point``, the /points/point ids);
- ``patient``: every row of /patients (patients of every point and replicate);
- ``visit``: visits per patient (/visits is patient x visit);
- ``time``: trace sample times (coordinate ``time_h``), only when the file has traces.

Variables keep their names in the file, except where a name would clash:
/patients/point is ``patient_point``, /patients/patient is ``patient_id``, /visits/time_h
is ``visit_time_h`` and /visits/phase is ``visit_phase``; trace observables are
``trace_<name>``. Each variable's attrs hold ``units``, ``long_name`` and ``source``
('group/name' in the file); coded integers (the visit phase) also hold CF ``flag_values``
and ``flag_meanings``. The Dataset attrs hold the provenance: the root attributes of the
file (``pulsehpg_version``, ``config_sha256``, ``seed``, ``kind``, ...), the ``config`` text
and ``phase_names`` (phase code -> name, as a list in code order).

xarray, pandas and matplotlib are the optional extra ``pulsehpg[results]``; importing this
module does not need them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from . import store
from .outcomes import fraction_by, kaplan_meier
from .units import parse_duration

__all__ = ["PLOT_KINDS", "REFERENCE_RANGES", "PlotError", "open_results", "plot"]

_INSTALL = "pip install 'pulsehpg[results]'"
PLOT_KINDS = ("labs", "recovery", "sweep", "traces")
DAYS_PER_MONTH = 30.4375

# (low, high) reference ranges, in the units the labs are stored in; None: unbounded.
REFERENCE_RANGES = {
    "lh": (1.5, 12.0),         # IU/L
    "fsh": (1.5, 12.0),        # IU/L
    "t_total": (264.0, 916.0),  # ng/dL, Travison 2017
    "e2": (3.0, 37.0),         # pg/mL
    "sperm_conc": (15.0, None),  # M/mL, WHO 2010 lower reference limit
}

_LABELS = {
    "lh": "LH", "fsh": "FSH", "t_total": "total testosterone", "t_free": "free testosterone",
    "e2": "estradiol", "inhibin_b": "inhibin B", "sperm_conc": "sperm concentration",
    "motility": "sperm motility", "itt": "intratesticular testosterone",
}
_RENAME = {("patients", "point"): "patient_point", ("patients", "patient"): "patient_id",
           ("visits", "time_h"): "visit_time_h", ("visits", "phase"): "visit_phase"}
_DIMS = {"points": ("point",), "patients": ("patient",), "visits": ("patient", "visit"),
         "traces": ("patient", "time")}


class PlotError(ValueError):
    """A plot that cannot be drawn from this file (missing variable, bad option)."""


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"pulsehpg results need {module.split('.')[0]}, which is not "
                          f"installed: {_INSTALL}") from exc


def _observable_meanings() -> dict[str, str]:
    from . import model

    return {o.name: o.meaning for o in model.OUTPUTS}


def _event_label(rest: str) -> str:
    for head, tail in (("sperm_ge_", " M/mL"),
                       ("sperm_recovered_", " M/mL, or the baseline if lower (Liu 2006; "
                                            "not defined, time NaN, below a 1 M/mL baseline)")):
        if rest.startswith(head):
            return f"sperm concentration >= {rest[len(head):]}{tail}"
    return _LABELS.get(rest, rest.replace("_", " "))


def _long_name(group: str, name: str, given: str | None, meanings: dict) -> str:
    if given:
        return given
    if group == "points":
        return "sweep point index" if name == "point" else f"swept value of {name}"
    if group == "patients":
        fixed = {"point": "sweep point of the patient", "replicate": "replicate cohort",
                 "patient": "patient index within the cohort",
                 "time_zero_h": "time zero of the outcomes",
                 "ended_at_h": "time the patient's regimen ended",
                 "follow_up_days": "days the run followed the patient after time zero"}
        if name in fixed:
            return fixed[name]
        for prefix, what in (("days_to_", "days from time zero to "),
                             ("event_", "event observed: "), ("nadir_", "lowest visit "),
                             ("peak_", "highest visit "), ("end_", "value at the end: "),
                             ("baseline_", "baseline ")):
            if name.startswith(prefix):
                rest = name[len(prefix):]
                return what + _event_label(rest)
        return name.replace("_", " ")
    if name == "time_h":
        return "visit time" if group == "visits" else "trace sample time"
    if name == "phase":
        return "regimen phase at the visit"
    label = _LABELS.get(name) or meanings.get(name) or name.replace("_", " ")
    return ("measured at visits: " if group == "visits" else "") + label


def _var_name(group: str, name: str) -> str:
    if (group, name) in _RENAME:
        return _RENAME[(group, name)]
    if group == "traces" and name != "time_h":
        return f"trace_{name}"
    return name


def open_results(path):
    """A pulsehpg results file as an :class:`xarray.Dataset` (see the module docstring).

    Raises ImportError (naming ``pip install 'pulsehpg[results]'``) without xarray, and
    :class:`pulsehpg.store.StoreError` for a missing or unreadable file.
    """
    xr = _require("xarray")
    data = store.read(path)
    meanings = _observable_meanings()
    coords: dict = {}
    variables: dict = {}
    for group in store.GROUPS:
        for name, arr in data[group].items():
            key = f"{group}/{name}"
            attrs = {"units": data["units"].get(key, ""),
                     "long_name": _long_name(group, name, data["long_names"].get(key),
                                             meanings),
                     "source": key}
            codes = data["codes"].get(key)
            if codes:
                attrs["flag_values"] = np.array(sorted(codes), dtype=arr.dtype)
                attrs["flag_meanings"] = " ".join(codes[k] for k in sorted(codes))
            if group == "points" and name == "point":
                coords["point"] = ("point", arr, attrs)
            elif group == "traces" and name == "time_h":
                coords["time_h"] = ("time", arr, attrs)
            else:
                vname = _var_name(group, name)
                if vname in variables or vname in coords:
                    vname = f"{group}_{name}"
                variables[vname] = (_DIMS[group][:arr.ndim], arr, attrs)
    attrs = dict(data["attrs"])
    attrs["config"] = data["config"]
    attrs["source_file"] = str(path)
    phase = data["codes"].get("visits/phase")
    if phase:
        attrs["phase_codes"] = [int(k) for k in sorted(phase)]
        attrs["phase_names"] = [phase[k] for k in sorted(phase)]
    return xr.Dataset(variables, coords=coords, attrs=attrs)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def _quantiles(values: np.ndarray, qs=(10, 50, 90)) -> np.ndarray:
    """Per-column quantiles over rows, ignoring NaN; NaN where a column has no value."""
    values = np.asarray(values, dtype=float)
    out = np.full((len(qs), values.shape[1]), np.nan)
    has = np.isfinite(values).any(axis=0)
    if has.any():
        out[:, has] = np.nanpercentile(values[:, has], qs, axis=0)
    return out


def _axis_label(ds, var: str, label: str | None = None) -> str:
    units = ds[var].attrs.get("units", "")
    text = label or _LABELS.get(var, var)
    return f"{text} ({units})" if units and units != "1" else text


def _short_names(names: list[str]) -> dict[str, str]:
    """Axis name -> its last two dotted parts (e.g. 'clomiphene.dose'), if still unique."""
    short = {n: ".".join(n.split(".")[-2:]) for n in names}
    return short if len(set(short.values())) == len(short) else {n: n for n in names}


def _point_labels(ds) -> dict[int, str]:
    axes = [v for v in ds.data_vars if ds[v].dims == ("point",)]
    short = _short_names(axes)
    out = {}
    for i, p in enumerate(ds["point"].values):
        parts = [f"{short[a]}={_fmt(ds[a].values[i])}" for a in axes]
        out[int(p)] = ", ".join(parts) if parts else f"point {int(p)}"
    return out


def _legend(ax, n_entries: int) -> None:
    if n_entries <= 6:
        ax.legend(fontsize="x-small")
    else:  # beside the axes, not over the curves
        ax.legend(fontsize="xx-small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0)


def _binned_quantiles(t: np.ndarray, values: np.ndarray, max_bins: int = 40):
    """(time, q10, q50, q90) of values pooled by visit time (rounded to a day; at most
    max_bins bins over the range), so that patients whose visits fall at different times
    are summarized at the times they were seen."""
    ok = np.isfinite(t) & np.isfinite(values)
    t, v = t[ok], values[ok]
    if not t.size:
        return np.empty(0), np.empty((3, 0))
    days = np.round(t * 7.0) / 7.0  # t in weeks: round to a day
    centers = np.unique(days)
    if centers.size > max_bins:
        edges = np.linspace(days.min(), days.max(), max_bins + 1)
        which = np.clip(np.searchsorted(edges, days, side="right") - 1, 0, max_bins - 1)
    else:
        which = np.searchsorted(centers, days)
    bins = np.unique(which)
    times = np.array([np.median(t[which == b]) for b in bins])
    q = np.array([np.percentile(v[which == b], (10, 50, 90)) for b in bins]).T
    return times, q


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def _groups(ds, max_groups: int = 6):
    """(label, patient mask) per sweep point, or one group for all patients."""
    pp = ds["patient_point"].values
    points = [int(p) for p in ds["point"].values if (pp == p).any()]
    if len(points) <= 1 or len(points) > max_groups:
        label = "all patients" if len(points) != 1 else None
        return [(label, np.ones(pp.shape, dtype=bool))]
    labels = _point_labels(ds)
    return [(labels[p], pp == p) for p in points]


def _present_rows(ds):
    """The points and patients with data: the rows of blocks missing from a merge
    (``pulsehpg merge --allow-missing``) have point -1 and are left out of figures."""
    keep = {}
    if "point" in ds.coords and (ds["point"].values == -1).any():
        keep["point"] = ds["point"].values != -1
    if "patient_point" in ds and (ds["patient_point"].values == -1).any():
        keep["patient"] = ds["patient_point"].values != -1
    return ds.isel(keep) if keep else ds


def _figure(n_panels: int, cols: int = 3, wide: bool = False):
    figure = _require("matplotlib.figure")  # no pyplot: no display, no global backend
    cols = min(cols, n_panels)
    rows = -(-n_panels // cols)
    size = ((11.0 if wide else 7.5), 4.8) if n_panels == 1 else (4.6 * cols, 3.4 * rows)
    fig = figure.Figure(figsize=size, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _plot_labs(ds, ax_title: str):
    labs = [v for v in ds.data_vars
            if ds[v].dims == ("patient", "visit") and v not in ("visit_time_h", "visit_phase")
            and np.isfinite(np.asarray(ds[v].values, dtype=float)).any()]
    if not labs:
        raise PlotError("the file has no lab values at visits (/visits is empty)")
    t_h = np.asarray(ds["visit_time_h"].values, dtype=float)
    xlabel = "time (weeks)"
    if "time_zero_h" in ds:  # align patients on the scenario's time zero (outcomes)
        t0 = np.asarray(ds["time_zero_h"].values, dtype=float)
        if np.isfinite(t0).all() and np.any(t0 != 0):
            t_h = t_h - t0[:, None]
            xlabel = "time since time zero (weeks)"
    t_weeks = t_h / 168.0
    fig, axes = _figure(len(labs))
    groups = _groups(ds)
    for ax, lab in zip(axes, labs):
        values = np.asarray(ds[lab].values, dtype=float)
        ref = REFERENCE_RANGES.get(lab)
        if ref is not None:
            lo, hi = ref
            if hi is None:
                ax.axhspan(lo, max(lo * 1.5, np.nanmax(values) if np.isfinite(values).any()
                                   else lo * 1.5), color="tab:green", alpha=0.12, lw=0,
                           label=f"reference >= {lo:g}")
            else:
                ax.axhspan(lo, hi, color="tab:green", alpha=0.12, lw=0,
                           label=f"reference {lo:g}-{hi:g}")
        for k, (label, mask) in enumerate(groups):
            t, q = _binned_quantiles(t_weeks[mask].ravel(), values[mask].ravel())
            if not t.size:
                continue
            color = f"C{k}"
            ax.fill_between(t, q[0], q[2], color=color, alpha=0.2, lw=0)
            ax.plot(t, q[1], "o-", color=color, ms=3,
                    label=(f"{label}: " if label else "") + "median, 10-90 %")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_axis_label(ds, lab))
        ax.set_title(_LABELS.get(lab, lab))
        ax.legend(fontsize="xx-small")
    fig.suptitle(ax_title)
    return fig


def _recovery_keys(ds, threshold: float) -> tuple[str, str]:
    key = f"sperm_ge_{threshold:g}"
    t, e = f"days_to_{key}", f"event_{key}"
    if t not in ds or e not in ds:
        have = sorted((v[len("days_to_sperm_ge_"):] for v in ds.data_vars
                       if v.startswith("days_to_sperm_ge_")), key=float)
        raise PlotError(f"the file has no {t} (recovery thresholds in it: "
                        f"{', '.join(have) or 'none'} M/mL)")
    return t, e


def _plot_recovery(ds, title: str, threshold: float):
    tkey, ekey = _recovery_keys(ds, threshold)
    time = np.asarray(ds[tkey].values, dtype=float)
    event = np.asarray(ds[ekey].values).astype(bool)
    if not np.isfinite(time).any():
        raise PlotError(f"{tkey} has no values (no semen analyses after time zero)")
    groups = _groups(ds, max_groups=20)
    fig, (ax,) = _figure(1, wide=len(groups) > 6)
    horizon = np.nanmax(time) / DAYS_PER_MONTH
    for k, (label, mask) in enumerate(groups):
        ts, fs = kaplan_meier(time[mask], event[mask])
        x = np.concatenate([[0.0], ts / DAYS_PER_MONTH, [horizon]])
        y = np.concatenate([[0.0], fs, [fs[-1] if fs.size else 0.0]])
        n = int(np.isfinite(time[mask]).sum())
        ax.step(x, y, where="post", color=f"C{k % 10}", ls="-" if k < 10 else "--",
                label=f"{label or 'all patients'} (n={n})")
    ax.set_xlabel("months since time zero")
    ax.set_ylabel(f"fraction with sperm >= {threshold:g} M/mL")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax, len(groups))
    ax.set_title(f"{title}: Kaplan-Meier recovery to {threshold:g} M/mL", fontsize="medium")
    return fig


def _sweep_statistic(ds, threshold: float, y: str | None, at: float | None = None):
    """stat(mask of patients) -> (value, 10th, 90th percentile), its axis label and what
    the title calls it. ``at``: days after time zero of the recovery fraction."""
    if y is None:
        tkey, ekey = _recovery_keys(ds, threshold)
        time = np.asarray(ds[tkey].values, dtype=float)
        event = np.asarray(ds[ekey].values).astype(bool)
        # files written before follow_up_days: the last semen analysis is the follow-up
        follow = (np.asarray(ds["follow_up_days"].values, dtype=float)
                  if "follow_up_days" in ds else time)
        longest = float(np.nanmax(follow)) if np.isfinite(follow).any() else np.nan
        if not longest > 0:
            raise PlotError(f"{tkey} has no follow-up after time zero in any point")
        if at is None:
            at = min(12 * DAYS_PER_MONTH, longest)
        elif at > longest + 1e-9:
            raise PlotError(f"--at {at / DAYS_PER_MONTH:.3g} months is after the follow-up of "
                            f"every point (the longest: {longest / DAYS_PER_MONTH:.3g} "
                            f"months after time zero)")
        # a point whose men all left before `at` (a rule ending the regimen), some without
        # the event, has no value: its Kaplan-Meier estimate is not defined past its data

        def stat(mask):
            ok = mask & np.isfinite(time)
            v = fraction_by(time[ok], event[ok], at, follow[ok]) if ok.any() else np.nan
            return v, np.nan, np.nan
        by = f"{at / DAYS_PER_MONTH:.3g} months"
        ylabel = f"fraction with sperm >= {threshold:g} M/mL by {by} (Kaplan-Meier)"
        what = f"recovery to {threshold:g} M/mL by {by}"
        pp = np.asarray(ds["patient_point"].values)
        if any(np.isnan(stat(pp == k)[0]) for k in np.unique(pp[np.isfinite(time)])):
            what += " (no value where men left without it before then)"
        return stat, ylabel, what
    if y not in ds or ds[y].dims != ("patient",):
        have = [v for v in ds.data_vars if ds[v].dims == ("patient",)]
        raise PlotError(f"--y {y!r} is not a per-patient outcome in the file (outcomes: "
                        f"{', '.join(have[:12])}{' ...' if len(have) > 12 else ''})")
    values = np.asarray(ds[y].values, dtype=float)

    def stat(mask):
        v = values[mask]
        v = v[np.isfinite(v)]
        if not v.size:
            return np.nan, np.nan, np.nan
        lo, med, hi = np.percentile(v, (10, 50, 90))
        return med, lo, hi
    ylabel = "median " + _axis_label(ds, y)
    return stat, ylabel, y


def _swept_axis(axes_vars: list[str], name: str | None, option: str, default: str) -> str:
    if name is None:
        return default
    if name not in axes_vars:
        raise PlotError(f"{option} {name!r} is not a swept axis (axes: {', '.join(axes_vars)})")
    return name


def _plot_sweep(ds, title: str, threshold: float, x: str | None, y: str | None,
                by: str | None = None, at: float | None = None):
    axes_vars = [v for v in ds.data_vars if ds[v].dims == ("point",)]
    if not axes_vars:
        raise PlotError("the file has no swept axes (/points has only 'point'): use --kind "
                        "labs or recovery for a run")
    x = _swept_axis(axes_vars, x, "--x", axes_vars[0])
    if by is not None:
        by = _swept_axis(axes_vars, by, "--by", by)
        if by == x:
            raise PlotError(f"--by {by!r} is also --x: a surface needs two different axes")
    stat, ylabel, what = _sweep_statistic(ds, threshold, y, at)
    if by is not None:
        return _plot_surface(ds, title, x, by, stat, ylabel, y, what)
    pp = ds["patient_point"].values
    points = ds["point"].values
    others = [a for a in axes_vars if a != x]
    short = _short_names(others)
    xs = ds[x].values
    key = [tuple(_fmt(ds[a].values[i]) for a in others) for i in range(points.size)]
    fig, (ax,) = _figure(1, wide=len(set(key)) > 6)
    for k, combo in enumerate(dict.fromkeys(key)):
        idx = [i for i in range(points.size) if key[i] == combo]
        idx.sort(key=lambda i: xs[i])
        s = np.array([stat(pp == points[i]) for i in idx], dtype=float)
        label = ", ".join(f"{short[a]}={v}" for a, v in zip(others, combo)) or None
        color = f"C{k % 10}"
        xv = [xs[i] for i in idx]
        if np.isfinite(s[:, 1]).any():
            ax.fill_between(xv, s[:, 1], s[:, 2], color=color, alpha=0.15, lw=0)
        ax.plot(xv, s[:, 0], "o-", color=color, label=label)
    ax.set_xlabel(_axis_label(ds, x, x))
    ax.set_ylabel(ylabel)
    if y is None:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if others:
        _legend(ax, len(set(key)))
    ax.set_title(f"{title}: {what} against {x}"
                 + (" (median, 10-90 %)" if y else ""), fontsize="medium", wrap=True)
    return fig


def _plot_surface(ds, title, x, by, stat, label, y, what):
    """The outcome over two swept axes, pooling the patients of points that share both
    values (other axes pooled): a grid of cells when the values form a grid, else one
    coloured marker per point."""
    pp = ds["patient_point"].values
    points = ds["point"].values
    xs, bs = np.asarray(ds[x].values, dtype=float), np.asarray(ds[by].values, dtype=float)
    ux, ub = np.unique(xs), np.unique(bs)
    fig, (ax,) = _figure(1)
    limits = {"vmin": 0, "vmax": 1} if y is None else {}  # recovery is a fraction
    grid = ux.size * ub.size <= 900 and ux.size * ub.size <= 4 * points.size
    if grid:
        z = np.full((ub.size, ux.size), np.nan)
        for j, bv in enumerate(ub):
            for i, xv in enumerate(ux):
                sel = points[(xs == xv) & (bs == bv)]
                if sel.size:
                    z[j, i] = stat(np.isin(pp, sel))[0]
        mesh = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis", **limits)
        ax.set_xticks(range(ux.size), [_fmt(v) for v in ux])
        ax.set_yticks(range(ub.size), [_fmt(v) for v in ub])
        if z.size <= 100:
            for (j, i), v in np.ndenumerate(z):
                if np.isfinite(v):
                    ax.text(i, j, f"{v:.2g}", ha="center", va="center", fontsize="small",
                            color="white" if mesh.norm(v) < 0.5 else "black")  # dark cells
    else:
        z = np.array([stat(pp == p)[0] for p in points], dtype=float)
        mesh = ax.scatter(xs, bs, c=z, cmap="viridis", s=30, **limits)
    fig.colorbar(mesh, ax=ax, label=label)
    ax.set_xlabel(_axis_label(ds, x, x))
    ax.set_ylabel(_axis_label(ds, by, by))
    ax.set_title(f"{title}: {what} over {x} and {by}", fontsize="medium", wrap=True)
    return fig


def _trace_window(t: np.ndarray, start: float | None, span: float | None) -> np.ndarray:
    """Mask of the trace samples inside [start, start + span] (hours)."""
    lo = t[0] if start is None else start
    hi = np.inf if span is None else lo + span
    inside = (t >= lo - 1e-9) & (t <= hi + 1e-9)
    if inside.sum() < 2:  # one sample draws no line: an empty figure
        raise PlotError(f"{'one trace sample' if inside.any() else 'no trace samples'} "
                        f"between {lo:g} h and {hi:g} h (traces cover {t[0]:g}-{t[-1]:g} h "
                        f"every {np.median(np.diff(t)) if t.size > 1 else 0:g} h): "
                        "a plot needs at least two; widen --span or move --start")
    return inside


def _plot_traces(ds, title: str, patients=None, start=None, span=None):
    """One panel per observable: chosen patients as lines (each sample: pulses show at
    10-min resolution), or for more than six patients without a choice the cohort's
    median and 10-90 % band."""
    if "time" not in ds.dims:
        raise PlotError("the file has no traces (/traces is absent): run the scenario with "
                        "[output] traces = \"10 min\" or pulsehpg run --traces \"10 min\"")
    names = [v for v in ds.data_vars if ds[v].dims == ("patient", "time")]
    n = ds.sizes["patient"]
    if patients is not None:
        bad = [k for k in patients if not (0 <= k < n)]
        if bad or not patients:
            raise PlotError(f"patients: rows {bad or patients} are not in the file "
                            f"(0..{n - 1})")
    elif n <= 6:
        patients = list(range(n))
    t_all = np.asarray(ds["time_h"].values, dtype=float)
    inside = _trace_window(t_all, start, span)
    t = t_all[inside]
    scale, unit = (24.0, "days") if t[-1] > 72 else (1.0, "h")
    fig, axes = _figure(len(names))
    for ax, v in zip(axes, names):
        values = np.asarray(ds[v].values, dtype=float)[:, inside]
        base = v.removeprefix("trace_")
        if patients is not None:
            for k in patients:
                label = f"patient {int(ds['patient_id'].values[k])}"
                ax.plot(t / scale, values[k], lw=0.8, label=label)
        else:
            for k, (label, mask) in enumerate(_groups(ds)):
                q = _quantiles(values[mask])
                ax.fill_between(t / scale, q[0], q[2], color=f"C{k}", alpha=0.2, lw=0)
                ax.plot(t / scale, q[1], color=f"C{k}",
                        label=(f"{label}: " if label else "") + "median, 10-90 %")
        ax.set_xlabel(f"time ({unit})")
        ax.set_ylabel(_axis_label(ds, v, _LABELS.get(base, base)))
        ax.set_title(_LABELS.get(base, base))
        _legend(ax, len(patients) if patients is not None else 1)
    fig.suptitle(title)
    return fig


# the options each kind of figure reads (any other one given is refused, not ignored)
_PLOT_OPTIONS = {"labs": (), "recovery": ("threshold",),
                 "sweep": ("threshold", "x", "y", "by", "at"),
                 "traces": ("patients", "start", "span")}


def plot(path, kind: str, out, *, threshold: float | None = None, x: str | None = None,
         y: str | None = None, by: str | None = None, at=None, patients=None, start=None,
         span=None) -> Path:
    """Draw one figure of a results file to ``out`` (PNG, or any format matplotlib knows
    from the suffix) and return its path.

    kind: 'labs' (lab trajectories at visits, median and 10-90 % per sweep point when there
    are 2-6 points, else pooled, with reference ranges shaded), 'recovery' (Kaplan-Meier
    time to sperm >= threshold M/mL, one curve per sweep point), 'sweep' (an outcome against
    the swept axis ``x``: by default the Kaplan-Meier fraction recovered to ``threshold``
    (default 20 M/mL) by ``at`` (hours or a duration; default 12 months, or the longest
    follow-up of any point if that is shorter; a point whose men all left before ``at``,
    some without the event, has no value), else the median of the per-patient outcome
    ``y``; with a second axis ``by``, a surface over both, other axes pooled) or 'traces' (the
    patient rows ``patients`` as lines, by default every patient of a file with at most
    six, else the median and 10-90 % band; ``start`` and ``span``, hours or durations
    such as '12 weeks', pick a time window).
    Raises PlotError (a ValueError) for what the file cannot show, StoreError for an
    unreadable file, ImportError without xarray/matplotlib.
    """
    if kind not in PLOT_KINDS:
        raise PlotError(f"unknown kind {kind!r} (kinds: {', '.join(PLOT_KINDS)})")
    given = {"threshold": threshold, "x": x, "y": y, "by": by, "at": at,
             "patients": patients, "start": start, "span": span}
    for name, value in given.items():
        if value is not None and name not in _PLOT_OPTIONS[kind]:
            takes = ", ".join(f"--{k}" for k in _PLOT_OPTIONS[kind]) or "no options"
            raise PlotError(f"--{name} does not apply to a {kind!r} figure (it takes {takes})")
    if kind == "sweep" and y is not None and (threshold is not None or at is not None):
        raise PlotError(f"--{'threshold' if threshold is not None else 'at'} is for the "
                        f"recovery fraction, not for the median of --y {y!r}")
    threshold = 20.0 if threshold is None else threshold
    at = None if at is None else parse_duration(at, "at") / 24.0
    out = Path(out)
    if not out.parent.is_dir():
        raise PlotError(f"cannot write {out}: folder {out.parent} does not exist")
    store.check_not_input(out, (path,))
    ds = open_results(path)
    _require("matplotlib.backends.backend_agg")  # Figure.savefig renders with Agg
    title = str(ds.attrs.get("scenario") or ds.attrs.get("name") or Path(path).stem)
    if kind in ("labs", "recovery", "sweep") and "patient_point" not in ds:
        raise PlotError(f"{path} has no patients")
    ds = _present_rows(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of unmeasured labs
        if kind == "labs":
            fig = _plot_labs(ds, title)
        elif kind == "recovery":
            fig = _plot_recovery(ds, title, threshold)
        elif kind == "sweep":
            fig = _plot_sweep(ds, title, threshold, x, y, by, at)
        else:
            fig = _plot_traces(ds, title, patients,
                               None if start is None else parse_duration(start, "start"),
                               None if span is None else parse_duration(span, "span"))
    store.write_figure(fig, out, dpi=110)
    return out
