"""Results files: the only module of pulsehpg that reads or writes files (HDF5 via h5py).

One *block* file holds the complete results of some sweep points (``pulsehpg run``
writes one block with one point; a sweep writes many blocks, possibly from
parallel processes, and :func:`merge` joins them). A block file is written whole
or not at all: it is created as ``<final>.tmp-<pid>`` in the same directory,
flushed, fsynced, closed and renamed with ``os.replace()``, so a crash, a full
disk or ``kill -9`` never leaves a half-written file under the final name (a
stale ``*.tmp-<pid>`` file may remain after ``kill -9``; it is never read).
Resuming a sweep = skipping blocks for which :func:`is_complete` is true.

Layout (format ``pulsehpg-results``, format_version 1)
-------------------------------------------------------
Root attributes:

- ``format`` = ``"pulsehpg-results"``, ``format_version`` = 1 (int)
- ``pulsehpg_version``: the version that wrote the file
- ``code_sha256``: SHA-256 identifying the code that computed the results (the version,
  the compiled core and the modules that determine results: :func:`code_sha256`); blocks
  merge only when it is equal (a merged file has its blocks' value). Files written before
  it existed have none.
- ``config_sha256``: SHA-256 (64 lowercase hex digits) identifying the resolved
  config (by default of the /config text); blocks merge only when it is equal
- ``seed``: the root seed (int; stored as a decimal string if >= 2**63)
- ``created_utc``: ISO 8601, e.g. ``"2025-11-25T03:41:07Z"``
- ``kind``: ``"run"`` (one scenario) | ``"block"`` (part of a sweep) | ``"sweep"``
  (merged blocks)
- any extra provenance given by the writer (str, int, float, bool or 1-D lists of them)
- merged files only: ``blocks`` (block paths relative to the merged file, in
  order, including missing ones), ``missing_blocks`` (those missing when merged),
  ``block_point_start``, ``block_n_points``, ``block_patient_start``,
  ``block_n_patients`` (int64, one per block: its rows in /points and
  /patients), ``consolidated`` (int 1 = copied, 0 = virtual views),
  ``block_pulsehpg_versions``.

Datasets and groups:

- ``/config``: scalar variable-length UTF-8 string, the resolved config text.
- ``/parameters``: 1-D compound table of the parameter registry, one row per
  parameter, fields ``name``, ``symbol``, ``unit`` (UTF-8 strings),
  ``default``, ``lower``, ``upper``, ``cv`` (float64), ``meaning``, ``source``
  (UTF-8 strings). Defaults are in the registry's units.
- ``/points``: 1-D datasets, one row per sweep point; always ``point`` (int,
  unique) plus the swept values.
- ``/patients``: 1-D datasets, one row per simulated patient; always
  ``point`` (refers to /points/point), ``replicate``, ``patient`` (ints) plus
  outcomes. NaN = censored or missing.
- ``/visits``: 2-D datasets (patient x visit), same patient rows as /patients;
  ``time_h`` (float, hours), ``phase`` (int code) and lab values, NaN where not
  measured. The group is empty when a scenario has no visits.
- ``/traces`` (optional): ``time_h`` (1-D, hours) and observables (patient x
  time, float32).

Every variable dataset has a ``units`` attribute (UDUNITS-like text; ``"1"``
for dimensionless numbers and codes) and ``long_name`` when given; integer code
variables may have CF-style ``flag_values`` and ``flag_meanings`` (labels
separated by spaces). Strings are variable-length UTF-8. Datasets larger than
8 KiB are chunked (about 1 MiB chunks, whole rows of 2-D datasets) and
compressed with shuffle + gzip level 4. Files use HDF5's default (earliest)
format versions, so Debian's ``h5dump`` 1.10 opens them.

Merged files (:func:`merge`) have the same layout. Consolidated: rows of every
block concatenated along the point/patient axis in block order; /visits padded
with fill values to the widest block. Virtual (VDS): the same datasets as views
onto the block files through relative paths (the folder can move); rows of a
missing block read as fill values until a block file appears at its expected
path. Fill values: NaN for floats, -1 for signed
ints, the largest value for unsigned ints, False for booleans, "" for strings.
"""

from __future__ import annotations

import contextlib
import datetime
import errno as _errno
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .params import REGISTRY

__all__ = [
    "FORMAT", "FORMAT_VERSION", "KINDS", "StoreError", "MissingBlocksError",
    "IncompatibleBlocksError", "ExpectedBlock", "MergeResult", "write_block", "read",
    "inspect", "merge", "is_complete", "temp_path", "config_sha256", "make_dir", "write_json",
    "read_json", "remove_temps", "remove_file", "read_attrs", "code_sha256", "code_identity",
    "code_files",
]

FORMAT = "pulsehpg-results"
FORMAT_VERSION = 1
KINDS = ("run", "sweep", "block")
GROUPS = ("points", "patients", "visits", "traces")

_STR = h5py.string_dtype("utf-8")
_COMPRESS_ABOVE = 8 * 1024  # bytes; smaller datasets are stored contiguous, uncompressed
_CHUNK_BYTES = 1 << 20
_COPY_BYTES = 64 << 20  # slab size when copying blocks into a consolidated file
_VDS_MAPPINGS_PER_OPEN = 2_000  # virtual merge: block mappings created per file opening
_GZIP_LEVEL = 4
_DEFAULT_UNITS = {"point": "1", "replicate": "1", "patient": "1", "phase": "1", "time_h": "h"}
_PATIENT_KEYS = ("point", "replicate", "patient")
_MERGE_ATTRS = ("blocks", "missing_blocks", "block_point_start", "block_n_points",
                "block_patient_start", "block_n_patients", "consolidated",
                "block_pulsehpg_versions")
_RESERVED = frozenset(("format", "format_version", "pulsehpg_version", "code_sha256",
                       "config_sha256", "seed",
                       "created_utc", "kind") + _MERGE_ATTRS)
_PARAM_DTYPE = np.dtype([("name", _STR), ("symbol", _STR), ("unit", _STR), ("default", "f8"),
                         ("lower", "f8"), ("upper", "f8"), ("cv", "f8"), ("meaning", _STR),
                         ("source", _STR)])
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# -- errors ---------------------------------------------------------------------------------
class StoreError(OSError):
    """A results file could not be written or read; the message names the path and why.

    ``errno`` is set when the cause was an operating-system error (ENOSPC, EACCES, ...),
    ``filename`` is the final path concerned.
    """

    def __init__(self, message: str, *, path=None, errno: int | None = None):
        super().__init__(message)
        self.errno = errno
        self.filename = None if path is None else os.fspath(path)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):  # keep errno, filename and extras across processes
        return (type(self), (self.args[0],),
                {"errno": self.errno, "filename": self.filename, **self.__dict__})


class MissingBlocksError(StoreError):
    """merge(): expected block files are missing; ``missing`` lists their paths."""

    def __init__(self, message: str, *, missing: Sequence[str] = (), n_expected: int = 0,
                 **kw):
        super().__init__(message, **kw)
        self.missing = list(missing)
        self.n_expected = n_expected


class IncompatibleBlocksError(StoreError, ValueError):
    """merge(): blocks that cannot be merged (different config, seed, variables, ...)."""


_REASONS = {
    _errno.ENOSPC: "no space left on device (disk full)",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.EROFS: "read-only file system",
    _errno.ENOENT: "no such file or directory",
    _errno.ENOTDIR: "a component of the path is not a directory",
    _errno.EISDIR: "the path is a directory",
    _errno.EFBIG: "file too large (file size limit reached)",
    _errno.EIO: "input/output error",
}


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return code
    m = re.search(r"errno = (\d+)", str(exc))  # HDF5 puts the C errno into its message
    return int(m.group(1)) if m else None


def _reason(exc: BaseException) -> str:
    code = _errno_of(exc)
    if code is not None:
        return _REASONS.get(code, os.strerror(code))
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- small helpers -------------------------------------------------------------------------
def _version() -> str:
    from . import __version__  # imported late: pulsehpg/__init__ may import this module

    return __version__


# What determines a simulated patient, besides the config and the seed: the compiled core
# (hashed as built, so a rebuild with other sources, flags or compiler counts as other code)
# and the Python modules that build the cohort, the regimen, the outcomes and the sweep
# points. Modules that only present results (cli, results, sbml, ...) are left out, so a fix
# there does not block a --resume. tests/test_sweep.py checks that every module of the
# package is in exactly one of the two lists.
RESULT_MODULES = ("cohort", "labs", "model", "nonmem", "outcomes", "params", "phenotypes",
                  "regimen", "rules", "run", "scenario", "schedule", "sweep", "units")
PRESENTATION_MODULES = ("__init__", "__main__", "analysis", "cli", "codegen", "reference",
                        "results", "sbml", "store", "validation")
_CODE: dict = {}


def code_files() -> list[Path]:
    """The files whose bytes make up :func:`code_sha256`: the compiled core and the Python
    modules that determine results."""
    from . import _core

    here = Path(__file__).resolve().parent
    return [Path(_core.__file__).resolve()] + [here / f"{m}.py" for m in RESULT_MODULES]


def code_sha256() -> str:
    """SHA-256 identifying the code that computes results: the pulsehpg version, then the
    name, size and bytes of every file of :func:`code_files` (about 2 MB, a few ms; computed
    once per process). Equal configs, seeds and code_sha256 give equal results; blocks of a
    sweep written with different code are not resumed or merged together."""
    if "sha" not in _CODE:
        h = hashlib.sha256(f"pulsehpg {_version()}\0".encode())
        for path in code_files():
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise StoreError(f"cannot read {path} to identify the code: {_reason(exc)}",
                                 path=path, errno=_errno_of(exc)) from exc
            h.update(f"{path.name}\0{len(data)}\0".encode())
            h.update(data)
        _CODE["sha"] = h.hexdigest()
    return _CODE["sha"]


def code_identity(version: str | None = None, sha: str | None = None) -> str:
    """``pulsehpg <version> (code <first 12 hex digits>...)``, for messages; None stands for
    this installation's, "" for not recorded."""
    version = _version() if version is None else version
    sha = code_sha256() if sha is None else sha
    return f"pulsehpg {version or '?'} (code {str(sha)[:12] + '...' if sha else 'not recorded'})"


def config_sha256(config_text: str) -> str:
    """SHA-256 hex digest of the UTF-8 config text (the default ``config_sha256``)."""
    return hashlib.sha256(config_text.encode("utf-8")).hexdigest()


def temp_path(final) -> Path:
    """The temporary name a file is written under before it is renamed: ``<final>.tmp-<pid>``."""
    final = Path(final)
    return final.with_name(f"{final.name}.tmp-{os.getpid()}")


def _open(path, mode: str) -> h5py.File:
    # 'best-effort' locking: no failure on file systems without flock (NFS, Lustre)
    kw = {"track_order": True} if mode == "w" else {}
    try:
        return h5py.File(path, mode, locking="best-effort", **kw)
    except ValueError:  # HDF5 too old for locking options
        return h5py.File(path, mode, **kw)


def _fill_value(dtype: np.dtype):
    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "UO":
        return ""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "i":
        return -1
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    if dtype.kind == "b":
        return False
    raise TypeError(f"no fill value for dtype {dtype}")  # pragma: no cover


def _storage(shape: tuple, dtype: np.dtype) -> dict:
    """Chunking and compression for a numeric dataset (none when it is small)."""
    if dtype.kind not in "biuf":
        return {}
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes <= _COMPRESS_ABOVE:
        return {}
    if len(shape) == 1:
        chunks = (min(shape[0], max(1, _CHUNK_BYTES // dtype.itemsize)),)
    else:
        rows, cols = shape
        row_bytes = cols * dtype.itemsize
        if row_bytes >= _CHUNK_BYTES:
            chunks = (1, min(cols, _CHUNK_BYTES // dtype.itemsize))
        else:
            chunks = (min(rows, _CHUNK_BYTES // row_bytes), cols)
    return {"chunks": chunks, "compression": "gzip", "compression_opts": _GZIP_LEVEL,
            "shuffle": True}


def _is_string_ds(ds) -> bool:
    return h5py.check_string_dtype(ds.dtype) is not None


def _read_ds(ds) -> np.ndarray:
    if _is_string_ds(ds):
        return np.asarray(ds.asstr()[()], dtype=str)
    return ds[()]


def _py(value):
    """An attribute value as plain Python (str, int, float, bool or list of them)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.tolist()] if value.ndim else _py(value.item())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_py(v) for v in value]
    return value


def _attr_value(key: str, value):
    """Validate an extra provenance attribute; return what to store."""
    scalar = (str, bool, int, float, np.integer, np.floating, np.bool_)
    if isinstance(value, scalar):
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) \
                and not (-2**63 <= int(value) < 2**63):
            raise ValueError(f"attrs[{key!r}]: integer {value} does not fit in 64 bits; "
                             "store it as a string")
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) \
            else list(value)
        if isinstance(value, np.ndarray) and value.ndim != 1:
            raise ValueError(f"attrs[{key!r}]: arrays must be 1-D, got shape {value.shape}")
        if items and all(isinstance(v, str) for v in items):
            return np.array(items, dtype=_STR)
        if all(isinstance(v, scalar) and not isinstance(v, str) for v in items):
            return np.asarray(items)
    raise ValueError(f"attrs[{key!r}]: expected a str, int, float, bool or a 1-D list of one of "
                     f"those (encode other values, e.g. with json.dumps), got {value!r:.80}")


# -- validation of what write_block is given ------------------------------------------------
@dataclass
class _Var:
    group: str
    name: str
    data: np.ndarray
    units: str
    long_name: str | None = None
    codes: dict[int, str] | None = None


def _lookup(table: Mapping | None, group: str, name: str):
    if not table:
        return None
    key = f"{group}/{name}"
    return table[key] if key in table else table.get(name)


def _as_column(group: str, name, value, ndim: int, what: str) -> np.ndarray:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{group}: variable names must be identifiers (letters, digits, _ . -), "
                         f"got {name!r}")
    arr = np.asarray(value)
    label = f"{group}[{name!r}]"
    if arr.ndim != ndim:
        raise ValueError(f"{label}: expected a {ndim}-D array ({what}), got shape {arr.shape}")
    if arr.dtype.kind == "O":
        if not all(isinstance(v, str) for v in arr.ravel()):
            raise ValueError(f"{label}: object arrays must hold only str")
        arr = arr.astype(str) if arr.size else np.zeros(arr.shape, dtype="U1")
    if arr.dtype.kind not in "biufU":
        raise ValueError(f"{label}: unsupported dtype {arr.dtype}; use bool, integer, float "
                         "or str")
    return arr


def _validate_codes(label: str, arr: np.ndarray, codes) -> dict[int, str] | None:
    if codes is None:
        return None
    if arr.dtype.kind not in "iu" or not isinstance(codes, Mapping) or not codes:
        raise ValueError(f"codes for {label}: expected a non-empty dict int -> label for an "
                         f"integer variable")
    out = {}
    for k, v in codes.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) \
                or not isinstance(v, str) or not re.fullmatch(r"\S+", v):
            raise ValueError(f"codes for {label}: expected int -> label without spaces, "
                             f"got {k!r}: {v!r}")
        out[int(k)] = v
    return out


def _collect(group: str, table, ndim: int, what: str, units, long_names, codes,
             missing_units: list) -> list[_Var]:
    if table is None:
        return []
    if not isinstance(table, Mapping):
        raise ValueError(f"{group}: expected a dict name -> array, got {type(table).__name__}")
    out = []
    for name, value in table.items():
        arr = _as_column(group, name, value, ndim, what)
        unit = _lookup(units, group, name)
        if unit is None:
            unit = _DEFAULT_UNITS.get(name)
        if unit is None:
            missing_units.append(f"{group}/{name}")
            unit = ""
        elif not isinstance(unit, str):
            raise ValueError(f"units for {group}/{name}: expected a str, got {unit!r}")
        ln = _lookup(long_names, group, name)
        if ln is not None and not isinstance(ln, str):
            raise ValueError(f"long_names for {group}/{name}: expected a str, got {ln!r}")
        cd = _validate_codes(f"{group}/{name}", arr, _lookup(codes, group, name))
        out.append(_Var(group, name, arr, unit, ln, cd))
    return out


@dataclass
class _Content:
    config_text: str
    config_hash: str
    seed: int
    kind: str
    attrs: dict
    code_hash: str
    vars: dict[str, list[_Var]] = field(default_factory=dict)
    has_traces: bool = False


def _require_int(group: str, cols: dict, name: str):
    if name not in cols:
        raise ValueError(f"{group}: the integer variable {name!r} is required "
                         f"(have: {', '.join(cols) or 'none'})")
    if cols[name].dtype.kind not in "iu":
        raise ValueError(f"{group}[{name!r}]: expected integers, got dtype {cols[name].dtype}")


def _validate(*, config_text, config_hash, seed, points, patients, visits, traces, units,
              long_names, codes, attrs, kind, code_hash=None) -> _Content:
    if not isinstance(config_text, str):
        raise ValueError(f"config_text: expected a str, got {type(config_text).__name__}")
    if config_hash is None:
        config_hash = config_sha256(config_text)
    if not isinstance(config_hash, str) or not _HEX64.match(config_hash):
        raise ValueError(f"config_hash: expected a SHA-256 hex digest (64 lowercase hex digits), "
                         f"got {config_hash!r}")
    if code_hash is None:
        code_hash = code_sha256()
    if not isinstance(code_hash, str) or not _HEX64.match(code_hash):
        raise ValueError(f"code_hash: expected a SHA-256 hex digest (64 lowercase hex digits), "
                         f"got {code_hash!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    extra = {}
    for key, value in (attrs or {}).items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"attrs: keys must be non-empty str without '/', got {key!r}")
        if key in _RESERVED:
            raise ValueError(f"attrs[{key!r}]: reserved name (set by pulsehpg.store)")
        extra[key] = _attr_value(key, value)
    for tname, table in (("units", units), ("long_names", long_names), ("codes", codes)):
        if table is not None and not isinstance(table, Mapping):
            raise ValueError(f"{tname}: expected a dict, got {type(table).__name__}")

    missing_units: list[str] = []
    args = (units, long_names, codes, missing_units)
    pv = _collect("points", points, 1, "one value per sweep point", *args)
    pa = _collect("patients", patients, 1, "one value per patient", *args)
    vi = _collect("visits", visits or {}, 2, "patient x visit", *args)
    tr_in = dict(traces or {})
    if tr_in and "time_h" not in tr_in:
        raise ValueError("traces: 'time_h' (1-D, hours) is required when traces are given")
    tr = _collect("traces", {"time_h": tr_in.pop("time_h")} if tr_in else {}, 1, "hours", *args)
    tr += _collect("traces", tr_in, 2, "patient x time", *args)
    if missing_units:
        raise ValueError(f"units: no unit given for {', '.join(missing_units)}; pass "
                         "units={name: unit} ('1' for dimensionless numbers)")

    def sizes(group, vs, axis=0):
        return {v.name: v.data.shape[axis] for v in vs}

    cols = {v.name: v.data for v in pv}
    _require_int("points", cols, "point")
    n_points = cols["point"].shape[0]
    if len(set(sizes("points", pv).values())) > 1:
        raise ValueError(f"points: all variables must have the same length, got "
                         f"{sizes('points', pv)}")
    point_ids = cols["point"]
    if np.unique(point_ids).size != n_points:
        raise ValueError("points['point']: point indices must be unique")
    pcols = {v.name: v.data for v in pa}
    for key in _PATIENT_KEYS:
        _require_int("patients", pcols, key)
    n_pat = pcols["point"].shape[0]
    if len(set(sizes("patients", pa).values())) > 1:
        raise ValueError(f"patients: all variables must have the same length (one per "
                         f"patient), got {sizes('patients', pa)}")
    unknown = np.setdiff1d(pcols["point"], point_ids)
    if unknown.size:
        raise ValueError(f"patients['point']: {unknown[:5].tolist()} not in points['point']")
    if vi:
        shapes = {v.name: v.data.shape for v in vi}
        if len(set(shapes.values())) > 1 or next(iter(shapes.values()))[0] != n_pat:
            raise ValueError(f"visits: every variable must have shape ({n_pat}, n_visits) "
                             f"(patients x visits), got {shapes}")
        vcols = {v.name: v.data for v in vi}
        if "time_h" not in vcols:
            raise ValueError("visits: 'time_h' (hours, patient x visit) is required")
        _require_int("visits", vcols, "phase")
    if tr:
        for v in tr[1:]:
            v.data = np.asarray(v.data, dtype=np.float32)
        if len(tr) < 2:
            raise ValueError("traces: at least one observable (patient x time) is required")
        nt = tr[0].data.shape[0]
        shapes = {v.name: v.data.shape for v in tr[1:]}
        if any(s != (n_pat, nt) for s in shapes.values()):
            raise ValueError(f"traces: observables must have shape ({n_pat}, {nt}) "
                             f"(patients x len(time_h)), got {shapes}")
    return _Content(config_text, config_hash, int(seed), kind, extra, code_hash,
                    {"points": pv, "patients": pa, "visits": vi, "traces": tr}, bool(tr))


# -- writing -----------------------------------------------------------------------------------
def _check_target(final: Path, overwrite: bool, action: str = "write") -> None:
    parent = final.parent
    if not parent.exists():
        raise StoreError(f"cannot {action} {final}: directory {parent} does not exist",
                         path=final, errno=_errno.ENOENT)
    if not parent.is_dir():
        raise StoreError(f"cannot {action} {final}: {parent} is not a directory",
                         path=final, errno=_errno.ENOTDIR)
    if final.is_dir():
        raise StoreError(f"cannot {action} {final}: a directory of that name exists",
                         path=final, errno=_errno.EISDIR)
    if not os.access(parent, os.W_OK | os.X_OK):
        code = _not_writable_errno(parent)
        raise StoreError(f"cannot {action} {final}: directory {parent} is not writable "
                         f"({_REASONS[code]})", path=final, errno=code)
    if not overwrite and final.exists():
        raise StoreError(f"cannot {action} {final}: the file exists (overwrite=False)",
                         path=final, errno=_errno.EEXIST)


def _check_replaceable(final: Path) -> None:
    """A results writer replaces an older results file, never another kind of file (a
    mistyped -o naming a config or a report would destroy it)."""
    if not final.exists():
        return
    try:
        with h5py.File(final, "r") as f:
            ours = f.attrs.get("format") == FORMAT
    except OSError:
        ours = False
    if not ours:
        raise StoreError(f"cannot write results to {final}: the file exists and is not a "
                         f"pulsehpg results file; remove it or choose another path",
                         path=final, errno=_errno.EEXIST)


def check_writable(path, results: bool = True) -> Path:
    """Raise StoreError now if a results file (or with ``results=False`` any file) could
    not be written at ``path``: a missing or unwritable folder, or an existing file that
    is not pulsehpg results (such as the command's own config).

    Lets a command refuse a bad ``-o`` before a long simulation, not after it.
    """
    final = Path(path)
    _check_target(final, overwrite=True)
    if results:
        _check_replaceable(final)
    return final


def check_not_input(path, inputs) -> None:
    """Raise StoreError if ``path`` is (the same file as) one of ``inputs``."""
    final = Path(path)
    for source in inputs:
        if source is None:
            continue
        try:
            same = final.exists() and os.path.samefile(final, source)
        except OSError:
            same = False
        if same:
            raise StoreError(f"cannot write {final}: it is the input file {source}, which "
                             f"writing would destroy; choose another output path",
                             path=final, errno=_errno.EEXIST)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # pragma: no cover - nothing more can be done
        pass


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return  # some platforms cannot open directories
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _file_image(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file built in memory by ``fill(f)`` (HDF5's core driver)."""
    f = h5py.File(f"pulsehpg-image-{os.getpid()}", "w", driver="core", backing_store=False,
                  track_order=True)
    try:
        fill(f)
        f.flush()
        return f.id.get_file_image()
    finally:
        f.close()


def _discard(f: h5py.File, tmp: Path) -> None:
    """Close a temporary HDF5 file that is being given up (a write failed, or Ctrl-C).

    After a failed write (disk full), closing the file makes HDF5 flush again, which fails
    again and leaves the file half-open inside HDF5: the process then dies with a
    segmentation fault when HDF5 shuts down (measured with h5py 3.16 / HDF5 2.0 on a full
    tmpfs; h5py issues #914, #2160). The file is deleted anyway, so its descriptor is first
    pointed at /dev/null (after checking it is really this file): the flush then succeeds,
    writes nothing, and HDF5 frees the file cleanly.
    """
    try:
        fd = f.id.get_vfd_handle()
        st, want = os.fstat(fd), os.stat(tmp)
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
    except Exception:  # not the sec2 driver, or the file is already gone: close as it is
        pass
    try:
        f.close()
    except Exception:
        pass


def _atomic_write(final: Path, fill, action: str, in_memory: bool = False) -> None:
    """Write a file via ``fill(f)`` under a temporary name, then rename it to ``final``.

    ``fill`` may also be a list of such functions (not in memory): the temporary file is
    then closed and opened again between them.

    in_memory=True builds the file in memory and writes its bytes with plain file I/O, so
    HDF5 never sees a failed write. Otherwise HDF5 writes the temporary file itself; if
    that fails, :func:`_discard` closes it without crashing the process later. Either way
    a failure leaves neither the temporary file nor a partial ``final``.
    """
    tmp = temp_path(final)
    try:
        if in_memory:
            image = _file_image(fill)
            with open(tmp, "wb") as fh:
                fh.write(image)
                fh.flush()
                os.fsync(fh.fileno())
            del image
            os.replace(tmp, final)
        else:
            for i, step in enumerate(fill if isinstance(fill, (list, tuple)) else [fill]):
                f = _open(tmp, "w" if i == 0 else "r+")
                try:
                    step(f)
                    f.flush()
                    f.close()
                except BaseException:
                    _discard(f, tmp)
                    raise
            _fsync(tmp)
            os.replace(tmp, final)
    except BaseException as exc:
        _remove_quietly(tmp)
        # HDF5 reports failed writes as OSError, or as RuntimeError when flushing/closing
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, StoreError):
            raise StoreError(f"cannot {action} {final}: {_reason(exc)}; nothing was written "
                             f"(the temporary file {tmp.name} was removed)",
                             path=final, errno=_errno_of(exc)) from exc
        raise
    _fsync(final.parent, directory=True)


def _var_attrs(ds, units: str, long_name: str | None, codes: dict[int, str] | None) -> None:
    ds.attrs["units"] = units
    if long_name:
        ds.attrs["long_name"] = long_name
    if codes:
        ds.attrs["flag_values"] = np.array(sorted(codes), dtype=ds.dtype)
        ds.attrs["flag_meanings"] = " ".join(codes[k] for k in sorted(codes))


def _put(group: h5py.Group, v: _Var) -> None:
    if v.data.dtype.kind == "U":
        ds = group.create_dataset(v.name, data=v.data.astype(object), dtype=_STR)
    else:
        ds = group.create_dataset(v.name, data=v.data, **_storage(v.data.shape, v.data.dtype))
    _var_attrs(ds, v.units, v.long_name, v.codes)
    ds.id.flush()  # a failed write raises here, not later while the object is freed


def _root_attrs(f: h5py.File, *, config_hash: str, seed: int, kind: str, extra: dict,
                code: str | None) -> None:
    a = f.attrs
    a["format"] = FORMAT
    a["format_version"] = np.int64(FORMAT_VERSION)
    a["pulsehpg_version"] = _version()
    if code is not None:
        a["code_sha256"] = code
    a["config_sha256"] = config_hash
    a["seed"] = np.int64(seed) if seed < 2**63 else str(seed)
    a["created_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    a["kind"] = kind
    for key, value in extra.items():
        a[key] = value


def _parameter_table() -> np.ndarray:
    return np.array([(p.name, p.sym, p.unit, p.default, p.lower, p.upper, p.cv, p.meaning,
                      p.source) for p in REGISTRY], dtype=_PARAM_DTYPE)


def _write_content(f: h5py.File, c: _Content) -> None:
    _root_attrs(f, config_hash=c.config_hash, seed=c.seed, kind=c.kind, extra=c.attrs,
                code=c.code_hash)
    f.create_dataset("config", data=c.config_text, dtype=_STR)
    f.create_dataset("parameters", data=_parameter_table())
    for group in GROUPS:
        if group == "traces" and not c.has_traces:
            continue
        g = f.create_group(group, track_order=True)
        for v in c.vars[group]:
            _put(g, v)


def write_block(path, *, config_text: str, seed: int, points: Mapping,
                patients: Mapping, visits: Mapping | None = None,
                traces: Mapping | None = None, units: Mapping[str, str] | None = None,
                long_names: Mapping[str, str] | None = None,
                codes: Mapping[str, Mapping[int, str]] | None = None,
                attrs: Mapping | None = None, config_hash: str | None = None,
                kind: str = "block", overwrite: bool = True, in_memory: bool = False,
                code_hash: str | None = None) -> Path:
    """Write one complete results file atomically and return its path.

    points: name -> 1-D array over sweep points; must include 'point' (unique ints).
    patients: name -> 1-D array over patients; must include 'point', 'replicate',
        'patient' (ints); floats use NaN for censored/missing.
    visits: name -> 2-D array (patients x visits) including 'time_h' and 'phase'
        (int), NaN where not measured; None or {} for no visits.
    traces: None, or 'time_h' (1-D) plus observables (patients x times, stored float32).
    units: unit of every variable, keyed 'name' or 'group/name' (the latter wins);
        'point', 'replicate', 'patient', 'phase' default to '1' and 'time_h' to 'h'.
    long_names, codes: optional, keyed likewise; codes maps int code -> label
        (no spaces) for integer variables such as 'phase'.
    attrs: extra provenance stored as root attributes (str, int, float, bool or
        1-D lists of them).
    config_hash: SHA-256 hex digest identifying the config; default
        sha256(config_text). Blocks merge only when it is the same.
    code_hash: SHA-256 hex digest identifying the code that computed the results
        (``code_sha256`` attribute); default :func:`code_sha256` of this installation.
    kind: 'run', 'sweep' or 'block'. overwrite=False refuses an existing file.
    in_memory: build the file in memory and write it in one go (no temporary file exists
        while it is built); a full disk then fails cleanly instead of leaving HDF5 in a
        state that can crash the process later. Needs memory for the compressed file.

    Bad arguments raise ValueError before anything touches the disk; failures while
    writing raise StoreError (an OSError) naming the path and the reason, and leave
    neither a partial final file nor the temporary file behind (an existing file of
    the same name is left untouched).
    """
    content = _validate(config_text=config_text, config_hash=config_hash, seed=seed,
                        points=points, patients=patients, visits=visits, traces=traces,
                        units=units, long_names=long_names, codes=codes, attrs=attrs, kind=kind,
                        code_hash=code_hash)
    final = Path(path)
    _check_target(final, overwrite)
    _check_replaceable(final)
    _atomic_write(final, lambda f: _write_content(f, content), "write", in_memory)
    return final


# -- reading -----------------------------------------------------------------------------------
def _open_results(path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"cannot read {path}: no such file", path=path, errno=_errno.ENOENT)
    if path.is_dir():
        raise StoreError(f"cannot read {path}: it is a directory", path=path,
                         errno=_errno.EISDIR)
    try:
        f = _open(path, "r")
    except OSError as exc:
        raise StoreError(f"cannot read {path}: not an HDF5 file or unreadable "
                         f"({_reason(exc)})", path=path, errno=_errno_of(exc)) from exc
    fmt = _py(f.attrs.get("format"))
    version = _py(f.attrs.get("format_version"))
    if fmt != FORMAT:
        f.close()
        raise StoreError(f"cannot read {path}: not a pulsehpg results file (format attribute "
                         f"{fmt!r}, expected {FORMAT!r})", path=path)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        f.close()
        raise StoreError(f"cannot read {path}: format_version {version!r} is newer than this "
                         f"pulsehpg reads ({FORMAT_VERSION}); upgrade pulsehpg", path=path)
    # what every results file has (a file cut short or written by hand may not)
    lacking = [k for k in ("config", "points", "patients") if k not in f]
    lacking += [f"attribute {a}" for a in ("kind", "seed", "config_sha256") if a not in f.attrs]
    if lacking:
        f.close()
        raise StoreError(f"cannot read {path}: a damaged pulsehpg results file (no "
                         f"{', '.join(lacking)})", path=path)
    absent = _absent_sources(path, f)
    if absent:
        f.close()
        raise StoreError(
            f"cannot read {path}: it is a merge of virtual views onto block files, and "
            f"{len(absent)} of them are not where it points, relative to its folder "
            f"({_first_few(absent)}); their rows would read as empty. Keep the file beside "
            f"its blocks folder; to move it, first make a self-contained copy where the blocks "
            f"are (`pulsehpg merge {path.name} --consolidate`, run in the folder that holds the "
            f"original file and its blocks)",
            path=path, errno=_errno.ENOENT)
    arrived = _reshaped_arrivals(path, f)
    if arrived:
        f.close()
        raise StoreError(
            f"cannot read {path}: {len(arrived)} of the blocks missing when it was merged are "
            f"there now ({_first_few(arrived)}), with a number of visits per patient other "
            f"than the merge reserved for them; run `pulsehpg merge {path}` again to include them",
            path=path)
    return f


def _first_few(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _reshaped_arrivals(path: Path, f: h5py.File) -> list[str]:
    """Blocks missing from a virtual merge (allow_missing) that are there now with another
    visits width than the merge reserved for them (the widest block then present): HDF5
    cannot read a source whose shape differs from its mapping. Rows of the blocks that
    arrived with the reserved width simply read as data."""
    if "blocks" not in f.attrs or _py(f.attrs.get("consolidated", 1)):
        return []
    missing = _py(f.attrs.get("missing_blocks", [])) or []
    visits = f.get("visits")
    if not missing or visits is None or not len(visits):
        return []
    width = next(iter(visits.values())).shape[1]
    out = []
    for b in missing:
        if not (path.parent / b).is_file():
            continue
        try:
            with _open(path.parent / b, "r") as src:
                v = src.get("visits")
                w = next(iter(v.values())).shape[1] if v is not None and len(v) else width
        except OSError:
            continue  # not readable as HDF5: HDF5 reads its rows as fill values
        if w != width:
            out.append(b)
    return out


def _absent_sources(path: Path, f: h5py.File) -> list[str]:
    """The block files a virtual merge maps (paths relative to its folder) that are not
    there, leaving out those already missing when it was merged (allow_missing): HDF5
    reads the rows of an absent source as fill values, without an error."""
    if "blocks" not in f.attrs or _py(f.attrs.get("consolidated", 1)):
        return []
    known = set(_py(f.attrs.get("missing_blocks", [])) or [])
    return [b for b in _py(f.attrs["blocks"]) if b not in known
            and not (path.parent / b).is_file()]


def _attrs_of(f: h5py.File) -> dict:
    out = {k: _py(v) for k, v in f.attrs.items()}
    if isinstance(out.get("seed"), str):
        out["seed"] = int(out["seed"])
    return out


def _codes_of(ds) -> dict[int, str] | None:
    if "flag_values" not in ds.attrs:
        return None
    values = [int(v) for v in np.atleast_1d(ds.attrs["flag_values"])]
    labels = _py(ds.attrs.get("flag_meanings", "")).split()
    return dict(zip(values, labels))


def read(path, *, traces: bool = True) -> dict:
    """Read a results file (block, run or merged; virtual datasets are resolved).

    Returns a dict with keys:
      'attrs': root attributes as Python values ('seed' always an int);
      'config': the config text; 'parameters': column name -> array (the registry table);
      'points', 'patients', 'visits', 'traces': name -> numpy array ({} when absent;
        'traces' is {} also when traces=False); strings come back as numpy str arrays;
      'units', 'long_names': 'group/name' -> str; 'codes': 'group/name' -> {int: label}.
    Raises StoreError if the file is missing, unreadable or not a pulsehpg results file.
    """
    with _open_results(path) as f:
        out: dict = {"attrs": _attrs_of(f), "config": _py(f["config"].asstr()[()])}
        table = f["parameters"][()]
        out["parameters"] = {
            name: (np.asarray([_py(x) for x in table[name]], dtype=str)
                   if h5py.check_string_dtype(table.dtype[name]) is not None else table[name])
            for name in table.dtype.names}
        out["units"], out["long_names"], out["codes"] = {}, {}, {}
        for group in GROUPS:
            out[group] = {}
            if group not in f or (group == "traces" and not traces):
                continue
            for name, ds in f[group].items():
                key = f"{group}/{name}"
                out[group][name] = _read_ds(ds)
                out["units"][key] = _py(ds.attrs.get("units", ""))
                if "long_name" in ds.attrs:
                    out["long_names"][key] = _py(ds.attrs["long_name"])
                cd = _codes_of(ds)
                if cd:
                    out["codes"][key] = cd
    _absent_rows_as_nan(out)
    return out


def _absent_rows_as_nan(out: dict) -> None:
    """Rows of blocks missing from a virtual merge (point -1) read as fill values: NaN,
    -1 or '', but False for a yes/no column, which would pass for an answer. Such columns
    become floats with NaN in those rows (1.0 / 0.0 elsewhere)."""
    for groups in (("points",), ("patients", "visits", "traces")):
        ids = out[groups[0]].get("point")
        absent = np.asarray(ids) == -1 if ids is not None else None
        if absent is None or not absent.any():
            continue
        for group in groups:
            for name, arr in out[group].items():
                if arr.dtype == bool and arr.ndim and arr.shape[0] == absent.size:
                    col = arr.astype(np.float64)
                    col[absent] = np.nan
                    out[group][name] = col


def read_attrs(path) -> dict:
    """The root attributes of a results file as Python values (StoreError if unreadable)."""
    with _open_results(path) as f:
        return _attrs_of(f)


def is_complete(path) -> bool:
    """True if ``path`` is a readable pulsehpg results file (resume: skip such blocks)."""
    try:
        with _open_results(path):
            return True
    except StoreError:
        return False


# -- small files beside the results: folders, JSON manifests, stale temporaries -----------------
_TEMP = re.compile(r"^(?P<final>.+)\.tmp-\d+$")


def make_dir(path) -> Path:
    """Create a folder (and its parents) if needed; StoreError if that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create folder {path}: {_reason(exc)}", path=path,
                         errno=_errno_of(exc)) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        code = _not_writable_errno(path)
        raise StoreError(f"cannot write into folder {path}: {_REASONS[code]}", path=path,
                         errno=code)
    return path


@contextlib.contextmanager
def folder_lock(folder: Path, locks: Sequence[tuple[str, bool]], what: str):
    """Hold flock locks on files in ``folder`` while the block runs: (name, exclusive) pairs,
    taken in order; StoreError if another process holds one in a conflicting mode. The
    files are made writable for everyone who may write the folder (a user resuming
    another's sweep), and opened read-only where they cannot be written. On file systems
    without flock (some network mounts) nothing is locked and nothing is refused."""
    import fcntl

    held = []
    try:
        for name, exclusive in locks:
            path = Path(folder) / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise StoreError(f"cannot open {path}: {_reason(exc)}", path=path,
                                     errno=_errno_of(exc)) from exc
            except OSError as exc:
                raise StoreError(f"cannot write {path}: {_reason(exc)}", path=path,
                                 errno=_errno_of(exc)) from exc
            held.append(fd)
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"another process is running {what} into {folder} ({name} "
                                 f"is locked); wait for it to finish, or choose another --out",
                                 path=path) from None
            except OSError:  # no flock here: run unlocked
                pass
        yield
    finally:
        for fd in held:
            os.close(fd)  # releases its lock


def _not_writable_errno(folder: Path) -> int:
    """Why os.access refused to write into folder: a read-only mount or the permissions."""
    try:
        return _errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else _errno.EACCES
    except OSError:
        return _errno.EACCES


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename): a full disk
    or a kill leaves the old file or none, never a part of the new one."""
    final = Path(path)
    _check_target(final, True)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        _remove_quietly(tmp)
        raise StoreError(f"cannot write {final}: {_reason(exc)}", path=final,
                         errno=_errno_of(exc)) from exc
    _fsync(final.parent, directory=True)
    return final


def write_json(path, data) -> Path:
    """Write ``data`` as JSON atomically (:func:`write_bytes`)."""
    import json

    return write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def write_text(path, text: str) -> Path:
    """Write UTF-8 text (a report) atomically (:func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_figure(fig, path, **savefig_kw) -> Path:
    """Render a matplotlib figure (format from the suffix) and write it atomically."""
    import io

    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        fig.savefig(buf, format=fmt, **savefig_kw)
    except ValueError as exc:  # a suffix matplotlib cannot write
        raise StoreError(f"cannot write {path}: {exc}", path=Path(path)) from exc
    return write_bytes(path, buf.getvalue())


def remove_file(path) -> bool:
    """Delete a small file beside the results if it exists (True if it did)."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"cannot remove {path}: {_reason(exc)}", path=path,
                         errno=_errno_of(exc)) from exc


def read_json(path):
    """Read a JSON file written by :func:`write_json`; StoreError if unreadable or invalid."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {_reason(exc)}", path=path,
                         errno=_errno_of(exc)) from exc


def remove_temps(directory, select: Callable[[str], bool] | None = None) -> list[Path]:
    """Delete stale ``<final>.tmp-<pid>`` files in ``directory`` (left behind by kill -9).

    select(final_name) -> bool limits which ones (e.g. the blocks of one shard); never call
    this while another process may still be writing those files. Returns what was removed.
    """
    removed = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return removed
    except OSError as exc:
        raise StoreError(f"cannot list {directory}: {_reason(exc)}", path=directory,
                         errno=_errno_of(exc)) from exc
    for name in names:
        m = _TEMP.match(name)
        if m and (select is None or select(m.group("final"))):
            path = Path(directory) / name
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot remove the stale temporary file {path}: "
                                 f"{_reason(exc)}", path=path, errno=_errno_of(exc)) from exc
            removed.append(path)
    return removed


def inspect(path) -> str:
    """A few readable lines about a results file: kind, provenance, sizes, variables."""
    with _open_results(path) as f:
        a = _attrs_of(f)
        lines = [
            (f"{path}: pulsehpg results, kind {a.get('kind')!r}, format version "
             f"{a.get('format_version')}, written by pulsehpg {a.get('pulsehpg_version')} "
             f"at {a.get('created_utc')}"),
            f"config sha256 {a.get('config_sha256')}, seed {a.get('seed')}, code sha256 "
            f"{a.get('code_sha256', 'not recorded')}",
        ]
        n_points = f["points/point"].shape[0] if "points/point" in f else 0
        n_pat = f["patients/point"].shape[0] if "patients/point" in f else 0
        visits = f.get("visits")
        n_visits = next(iter(visits.values())).shape[1] if visits is not None and len(visits) \
            else 0
        absent = ""
        if n_pat and a.get("missing_blocks") and f["patients/point"].is_virtual:
            n_absent = int(np.count_nonzero(f["patients/point"][()] == -1))
            absent = f" ({n_absent} of them in missing blocks: no data)" if n_absent else ""
        lines.append(f"{n_points} points, {n_pat} patients{absent}, {n_visits} visits per "
                     f"patient")
        if "traces" in f:
            nt = f["traces/time_h"].shape[0]
            lines.append(f"traces: {len(f['traces']) - 1} observables at {nt} times")
        else:
            lines.append("traces: none")
        if "blocks" in a:
            virtual = "patients/point" in f and f["patients/point"].is_virtual
            how = "virtual views onto" if virtual else "consolidated from"
            lines.append(f"merged: {how} {len(a['blocks'])} block files"
                         + (f", {len(a['missing_blocks'])} missing: "
                            f"{', '.join(a['missing_blocks'][:5])}"
                            + (" ..." if len(a["missing_blocks"]) > 5 else "")
                            if a.get("missing_blocks") else ""))
        for group in GROUPS:
            if group not in f or not len(f[group]):
                continue
            parts = []
            for name, ds in f[group].items():
                parts.append(f"{name} [{_py(ds.attrs.get('units', ''))}]")
            lines.append(f"{group}: " + ", ".join(parts))
    return "\n".join(lines)


# -- merging -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpectedBlock:
    """A block that a merge expects. Sizes are needed only to reserve the rows of a
    missing block in a virtual (VDS) merge."""

    path: str | os.PathLike
    n_points: int | None = None
    n_patients: int | None = None


@dataclass(frozen=True)
class MergeResult:
    path: Path
    blocks: list[str]  # every expected block, in order (as given)
    missing: list[str]  # those that were missing (as given)
    n_points: int
    n_patients: int


@dataclass
class _VarInfo:
    dtype: np.dtype
    shape: tuple
    units: str
    long_name: str | None
    codes: dict | None


@dataclass
class _BlockInfo:
    path: Path
    attrs: dict
    schema: dict[str, dict[str, _VarInfo]]
    params: np.ndarray
    n_points: int
    n_patients: int
    n_visits: int
    time_h: np.ndarray | None
    point_ids: np.ndarray


def _scan(path: Path) -> _BlockInfo:
    with _open_results(path) as f:
        schema = {}
        for group in GROUPS:
            if group not in f:
                continue
            schema[group] = {}
            for name, ds in f[group].items():  # each dataset's attributes read once
                at = dict(ds.attrs.items())
                dt = ds.dtype
                ln = at.get("long_name")
                codes = None
                if "flag_values" in at:
                    codes = dict(zip([int(v) for v in np.atleast_1d(at["flag_values"])],
                                     _py(at.get("flag_meanings", "")).split()))
                schema[group][name] = _VarInfo(
                    np.dtype(_STR) if h5py.check_string_dtype(dt) is not None else dt, ds.shape,
                    _py(at.get("units", "")), None if ln is None else _py(ln), codes)
        vis = schema.get("visits", {})
        return _BlockInfo(
            path, _attrs_of(f), schema, f["parameters"][()],
            f["points/point"].shape[0], f["patients/point"].shape[0],
            next(iter(vis.values())).shape[1] if vis else 0,
            f["traces/time_h"][()] if "traces" in f else None, f["points/point"][()])


@dataclass
class _Slim:
    """What merge keeps of a block once it has been checked."""

    path: Path
    n_points: int
    n_patients: int
    n_visits: int


def _check_distinct_points(ids: list[np.ndarray], infos: list[_Slim]) -> None:
    allp = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(allp, return_counts=True)
    if uniq.size == allp.size:
        return
    pid = int(uniq[np.argmax(counts > 1)])
    where = [i.path for i, a in zip(infos, ids) if np.any(a == pid)]
    raise IncompatibleBlocksError(
        f"merge: point {pid} appears in both {where[0]} and {where[-1]}; "
        "each block must hold different points", path=where[-1])


def _describe_schema(info: _BlockInfo) -> dict:
    return {g: {n: (str(v.dtype) if h5py.check_string_dtype(v.dtype) is None else "str",
                    v.units, v.long_name, v.codes) for n, v in vars_.items()}
            for g, vars_ in info.schema.items()}


def _identity_of(attrs: dict) -> str:
    return code_identity(attrs.get("pulsehpg_version"), attrs.get("code_sha256") or "")


def _check_compatible(first: _BlockInfo, other: _BlockInfo) -> None:
    def refuse(what: str):
        raise IncompatibleBlocksError(f"merge: cannot merge {other.path} with {first.path}: "
                                      f"{what}", path=other.path)

    a, b = first.attrs, other.attrs
    if a.get("code_sha256") != b.get("code_sha256"):
        refuse(f"written by different code ({_identity_of(b)} vs {_identity_of(a)}); results "
               "of different code are not merged: rerun the sweep of one of them with the "
               "other's installation (pulsehpg sweep CONFIG --out OUT --resume)")
    if a.get("config_sha256") != b.get("config_sha256"):
        refuse(f"different configs (config_sha256 {b.get('config_sha256')} vs "
               f"{a.get('config_sha256')}); only blocks of the same config can be merged")
    if a.get("seed") != b.get("seed"):
        refuse(f"different seeds ({b.get('seed')} vs {a.get('seed')})")
    if first.params.shape != other.params.shape or not all(
            first.params[n].tolist() == other.params[n].tolist() for n in first.params.dtype.names):
        refuse("written with different parameter registries (/parameters differs)")
    sa, sb = _describe_schema(first), _describe_schema(other)
    if sa != sb:
        for g in sorted(set(sa) | set(sb)):
            va, vb = sa.get(g), sb.get(g)
            if va is None or vb is None:
                refuse(f"group /{g} is in only one of them")
            if set(va) != set(vb):
                refuse(f"/{g} has different variables ({', '.join(sorted(set(va) ^ set(vb)))} "
                       "in only one)")
            for n in va:
                if va[n] != vb[n]:
                    refuse(f"/{g}/{n} differs in (dtype, units, long_name, codes): "
                           f"{vb[n]} vs {va[n]}")
    if first.time_h is not None and not np.array_equal(first.time_h, other.time_h):
        refuse("/traces/time_h differs (traces must share one time axis)")


def _rel(block: Path, out_dir: Path) -> str:
    try:
        return Path(os.path.relpath(block, out_dir)).as_posix()
    except ValueError:  # pragma: no cover - different drives on Windows
        return str(block)


def _norm_expected(entry) -> ExpectedBlock:
    if isinstance(entry, ExpectedBlock):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        return ExpectedBlock(*entry)
    if isinstance(entry, (str, os.PathLike)):
        return ExpectedBlock(entry)
    raise ValueError(f"expected: entries must be paths, ExpectedBlock or (path, n_points, "
                     f"n_patients), got {entry!r}")


def merge(block_paths: Sequence, out_path, *, consolidate: bool,
          expected: Sequence | None = None, allow_missing: bool = False,
          kind: str = "sweep") -> MergeResult:
    """Merge block files into one results file with the same layout, written atomically.

    block_paths: the block files to merge. expected: optional, the full ordered list of
        blocks that make up the result (paths, ExpectedBlock or (path, n_points,
        n_patients)); without it the blocks are ``block_paths``. The output follows the
        order of ``expected`` (else of ``block_paths``). A block is missing when it is
        expected but not in ``block_paths`` or its file does not exist.
    consolidate=True: copy all rows into one file (points, patients and visits
        concatenated in block order; visits padded with fill values to the widest block).
        consolidate=False: a Virtual Dataset file presenting the same layout as views onto
        the block files, through paths relative to ``out_path`` (move the folder freely;
        the blocks must stay where they are relative to it). /config and /parameters are
        copied from the first block in both cases.
    Missing blocks raise MissingBlocksError (with ``.missing``) unless allow_missing=True;
        then ``missing_blocks`` records them. Consolidated: their rows are absent.
        Virtual: their rows read as fill values (NaN / -1 / "") - this needs their sizes
        (ExpectedBlock n_points, n_patients) - and the views point at their expected paths,
        so a block written later shows up in the merged file without merging again.
    All blocks must have the same code_sha256, config_sha256, seed, parameter table, variables
        (dtype, units, codes) and trace time axis, and distinct point indices; otherwise
        IncompatibleBlocksError (a StoreError and a ValueError) says what differs.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(block_paths, (str, os.PathLike)):
        raise ValueError("block_paths: expected a list of paths, got a single path")
    out = Path(out_path)
    given = [Path(p) for p in block_paths]
    given_keys = {os.path.abspath(p) for p in given}
    plan = [_norm_expected(e) for e in (expected if expected is not None else given)]
    if not plan:
        raise ValueError("merge: no blocks given")
    keys = [os.path.abspath(e.path) for e in plan]
    if len(set(keys)) != len(keys):
        dup = sorted({os.fspath(e.path) for e, k in zip(plan, keys) if keys.count(k) > 1})
        raise ValueError(f"merge: blocks listed more than once: {', '.join(dup)}")
    extra = given_keys - set(keys)
    if extra:
        raise ValueError(f"merge: blocks not in expected: {', '.join(sorted(extra))}")
    if os.path.abspath(out) in keys:
        raise ValueError(f"merge: out_path {out} is one of the blocks")
    present = [k in given_keys and os.path.isfile(k) for k in keys]
    missing = [os.fspath(e.path) for e, ok in zip(plan, present) if not ok]
    if missing and not allow_missing:
        shown = ", ".join(missing[:20]) + (f" ... and {len(missing) - 20} more"
                                           if len(missing) > 20 else "")
        raise MissingBlocksError(f"merge: {len(missing)} of {len(plan)} expected blocks are "
                                 f"missing: {shown} (pass allow_missing=True to merge the rest)",
                                 missing=missing, n_expected=len(plan), path=out,
                                 errno=_errno.ENOENT)
    if not any(present):
        raise MissingBlocksError(f"merge: none of the {len(plan)} blocks exist", missing=missing,
                                 n_expected=len(plan), path=out, errno=_errno.ENOENT)
    _check_target(out, True, "merge into")
    _check_replaceable(out)

    # Blocks are scanned one at a time and only their sizes are kept (memory stays flat
    # in the number of blocks): each is checked against the first, and its point ids go
    # into one int64 array for the duplicate check.
    first: _BlockInfo | None = None
    infos: list[_Slim | None] = []
    common: dict = {}
    versions: set[str] = set()
    ids: list[np.ndarray] = []
    for e, ok in zip(plan, present):
        if not ok:
            infos.append(None)
            continue
        info = _scan(Path(e.path))
        if first is None:
            first = info
            common = {k: v for k, v in info.attrs.items() if k not in _RESERVED}
        else:
            _check_compatible(first, info)
            common = {k: v for k, v in common.items() if info.attrs.get(k) == v}
        versions.add(str(info.attrs.get("pulsehpg_version")))
        ids.append(info.point_ids.astype(np.int64, copy=False))
        infos.append(_Slim(info.path, info.n_points, info.n_patients, info.n_visits))
        del info
    _check_distinct_points(ids, [i for i in infos if i is not None])
    del ids

    # rows of every block in the output
    n_pts, n_pat = [], []
    for e, info in zip(plan, infos):
        if info is not None:
            for want, have, what in ((e.n_points, info.n_points, "points"),
                                     (e.n_patients, info.n_patients, "patients")):
                if want is not None and int(want) != have:
                    raise IncompatibleBlocksError(
                        f"merge: {info.path} has {have} {what}, expected {want}", path=info.path)
            n_pts.append(info.n_points)
            n_pat.append(info.n_patients)
        elif consolidate:
            n_pts.append(0)
            n_pat.append(0)
        elif e.n_points is None or e.n_patients is None:
            raise ValueError(f"merge: a virtual merge needs the size of missing block "
                             f"{os.fspath(e.path)} to reserve its rows; pass expected=["
                             "ExpectedBlock(path, n_points, n_patients), ...] or "
                             "consolidate=True")
        else:
            n_pts.append(int(e.n_points))
            n_pat.append(int(e.n_patients))
    pt_start = np.concatenate([[0], np.cumsum(n_pts)[:-1]]).astype(np.int64)
    pa_start = np.concatenate([[0], np.cumsum(n_pat)[:-1]]).astype(np.int64)
    tot_pts, tot_pat = int(sum(n_pts)), int(sum(n_pat))
    n_visits = max(i.n_visits for i in infos if i is not None)
    n_vis = [n_visits if i is None else i.n_visits for i in infos]  # missing: the widest
    out_dir = Path(os.path.abspath(out)).parent
    rel = [_rel(Path(os.path.abspath(e.path)), out_dir) for e in plan]

    versions = sorted(versions)  # common: the provenance attributes every block shares
    missing_rel = [r for r, ok in zip(rel, present) if not ok]

    def shape_of(group: str, name: str, vi: _VarInfo, rows: int | None = None):
        if group == "points":
            return (tot_pts if rows is None else rows,)
        if group == "traces" and name == "time_h":
            return vi.shape
        if group == "visits":
            return (tot_pat if rows is None else rows, n_visits)
        if len(vi.shape) == 2:  # traces
            return (tot_pat if rows is None else rows, vi.shape[1])
        return (tot_pat if rows is None else rows,)

    def header(f: h5py.File) -> None:
        _root_attrs(f, config_hash=first.attrs["config_sha256"], seed=first.attrs["seed"],
                    kind=kind, extra={k: _attr_value(k, v) for k, v in common.items()},
                    code=first.attrs.get("code_sha256"))
        f.attrs["blocks"] = np.array(rel, dtype=_STR)
        f.attrs["missing_blocks"] = np.array(missing_rel, dtype=_STR)
        f.attrs["block_point_start"] = pt_start
        f.attrs["block_n_points"] = np.array(n_pts, dtype=np.int64)
        f.attrs["block_patient_start"] = pa_start
        f.attrs["block_n_patients"] = np.array(n_pat, dtype=np.int64)
        f.attrs["consolidated"] = np.int64(bool(consolidate))
        f.attrs["block_pulsehpg_versions"] = np.array(versions, dtype=_STR)
        with _open_results(first.path) as src:
            f.create_dataset("config", data=_py(src["config"].asstr()[()]), dtype=_STR)
            f.create_dataset("parameters", data=src["parameters"][()])
        for group in GROUPS:
            if group in first.schema:
                f.create_group(group, track_order=True)

    def one_variable(f: h5py.File, group: str, name: str) -> h5py.Dataset:
        vi = first.schema[group][name]
        g = f[group]
        if group == "traces" and name == "time_h":
            ds = g.create_dataset(name, data=first.time_h)
        elif consolidate:
            ds = _create_like(g, name, vi, shape_of(group, name, vi))
        else:
            ds = _merge_virtual(g, group, name, vi, shape_of, rel, n_pts, n_pat, n_vis,
                                pt_start, pa_start)
        _var_attrs(ds, vi.units, vi.long_name, vi.codes)
        return ds

    variables = [(g, n) for g in GROUPS if g in first.schema for n in first.schema[g]]
    if consolidate:
        def fill(f: h5py.File) -> None:
            header(f)
            copies = [(one_variable(f, g, n), g, n) for g, n in variables]
            for info, p0, q0 in zip(infos, pt_start, pa_start):
                if info is None:
                    continue
                with _open_results(info.path) as src:  # each block is opened once
                    for ds, group, name in copies:
                        if group == "traces" and name == "time_h":
                            continue
                        _copy_rows(src[f"{group}/{name}"], ds,
                                   int(p0 if group == "points" else q0))
            for ds, _, _ in copies:
                ds.id.flush()

        _atomic_write(out, fill, "merge into")
    else:
        # HDF5 holds every block mapping of the virtual datasets it has created (about
        # 15 KB each, measured with HDF5 2.0) until the file is closed: 1000 blocks x 68
        # variables grew the merge by 190 MB with 16,000 mappings per opening. So the file
        # is closed and opened again after about _VDS_MAPPINGS_PER_OPEN mappings (2,000:
        # about 30 MB; each reopening costs a few KB of file space), and memory stays flat
        # in the number of variables. One variable's mappings are created at once, so a
        # sweep of more than 2,000 blocks needs about 15 KB per block on top.
        batches: list[list] = [[]]
        count = 0
        for g, n in variables:
            mappings = len(rel)
            if batches[-1] and count + mappings > _VDS_MAPPINGS_PER_OPEN:
                batches.append([])
                count = 0
            batches[-1].append((g, n))
            count += mappings

        def make(batch):
            return lambda f: [one_variable(f, g, n) for g, n in batch]

        first_batch = make(batches[0])
        steps = [lambda f: (header(f), first_batch(f))] + [make(b) for b in batches[1:]]
        _atomic_write(out, steps, "merge into")
    return MergeResult(out, [os.fspath(e.path) for e in plan], missing, tot_pts, tot_pat)


def _create_like(g, name: str, vi: _VarInfo, shape: tuple):
    if h5py.check_string_dtype(vi.dtype) is not None:
        return g.create_dataset(name, shape=shape, dtype=vi.dtype)
    return g.create_dataset(name, shape=shape, dtype=vi.dtype, fillvalue=_fill_value(vi.dtype),
                            **_storage(shape, vi.dtype))


def _copy_rows(src, dst, row0: int) -> None:
    """Copy a block's dataset into rows row0... of dst, in slabs of about 64 MiB."""
    rows = src.shape[0]
    is_str = _is_string_ds(src)
    row_bytes = max(1, int(np.prod(src.shape[1:], dtype=np.int64)) * src.dtype.itemsize)
    step = max(1, _COPY_BYTES // row_bytes)
    for r in range(0, rows, step):
        r1 = min(rows, r + step)
        data = src.asstr()[r:r1] if is_str else src[r:r1]
        if src.ndim == 1:
            dst[row0 + r:row0 + r1] = data
        else:
            dst[row0 + r:row0 + r1, :src.shape[1]] = data


def _merge_virtual(g, group, name, vi: _VarInfo, shape_of, rel, n_pts, n_pat, n_vis,
                   pt_start, pa_start):
    """A virtual dataset with one mapping per block, built with HDF5's own property list
    (h5py's VirtualLayout would keep a Python selection object per block as well)."""
    shape = shape_of(group, name, vi)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.VIRTUAL)
    if h5py.check_string_dtype(vi.dtype) is None:
        dcpl.set_fill_value(np.array([_fill_value(vi.dtype)], dtype=vi.dtype))
    per_block = n_pts if group == "points" else n_pat
    starts = pt_start if group == "points" else pa_start
    vspace = h5py.h5s.create_simple(shape)
    source_name = f"{group}/{name}".encode()
    for path, rows, width, row0 in zip(rel, per_block, n_vis, starts):
        if rows == 0:
            continue
        src_shape = shape_of(group, name, vi, rows)
        if group == "visits":  # a block may have fewer visits than the widest
            src_shape = (rows, width)
        vspace.select_hyperslab((int(row0),) + (0,) * (len(shape) - 1),
                                tuple(int(x) for x in src_shape))
        dcpl.set_virtual(vspace, os.fsencode(path), source_name,
                         h5py.h5s.create_simple(tuple(int(x) for x in src_shape)))
    vspace.select_all()
    dsid = h5py.h5d.create(g.id, name.encode(), h5py.h5t.py_create(vi.dtype, logical=1), vspace,
                           dcpl=dcpl)
    del dcpl
    return h5py.Dataset(dsid)
