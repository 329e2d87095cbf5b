/* The pulsehpg event loop: one patient advanced over exact event times.
 *
 * Between events the model dy/dt = rate(y) - k * y is integrated with a
 * fourth-order Lawson (integrating-factor) Runge-Kutta scheme: the linear
 * clearances k are applied exactly through exponentials, so minute-scale
 * kinetics (GnRH, LH) do not force small steps once a pulse has passed.
 * Steps follow a pulse-aligned ladder: after a GnRH pulse or a fast drug bolus
 * the step is h0, then grows with the time since that event (h <= growth *
 * time-since, by powers of two) up to h0 * 2^(n_levels-1). Exponential factors
 * of the ladder's step sizes are precomputed per patient; only a step cut short
 * by an event boundary computes its own.
 *
 * Events: GnRH pulses (renewal process, drawn at each pulse from the state
 * then), pump boluses, output samples and the end time. An event exactly at the
 * end time is left for the next call. No Python, no allocation: callable
 * without the GIL from many threads, one patient per call.
 */
#ifndef PULSEHPG_ENGINE_H
#define PULSEHPG_ENGINE_H
#include <math.h>
#include <stdint.h>
#include "model_gen.h"
#include "rng.h"

#define PH_MAX_LEVELS 12

typedef struct {
    double *y;                   /* n x NS states */
    const double *p;             /* n x NP parameters (core units) */
    const double *d;             /* n x ND derived quantities (clearances first) */
    const double *u;             /* n x NI infusion rates (dose unit per hour) */
    const double *etab;          /* n x n_levels x 2 x NS: exp(-k h), exp(-k h / 2) */
    double *next_pulse;          /* n: time of the next endogenous GnRH pulse */
    double *since;               /* n: time since the last pulse or fast bolus */
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

/* Derived quantities and ladder exponentials for one patient. */
static inline void ph_prepare(const double *p, double *d, double *etab, double h0, int n_levels) {
    ph_derived(p, d);
    double h = h0;
    for (int l = 0; l < n_levels; l++) {
        double *ef = etab + (size_t)l * 2 * PH_NS;
        for (int j = 0; j < PH_NS; j++) {
            ef[j] = exp(-d[j] * h);
            ef[PH_NS + j] = exp(-d[j] * 0.5 * h);
        }
        h *= 2.0;
    }
}

/* One Lawson-RK4 step of size h with full (ef) and half (eh) step factors. */
static inline void ph_step(double *restrict y, const double *restrict p, const double *restrict d,
                           const double *restrict u, const double *restrict ef,
                           const double *restrict eh, double h) {
    double k1[PH_NS], k2[PH_NS], k3[PH_NS], k4[PH_NS], ys[PH_NS];
    const double h2 = 0.5 * h, h6 = h / 6.0;
    ph_rate(y, p, d, u, k1);
    for (int j = 0; j < PH_NS; j++) ys[j] = eh[j] * (y[j] + h2 * k1[j]);
    ph_rate(ys, p, d, u, k2);
    for (int j = 0; j < PH_NS; j++) ys[j] = eh[j] * y[j] + h2 * k2[j];
    ph_rate(ys, p, d, u, k3);
    for (int j = 0; j < PH_NS; j++) ys[j] = ef[j] * y[j] + h * eh[j] * k3[j];
    ph_rate(ys, p, d, u, k4);
    for (int j = 0; j < PH_NS; j++)
        y[j] = ef[j] * y[j] + h6 * (ef[j] * k1[j] + 2.0 * eh[j] * (k2[j] + k3[j]) + k4[j]);
}

/* Integrate patient i's continuous dynamics from t to t1 (no events inside). */
static inline void ph_integrate(const ph_cohort *c, int i, double t, double t1) {
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    const double *u = c->u + (size_t)i * PH_NI;
    const double *etab = c->etab + (size_t)i * c->n_levels * 2 * PH_NS;
    double ef[PH_NS], eh[PH_NS];
    long steps = 0;
    while (t < t1) {
        double reach = c->growth * c->since[i];
        int l = 0;
        double hl = c->h0;
        while (l + 1 < c->n_levels && 2.0 * hl <= reach) {
            hl *= 2.0;
            l++;
        }
        double rest = t1 - t;
        if (rest <= hl * (1.0 + 1e-12)) {
            /* last step to the boundary: its own exponentials */
            for (int j = 0; j < PH_NS; j++) {
                ef[j] = exp(-d[j] * rest);
                eh[j] = exp(-d[j] * 0.5 * rest);
            }
            ph_step(y, p, d, u, ef, eh, rest);
            c->since[i] += rest;
            t = t1;
        } else {
            const double *tab = etab + (size_t)l * 2 * PH_NS;
            ph_step(y, p, d, u, tab, tab + PH_NS, hl);
            c->since[i] += hl;
            t += hl;
        }
        steps++;
    }
    c->n_steps[i] += steps;
}

/* Draw and apply a GnRH pulse at time t; schedule the next one. */
static inline void ph_fire_pulse(const ph_cohort *c, int i, double t) {
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    double g[4];
    ph_pulse_law(y, p, d, g);
    double interval = g[0], mass = g[1];
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
    double g[4];
    ph_pulse_law(y, p, d, g);
    double phase = c->deterministic ? 0.5 : ph_uniform(c->key[i], &c->ctr[i]);
    c->next_pulse[i] = (p[PH_P_GNRH_ON] > 0.0) ? t + phase * g[0] : INFINITY;
}

/* Advance patient i from t0 to t1, writing observables at the sample times
 * (ascending, within (t0, t1]) into out (ns x NO). Returns 0, or -1 if a state
 * became non-finite. */
static inline int ph_advance_one(const ph_cohort *c, int i, double t0, double t1,
                                 const double *samples, int ns, double *out) {
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    const double *u = c->u + (size_t)i * PH_NI;
    double *pump_next = c->pump_next + (size_t)i * PH_NI;
    const double *pump_dose = c->pump_dose + (size_t)i * PH_NI;
    const double *pump_interval = c->pump_interval + (size_t)i * PH_NI;
    double t = t0;
    int k = 0;
    /* events due exactly at t0 (left by the previous call) fire first */
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
        if (te < t) te = t; /* an event left exactly at t0 */
        if (te > t) ph_integrate(c, i, t, te);
        t = te;
        if (kind == 0) break;
        if (kind == 1) {
            ph_outputs(y, p, d, u, out + (size_t)k * PH_NO);
            k++;
        } else if (kind == 2) {
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
