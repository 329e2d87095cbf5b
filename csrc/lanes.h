/* Four or eight patients advanced together, one per lane of a vector register.
 *
 * Each lane runs ph_advance_one's event loop for its own patient: its own events, its
 * own step ladder, its own cut steps. Only the ETDRK4 step itself is shared: when all
 * lanes take a step in the same mode (all without drugs, or all with), one step on
 * vector lanes does all their patients' arithmetic, with the same operations in the same
 * order as ph_step_n, so every lane's result is its scalar result bit for bit (no FMA
 * contraction: build with -ffp-contract=off). Otherwise the lanes that step take scalar
 * steps. Events, coarse steps, samples and cut-step coefficients stay scalar. A lane's
 * fast states and forcing integrals stay in the vectors from step to step; they go back
 * to the patient's memory only when scalar code needs them (an event, a sample, a coarse
 * or scalar step, the end). A lane whose patient is done takes the next patient of its
 * range; when fewer patients are left than lanes, each goes on alone (ph_advance_from).
 *
 * The lane step is compiled three times (lanes_impl.h): four lanes on the baseline
 * instruction set (SSE2 on x86-64: two doubles per instruction) and, on x86-64, four
 * lanes on AVX2 (four doubles) and eight on AVX-512 (eight), chosen at run time
 * (ph_lanes_set).
 */
#ifndef PULSEHPG_LANES_H
#define PULSEHPG_LANES_H
#include "engine.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

typedef struct {
    int i;          /* patient */
    int active;     /* 1 while the patient has not reached the end of this call */
    int k;          /* next sample */
    int kind;       /* event ending the current interval: 0 end, 1 sample, 2 pulse, 3 pump */
    int which;      /* pump's drug */
    int stop_short; /* interval ends on the ladder at or before te (samples, inexact end) */
    int nodrug;     /* decided when the interval starts, as in ph_integrate */
    int last;       /* the step being taken is cut short to te */
    int level;      /* its ladder level, or -1 for a cut step (own coefficients) */
    double *out;    /* the patient's sample rows (ns x n_obs), or NULL */
    double t, te, h, hl;
    double hc;      /* largest coarse step (ph_coarse_cap: parameters are fixed within a call) */
    const double *coef;
    double own[PH_NCOEF * PH_NF];
} ph_lane;

/* Find lane L's next interval to integrate, handling events due now on the way (as
 * ph_advance_one's loop does). Returns 1 with an interval set, 0 when the lane is done. */
static inline int ph_lane_plan(const ph_cohort *c, ph_lane *L, double t1, const double *samples,
                               int ns, double *out, int exact) {
    const int i = L->i;
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    for (;;) {
        double te;
        int which;
        const int kind = ph_next_event(c, i, t1, samples, L->k, ns, &te, &which);
        L->te = te;
        L->kind = kind;
        L->which = which;
        L->stop_short = kind == 1 || (kind == 0 && !exact);
        if (te > L->t) {
            L->nodrug = ph_drugs_off(y, c->u + (size_t)i * PH_NI);
            return 1;
        }
        /* the event is due now */
        c->tp[i] = L->t;
        if (kind == 1) {
            ph_sample(c, i, te, out + (size_t)L->k * c->n_obs);
            L->k++;
            continue;
        }
        if (kind == 0) {
            if (exact)
                ph_coarse(y, p, d, c->u + (size_t)i * PH_NI, c->aux + (size_t)i * PH_NAUX,
                          &c->tc[i], L->t, L->hc);
            return 0;
        }
        ph_apply_event(c, i, L->t, kind, which);
    }
}

/* Lane L's interval has been integrated to L->t: the event that ends it, then the next
 * interval. Returns 1 with an interval set, 0 when the lane is done. */
static inline int ph_lane_finish(const ph_cohort *c, ph_lane *L, double t1,
                                 const double *samples, int ns, double *out, int exact) {
    const int i = L->i;
    if (L->stop_short) { /* the trajectory stays on its own ladder */
        c->tp[i] = L->t;
        if (L->kind == 0) return 0;
        ph_sample(c, i, L->te, out + (size_t)L->k * c->n_obs);
        L->k++;
        return ph_lane_plan(c, L, t1, samples, ns, out, exact);
    }
    if (L->te > L->t) L->t = L->te;
    /* an exact event at te: ph_lane_plan finds it due now and applies it */
    return ph_lane_plan(c, L, t1, samples, ns, out, exact);
}

/* Set up lane L's next step (ph_integrate's loop head). Returns 0 if the interval is
 * complete instead (no step to take). */
static inline int ph_lane_step_setup(const ph_cohort *c, ph_lane *L) {
    const int i = L->i;
    if (!(L->t < L->te)) return 0;
    const double rest = L->te - L->t;
    double hl;
    int last;
    const int l = ph_ladder(c, c->since[i], rest, L->stop_short, &hl, &last);
    if (last && L->stop_short) return 0;
    const double h = last ? rest : hl;
    const double *d = c->d + (size_t)i * PH_ND;
    L->coef = c->etab + ((size_t)i * c->n_levels + l) * PH_NCOEF * PH_NF;
    if (last) {
        ph_cut_coeffs(d, rest, L->nodrug, L->own);
        L->coef = L->own;
    }
    L->last = last;
    L->level = last ? -1 : l;
    L->h = h;
    L->hl = hl;
    return 1;
}

/* The scalar step of one lane: its patient's ph_step_at, as in ph_integrate's loop. */
static inline void ph_lane_step_scalar(const ph_cohort *c, ph_lane *L) {
    const int i = L->i;
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    const double *u = c->u + (size_t)i * PH_NI;
    double *aux = c->aux + (size_t)i * PH_NAUX;
    ph_step_at(y, p, d, u, L->coef, aux, L->t, L->h, c->tc[i], L->nodrug);
}

/* After lane L's step (ph_integrate's loop tail, up to its coarse step): the lane's time
 * and step count. Returns 1 if a coarse step is due now (ph_lane_coarse). */
static inline int ph_lane_step_advance(const ph_cohort *c, ph_lane *L) {
    const int i = L->i;
    L->t = L->last ? L->te : L->t + L->hl;
    c->since[i] += L->h;
    c->n_steps[i]++;
    return L->t - c->tc[i] >= L->hc;
}

/* Lane L's coarse step (reads and restarts its forcing integrals in memory). */
static inline void ph_lane_coarse(const ph_cohort *c, const ph_lane *L) {
    const int i = L->i;
    ph_coarse(c->y + (size_t)i * PH_NS, c->p + (size_t)i * PH_NP, c->d + (size_t)i * PH_ND,
              c->u + (size_t)i * PH_NI, c->aux + (size_t)i * PH_NAUX, &c->tc[i], L->t, L->hc);
}

/* 1 if lane L's interval goes on after its step. */
static inline int ph_lane_goes_on(const ph_lane *L) { return !L->last && L->t < L->te; }

#if PH_HAVE_LANES
/* the lane step and driver, once per instruction set and width (lanes_impl.h) */
typedef long long ph_v4i __attribute__((vector_size(32)));
typedef long long ph_v8i __attribute__((vector_size(64)));
#define PH_W 4
#define PH_VD ph_v4d
#define PH_VI ph_v4i
#define PH_VRATE ph_rate_v4
#define PH_VRATE_NODRUG ph_rate_nodrug_v4
#define PH_LANES_NAME(x) ph_lanes_base##x
#include "lanes_impl.h"
#undef PH_LANES_NAME
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2")
#define PH_LANES_NAME(x) ph_lanes_avx2##x
#include "lanes_impl.h"
#undef PH_LANES_NAME
#pragma GCC pop_options
#endif
#undef PH_W
#undef PH_VD
#undef PH_VI
#undef PH_VRATE
#undef PH_VRATE_NODRUG
#if defined(__x86_64__) && defined(__GNUC__)
#define PH_W 8
#define PH_VD ph_v8d
#define PH_VI ph_v8i
#define PH_VRATE ph_rate_v8
#define PH_VRATE_NODRUG ph_rate_nodrug_v8
#pragma GCC push_options
#pragma GCC target("avx512f")
#define PH_LANES_NAME(x) ph_lanes_avx512##x
#include "lanes_impl.h"
#undef PH_LANES_NAME
#pragma GCC pop_options
#undef PH_W
#undef PH_VD
#undef PH_VI
#undef PH_VRATE
#undef PH_VRATE_NODRUG
#endif
#endif /* PH_HAVE_LANES */

/* How groups of patients are stepped: 0 one patient at a time (ph_advance_one), 1 four
 * lanes on the baseline instruction set, 2 four lanes on AVX2, 3 eight lanes on AVX-512.
 * Set with ph_lanes_set before advancing (never while a cohort advances); the results are
 * the same bit for bit in every mode. */
static int ph_lanes_mode = 0;

static inline int ph_cpu_has(int mode) {
#if PH_HAVE_LANES && defined(__x86_64__) && defined(__GNUC__)
    if (mode == 2) return __builtin_cpu_supports("avx2") != 0;
    if (mode == 3) return __builtin_cpu_supports("avx512f") != 0;
#endif
    return mode == 0 || (mode == 1 && PH_HAVE_LANES);
}

/* 1 on AMD family 19h (Zen 3 and Zen 4): where it has AVX-512 (Zen 4) it executes a
 * 512-bit operation as two 256-bit halves, so eight lanes issue no fewer operations than
 * two sets of four, and measured slower (benchmarks/README.md, Zen 4). */
static inline int ph_cpu_splits_512(void) {
#if PH_HAVE_LANES && defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    /* "AuthenticAMD" in ebx, edx, ecx */
    if (b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned family = ((a >> 8) & 0xfu) + ((a >> 20) & 0xffu);
    return family == 0x19u;
#else
    return 0;
#endif
}

/* Choose a mode (-1: the default); returns the mode now in use. The default is the
 * widest the CPU runs at full width: AVX-512 (not on Zen 4, ph_cpu_splits_512), else
 * AVX2, else one patient at a time: on two doubles per instruction the lanes'
 * transposing costs more than they save (benchmarks/README.md). A mode the CPU lacks
 * gives the default. */
static inline int ph_lanes_set(int mode) {
    const int fallback = (ph_cpu_has(3) && !ph_cpu_splits_512()) ? 3 : ph_cpu_has(2) ? 2 : 0;
    ph_lanes_mode = (mode < 0 || mode > 3 || !ph_cpu_has(mode)) ? fallback : mode;
    return ph_lanes_mode;
}

static inline int ph_lanes_get(void) { return ph_lanes_mode; }

/* Patients stepped together in the current mode. */
static inline int ph_lanes_width(void) {
    return ph_lanes_mode == 3 ? 8 : ph_lanes_mode > 0 ? 4 : 1;
}

/* Advance the patients [i0, i1) to t1, as ph_advance_one does each (out: the cohort's
 * sample rows, n x ns x n_obs, or NULL), on the lanes of the current mode. Returns how
 * many of them have a non-finite state. */
static inline int ph_advance_range(const ph_cohort *c, int i0, int i1, double t1,
                                   const double *samples, int ns, double *out, int exact) {
#if PH_HAVE_LANES
#if defined(__x86_64__) && defined(__GNUC__)
    if (ph_lanes_mode == 3) return ph_lanes_avx512_run(c, i0, i1, t1, samples, ns, out, exact);
    if (ph_lanes_mode == 2) return ph_lanes_avx2_run(c, i0, i1, t1, samples, ns, out, exact);
#endif
    if (ph_lanes_mode == 1) return ph_lanes_base_run(c, i0, i1, t1, samples, ns, out, exact);
#endif
    int bad = 0;
    for (int i = i0; i < i1; i++)
        bad += ph_advance_one(c, i, t1, samples, ns,
                              out ? out + (size_t)i * ns * c->n_obs : NULL, exact) != 0;
    return bad;
}

#endif
