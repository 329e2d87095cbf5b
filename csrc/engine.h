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
 * Multirate: the coarse states (the last NS - NF: spermatogenic chain, epididymis,
 * Sertoli and spermatogonial pools, tubular androgen, inhibin B) change over hours
 * to months and do not act on the pulse-scale dynamics through any fast input. The
 * fast loop steps only the first NF states; it integrates the coarse rates' fast
 * inputs (forcing terms) over each step with the stage values, and every coarse_step
 * hours (at the end of a fast step) one ETDRK4 step moves the coarse states over
 * the elapsed time with those inputs at their exact averages. Coarse states the fast
 * rates read (inhibin B) are extrapolated linearly from their last coarse step.
 * Coarse steps also end wherever the patient's inputs or parameters change (sync),
 * at exact ends, and on the copies samples are read off, so they follow only the
 * patient's own events.
 *
 * Events: GnRH pulses (renewal process, drawn at each pulse from the state
 * then), pump boluses, output samples and the end time. An event exactly at the
 * end time is left for the next call. Each patient keeps its own time on its own
 * step ladder: only its own events (pulses, pumps, and doses or changes that the
 * caller applies to it) cut a step short, so its trajectory does not depend on
 * which other patients share the cohort. No Python, no allocation: callable
 * without the GIL from many threads, one patient per call. lanes.h runs this same loop
 * for four or eight patients at once, with their steps on the lanes of a vector register.
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
    double *tc;                  /* n: time the coarse states are at (<= tp) */
    double *aux;                 /* n x PH_NAUX: forcing moments since tc, coupled slopes */
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
    double coarse_step;          /* hours between coarse steps (at most) */
    int sample_coarse;           /* 0: samples skip the coarse states (none is recorded) */
    const int *obs;              /* n_obs: the observables a sample row holds, in order */
    int n_obs;
} ph_cohort;

/* per patient: forcing integrals since tc (zeroth, then first moments in time since tc),
 * then the slopes and curvatures of the coupled coarse states */
#define PH_NAUX (2 * PH_NFRC + 2 * PH_NCPL + 1)
#define PH_AUX_SLOPE (2 * PH_NFRC)
#define PH_AUX_CURV (2 * PH_NFRC + PH_NCPL)

/* A function compiled twice, for AVX2 and for the baseline instruction set, the one for
 * the CPU chosen when the module loads (an ifunc: GCC on glibc). Without FMA contraction
 * (-ffp-contract=off) both give the same bits: vector instructions do the same IEEE
 * operations in the same order. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define PH_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PH_CLONES
#endif

/* Four doubles (and four 64-bit integers) for the coefficient loops below: GCC's generic
 * vectors, one AVX2 register or two SSE2 ones (their own type: model_gen.h's ph_v4d exists
 * only for a model with a lane form). IEEE arithmetic without FMA contraction
 * (-ffp-contract=off) gives the same bits on vectors as on scalars. */
typedef double ph_etd_v __attribute__((vector_size(32)));
typedef int64_t ph_etd_i __attribute__((vector_size(32)));
#if defined(__GNUC__) && !defined(__clang__)
/* the helpers below return these vectors, and are always inlined: no call, so no ABI to change
 * (GCC would warn, for the baseline clone, that the ABI of such a return differs from AVX's) */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#define PH_ETD_SPLAT(x) ((ph_etd_v){(x), (x), (x), (x)})

/* where mask (all ones or all zeros per element) then a else b */
static inline __attribute__((always_inline)) ph_etd_v ph_etd_select(ph_etd_i mask, ph_etd_v a,
                                                                    ph_etd_v b) {
    return (ph_etd_v)((mask & (ph_etd_i)a) | (~mask & (ph_etd_i)b));
}

/* c[0] + c[1] x + ... + c[13] x^13 by Estrin's scheme (x2 = x^2, x4 = x^4, x8 = x^8):
 * the same terms as Horner's rule in a tree four levels deep instead of a chain of 13
 * steps, so that the latency of one coefficient set is short. */
static inline __attribute__((always_inline)) ph_etd_v ph_poly14(const double *c, ph_etd_v x,
                                                                ph_etd_v x2, ph_etd_v x4,
                                                                ph_etd_v x8) {
    const ph_etd_v a0 = c[0] + c[1] * x, a1 = c[2] + c[3] * x, a2 = c[4] + c[5] * x;
    const ph_etd_v a3 = c[6] + c[7] * x, a4 = c[8] + c[9] * x, a5 = c[10] + c[11] * x;
    const ph_etd_v a6 = c[12] + c[13] * x;
    const ph_etd_v b0 = a0 + a1 * x2, b1 = a2 + a3 * x2, b2 = a4 + a5 * x2;
    return (b0 + b1 * x4) + (b2 + a6 * x4) * x8;
}

/* e^x for -708 <= x <= 0 (x below is taken as -708: e^-708 is 3e-308, as good as zero
 * for a decay factor), four at a time without calls: x = n ln2 + r with |r| <= ln2/2
 * (n ln2 in two parts so that n * LN2_HI is exact), e^r by its Taylor series to r^13
 * (truncation below 4e-18; Estrin's scheme), times 2^n made from its bits. */
static inline __attribute__((always_inline)) ph_etd_v ph_exp_neg(ph_etd_v x) {
    const double shift = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
    static const double INV_FACT[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120,
                                        1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
                                        1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
                                        1.0 / 6227020800};
    x = ph_etd_select(x > -708.0, x, PH_ETD_SPLAT(-708.0));
    const ph_etd_v t = x * 1.44269504088896338700 + shift;
    const ph_etd_v n = t - shift;
    const ph_etd_v r = (x - n * LN2_HI) - n * LN2_LO;
    const ph_etd_v r2 = r * r, r4 = r2 * r2;
    const ph_etd_v q = ph_poly14(INV_FACT, r, r2, r4, r4 * r4);
    int64_t si;
    __builtin_memcpy(&si, &shift, 8);
    const ph_etd_i bits = ((ph_etd_i)t - si + 1023) << 52; /* 2^n */
    return q * (ph_etd_v)bits;
}

/* ETDRK4 coefficients (Cox & Matthews 2002) for the clearances k[0..n) and step h, row r
 * of state j in c[r * stride + j]:
 * row 0 = e^{-kh}, 1 = e^{-kh/2}, 2 = (1 - e^{-kh/2}) / k,
 * 3 = h f1(z), 4 = 2 h f2(z), 5 = h f3(z) with z = -kh. For small |z| the
 * closed forms cancel badly, so their Taylor series are used:
 * f1 = sum (n-2)^2/n! z^(n-3), f2 = sum (n-2)/n! z^(n-3), f3 = sum (4-n)/n! z^(n-3).
 * Four states at a time, each form computed only where one of the four needs it: a step
 * cut short (at every pulse) computes a set for each of its states. */
PH_CLONES static void ph_etd_rows(const double *restrict k, int n, double h,
                                  double *restrict c, int stride) {
    /* 14 terms: truncation below 0.5^14 (n-2)^2/n! at n = 17 (< 4e-17) */
    static const double C1[14] = {
        1.0 / 6, 4.0 / 24, 9.0 / 120,
        16.0 / 720, 25.0 / 5040, 36.0 / 40320,
        49.0 / 362880, 64.0 / 3628800, 81.0 / 39916800,
        100.0 / 479001600, 121.0 / 6227020800, 144.0 / 87178291200,
        169.0 / 1307674368000, 196.0 / 20922789888000};
    static const double C2[14] = {
        1.0 / 6, 2.0 / 24, 3.0 / 120,
        4.0 / 720, 5.0 / 5040, 6.0 / 40320,
        7.0 / 362880, 8.0 / 3628800, 9.0 / 39916800,
        10.0 / 479001600, 11.0 / 6227020800, 12.0 / 87178291200,
        13.0 / 1307674368000, 14.0 / 20922789888000};
    static const double C3[14] = {
        1.0 / 6, 0.0, -1.0 / 120,
        -2.0 / 720, -3.0 / 5040, -4.0 / 40320,
        -5.0 / 362880, -6.0 / 3628800, -7.0 / 39916800,
        -8.0 / 479001600, -9.0 / 6227020800, -10.0 / 87178291200,
        -11.0 / 1307674368000, -12.0 / 20922789888000};
    /* phi1(z/2) = sum (z/2)^(n-1)/n!, n = 1.., as a series in z */
    static const double CP[14] = {
        1.0 / 1, 1.0 / 4, 1.0 / 24,
        1.0 / 192, 1.0 / 1920, 1.0 / 23040,
        1.0 / 322560, 1.0 / 5160960, 1.0 / 92897280,
        1.0 / 1857945600, 1.0 / 40874803200, 1.0 / 980995276800,
        1.0 / 25505877196800, 1.0 / 714164561510400};
    for (int j0 = 0; j0 < n; j0 += 4) {
        ph_etd_v kv = PH_ETD_SPLAT(0.0);
        for (int l = 0; l < 4 && j0 + l < n; l++) kv[l] = k[j0 + l];
        const ph_etd_v z = -kv * h, x = 0.5 * z;
        const ph_etd_v e2 = ph_exp_neg(x), e = e2 * e2;
        const ph_etd_i small = (z > -0.5) & (z < 0.5);
        int n_small = 0;
        for (int l = 0; l < 4; l++) n_small += small[l] != 0;
        /* phi1(z/2), f1, f2, f3: each form only where some state needs it (slow states,
         * most of them, need no division) */
        ph_etd_v qp, q1, q2, q3;
        if (n_small > 0) {
            const ph_etd_v z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
            qp = ph_poly14(CP, z, z2, z4, z8);
            q1 = ph_poly14(C1, z, z2, z4, z8);
            q2 = ph_poly14(C2, z, z2, z4, z8);
            q3 = ph_poly14(C3, z, z2, z4, z8);
        }
        if (n_small < 4) {
            const ph_etd_v zz = ph_etd_select(small, PH_ETD_SPLAT(-1.0), z); /* away from 0/0 */
            const ph_etd_v z3 = zz * zz * zz;
            const ph_etd_v c1 = (-4.0 - zz + e * (4.0 - 3.0 * zz + zz * zz)) / z3;
            const ph_etd_v c2 = (2.0 + zz + e * (-2.0 + zz)) / z3;
            const ph_etd_v c3 = (-4.0 - 3.0 * zz - zz * zz + e * (4.0 - zz)) / z3;
            const ph_etd_v cp = (e2 - 1.0) / (0.5 * zz);
            if (n_small > 0) {
                qp = ph_etd_select(small, qp, cp);
                q1 = ph_etd_select(small, q1, c1);
                q2 = ph_etd_select(small, q2, c2);
                q3 = ph_etd_select(small, q3, c3);
            } else {
                qp = cp, q1 = c1, q2 = c2, q3 = c3;
            }
        }
        const ph_etd_v row[PH_NCOEF] = {e, e2, 0.5 * h * qp, h * q1, 2.0 * h * q2, h * q3};
        for (int r = 0; r < PH_NCOEF; r++)
            for (int l = 0; l < 4 && j0 + l < n; l++) c[r * stride + j0 + l] = row[r][l];
    }
}

/* Derived quantities and the ladder's ETD coefficients (fast states) for one patient. */
static inline void ph_prepare(const double *p, double *d, double *etab, double h0, int n_levels) {
    ph_derived(p, d);
    double h = h0;
    for (int l = 0; l < n_levels; l++) {
        double *tab = etab + (size_t)l * PH_NCOEF * PH_NF;
        ph_etd_rows(d, PH_NF, h, tab, PH_NF);
        h *= 2.0;
    }
}

/* Coupled coarse states dt after their time, extrapolated to second order with the
 * slope at their time and the curvature from the change of slope over the last
 * coarse step. Never below zero. */
static inline void ph_coupled_at(const double *restrict y, const double *restrict aux, double dt,
                                 double *restrict cv) {
    for (int k = 0; k < PH_NCPL; k++) {
        const double v = y[PH_CPL[k]]
                         + dt * (aux[PH_AUX_SLOPE + k] + 0.5 * dt * aux[PH_AUX_CURV + k]);
        cv[k] = v > 0.0 ? v : 0.0;
    }
}

/* One ETDRK4 step of size h of the fast states [0, n); c holds the coefficient rows
 * (PH_NCOEF x NF). cv0, cvh, cv1: coupled coarse states at the start, middle and end.
 * The forcing terms' integrals over the step, plain and weighted by the time since the
 * coarse states' time (s0 at the start), go into acc: trapezoidal rule on the first and
 * last stage (they vary over hours to days; the middle stages skip them).
 * nodrug (with n = NE): every drug state and input is zero and stays zero, so only the
 * states before them are stepped, with the right-hand side that leaves drugs out. */
static inline __attribute__((always_inline)) void
ph_step_n(double *restrict y, const double *restrict p, const double *restrict d,
          const double *restrict u, const double *restrict c, double h, const double *cv0,
          const double *cvh, const double *cv1, double s0, double *restrict acc, const int n,
          const int nodrug) {
    const double *E = c, *E2 = c + PH_NF, *Q = c + 2 * PH_NF;
    const double *F1 = c + 3 * PH_NF, *F2 = c + 4 * PH_NF, *F3 = c + 5 * PH_NF;
    double nu[PH_NF], na[PH_NF], nb[PH_NF], nc[PH_NF], a[PH_NF], s[PH_NF];
    double f0[PH_NFRC + 1], fc[PH_NFRC + 1];
#define PH_RATE(x, cv, r, f, want_f)                                             \
    (nodrug ? ph_rate_nodrug(x, p, d, u, cv, r, f, want_f)                   \
            : ph_rate(x, p, d, u, cv, r, f, want_f))
    PH_RATE(y, cv0, nu, f0, 1);
    for (int j = 0; j < n; j++) a[j] = E2[j] * y[j] + Q[j] * nu[j];
    PH_RATE(a, cvh, na, NULL, 0);
    for (int j = 0; j < n; j++) s[j] = E2[j] * y[j] + Q[j] * na[j];
    PH_RATE(s, cvh, nb, NULL, 0);
    for (int j = 0; j < n; j++) s[j] = E2[j] * a[j] + Q[j] * (2.0 * nb[j] - nu[j]);
    PH_RATE(s, cv1, nc, fc, 1);
#undef PH_RATE
    for (int j = 0; j < n; j++)
        y[j] = E[j] * y[j] + F1[j] * nu[j] + F2[j] * (na[j] + nb[j]) + F3[j] * nc[j];
    const double w = 0.5 * h, s1 = s0 + h;
    for (int k = 0; k < PH_NFRC; k++) {
        acc[k] += w * (f0[k] + fc[k]);
        acc[PH_NFRC + k] += w * (s0 * f0[k] + s1 * fc[k]);
    }
}

/* One step of size h from time t of a patient's fast states y (coarse states at time tc):
 * the coupled coarse states at its start, middle and end, then ph_step_n in the patient's
 * mode (nodrug, as ph_drugs_off decides). */
static inline __attribute__((always_inline)) void
ph_step_at(double *restrict y, const double *restrict p, const double *restrict d,
           const double *restrict u, const double *restrict coef, double *restrict aux, double t,
           double h, double tc, int nodrug) {
    double cv0[PH_NCPL + 1], cvh[PH_NCPL + 1], cv1[PH_NCPL + 1];
    ph_coupled_at(y, aux, t - tc, cv0);
    ph_coupled_at(y, aux, t + 0.5 * h - tc, cvh);
    ph_coupled_at(y, aux, t + h - tc, cv1);
    if (nodrug)
        ph_step_n(y, p, d, u, coef, h, cv0, cvh, cv1, t - tc, aux, PH_NE, 1);
    else
        ph_step_n(y, p, d, u, coef, h, cv0, cvh, cv1, t - tc, aux, PH_NF, 0);
}

/* 1 if every drug state and every input of the patient is zero. */
static inline int ph_drugs_off(const double *y, const double *u) {
    for (int j = PH_NE; j < PH_NF; j++)
        if (y[j] != 0.0) return 0;
    for (int j = 0; j < PH_NI; j++)
        if (u[j] != 0.0) return 0;
    return 1;
}

/* Move the coarse states from *tc to t in one ETDRK4 step, with each forcing term the
 * straight line in time with its integral and first moment over that time (aux): a
 * coarse state driven linearly by it then comes out right to O((kH)^2) relative,
 * whatever the shape of the forcing within the step (a pulse, a switch-on). Then
 * restart the moments and, with slopes, take the coupled states' slopes for
 * extrapolation (a copy that is only read, ph_peek, needs none). */
PH_CLONES static void ph_coarse_step(double *restrict y, const double *restrict p,
                                     const double *restrict d, const double *restrict u,
                                     double *restrict aux, double *tc, double t, double hc,
                                     int slopes) {
    const double Hall = t - *tc;
    if (!(Hall > 0.0)) return;
    enum { NC = PH_NS - PH_NF };
    double fa[PH_NFRC + 1], fb[PH_NFRC + 1];
    double f0[PH_NFRC + 1], fh[PH_NFRC + 1], f1[PH_NFRC + 1];
    /* least-squares line a + b s on [0, Hall]: b from the first moment about the middle */
    for (int k = 0; k < PH_NFRC; k++) {
        const double m0 = aux[k], m1 = aux[PH_NFRC + k];
        fb[k] = Hall > 1e-6 ? 12.0 * (m1 - 0.5 * Hall * m0) / (Hall * Hall * Hall) : 0.0;
        fa[k] = m0 / Hall - 0.5 * Hall * fb[k];
    }
    /* substeps only when the elapsed time is well beyond the cap (long syncs) */
    const int m = Hall > 2.0 * hc ? (int)ceil(Hall / (2.0 * hc)) : 1;
    const double H = Hall / m;
    /* one set per distinct clearance: group g's rows in c[r * PH_NCGROUP + g], state j's
     * group PH_CSLOT[j] */
    double kg[PH_NCGROUP], c[PH_NCOEF * PH_NCGROUP];
    for (int g = 0; g < PH_NCGROUP; g++) kg[g] = d[PH_NF + PH_CFIRST[g]];
    ph_etd_rows(kg, PH_NCGROUP, H, c, PH_NCGROUP);
    const double *E = c, *E2 = c + PH_NCGROUP, *Q = c + 2 * PH_NCGROUP;
    const double *F1 = c + 3 * PH_NCGROUP, *F2 = c + 4 * PH_NCGROUP, *F3 = c + 5 * PH_NCGROUP;
    /* full-length vectors so the generated rate reads states at their own indices */
    double nu[PH_NS], na[PH_NS], nb[PH_NS], nc[PH_NS], a[PH_NS], s[PH_NS];
    double *yc = y + PH_NF;
    for (int q = 0; q < m; q++) {
        for (int k = 0; k < PH_NFRC; k++) {
            f0[k] = fa[k] + fb[k] * (q * H);
            fh[k] = fa[k] + fb[k] * ((q + 0.5) * H);
            f1[k] = fa[k] + fb[k] * ((q + 1) * H);
        }
        ph_rate_coarse(y, p, d, u, f0, nu);
        for (int j = 0; j < NC; j++) {
            const int g = PH_CSLOT[j];
            a[PH_NF + j] = E2[g] * yc[j] + Q[g] * nu[PH_NF + j];
        }
        ph_rate_coarse(a, p, d, u, fh, na);
        for (int j = 0; j < NC; j++) {
            const int g = PH_CSLOT[j];
            s[PH_NF + j] = E2[g] * yc[j] + Q[g] * na[PH_NF + j];
        }
        ph_rate_coarse(s, p, d, u, fh, nb);
        for (int j = 0; j < NC; j++) {
            const int g = PH_CSLOT[j];
            s[PH_NF + j] = E2[g] * a[PH_NF + j] + Q[g] * (2.0 * nb[PH_NF + j] - nu[PH_NF + j]);
        }
        ph_rate_coarse(s, p, d, u, f1, nc);
        for (int j = 0; j < NC; j++) {
            const int g = PH_CSLOT[j];
            yc[j] = E[g] * yc[j] + F1[g] * nu[PH_NF + j] + F2[g] * (na[PH_NF + j] + nb[PH_NF + j])
                    + F3[g] * nc[PH_NF + j];
        }
    }
    for (int k = 0; k < 2 * PH_NFRC; k++) aux[k] = 0.0;
    if (PH_NCPL > 0 && slopes) {
        /* slope at the end, with the forcing at its value there */
        ph_rate_coarse(y, p, d, u, f1, nu);
        for (int k = 0; k < PH_NCPL; k++) {
            const int j = PH_CPL[k];
            const double slope = nu[j] - d[j] * y[j];
            /* curvature only from a step long enough for the difference to mean something */
            if (Hall > 1e-3) aux[PH_AUX_CURV + k] = (slope - aux[PH_AUX_SLOPE + k]) / Hall;
            aux[PH_AUX_SLOPE + k] = slope;
        }
    }
    *tc = t;
}

static inline void ph_coarse(double *restrict y, const double *restrict p,
                             const double *restrict d, const double *restrict u,
                             double *restrict aux, double *tc, double t, double hc) {
    ph_coarse_step(y, p, d, u, aux, tc, t, hc, 1);
}

/* Largest coarse step for a patient: coarse_step, at most 0.5 / (fastest coarse
 * clearance) so that coarse states stay well resolved (e.g. sped up in equilibration),
 * and at most 2 / (largest loss rate inside the coarse rates): the explicit part of
 * ETDRK4 is stable only for (loss rate x step) below about 2.8. */
static inline double ph_coarse_cap(const ph_cohort *c, const double *p, const double *d) {
    double kmax = 0.0;
    for (int j = PH_NF; j < PH_NS; j++) kmax = d[j] > kmax ? d[j] : kmax;
    double cap = kmax > 0.0 ? 0.5 / kmax : c->coarse_step;
    const double loss = ph_coarse_loss_bound(p);
    if (loss > 0.0 && 2.0 / loss < cap) cap = 2.0 / loss;
    return cap < c->coarse_step ? cap : c->coarse_step;
}

/* The next step on a patient's ladder, time since the last fast event `since`, with
 * `rest` left to the interval's end: returns the ladder level, with its step in *hl and
 * in *last whether the step is cut short to the end (with stop_short: would overshoot,
 * so it is not taken). */
static inline int ph_ladder(const ph_cohort *c, double since, double rest, int stop_short,
                            double *hl, int *last) {
    const double reach = c->growth * since;
    /* the highest level whose step reach allows: the steps double, so that is the count
     * of levels above 0 within reach (no early exit: a branch-free loop) */
    int l = 0;
    double h = c->h0, hq = c->h0;
    for (int q = 1; q < c->n_levels; q++) {
        hq *= 2.0;
        const int up = hq <= reach;
        l += up;
        h = up ? hq : h;
    }
    *hl = h;
    *last = stop_short ? rest < h * (1.0 - 1e-12) : rest <= h * (1.0 + 1e-12);
    return l;
}

/* ETD coefficients of a step cut short to length h, for the states a step integrates. */
static inline void ph_cut_coeffs(const double *d, double h, int nodrug, double *own) {
    ph_etd_rows(d, nodrug ? PH_NE : PH_NF, h, own, PH_NF);
}

/* Integrate one patient's continuous dynamics (state y, time-since-pulse *since) from t
 * to t1 with no events inside; returns the time reached. With stop_short the step that
 * would overshoot t1 is not taken, so the patient stops on its own ladder at or before
 * t1: integrating t0 -> t1 -> t2 this way takes exactly the steps of t0 -> t2, and a
 * patient's trajectory does not depend on the times at which the cohort is stopped for
 * other patients' events, visits or samples. hc: the patient's largest coarse step
 * (ph_coarse_cap). */
PH_CLONES static double ph_integrate(const ph_cohort *c, int i, double *restrict y,
                                     double *since, double *restrict aux, double *tc, double t,
                                     double t1, int stop_short, long *steps, double hc) {
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    const double *u = c->u + (size_t)i * PH_NI;
    const double *etab = c->etab + (size_t)i * c->n_levels * PH_NCOEF * PH_NF;
    /* doses and input changes happen between calls: decided once per call */
    const int nodrug = ph_drugs_off(y, u);
    double own[PH_NCOEF * PH_NF];
    while (t < t1) {
        const double rest = t1 - t;
        double hl;
        int last;
        const int l = ph_ladder(c, *since, rest, stop_short, &hl, &last);
        if (last && stop_short) break;
        const double h = last ? rest : hl;
        const double *coef = etab + (size_t)l * PH_NCOEF * PH_NF;
        if (last) { /* last step to the boundary: its own coefficients */
            ph_cut_coeffs(d, rest, nodrug, own);
            coef = own;
        }
        ph_step_at(y, p, d, u, coef, aux, t, h, *tc, nodrug);
        t = last ? t1 : t + hl;
        *since += h;
        (*steps)++;
        if (t - *tc >= hc) ph_coarse(y, p, d, u, aux, tc, t, hc);
    }
    return t;
}

/* Bring patient i's own trajectory exactly to time t (before a dose or a change of
 * inputs or parameters at t). */
static inline void ph_sync(const ph_cohort *c, int i, double t) {
    double *y = c->y + (size_t)i * PH_NS;
    double *aux = c->aux + (size_t)i * PH_NAUX;
    const double *p = c->p + (size_t)i * PH_NP, *d = c->d + (size_t)i * PH_ND;
    const double hc = ph_coarse_cap(c, p, d);
    if (c->tp[i] < t) {
        c->tp[i] = ph_integrate(c, i, y, &c->since[i], aux, &c->tc[i], c->tp[i], t, 0,
                                &c->n_steps[i], hc);
    }
    if (c->tp[i] < t) c->tp[i] = t;
    /* the coarse step must not run on inputs or parameters changed at t */
    ph_coarse(y, p, d, c->u + (size_t)i * PH_NI, aux, &c->tc[i], c->tp[i], hc);
}

/* Patient i's state at time t >= its own time, in ys, leaving its trajectory untouched.
 * Without coarse, the coarse states in ys stay at their own time (tc), not moved to t:
 * for samples of observables that do not read them (the coarse step is about 45 % of a
 * sample's instructions). */
static inline void ph_peek(const ph_cohort *c, int i, double t, double *ys, int coarse) {
    const double *y = c->y + (size_t)i * PH_NS;
    for (int j = 0; j < PH_NS; j++) ys[j] = y[j];
    double aux[PH_NAUX];
    for (int j = 0; j < PH_NAUX; j++) aux[j] = c->aux[(size_t)i * PH_NAUX + j];
    double since = c->since[i], tc = c->tc[i];
    long steps = 0;
    const double *p = c->p + (size_t)i * PH_NP, *d = c->d + (size_t)i * PH_ND;
    const double hc = ph_coarse_cap(c, p, d);
    double te = ph_integrate(c, i, ys, &since, aux, &tc, c->tp[i], t, 0, &steps, hc);
    if (te < t) te = t;
    if (!coarse) return;
    ph_coarse_step(ys, p, d, c->u + (size_t)i * PH_NI, aux, &tc, te, hc, 0);
}

/* Observables of patient i at time t (see ph_peek; without coarse, the observables that
 * read coarse states are not those of time t). */
static inline void ph_observe(const ph_cohort *c, int i, double t, double *o, int coarse) {
    double ys[PH_NS];
    ph_peek(c, i, t, ys, coarse);
    ph_outputs(ys, c->p + (size_t)i * PH_NP, c->d + (size_t)i * PH_ND,
               c->u + (size_t)i * PH_NI, o);
}

/* Sample row of patient i at time t: the recorded observables (c->obs) only, so that the
 * rows of long hourly recordings take no memory for the others. */
static inline void ph_sample(const ph_cohort *c, int i, double t, double *row) {
    double o[PH_NO];
    ph_observe(c, i, t, o, c->sample_coarse);
    for (int m = 0; m < c->n_obs; m++) row[m] = o[c->obs[m]];
}

/* Draw and apply a GnRH pulse at time t; schedule the next one. */
static inline void ph_fire_pulse(const ph_cohort *c, int i, double t) {
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    double g[7];
    ph_pulse_law(y, p, d, g);
    /* deterministic: a regular train (g[4]), so pulse times never carry integration error */
    double interval = c->deterministic ? g[4] : g[0], mass = g[1];
    if (!c->deterministic) {
        const double shape = g[2], cv = g[3];
        interval *= ph_gamma(c->key[i], &c->ctr[i], shape) / shape;
        if (cv > 0.0) /* log-normal with mean 1: sigma^2 = log(1 + cv^2) in g[5], sigma in g[6] */
            mass *= exp(g[6] * ph_normal(c->key[i], &c->ctr[i]) - 0.5 * g[5]);
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
    double g[7];
    ph_pulse_law(y, p, d, g);
    double phase = c->deterministic ? 0.5 : ph_uniform(c->key[i], &c->ctr[i]);
    double interval = c->deterministic ? g[4] : g[0];
    c->next_pulse[i] = (p[PH_P_GNRH_ON] > 0.0) ? t + phase * interval : INFINITY;
}

/* Patient i's next event at or before t1 (sample k of ns first at equal times, then a
 * pulse, then pumps): returns its kind (0 end, 1 sample, 2 pulse, 3 pump) with its time
 * in *te and, for a pump, its drug in *which. */
static inline int ph_next_event(const ph_cohort *c, int i, double t1, const double *samples,
                                int k, int ns, double *te, int *which) {
    const double *pump_next = c->pump_next + (size_t)i * PH_NI;
    const double *pump_interval = c->pump_interval + (size_t)i * PH_NI;
    int kind = 0;
    *te = t1;
    *which = -1;
    if (k < ns && samples[k] <= *te) {
        *te = samples[k];
        kind = 1;
    }
    if (c->next_pulse[i] < *te) {
        *te = c->next_pulse[i];
        kind = 2;
    }
    for (int j = 0; j < PH_NI; j++) {
        if (pump_interval[j] > 0.0 && pump_next[j] < *te) {
            *te = pump_next[j];
            kind = 3;
            *which = j;
        }
    }
    return kind;
}

/* Apply patient i's pulse (kind 2) or pump bolus (kind 3, drug which) due at time t,
 * and schedule the next. */
static inline void ph_apply_event(const ph_cohort *c, int i, double t, int kind, int which) {
    if (kind == 2) {
        ph_fire_pulse(c, i, t);
        return;
    }
    ph_dose(c->y + (size_t)i * PH_NS, c->p + (size_t)i * PH_NP, c->d + (size_t)i * PH_ND,
            which, c->pump_dose[(size_t)i * PH_NI + which]);
    if (PH_DRUG_FAST[which]) c->since[i] = 0.0;
    c->pump_next[(size_t)i * PH_NI + which] += c->pump_interval[(size_t)i * PH_NI + which];
}

/* 1 if patient i has a non-finite state */
static inline int ph_nonfinite(const ph_cohort *c, int i) {
    const double *y = c->y + (size_t)i * PH_NS;
    for (int j = 0; j < PH_NS; j++)
        if (!isfinite(y[j])) return 1;
    return 0;
}

/* Advance patient i from its own time to t1, writing observables at the sample times
 * (ascending, within (t0, t1]) into out (ns x n_obs: the observables c->obs), from sample
 * k on (the earlier ones are taken). Only the patient's own events (GnRH pulses, pump
 * boluses) split its integration; samples are read off a copy (ph_sample) and the end is
 * reached with stop_short unless exact is set. It may start anywhere on the patient's
 * ladder: the steps depend on the time since the last fast event, not on where a call
 * starts. Returns 0, or -1 if a state became non-finite. */
static inline int ph_advance_from(const ph_cohort *c, int i, double t1, const double *samples,
                                  int k, int ns, double *out, int exact) {
    double *y = c->y + (size_t)i * PH_NS;
    const double *p = c->p + (size_t)i * PH_NP;
    const double *d = c->d + (size_t)i * PH_ND;
    double *aux = c->aux + (size_t)i * PH_NAUX;
    const double hc = ph_coarse_cap(c, p, d); /* parameters are fixed within a call */
    double t = c->tp[i];
    /* events due exactly at the previous end (left by the previous call) fire first */
    for (;;) {
        double te;
        int which;
        const int kind = ph_next_event(c, i, t1, samples, k, ns, &te, &which);
        if (kind == 1) {
            /* the trajectory goes on its own ladder; the sample is read off a copy */
            if (te > t)
                t = ph_integrate(c, i, y, &c->since[i], aux, &c->tc[i], t, te, 1, &c->n_steps[i],
                                 hc);
            c->tp[i] = t;
            ph_sample(c, i, te, out + (size_t)k * c->n_obs);
            k++;
            continue;
        }
        if (kind == 0 && !exact) {
            if (te > t)
                t = ph_integrate(c, i, y, &c->since[i], aux, &c->tc[i], t, te, 1, &c->n_steps[i],
                                 hc);
            c->tp[i] = t;
            break;
        }
        if (te > t)
            ph_integrate(c, i, y, &c->since[i], aux, &c->tc[i], t, te, 0, &c->n_steps[i], hc);
        if (te > t) t = te;
        c->tp[i] = t;
        if (kind == 0) {
            /* an exact end is the patient's own stop (before a change of parameters) */
            ph_coarse(y, p, d, c->u + (size_t)i * PH_NI, aux, &c->tc[i], t, hc);
            break;
        }
        ph_apply_event(c, i, t, kind, which);
    }
    return ph_nonfinite(c, i) ? -1 : 0;
}

static inline int ph_advance_one(const ph_cohort *c, int i, double t1, const double *samples,
                                 int ns, double *out, int exact) {
    return ph_advance_from(c, i, t1, samples, 0, ns, out, exact);
}

#endif
