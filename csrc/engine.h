/* The pulsehpg event loop: one patient advanced over exact event times.
 *
 * Between events the model dy/dt = rate(y) - k * y is integrated with the
 * fourth-order exponential time-differencing Runge-Kutta scheme ETDRK4 (Cox &
 * Matthews 2002): the linear clearances k are integrated exactly (a constant
 * input into a fast-clearing pool is exact at any step), so minute-scale
 * kinetics (GnRH, LH) do not force small steps once a pulse has passed.
 * Steps follow a pulse-aligned ladder: after a GnRH pulse or a fast drug bolus
 * the step is h0, then grows with the time since that event (h <= growth *
 * time-since, by powers of two) up to h0 * 2^(n_levels-1). ETD coefficients
 * of the ladder's step sizes are precomputed per patient; only a step cut short
 * by an event boundary computes its own.
 *
 * Events: GnRH pulses (renewal process, drawn at each pulse from the state
 * then), pump boluses, output samples and the end time. An event exactly at the
 * end time is left for the next call. Each patient keeps its own time on its own
 * step ladder: only its own events (pulses, pumps, and doses or changes that the
 * caller applies to it) cut a step short, so its trajectory does not depend on
 * which other patients share the cohort. No Python, no allocation: callable
 * without the GIL from many threads, one patient per call.
 */
#ifndef PULSEHPG_ENGINE_H
#define PULSEHPG_ENGINE_H
#include <math.h>
#include <stdint.h>
#include "model_gen.h"
#include "rng.h"

#define PH_MAX_LEVELS 12
#define PH_NCOEF 6 /* ETD coefficients per state and step size */

typedef struct {
    double *y;                   /* n x NS states */
    const double *p;             /* n x NP parameters (core units) */
    const double *d;             /* n x ND derived quantities (clearances first) */
    const double *u;             /* n x NI infusion rates (dose unit per hour) */
    const double *etab;          /* n x n_levels x NCOEF x NS: ETD coefficients of the ladder */
    double *next_pulse;          /* n: time of the next endogenous GnRH pulse */
    double *since;               /* n: time since the last pulse or fast bolus */
    double *tp;                  /* n: each patient's own time (<= the cohort's) */
    const uint64_t *key;         /* n: random stream key */
    uint64_t *ctr;               /* n: random stream position */
    double *pump_next;           /* n x NI: time of the next pump bolus */
    const double *pump_dose;     /* n x NI: amount per pump bolus */
    const double *pump_interval; /* n x NI: interval between boluses; 0 = pump off */
    long *n_pulses;              /* n: endogenous pulses so far */
    long *n_steps;               /* n: integration steps so far */
    int deterministic;           /* 1: mean intervals and masses, no randomness */
    int n_levels;                /* ladder levels */
    double h0;                   /* smallest step, hours */
    double growth;               /* step <= growth * time since the last fast event */
} ph_cohort;

/* ETDRK4 coefficients (Cox & Matthews 2002) for clearance k and step h:
 * c[0] = e^{-kh}, c[1] = e^{-kh/2}, c[2] = (1 - e^{-kh/2}) / k,
 * c[3] = h f1(z), c[4] = 2 h f2(z), c[5] = h f3(z) with z = -kh. For small |z| the
 * closed forms cancel badly, so their Taylor series are used:
 * f1 = sum (n-2)^2/n! z^(n-3), f2 = sum (n-2)/n! z^(n-3), f3 = sum (4-n)/n! z^(n-3). */
static inline void ph_etd_coeffs(double k, double h, double *c, int stride) {
    const double z = -k * h;
    const double e = exp(z), e2 = exp(0.5 * z);
    c[0] = e;
    c[stride] = e2;
    double f1, f2, f3, phi_half;
    if (fabs(z) < 0.5) {
        /* Horner on 10 terms: truncation below 0.5^10/13! (< 2e-13) */
        static const double C1[10] = {1.0 / 6, 4.0 / 24, 9.0 / 120, 16.0 / 720, 25.0 / 5040,
                                      36.0 / 40320, 49.0 / 362880, 64.0 / 3628800,
                                      81.0 / 39916800, 100.0 / 479001600};
        static const double C2[10] = {1.0 / 6, 2.0 / 24, 3.0 / 120, 4.0 / 720, 5.0 / 5040,
                                      6.0 / 40320, 7.0 / 362880, 8.0 / 3628800,
                                      9.0 / 39916800, 10.0 / 479001600};
        static const double C3[10] = {1.0 / 6, 0.0, -1.0 / 120, -2.0 / 720, -3.0 / 5040,
                                      -4.0 / 40320, -5.0 / 362880, -6.0 / 3628800,
                                      -7.0 / 39916800, -8.0 / 479001600};
        /* phi1(x) = sum x^(n-1)/n!, n = 1.. */
        static const double CP[10] = {1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720,
                                      1.0 / 5040, 1.0 / 40320, 1.0 / 362880, 1.0 / 3628800};
        const double x = 0.5 * z;
        f1 = f2 = f3 = phi_half = 0.0;
        for (int n = 9; n >= 0; n--) {
            f1 = f1 * z + C1[n];
            f2 = f2 * z + C2[n];
            f3 = f3 * z + C3[n];
            phi_half = phi_half * x + CP[n];
        }
    } else {
        const double z3 = z * z * z;
        f1 = (-4.0 - z + e * (4.0 - 3.0 * z + z * z)) / z3;
        f2 = (2.0 + z + e * (-2.0 + z)) / z3;
        f3 = (-4.0 - 3.0 * z - z * z + e * (4.0 - z)) / z3;
        phi_half = (e2 - 1.0) / (0.5 * z);
    }
    c[2 * stride] = 0.5 * h * phi_half;
    c[3 * stride] = h * f1;
    c[4 * stride] = 2.0 * h * f2;
    c[5 * stride] = h * f3;
}

/* Derived quantities and the ladder's ETD coefficients for one patient. */
static inline void ph_prepare(const double *p, double *d, double *etab, double h0, int n_levels) {
    ph_derived(p, d);
    double h = h0;
    for (int l = 0; l < n_levels; l++) {
        double *tab = etab + (size_t)l * PH_NCOEF * PH_NS;
        for (int j = 0; j < PH_NS; j++) ph_etd_coeffs(d[j], h, tab + j, PH_NS);
        h *= 2.0;
    }
}

/* One ETDRK4 step of size h; c holds the coefficient rows (PH_NCOEF x NS). */
static inline void ph_step(double *restrict y, const double *restrict p, const double *restrict d,
                           const double *restrict u, const double *restrict c) {
    const double *E = c, *E2 = c + PH_NS, *Q = c + 2 * PH_NS;
    const double *F1 = c + 3 * PH_NS, *F2 = c + 4 * PH_NS, *F3 = c + 5 * PH_NS;
    double nu[PH_NS], na[PH_NS], nb[PH_NS], nc[PH_NS], a[PH_NS], s[PH_NS];
    ph_rate(y, p, d, u, nu);
    for (int j = 0; j < PH_NS; j++) a[j] = E2[j] * y[j] + Q[j] * nu[j];
    ph_rate(a, p, d, u, na);
    for (int j = 0; j < PH_NS; j++) s[j] = E2[j] * y[j] + Q[j] * na[j];
    ph_rate(s, p, d, u, nb);
    for (int j = 0; j < PH_NS; j++) s[j] = E2[j] * a[j] + Q[j] * (2.0 * nb[j] - nu[j]);
    ph_rate(s, p, d, u, nc);
    for (int j = 0; j < PH_NS; j++)
        y[j] = E[j] * y[j] + F1[j] * nu[j] + F2[j] * (na[j] + nb[j]) + F3[j] * nc[j];
}

/* Integrate one patient's continuous dynamics (state y, time-since-pulse *since) from t
 * to t1 with no events inside; returns the time reached. With stop_short the step that
 * would overshoot t1 is not taken, so the patient stops on its own ladder at or before
 * t1: integrating t0 -> t1 -> t2 this way takes exactly the steps of t0 -> t2, and a
 * patient's trajectory does not depend on the times at which the cohort is stopped for
 * other patients' events, visits or samples. */
static inline double ph_integrate(const ph_cohort *c, int i, double *restrict y, double *since,
                                  double t, double t1, int stop_short, long *steps) {
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    const double *u = c->u + (size_t)i * PH_NI;
    const double *etab = c->etab + (size_t)i * c->n_levels * PH_NCOEF * PH_NS;
    double own[PH_NCOEF * PH_NS];
    while (t < t1) {
        double reach = c->growth * *since;
        int l = 0;
        double hl = c->h0;
        while (l + 1 < c->n_levels && 2.0 * hl <= reach) {
            hl *= 2.0;
            l++;
        }
        double rest = t1 - t;
        if (stop_short ? rest < hl * (1.0 - 1e-12) : rest <= hl * (1.0 + 1e-12)) {
            if (stop_short) break;
            /* last step to the boundary: its own coefficients */
            for (int j = 0; j < PH_NS; j++) ph_etd_coeffs(d[j], rest, own + j, PH_NS);
            ph_step(y, p, d, u, own);
            *since += rest;
            t = t1;
        } else {
            ph_step(y, p, d, u, etab + (size_t)l * PH_NCOEF * PH_NS);
            *since += hl;
            t += hl;
        }
        (*steps)++;
    }
    return t;
}

/* Bring patient i's own trajectory exactly to time t (before a dose or a change of
 * inputs or parameters at t). */
static inline void ph_sync(const ph_cohort *c, int i, double t) {
    if (c->tp[i] < t) {
        c->tp[i] = ph_integrate(c, i, c->y + (size_t)i * PH_NS, &c->since[i], c->tp[i], t, 0,
                                &c->n_steps[i]);
    }
    if (c->tp[i] < t) c->tp[i] = t;
}

/* Patient i's state at time t >= its own time, in ys, leaving its trajectory untouched. */
static inline void ph_peek(const ph_cohort *c, int i, double t, double *ys) {
    const double *y = c->y + (size_t)i * PH_NS;
    for (int j = 0; j < PH_NS; j++) ys[j] = y[j];
    double since = c->since[i];
    long steps = 0;
    ph_integrate(c, i, ys, &since, c->tp[i], t, 0, &steps);
}

/* Observables of patient i at time t (see ph_peek). */
static inline void ph_observe(const ph_cohort *c, int i, double t, double *o) {
    double ys[PH_NS];
    ph_peek(c, i, t, ys);
    ph_outputs(ys, c->p + (size_t)i * PH_NP, c->d + (size_t)i * PH_ND,
               c->u + (size_t)i * PH_NI, o);
}

/* Draw and apply a GnRH pulse at time t; schedule the next one. */
static inline void ph_fire_pulse(const ph_cohort *c, int i, double t) {
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    double g[5];
    ph_pulse_law(y, p, d, g);
    /* deterministic: a regular train (g[4]), so pulse times never carry integration error */
    double interval = c->deterministic ? g[4] : g[0], mass = g[1];
    if (!c->deterministic) {
        const double shape = g[2], cv = g[3];
        interval *= ph_gamma(c->key[i], &c->ctr[i], shape) / shape;
        if (cv > 0.0) {
            const double sig2 = log(1.0 + cv * cv);
            mass *= exp(sqrt(sig2) * ph_normal(c->key[i], &c->ctr[i]) - 0.5 * sig2);
        }
    }
    if (mass > 0.0) ph_apply_pulse(y, p, d, mass);
    c->since[i] = 0.0;
    c->n_pulses[i] += 1;
    c->next_pulse[i] = (p[PH_P_GNRH_ON] > 0.0) ? t + interval : INFINITY;
}

/* Schedule the first pulse of a new cohort at a random phase (mid-interval if deterministic). */
static inline void ph_first_pulse(const ph_cohort *c, int i, double t) {
    const double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    double g[5];
    ph_pulse_law(y, p, d, g);
    double phase = c->deterministic ? 0.5 : ph_uniform(c->key[i], &c->ctr[i]);
    double interval = c->deterministic ? g[4] : g[0];
    c->next_pulse[i] = (p[PH_P_GNRH_ON] > 0.0) ? t + phase * interval : INFINITY;
}

/* Advance patient i from its own time to t1, writing observables at the sample times
 * (ascending, within (t0, t1]) into out (ns x NO). Only the patient's own events (GnRH
 * pulses, pump boluses) split its integration; samples are read off a copy (ph_observe)
 * and the end is reached with stop_short unless exact is set. Returns 0, or -1 if a
 * state became non-finite. */
static inline int ph_advance_one(const ph_cohort *c, int i, double t1, const double *samples,
                                 int ns, double *out, int exact) {
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    double *pump_next = c->pump_next + (size_t)i * PH_NI;
    const double *pump_dose = c->pump_dose + (size_t)i * PH_NI;
    const double *pump_interval = c->pump_interval + (size_t)i * PH_NI;
    double t = c->tp[i];
    int k = 0;
    /* events due exactly at the previous end (left by the previous call) fire first */
    for (;;) {
        double te = t1;
        int kind = 0; /* 0 end, 1 sample, 2 pulse, 3 pump */
        int which = -1;
        if (k < ns && samples[k] <= te) {
            te = samples[k];
            kind = 1;
        }
        if (c->next_pulse[i] < te) {
            te = c->next_pulse[i];
            kind = 2;
        }
        for (int j = 0; j < PH_NI; j++) {
            if (pump_interval[j] > 0.0 && pump_next[j] < te) {
                te = pump_next[j];
                kind = 3;
                which = j;
            }
        }
        if (kind == 1) {
            /* the trajectory goes on its own ladder; the sample is read off a copy */
            if (te > t) t = ph_integrate(c, i, y, &c->since[i], t, te, 1, &c->n_steps[i]);
            c->tp[i] = t;
            ph_observe(c, i, te, out + (size_t)k * PH_NO);
            k++;
            continue;
        }
        if (kind == 0 && !exact) {
            if (te > t) t = ph_integrate(c, i, y, &c->since[i], t, te, 1, &c->n_steps[i]);
            c->tp[i] = t;
            break;
        }
        if (te > t) ph_integrate(c, i, y, &c->since[i], t, te, 0, &c->n_steps[i]);
        if (te > t) t = te;
        c->tp[i] = t;
        if (kind == 0) break;
        if (kind == 2) {
            ph_fire_pulse(c, i, t);
        } else {
            ph_dose(y, p, d, which, pump_dose[which]);
            if (PH_DRUG_FAST[which]) c->since[i] = 0.0;
            pump_next[which] += pump_interval[which];
        }
    }
    for (int j = 0; j < PH_NS; j++)
        if (!isfinite(y[j])) return -1;
    return 0;
}

#endif
