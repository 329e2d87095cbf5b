"""A cohort of virtual patients advanced together by the compiled core.

Arguments are validated here, with the GIL, and errors name the argument, the
value and what is allowed; the simulation itself runs in :mod:`pulsehpg._core`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import _core, model
from .codegen import coarse_observables
from .params import REGISTRY, lookup, settable
from .phenotypes import get_phenotype
from .units import parse_duration

__all__ = ["Cohort", "Numerics", "DRUG_NAMES", "MAX_PATIENTS", "OBSERVABLES", "root_key"]

DRUG_NAMES = tuple(d.name for d in model.DRUGS)
OBSERVABLES = tuple(o.name for o in model.OUTPUTS)
UNITS = {o.name: o.unit for o in model.OUTPUTS}
# the most patients one cohort (a scenario's cohort.n, a sweep's patients per point) may
# have: about 6 kB of state and coefficients each, 60 GB at this size; more is a typo
MAX_PATIENTS = 10_000_000
MIN_RECORD_EVERY = 1.0 / 3600.0  # h: one second
_P_INDEX = {p.name: i for i, p in enumerate(REGISTRY)}
_FACTORS = np.array([p.core_factor for p in REGISTRY])
_ACCEL = _P_INDEX["numerics.slow_acceleration"]
_ACCEL_R = _P_INDEX["numerics.reserve_acceleration"]
_COARSE_OBS = coarse_observables()
_GNRH_ON = _P_INDEX["hypothalamus.gnrh_present"]
_VARIABILITY_STREAM = 1


@dataclass(frozen=True)
class Numerics:
    """Step ladder of the integrator and the equilibration of new cohorts.

    Two presets, measured against a tight SciPy reference integration
    (tests/test_reference.py: 30 days sampled every 15 min, every phenotype and
    drug, pumps and infusions; worst relative error over all observables):

        preset            h0       growth  levels  largest step  steps/day  worst error
        default           1/60 h   1       4       8 min         250        6e-3
        (intermediate)    1/240 h  1       4       2 min         820        1.3e-4
        accurate()        1/480 h  0.25    5       2 min         1000       2.8e-5
        (finer)           1/960 h  0.25    5       1 min         1730       1e-5

    The default keeps a healthy patient's observables within about 1e-4 (at most
    2e-4) of the reference and reaches its worst errors (a few 1e-3) only while T and E2
    switch on from near zero (hCG or a GnRH pump in CHH), far below the
    between-patient variability; it costs a quarter of ``accurate()``, which
    holds every case within 1e-4 and is what the reference tests use. The small
    first step follows the gonadotroph's fast response to a GnRH pulse or a
    gonadorelin bolus.

    The coarse states (pulsehpg.model: spermatogenic chain, epididymis, Sertoli
    and spermatogonial pools, motility, inhibin B) take one step every
    ``coarse_step`` hours, driven by their fast inputs integrated over the fast
    steps (csrc/engine.h). At 4 h they leave the default's errors as they are;
    accurate()'s worst case is CHH on a GnRH pump, 2.8e-5 (FSH, through inhibin B; at
    2 h it was 2.4e-5, motility switching on from zero in CHH on hCG and FSH), and FSH
    on testosterone moves most (9e-6; 2.4e-6 at 2 h). Every 4 h instead of every 2 h
    makes cohorts about 6 % cheaper (benchmarks/README.md).
    """

    h0: float = 1.0 / 60.0  # smallest step, hours
    growth: float = 1.0  # step <= growth * time since the last pulse or fast bolus
    levels: int = 4  # ladder levels: h0 * 2**(levels-1) = 8 min is the largest step
    coarse_step: float = 4.0  # hours between steps of the coarse (slow, feed-forward) states
    burn_in_days: float = 30.0  # equilibration with slow states sped up
    burn_in_accel: float = 20.0
    # the spermatogonial reserve is lost over years where Sertoli support is low (CHH): 30
    # days at 500 times its speed are 41 years of it, so its steady state does not depend
    # on the burn-in's length (at 20 it would: 600 days, less than its 730-day loss time)
    burn_in_reserve_accel: float = 500.0
    settle_days: float = 3.0  # then at normal speed

    @classmethod
    def accurate(cls, **changes) -> "Numerics":
        """Every observable within 1e-4 of the reference, at four times the cost."""
        return cls(**({"h0": 1.0 / 480.0, "growth": 0.25, "levels": 5} | changes))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"numerics.{f.name}: expected a number, got {v!r:.60}")
        if not (0 < self.h0 <= 1) or not (0 < self.growth <= 8):
            raise ValueError(f"numerics: h0 must be in (0, 1] h and growth in (0, 8], got {self}")
        if not (0 < self.coarse_step <= 24):
            raise ValueError(f"numerics.coarse_step must be in (0, 24] h, got {self.coarse_step}")
        if not float(self.levels).is_integer() or not (1 <= self.levels <= _core.MAX_LEVELS):
            raise ValueError(f"numerics.levels must be 1..{_core.MAX_LEVELS}, got {self.levels}")
        # the registry's ranges of the two speed-ups they set
        if not (1 <= self.burn_in_accel <= 100):
            raise ValueError("numerics.burn_in_accel must be in [1, 100], got "
                             f"{self.burn_in_accel}")
        if not (1 <= self.burn_in_reserve_accel <= 10000):
            raise ValueError("numerics.burn_in_reserve_accel must be in [1, 10000], got "
                             f"{self.burn_in_reserve_accel}")


def _same_rows(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None
                                         and np.array_equal(a, b))


def root_key(seed) -> int:
    """64-bit root key from an int seed or a numpy SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        ss = seed
    else:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer or SeedSequence, got {seed!r}")
        ss = np.random.SeedSequence(int(seed))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def patient_keys(seed, patients) -> np.ndarray:
    """Random-stream keys of patients: patient k of a seed has the same key everywhere."""
    index = np.ascontiguousarray(patients, dtype=np.int64)
    return _core.patient_keys(np.uint64(root_key(seed)), index)


def _settable(where: str, name: str):
    """settable(name), its refusal of a known name prefixed by the argument it came in."""
    lookup(name)  # an unknown name: lookup's message, with its suggestions
    try:
        return settable(name)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _as_patient_array(name: str, value, n: int, *, allow_negative=False) -> np.ndarray:
    arr = np.asarray(value, dtype=float) if not isinstance(value, str) else None
    if arr is None or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise ValueError(f"{name}: expected a number or an array of length {n} "
                         f"(one per patient), got {value!r:.80}")
    arr = np.broadcast_to(arr, (n,)).astype(float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite, got {value!r:.80}")
    if not allow_negative and np.any(arr < 0):
        raise ValueError(f"{name}: values must be >= 0, got {value!r:.80}")
    return arr


class Cohort:
    """N virtual patients, as arrays, advanced together in time.

    Parameters
    ----------
    n : int
        Number of patients (or give ``patients``).
    phenotype : str
        One of :data:`pulsehpg.phenotypes.PHENOTYPES`.
    seed : int or numpy.random.SeedSequence
        Root of every patient's random stream.
    patients : array of int, optional
        Patient indices (default ``arange(n)``). Patient k of a seed is the same
        patient whichever cohort or batch it is simulated in.
    params : dict, optional
        Parameter values by dotted name (scalar or one per patient), in the
        registry's units; they replace defaults, phenotype and variability.
    variability : bool or dict
        True: log-normal between-patient multipliers with the registry's CVs;
        False: none; a dict name -> CV changes some CVs.
    deterministic : bool
        Noise off: mean interpulse intervals and masses, no variability.
    threads : int
        OpenMP threads used to advance patients (the results are the same for any number).
    numerics : Numerics, optional
        The integration ladder (default ``Numerics()``, worst error about 1e-4 against the
        reference; ``Numerics.accurate()`` about 1e-6 at 2-3 times the cost).
    equilibrate : bool
        True (default): a burn-in before time 0 (``numerics.burn_in_days``, the slow states
        accelerated, then ``settle_days``), so that the cohort starts at its baseline;
        False: start from the model's initial values.

    Methods that act on some patients take ``mask``: None for every patient, or a
    boolean array of shape (n,) choosing the patients it applies to.
    """

    def __init__(self, n: int | None = None, phenotype: str = "eugonadal", seed=0, *,
                 patients=None, params: dict | None = None, variability=True,
                 deterministic: bool = False, threads: int = 1,
                 numerics: Numerics | None = None, equilibrate: bool = True):
        if patients is None:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"n: expected a positive number of patients, got {n!r}")
            if n > MAX_PATIENTS:  # before arange(n) allocates it
                raise ValueError(f"n: {n} patients; one cohort holds at most {MAX_PATIENTS:,} "
                                 f"(a sweep runs larger numbers in blocks)")
            patients = np.arange(int(n))
        patients = np.asarray(patients)
        if patients.ndim != 1 or patients.size == 0 or not np.issubdtype(patients.dtype, np.integer) \
                or np.any(patients < 0):
            raise ValueError("patients: expected a non-empty 1-D array of non-negative integers")
        if patients.size > MAX_PATIENTS:
            raise ValueError(f"patients: {patients.size} of them; one cohort holds at most "
                             f"{MAX_PATIENTS:,}")
        if n is not None and n != patients.size:
            raise ValueError(f"n: {n} does not match len(patients) = {patients.size}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads: expected a positive integer, got {threads!r}")
        self.n = int(patients.size)
        self.phenotype = get_phenotype(phenotype)
        self.deterministic = bool(deterministic)
        self.threads = int(threads)
        self.numerics = numerics or Numerics()
        self.patients = patients.astype(np.int64)
        self.keys = patient_keys(seed, self.patients)
        self.params = self._build_params(params or {}, variability)
        n, nl = self.n, self.numerics.levels
        self._y = np.tile(np.array([s.init for s in model.STATES]), (n, 1))
        self._p = np.ascontiguousarray(self.params * _FACTORS)
        self._d = np.zeros((n, _core.ND))
        self._u = np.zeros((n, _core.NI))
        self._etab = np.zeros((n, nl, _core.NCOEF, _core.NF))
        self._next_pulse = np.zeros(n)
        self._since = np.zeros(n)
        self._tp = np.zeros(n)  # each patient's own time (see Engine.advance)
        self._tc = np.zeros(n)  # time of its coarse states (engine.h, multirate)
        self._aux = np.zeros((n, _core.NAUX))
        self._ctr = np.zeros(n, dtype=np.uint64)
        self._pump_next = np.zeros((n, _core.NI))
        self._pump_dose = np.zeros((n, _core.NI))
        self._pump_interval = np.zeros((n, _core.NI))
        self.n_pulses = np.zeros(n, dtype=np.int_)
        self.n_steps = np.zeros(n, dtype=np.int_)
        self._engine = _core.Engine(
            self._y, self._p, self._d, self._u, self._etab, self._next_pulse, self._since,
            self._tp, self._tc, self._aux, self.keys, self._ctr, self._pump_next,
            self._pump_dose, self._pump_interval,
            self.n_pulses, self.n_steps, self.deterministic, self.numerics.h0,
            self.numerics.growth, self.numerics.coarse_step)
        self._t = 0.0
        self._record_every: float | None = None
        self._record_obs: list[int] = list(range(len(OBSERVABLES)))
        self._record_rows: np.ndarray | None = None  # None: every patient
        self._trace_t: list[np.ndarray] = []
        self._trace_v: list[np.ndarray] = []
        self._prepare()
        self._engine.first_pulse(0.0)
        if equilibrate:
            self._equilibrate()

    # -- construction -------------------------------------------------------
    def _build_params(self, overrides: dict, variability) -> np.ndarray:
        n = self.n
        base = np.array([p.default for p in REGISTRY])
        for name, f in self.phenotype.scale.items():
            base[_P_INDEX[name]] *= f
        for name, v in self.phenotype.set.items():
            base[_P_INDEX[name]] = v
        values = np.tile(base, (n, 1))
        cvs = np.array([p.cv for p in REGISTRY])
        if isinstance(variability, dict):
            for name, cv in variability.items():
                if not isinstance(cv, (int, float)) or isinstance(cv, bool) or not (0 <= cv <= 5):
                    raise ValueError(f"variability[{name!r}]: expected a CV in [0, 5], got {cv!r}")
                cvs[_P_INDEX[_settable(f"variability[{name!r}]", name).name]] = cv
        elif variability is not True and variability is not False:
            raise ValueError(f"variability: expected True, False or a dict name -> CV, "
                             f"got {variability!r}")
        if variability is not False and not self.deterministic and np.any(cvs > 0):
            # One column per registry entry: a parameter's draws never depend on others' CVs.
            z = _core.normals(self.keys, len(REGISTRY), _VARIABILITY_STREAM)
            sigma = np.sqrt(np.log1p(cvs**2))
            values *= np.exp(sigma * z)
        lo = np.array([p.lower for p in REGISTRY])
        hi = np.array([p.upper for p in REGISTRY])
        values = np.clip(values, lo, hi)
        for name, v in overrides.items():
            par = _settable(f"params[{name!r}]", name)
            arr = _as_patient_array(f"params[{name!r}]", v, n, allow_negative=par.lower < 0)
            if np.any(arr < par.lower) or np.any(arr > par.upper):
                raise ValueError(f"params[{name!r}]: {v!r:.80} is outside the allowed range "
                                 f"[{par.lower:g}, {par.upper:g}] {par.unit}")
            values[:, _P_INDEX[par.name]] = arr
        return np.ascontiguousarray(values)

    def _prepare(self):
        _core.prepare(self._p, self._d, self._etab, self.numerics.h0, self.threads)

    def _equilibrate(self):
        nm = self.numerics
        self._p[:, _ACCEL] = nm.burn_in_accel
        self._p[:, _ACCEL_R] = nm.burn_in_reserve_accel
        self._prepare()
        burn = nm.burn_in_days * 24.0
        self._run(0.0, burn, exact=True)
        self._p[:, _ACCEL] = 1.0
        self._p[:, _ACCEL_R] = 1.0
        self._prepare()
        settle = burn + nm.settle_days * 24.0
        self._run(burn, settle, exact=True)
        # the simulation clock starts now
        self._next_pulse -= settle
        self._pump_next -= settle
        self._tp -= settle
        self._tc -= settle
        self.n_pulses[:] = 0
        self.n_steps[:] = 0

    # -- time ---------------------------------------------------------------
    @property
    def t(self) -> float:
        """Hours since the cohort's start."""
        return self._t

    def _run(self, t0: float, t1: float, samples=None, exact=False, obs=None,
             sample_coarse=True) -> np.ndarray | None:
        """Advance to t1; observables obs (indices, default all) at samples: (n, samples, obs)."""
        samples = np.zeros(0) if samples is None else np.ascontiguousarray(samples, dtype=float)
        obs = np.arange(_core.NO, dtype=np.intc) if obs is None else np.asarray(obs, np.intc)
        out = np.zeros((self.n, samples.size, obs.size))
        bad = self._engine.advance(t1, samples, out, obs, self.threads, exact, sample_coarse)
        if bad:
            raise FloatingPointError(
                f"{bad} patient(s) reached a non-finite state between t={t0:g} h and "
                f"t={t1:g} h; check doses and parameter overrides")
        return out

    # advance_to works in pieces of about this many patient-hours (300 patient-years, a
    # few seconds on one core), so that Ctrl-C is answered between them: the core runs
    # without the GIL and Python sees the signal only when a call returns. (Each piece
    # ends with a range's last patients stepping one at a time: 30 patient-years cost 8 %.)
    _PIECE_PATIENT_HOURS = 300 * 8766.0

    def advance_to(self, t) -> None:
        """Advance every patient to time t (hours, or a string such as '12 weeks')."""
        t = parse_duration(t, "t")
        if t < self._t:
            raise ValueError(f"t: cannot go back in time from {self._t:g} h to {t:g} h")
        # a patient stops on its own step ladder between pieces, so they change no result
        piece = max(self._PIECE_PATIENT_HOURS / max(self.n, 1), 1.0)
        while True:
            t1 = t if t - self._t <= 1.5 * piece else self._t + piece
            self._advance_piece(t1)
            if t1 >= t:
                break

    def _advance_piece(self, t: float) -> None:
        samples = np.zeros(0)
        if self._record_every is not None:
            e = self._record_every
            k0 = math.floor(self._t / e + 1e-9) + 1
            k1 = math.floor(t / e + 1e-9)
            samples = np.arange(k0, k1 + 1) * e
        # the core writes only the recorded observables (hourly rows of every observable
        # of a large cohort are hundreds of MB); samples of hormones only skip the coarse
        # states
        coarse = any(OBSERVABLES[k] in _COARSE_OBS for k in self._record_obs)
        out = self._run(self._t, t, samples, obs=self._record_obs, sample_coarse=coarse)
        if samples.size:
            if self._record_rows is not None:
                out = out[self._record_rows]
            self._trace_t.append(samples)
            self._trace_v.append(out)
        self._t = t

    # -- masks and drugs ----------------------------------------------------
    def _mask(self, mask) -> np.ndarray:
        if mask is None:
            return np.ones(self.n, dtype=bool)
        m = np.asarray(mask)
        if m.dtype != bool or m.shape != (self.n,):
            raise ValueError(f"mask: expected a boolean array of shape ({self.n},), got "
                             f"{'dtype ' + str(m.dtype) + ' shape ' + str(m.shape)}")
        return m

    def _sync(self, mask) -> np.ndarray:
        """The mask, after bringing its patients exactly to now: a change of inputs or
        parameters at t must not act on the part of a step a patient has not taken yet."""
        m = self._mask(mask)
        self._engine.sync(self._t, np.ascontiguousarray(m, dtype=np.uint8))
        return m

    @staticmethod
    def _drug_index(drug: str) -> int:
        try:
            return DRUG_NAMES.index(drug)
        except ValueError:
            raise ValueError(f"drug: unknown drug {drug!r}; allowed: {', '.join(DRUG_NAMES)}") \
                from None

    def dose(self, drug: str, amount, mask=None) -> None:
        """Give a bolus now: amount in the drug's unit (scalar or one per patient), to the
        patients in ``mask`` (None: all)."""
        j = self._drug_index(drug)
        a = _as_patient_array("amount", amount, self.n) * self._mask(mask)
        self._engine.dose(self._t, j, np.ascontiguousarray(a))
        if model.DRUGS[j].fast:
            self._since[a > 0] = 0.0

    def start_infusion(self, drug: str, rate, mask=None) -> None:
        """Continuous infusion from now: rate in the drug's unit per hour (scalar or one
        per patient), for the patients in ``mask`` (None: all)."""
        j = self._drug_index(drug)
        r = _as_patient_array("rate", rate, self.n)
        m = self._sync(mask)
        self._u[m, j] = r[m]

    def stop_infusion(self, drug: str, mask=None) -> None:
        """Stop the drug's infusion now for the patients in ``mask`` (None: all)."""
        j = self._drug_index(drug)
        self._u[self._sync(mask), j] = 0.0

    def set_pump(self, drug: str, dose, interval, mask=None) -> None:
        """Boluses of dose every interval (hours or '90 min', 15 min to 8 h), the first one
        now, for the patients in ``mask`` (None: all); a patient has one pump per drug, so
        this replaces a running pump of the drug."""
        j = self._drug_index(drug)
        a = _as_patient_array("dose", dose, self.n)
        iv = parse_duration(interval, "interval")
        if not (0.25 - 1e-9 <= iv <= 8.0 + 1e-9):
            raise ValueError(f"interval: pump intervals must be between 15 min and 8 h, "
                             f"got {interval!r}")
        m = self._sync(mask)
        self._pump_dose[m, j] = a[m]
        self._pump_interval[m, j] = iv
        self._pump_next[m, j] = self._t

    def set_pump_dose(self, drug: str, dose, mask=None) -> None:
        """A running pump's bolus from the next bolus on; its rhythm goes on."""
        j = self._drug_index(drug)
        a = _as_patient_array("dose", dose, self.n)
        m = self._sync(mask)
        self._pump_dose[m, j] = a[m]

    def stop_pump(self, drug: str, mask=None) -> None:
        """Stop the drug's pump now for the patients in ``mask`` (None: all)."""
        j = self._drug_index(drug)
        m = self._sync(mask)
        self._pump_interval[m, j] = 0.0

    def set_params(self, values: dict, mask=None) -> None:
        """Change parameters from now on (e.g. {'testis.present': 0} for orchiectomy), by
        dotted name in the registry's units (scalar or one per patient), for the patients
        in ``mask`` (None: all)."""
        m = self._mask(mask)
        for name, v in values.items():  # all checked before any patient is changed
            par = _settable(f"values[{name!r}]", name)
            arr = _as_patient_array(f"values[{name!r}]", v, self.n, allow_negative=par.lower < 0)
            if np.any(arr[m] < par.lower) or np.any(arr[m] > par.upper):
                raise ValueError(f"values[{name!r}]: {v!r:.80} is outside the allowed range "
                                 f"[{par.lower:g}, {par.upper:g}] {par.unit}")
        self._sync(m)
        gnrh_was_off = self._p[:, _GNRH_ON] <= 0
        for name, v in values.items():
            par = lookup(name)
            arr = _as_patient_array(f"values[{name!r}]", v, self.n, allow_negative=par.lower < 0)
            k = _P_INDEX[par.name]
            self.params[m, k] = arr[m]
            self._p[m, k] = arr[m] * _FACTORS[k]
        self._prepare()
        rearm = gnrh_was_off & (self._p[:, _GNRH_ON] > 0) & m
        self._next_pulse[rearm] = self._t
        self._next_pulse[m & (self._p[:, _GNRH_ON] <= 0)] = np.inf

    def param(self, name: str) -> np.ndarray:
        """Current per-patient values of a parameter, in registry units."""
        return self.params[:, _P_INDEX[lookup(name).name]].copy()

    # -- observation ----------------------------------------------------------
    def observe_array(self) -> np.ndarray:
        out = np.zeros((self.n, _core.NO))
        self._engine.observe(self._t, out)
        return out

    def observe(self) -> dict[str, np.ndarray]:
        """Observables now: dict name -> array over patients (units in OBSERVABLES/UNITS)."""
        out = self.observe_array()
        return {name: out[:, k].copy() for k, name in enumerate(OBSERVABLES)}

    def record(self, every=None, *, observables=None, patients=None) -> None:
        """Record observables every ``every`` (hours or '10 min') from now; None stops.

        observables: names to keep (default all of OBSERVABLES); patients: row indices
        (0..n-1) of the patients to keep (default all). Samples of observables that do not
        read the slow testicular states (all but inhibin B, sperm, motility, Sertoli and
        spermatogonial activity) skip those states' step: about 45 % fewer instructions.
        Changing what is recorded once something has been recorded is refused.
        """
        every = None if every is None else parse_duration(every, "every")
        if every is not None and not every >= MIN_RECORD_EVERY:
            raise ValueError(f"every: must be at least 1 s ({MIN_RECORD_EVERY:.3g} h), got "
                             f"{every!r} h")
        obs = list(range(len(OBSERVABLES)))
        if observables is not None:
            names = [observables] if isinstance(observables, str) else list(observables)
            bad = [o for o in names if o not in OBSERVABLES]
            if bad or not names:
                raise ValueError(f"observables: unknown or empty {bad or names!r}; allowed: "
                                 f"{', '.join(OBSERVABLES)}")
            obs = [OBSERVABLES.index(o) for o in names]
        rows = None
        if patients is not None:
            rows = np.asarray(patients)
            if (rows.ndim != 1 or rows.size == 0 or rows.dtype.kind not in "iu"
                    or rows.min() < 0 or rows.max() >= self.n or np.unique(rows).size != rows.size):
                raise ValueError(f"patients: expected distinct row indices in 0..{self.n - 1}, "
                                 f"got {patients!r}")
            rows = rows.astype(np.intp)
        if self._trace_t and (obs != self._record_obs or not _same_rows(rows, self._record_rows)):
            raise ValueError("record: observables and patients cannot change once a trace "
                             "has been recorded")
        self._record_every, self._record_obs, self._record_rows = every, obs, rows

    def trace(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Recorded times (hours) and observables, each an array (patients, times).

        The patients are those given to :meth:`record` (default all), in that order.
        """
        names = [OBSERVABLES[k] for k in self._record_obs]
        if not self._trace_t:
            m = self.n if self._record_rows is None else self._record_rows.size
            return np.zeros(0), {k: np.zeros((m, 0)) for k in names}
        t = np.concatenate(self._trace_t)
        v = np.concatenate(self._trace_v, axis=1)
        return t, {name: v[:, :, k] for k, name in enumerate(names)}

    @property
    def state(self) -> np.ndarray:
        """A copy of the state matrix (patients, states); order: pulsehpg.model.STATES."""
        out = np.zeros_like(self._y)
        self._engine.states(self._t, out)
        return out

    @property
    def next_pulse(self) -> np.ndarray:
        return self._next_pulse.copy()

    def snapshot(self, i: int) -> dict:
        """Everything that determines patient i's future, in core units (hours).

        Used to start an independent integration (pulsehpg.reference) from the
        same point: states, parameters, infusion rates, next pulse, pumps.
        """
        if not (0 <= i < self.n):
            raise ValueError(f"i: patient index must be in [0, {self.n}), got {i!r}")
        return {
            "t": self._t, "y": self.state[i], "p": self._p[i].copy(),
            "u": self._u[i].copy(), "next_pulse": float(self._next_pulse[i]),
            "pump_next": self._pump_next[i].copy(), "pump_dose": self._pump_dose[i].copy(),
            "pump_interval": self._pump_interval[i].copy(),
            "deterministic": self.deterministic,
        }

    def __repr__(self) -> str:
        return (f"Cohort(n={self.n}, phenotype={self.phenotype.name!r}, t={self._t:g} h, "
                f"deterministic={self.deterministic})")


