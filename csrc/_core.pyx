# cython: language_level=3
"""Compiled core of pulsehpg: a thin layer over the C event loop in engine.h.

Arguments are checked by the Python layer (pulsehpg.cohort) with the GIL; the
loops here run without it, over patients, on ``threads`` OpenMP threads.
"""
from libc.stdint cimport uint64_t
from cython.parallel cimport prange

cdef extern from "engine.h" nogil:
    enum:
        PH_NS
        PH_NP
        PH_NI
        PH_ND
        PH_NO
        PH_NF
        PH_NAUX
        PH_MAX_LEVELS
        PH_NCOEF
    ctypedef struct ph_cohort:
        double *y
        const double *p
        const double *d
        const double *u
        const double *etab
        double *next_pulse
        double *since
        double *tp
        double *tc
        double *aux
        const uint64_t *key
        uint64_t *ctr
        double *pump_next
        const double *pump_dose
        const double *pump_interval
        long *n_pulses
        long *n_steps
        int deterministic
        int n_levels
        double h0
        double growth
        double coarse_step
        int sample_coarse
        const int *obs
        int n_obs
    void ph_prepare(const double *p, double *d, double *etab, double h0, int n_levels) noexcept
    int ph_advance_one(const ph_cohort *c, int i, double t1, const double *samples, int ns,
                       double *out, int exact) noexcept
    void ph_sync(const ph_cohort *c, int i, double t) noexcept
    void ph_peek(const ph_cohort *c, int i, double t, double *ys, int coarse) noexcept
    void ph_observe(const ph_cohort *c, int i, double t, double *o, int coarse) noexcept
    void ph_first_pulse(const ph_cohort *c, int i, double t) noexcept
    void ph_outputs(const double *y, const double *p, const double *d, const double *u,
                    double *o) noexcept
    void ph_dose(double *y, const double *p, const double *d, int drug, double amount) noexcept
    uint64_t ph_mix64(uint64_t z) noexcept
    double ph_normal(uint64_t key, uint64_t *ctr) noexcept
    double ph_uniform(uint64_t key, uint64_t *ctr) noexcept

cdef extern from "lanes.h" nogil:
    int ph_lanes_width() noexcept
    int ph_advance_range(const ph_cohort *c, int i0, int i1, double t1,
                         const double *samples, int ns, double *out, int exact) noexcept
    int ph_lanes_set(int mode) noexcept
    int ph_lanes_get() noexcept

NS = PH_NS
NP = PH_NP
NI = PH_NI
ND = PH_ND
NO = PH_NO
NF = PH_NF  # states in the fast loop (the ladder's ETD coefficients are for these)
NAUX = PH_NAUX  # per-patient multirate bookkeeping (forcing integrals, slopes)
MAX_LEVELS = PH_MAX_LEVELS
NCOEF = PH_NCOEF


_LANE_MODES = ("off", "baseline", "avx2", "avx512")
ph_lanes_set(-1)


def lanes(mode=None):
    """How the core steps groups of patients: 'avx512' (eight patients per vector
    register), 'avx2' or 'baseline' (four on that instruction set) or 'off' (one at a
    time). The default is the widest the CPU runs at full width: 'avx512' (but 'avx2' on
    AMD Zen 4, which splits 512-bit operations in two), else 'avx2', else 'off'. With a
    mode, use it if this CPU has it, else the default; returns the mode in use. Results
    are the same bit for bit in every mode; do not change it while a cohort advances."""
    if mode is not None:
        if mode not in _LANE_MODES:
            raise ValueError(f"mode: expected one of {', '.join(_LANE_MODES)}, got {mode!r}")
        ph_lanes_set(_LANE_MODES.index(mode))
    return _LANE_MODES[ph_lanes_get()]


def prepare(const double[:, ::1] p, double[:, ::1] d, double[:, :, :, ::1] etab,
            double h0, int threads=1):
    """Fill derived quantities and the ladder's ETD coefficients for every patient."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef int nl = etab.shape[1]
    with nogil:
        for i in prange(n, num_threads=threads, schedule="static"):
            ph_prepare(&p[i, 0], &d[i, 0], &etab[i, 0, 0, 0], h0, nl)


cdef class Engine:
    """Views on a cohort's arrays, held while it advances (owned by pulsehpg.Cohort)."""
    cdef ph_cohort c
    cdef Py_ssize_t n
    cdef object _keep

    def __init__(self, double[:, ::1] y, const double[:, ::1] p, const double[:, ::1] d,
                 const double[:, ::1] u, const double[:, :, :, ::1] etab,
                 double[::1] next_pulse, double[::1] since, double[::1] tp,
                 double[::1] tc, double[:, ::1] aux, const uint64_t[::1] key,
                 uint64_t[::1] ctr, double[:, ::1] pump_next, const double[:, ::1] pump_dose,
                 const double[:, ::1] pump_interval, long[::1] n_pulses, long[::1] n_steps,
                 bint deterministic, double h0, double growth, double coarse_step):
        self._keep = (y, p, d, u, etab, next_pulse, since, tp, tc, aux, key, ctr, pump_next,
                      pump_dose, pump_interval, n_pulses, n_steps)
        self.n = y.shape[0]
        self.c.y = &y[0, 0]
        self.c.p = &p[0, 0]
        self.c.d = &d[0, 0]
        self.c.u = &u[0, 0]
        self.c.etab = &etab[0, 0, 0, 0]
        self.c.next_pulse = &next_pulse[0]
        self.c.since = &since[0]
        self.c.tp = &tp[0]
        self.c.tc = &tc[0]
        self.c.aux = &aux[0, 0]
        self.c.key = &key[0]
        self.c.ctr = &ctr[0]
        self.c.pump_next = &pump_next[0, 0]
        self.c.pump_dose = &pump_dose[0, 0]
        self.c.pump_interval = &pump_interval[0, 0]
        self.c.n_pulses = &n_pulses[0]
        self.c.n_steps = &n_steps[0]
        self.c.deterministic = deterministic
        self.c.n_levels = etab.shape[1]
        self.c.h0 = h0
        self.c.growth = growth
        self.c.coarse_step = coarse_step
        self.c.sample_coarse = 1

    def first_pulse(self, double t):
        cdef Py_ssize_t i
        with nogil:
            for i in range(self.n):
                ph_first_pulse(&self.c, i, t)

    def advance(self, double t1, const double[::1] samples, double[:, :, ::1] out,
                const int[::1] obs, int threads=1, bint exact=False, bint sample_coarse=True):
        """Advance every patient from its own time to t1; observables obs[m] at samples
        go to out[i, k, m]. Without exact, a patient stops on its own step ladder at or just
        before t1 (see ph_integrate); sync, observe and states bring it the rest of the way.
        Without sample_coarse, obs must hold no observable that reads a coarse state
        (pulsehpg.codegen.coarse_observables): samples skip the coarse step, about 45 % of
        a sample's instructions.

        Returns the number of patients whose state became non-finite.
        """
        cdef Py_ssize_t g
        # ranges of patients, each on one thread's lanes: one range on one thread, else
        # about four per thread (at most 256 patients) to share the work out; whole
        # multiples of the lanes, as a range's last patients short of a full set of lanes
        # go one at a time
        cdef Py_ssize_t w = ph_lanes_width()
        cdef Py_ssize_t size = self.n
        if threads > 1:
            size = (self.n + 4 * threads - 1) // (4 * threads)
        if size > 256:
            size = 256
        size = (size + w - 1) // w * w
        cdef Py_ssize_t ranges = (self.n + size - 1) // size if size > 0 else 0
        cdef int ns = samples.shape[0]
        cdef int bad = 0
        cdef const double *sp = &samples[0] if ns > 0 else NULL
        cdef int n_obs = obs.shape[0]
        if out.shape[0] != self.n or out.shape[1] != ns or out.shape[2] != n_obs:
            raise ValueError(f"out: expected shape ({self.n}, {ns}, {n_obs}), got "
                             f"({out.shape[0]}, {out.shape[1]}, {out.shape[2]})")
        for g in range(n_obs):
            if not 0 <= obs[g] < PH_NO:
                raise ValueError(f"obs: {obs[g]} is not an observable index (0..{PH_NO - 1})")
        cdef double *o0 = &out[0, 0, 0] if ns > 0 and self.n > 0 and n_obs > 0 else NULL
        self.c.sample_coarse = sample_coarse
        self.c.obs = &obs[0] if n_obs > 0 else NULL
        self.c.n_obs = n_obs
        with nogil:
            for g in prange(ranges, num_threads=threads, schedule="dynamic"):
                bad += ph_advance_range(&self.c, <int>(g * size), <int>min(self.n, (g + 1) * size),
                                        t1, sp, ns, o0, exact)
        self.c.sample_coarse = 1
        self.c.obs = NULL
        self.c.n_obs = 0
        return bad

    def sync(self, double t, const unsigned char[::1] mask):
        """Bring the patients in mask exactly to time t (before changing their inputs)."""
        cdef Py_ssize_t i
        with nogil:
            for i in range(self.n):
                if mask[i]:
                    ph_sync(&self.c, i, t)

    def observe(self, double t, double[:, ::1] out):
        """Observables of every patient at time t, read off copies of their states."""
        cdef Py_ssize_t i
        with nogil:
            for i in range(self.n):
                ph_observe(&self.c, i, t, &out[i, 0], 1)

    def states(self, double t, double[:, ::1] out):
        """Every patient's state at time t, without touching their trajectories."""
        cdef Py_ssize_t i
        with nogil:
            for i in range(self.n):
                ph_peek(&self.c, i, t, &out[i, 0], 1)

    def dose(self, double t, int drug, const double[::1] amount):
        """Give amount[i] of a drug at time t to every patient i with amount[i] > 0."""
        cdef Py_ssize_t i
        with nogil:
            for i in range(self.n):
                if amount[i] > 0.0:
                    ph_sync(&self.c, i, t)
                    ph_dose(self.c.y + i * PH_NS, self.c.p + i * PH_NP, self.c.d + i * PH_ND,
                            drug, amount[i])


def patient_keys(uint64_t root, const long[::1] index):
    """Random-stream keys of patients: a hash of the root key and the patient index."""
    import numpy as np
    out = np.empty(index.shape[0], dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef Py_ssize_t i
    for i in range(index.shape[0]):
        o[i] = ph_mix64(root ^ ph_mix64(<uint64_t>index[i] + 1))
    return out


cdef _side_stream(const uint64_t[::1] key, int n, uint64_t stream, bint normal):
    import numpy as np
    out = np.empty((key.shape[0], n), dtype=np.float64)
    cdef double[:, ::1] o = out
    cdef Py_ssize_t i, j
    cdef uint64_t k, ctr
    for i in range(key.shape[0]):
        k = ph_mix64(key[i] ^ ph_mix64(stream))
        ctr = 0
        for j in range(n):
            o[i, j] = ph_normal(k, &ctr) if normal else ph_uniform(k, &ctr)
    return out


def normals(const uint64_t[::1] key, int n, uint64_t stream):
    """n standard normals per patient from a side stream of its key (for variability)."""
    return _side_stream(key, n, stream, True)


def uniforms(const uint64_t[::1] key, int n, uint64_t stream):
    """n uniforms on (0, 1) per patient from a side stream of its key."""
    return _side_stream(key, n, stream, False)
