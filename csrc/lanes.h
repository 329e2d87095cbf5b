/* Four patients advanced together, one per lane of a vector register.
 *
 * Each lane runs ph_advance_one's event loop for its own patient: its own events, its
 * own step ladder, its own cut steps. Only the ETDRK4 step itself is shared: when all
 * four lanes take a step in the same mode (all without drugs, or all with), one step on
 * ph_v4d lanes does the four patients' arithmetic, with the same operations in the same
 * order as ph_step_n, so every lane's result is its scalar result bit for bit (no FMA
 * contraction: build with -ffp-contract=off). Otherwise the lanes that step take scalar
 * steps. Events, coarse steps, samples and cut-step coefficients stay scalar.
 *
 * The lane step is compiled twice (PH_LANES_DEFINE): for the baseline instruction set
 * (SSE2 on x86-64: two doubles per instruction) and, on x86-64, for AVX2 (four), chosen
 * at run time by ph_advance_group.
 */
#ifndef PULSEHPG_LANES_H
#define PULSEHPG_LANES_H
#include "engine.h"

#define PH_LANES 4

typedef struct {
    int i;          /* patient */
    int active;     /* 1 while the patient has not reached the end of this call */
    int k;          /* next sample */
    int kind;       /* event ending the current interval: 0 end, 1 sample, 2 pulse, 3 pump */
    int which;      /* pump's drug */
    int stop_short; /* interval ends on the ladder at or before te (samples, inexact end) */
    int nodrug;     /* decided when the interval starts, as in ph_integrate */
    int last;       /* the step being taken is cut short to te */
    double t, te, hc, h, hl;
    const double *coef;
    double own[PH_NCOEF * PH_NF];
    double cv0[PH_NCPL + 1], cvh[PH_NCPL + 1], cv1[PH_NCPL + 1];
} ph_lane;

/* Find lane L's next interval to integrate, handling events due now on the way (as
 * ph_advance_one's loop does). Returns 1 with an interval set, 0 when the lane is done. */
static inline int ph_lane_plan(const ph_cohort *c, ph_lane *L, double t1, const double *samples,
                               int ns, double *out, int exact) {
    const int i = L->i;
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    double *pump_next = c->pump_next + (size_t)i * PH_NI;
    const double *pump_dose = c->pump_dose + (size_t)i * PH_NI;
    const double *pump_interval = c->pump_interval + (size_t)i * PH_NI;
    for (;;) {
        double te = t1;
        int kind = 0, which = -1;
        if (L->k < ns && samples[L->k] <= te) {
            te = samples[L->k];
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
        L->te = te;
        L->kind = kind;
        L->which = which;
        L->stop_short = kind == 1 || (kind == 0 && !exact);
        if (te > L->t) {
            L->nodrug = ph_drugs_off(y, c->u + (size_t)i * PH_NI);
            L->hc = ph_coarse_cap(c, p, d);
            return 1;
        }
        /* the event is due now */
        c->tp[i] = L->t;
        if (kind == 1) {
            ph_observe(c, i, te, out + (size_t)L->k * PH_NO);
            L->k++;
            continue;
        }
        if (kind == 0) {
            if (exact)
                ph_coarse(y, p, d, c->u + (size_t)i * PH_NI, c->aux + (size_t)i * PH_NAUX,
                          &c->tc[i], L->t, ph_coarse_cap(c, p, d));
            return 0;
        }
        if (kind == 2) {
            ph_fire_pulse(c, i, L->t);
        } else {
            ph_dose(y, p, d, which, pump_dose[which]);
            if (PH_DRUG_FAST[which]) c->since[i] = 0.0;
            pump_next[which] += pump_interval[which];
        }
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
        ph_observe(c, i, L->te, out + (size_t)L->k * PH_NO);
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
    const double since = c->since[i];
    const double reach = c->growth * since;
    int l = 0;
    double hl = c->h0;
    while (l + 1 < c->n_levels && 2.0 * hl <= reach) {
        hl *= 2.0;
        l++;
    }
    const double rest = L->te - L->t;
    const int last = L->stop_short ? rest < hl * (1.0 - 1e-12) : rest <= hl * (1.0 + 1e-12);
    if (last && L->stop_short) return 0;
    const double h = last ? rest : hl;
    const double *y = c->y + (size_t)i * PH_NS;
    const double *aux = c->aux + (size_t)i * PH_NAUX;
    const double tc = c->tc[i];
    ph_coupled_at(y, aux, L->t - tc, L->cv0);
    ph_coupled_at(y, aux, L->t + 0.5 * h - tc, L->cvh);
    ph_coupled_at(y, aux, L->t + h - tc, L->cv1);
    const double *d = c->d + (size_t)i * PH_ND;
    L->coef = c->etab + ((size_t)i * c->n_levels + l) * PH_NCOEF * PH_NF;
    if (last) {
        for (int j = 0; j < (L->nodrug ? PH_NE : PH_NF); j++)
            ph_etd_coeffs(d[j], rest, L->own + j, PH_NF);
        L->coef = L->own;
    }
    L->last = last;
    L->h = h;
    L->hl = hl;
    return 1;
}

/* The scalar step of one lane (its patient's ph_step_n). */
static inline void ph_lane_step_scalar(const ph_cohort *c, ph_lane *L) {
    const int i = L->i;
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    const double *u = c->u + (size_t)i * PH_NI;
    double *aux = c->aux + (size_t)i * PH_NAUX;
    const double s0 = L->t - c->tc[i];
    if (L->nodrug)
        ph_step_n(y, p, d, u, L->coef, L->h, L->cv0, L->cvh, L->cv1, s0, aux, PH_NE, 1);
    else
        ph_step_n(y, p, d, u, L->coef, L->h, L->cv0, L->cvh, L->cv1, s0, aux, PH_NF, 0);
}

/* After lane L's step (ph_integrate's loop tail). Returns 1 if the interval goes on. */
static inline int ph_lane_step_done(const ph_cohort *c, ph_lane *L) {
    const int i = L->i;
    L->t = L->last ? L->te : L->t + L->hl;
    c->since[i] += L->h;
    c->n_steps[i]++;
    if (L->t - c->tc[i] >= L->hc)
        ph_coarse(c->y + (size_t)i * PH_NS, c->p + (size_t)i * PH_NP, c->d + (size_t)i * PH_ND,
                  c->u + (size_t)i * PH_NI, c->aux + (size_t)i * PH_NAUX, &c->tc[i], L->t,
                  L->hc);
    return !L->last && L->t < L->te;
}

#if PH_HAVE_LANES
/* ph_step_n of the four lanes' patients at once; the lanes' parameters, derived
 * quantities and inputs come transposed (pT[k] holds parameter k of the four). */
#define PH_LANES_DEFINE(NAME)                                                                  \
    static inline __attribute__((always_inline)) void NAME##_step(                             \
        const ph_cohort *c, ph_lane *lanes, const ph_v4d *restrict pT,                         \
        const ph_v4d *restrict dT, const ph_v4d *restrict uT, const int n, const int nodrug) { \
        ph_v4d y[PH_NF], acc[2 * PH_NFRC], E[PH_NF], E2[PH_NF], Q[PH_NF], F1[PH_NF],          \
            F2[PH_NF], F3[PH_NF], cv0[PH_NCPL + 1], cvh[PH_NCPL + 1], cv1[PH_NCPL + 1];        \
        double *ys[PH_LANES], *as[PH_LANES];                                                   \
        const double *cl[PH_LANES];                                                            \
        ph_v4d h, s0;                                                                          \
        for (int l = 0; l < PH_LANES; l++) {                                                   \
            ys[l] = c->y + (size_t)lanes[l].i * PH_NS;                                         \
            as[l] = c->aux + (size_t)lanes[l].i * PH_NAUX;                                     \
            cl[l] = lanes[l].coef;                                                             \
            h[l] = lanes[l].h;                                                                 \
            s0[l] = lanes[l].t - c->tc[lanes[l].i];                                            \
        }                                                                                      \
        for (int j = 0; j < n; j++) {                                                          \
            y[j] = (ph_v4d){ys[0][j], ys[1][j], ys[2][j], ys[3][j]};                           \
            E[j] = (ph_v4d){cl[0][j], cl[1][j], cl[2][j], cl[3][j]};                           \
            E2[j] = (ph_v4d){cl[0][PH_NF + j], cl[1][PH_NF + j], cl[2][PH_NF + j],             \
                             cl[3][PH_NF + j]};                                                \
            Q[j] = (ph_v4d){cl[0][2 * PH_NF + j], cl[1][2 * PH_NF + j], cl[2][2 * PH_NF + j],  \
                            cl[3][2 * PH_NF + j]};                                             \
            F1[j] = (ph_v4d){cl[0][3 * PH_NF + j], cl[1][3 * PH_NF + j], cl[2][3 * PH_NF + j], \
                             cl[3][3 * PH_NF + j]};                                            \
            F2[j] = (ph_v4d){cl[0][4 * PH_NF + j], cl[1][4 * PH_NF + j], cl[2][4 * PH_NF + j], \
                             cl[3][4 * PH_NF + j]};                                            \
            F3[j] = (ph_v4d){cl[0][5 * PH_NF + j], cl[1][5 * PH_NF + j], cl[2][5 * PH_NF + j], \
                             cl[3][5 * PH_NF + j]};                                            \
        }                                                                                      \
        for (int k = 0; k < 2 * PH_NFRC; k++)                                                  \
            acc[k] = (ph_v4d){as[0][k], as[1][k], as[2][k], as[3][k]};                         \
        for (int k = 0; k < PH_NCPL; k++) {                                                    \
            cv0[k] = (ph_v4d){lanes[0].cv0[k], lanes[1].cv0[k], lanes[2].cv0[k],               \
                              lanes[3].cv0[k]};                                                \
            cvh[k] = (ph_v4d){lanes[0].cvh[k], lanes[1].cvh[k], lanes[2].cvh[k],               \
                              lanes[3].cvh[k]};                                                \
            cv1[k] = (ph_v4d){lanes[0].cv1[k], lanes[1].cv1[k], lanes[2].cv1[k],               \
                              lanes[3].cv1[k]};                                                \
        }                                                                                      \
        ph_v4d nu[PH_NF], na[PH_NF], nb[PH_NF], nc[PH_NF], a[PH_NF], s[PH_NF];                 \
        ph_v4d f0[PH_NFRC + 1], fc[PH_NFRC + 1];                                               \
        if (nodrug) ph_rate_nodrug_v(y, pT, dT, uT, cv0, nu, f0, 1);                           \
        else ph_rate_v(y, pT, dT, uT, cv0, nu, f0, 1);                                         \
        for (int j = 0; j < n; j++) a[j] = E2[j] * y[j] + Q[j] * nu[j];                        \
        if (nodrug) ph_rate_nodrug_v(a, pT, dT, uT, cvh, na, NULL, 0);                         \
        else ph_rate_v(a, pT, dT, uT, cvh, na, NULL, 0);                                       \
        for (int j = 0; j < n; j++) s[j] = E2[j] * y[j] + Q[j] * na[j];                        \
        if (nodrug) ph_rate_nodrug_v(s, pT, dT, uT, cvh, nb, NULL, 0);                         \
        else ph_rate_v(s, pT, dT, uT, cvh, nb, NULL, 0);                                       \
        for (int j = 0; j < n; j++) s[j] = E2[j] * a[j] + Q[j] * (2.0 * nb[j] - nu[j]);        \
        if (nodrug) ph_rate_nodrug_v(s, pT, dT, uT, cv1, nc, fc, 1);                           \
        else ph_rate_v(s, pT, dT, uT, cv1, nc, fc, 1);                                         \
        for (int j = 0; j < n; j++)                                                            \
            y[j] = E[j] * y[j] + F1[j] * nu[j] + F2[j] * (na[j] + nb[j]) + F3[j] * nc[j];      \
        const ph_v4d w = 0.5 * h, s1 = s0 + h;                                                 \
        for (int k = 0; k < PH_NFRC; k++) {                                                    \
            acc[k] += w * (f0[k] + fc[k]);                                                     \
            acc[PH_NFRC + k] += w * (s0 * f0[k] + s1 * fc[k]);                                 \
        }                                                                                      \
        for (int l = 0; l < PH_LANES; l++) {                                                   \
            for (int j = 0; j < n; j++) ys[l][j] = y[j][l];                                    \
            for (int k = 0; k < 2 * PH_NFRC; k++) as[l][k] = acc[k][l];                        \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    static int NAME(const ph_cohort *c, const int *idx, double t1, const double *samples,     \
                    int ns, double *const *outs, int exact) {                                  \
        ph_lane lanes[PH_LANES];                                                               \
        ph_v4d pT[PH_NP], dT[PH_ND], uT[PH_NI];                                                \
        for (int l = 0; l < PH_LANES; l++) {                                                   \
            const int i = idx[l];                                                              \
            for (int k = 0; k < PH_NP; k++) pT[k][l] = c->p[(size_t)i * PH_NP + k];            \
            for (int k = 0; k < PH_ND; k++) dT[k][l] = c->d[(size_t)i * PH_ND + k];            \
            for (int k = 0; k < PH_NI; k++) uT[k][l] = c->u[(size_t)i * PH_NI + k];            \
            lanes[l].i = i;                                                                    \
            lanes[l].k = 0;                                                                    \
            lanes[l].t = c->tp[i];                                                             \
            lanes[l].active = ph_lane_plan(c, &lanes[l], t1, samples, ns, outs[l], exact);     \
        }                                                                                      \
        for (;;) {                                                                             \
            int stepping = 0, nodrug = 0;                                                      \
            for (int l = 0; l < PH_LANES; l++) {                                               \
                ph_lane *L = &lanes[l];                                                        \
                while (L->active && !ph_lane_step_setup(c, L))                                 \
                    L->active = ph_lane_finish(c, L, t1, samples, ns, outs[l], exact);         \
                if (L->active) {                                                               \
                    stepping++;                                                                \
                    nodrug += L->nodrug;                                                       \
                }                                                                              \
            }                                                                                  \
            if (!stepping) break;                                                              \
            if (stepping == PH_LANES && nodrug == PH_LANES)                                    \
                NAME##_step(c, lanes, pT, dT, uT, PH_NE, 1);                                   \
            else if (stepping == PH_LANES && nodrug == 0)                                      \
                NAME##_step(c, lanes, pT, dT, uT, PH_NF, 0);                                   \
            else                                                                               \
                for (int l = 0; l < PH_LANES; l++)                                             \
                    if (lanes[l].active) ph_lane_step_scalar(c, &lanes[l]);                    \
            for (int l = 0; l < PH_LANES; l++) {                                               \
                ph_lane *L = &lanes[l];                                                        \
                if (L->active && !ph_lane_step_done(c, L))                                     \
                    L->active = ph_lane_finish(c, L, t1, samples, ns, outs[l], exact);         \
            }                                                                                  \
        }                                                                                      \
        int bad = 0;                                                                           \
        for (int l = 0; l < PH_LANES; l++) {                                                   \
            const double *y = c->y + (size_t)idx[l] * PH_NS;                                   \
            for (int j = 0; j < PH_NS; j++)                                                    \
                if (!isfinite(y[j])) {                                                         \
                    bad++;                                                                     \
                    break;                                                                     \
                }                                                                              \
        }                                                                                      \
        return bad;                                                                            \
    }

PH_LANES_DEFINE(ph_lanes_base)
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2")
PH_LANES_DEFINE(ph_lanes_avx2)
#pragma GCC pop_options

#endif
#endif /* PH_HAVE_LANES */

/* Advance the patients idx[0..3] to t1 (as ph_advance_one does each; outs[l]: patient
 * idx[l]'s sample rows). Returns how many of them have a non-finite state. */
static inline int ph_advance_group(const ph_cohort *c, const int *idx, double t1,
                                   const double *samples, int ns, double *const *outs,
                                   int exact) {
#if PH_HAVE_LANES
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2")) return ph_lanes_avx2(c, idx, t1, samples, ns, outs, exact);

#endif
    return ph_lanes_base(c, idx, t1, samples, ns, outs, exact);
#else
    int bad = 0;
    for (int l = 0; l < PH_LANES; l++)
        bad += ph_advance_one(c, idx[l], t1, samples, ns, outs[l], exact) != 0;
    return bad;

#endif
}


/* Patients i0..i0+3 of a cohort whose sample rows are out (n x ns x NO, or NULL). */
static inline int ph_advance_block(const ph_cohort *c, int i0, double t1, const double *samples,
                                   int ns, double *out, int exact) {
    int idx[PH_LANES];
    double *outs[PH_LANES];
    for (int l = 0; l < PH_LANES; l++) {
        idx[l] = i0 + l;
        outs[l] = out ? out + (size_t)(i0 + l) * ns * PH_NO : NULL;
    }
    return ph_advance_group(c, idx, t1, samples, ns, outs, exact);
}

#endif
