/* The lane step and driver of csrc/lanes.h, for one instruction set and lane width:
 * included once per set with PH_LANES_NAME(x) naming the functions, PH_W lanes of vector
 * type PH_VD (PH_VI: its 64-bit integer twin) and the model's rates on them, PH_VRATE
 * and PH_VRATE_NODRUG (model_gen.h). No include guard on purpose. */

/* the lanes' ETD coefficient rows when they are on different levels */
typedef struct {
    PH_VD cf[PH_NCOEF][PH_NF];
    int level[PH_W]; /* the level each lane's elements hold (-1: own, rewritten) */
    int n[PH_W];     /* for the states [0, n) */
} PH_LANES_NAME(_cache);

/* The ETD coefficients of the lanes' steps, as vectors: each lane's rows from the
 * transposed ladder table et (et[level][row][state], lane l's patient in element l) or
 * from its own cut-step coefficients. The table's rows themselves when all the lanes
 * are on one level; else the rows kept in cc, where only the lanes whose level changed
 * since they were last written (and every cut step) are written again. Row 0 (e^{-kh})
 * is not copied: the step makes it from row 1 (ph_etd_rows' e = e2 * e2, the same bits). */
static inline __attribute__((always_inline)) const PH_VD (*PH_LANES_NAME(_coefs)(
    const ph_lane *lanes, const PH_VD (*et)[PH_NCOEF][PH_NF], const int n,
    PH_LANES_NAME(_cache) *cc))[PH_NF] {
    int first = lanes[0].level, same = 1;
    for (int l = 1; l < PH_W; l++) same &= lanes[l].level == first;
    if (same && first >= 0) return et[first];
    for (int l = 0; l < PH_W; l++) {
        const int lv = lanes[l].level;
        if (lv >= 0 && cc->level[l] == lv && cc->n[l] >= n) continue;
        if (lv >= 0)
            for (int r = 1; r < PH_NCOEF; r++)
                for (int j = 0; j < n; j++) cc->cf[r][j][l] = et[lv][r][j][l];
        else
            for (int r = 1; r < PH_NCOEF; r++)
                for (int j = 0; j < n; j++) cc->cf[r][j][l] = lanes[l].own[r * PH_NF + j];
        cc->level[l] = lv;
        cc->n[l] = n;
    }
    return (const PH_VD(*)[PH_NF])cc->cf;
}

/* ph_step_n of the lanes' patients at once (n states; nodrug as in ph_step_n) on
 * their fast states y and forcing integrals acc, held in lanes; the lanes' parameters,
 * derived quantities and inputs come transposed (pT[k] holds parameter k of the
 * lanes' patients). */
static inline __attribute__((always_inline)) void PH_LANES_NAME(_step)(
    const ph_cohort *c, const ph_lane *lanes, const PH_VD (*et)[PH_NCOEF][PH_NF],
    PH_LANES_NAME(_cache) *cc, const PH_VD *restrict pT, const PH_VD *restrict dT,
    const PH_VD *restrict uT, PH_VD *restrict y, PH_VD *restrict acc, const int n,
    const int nodrug) {
    PH_VD cv0[PH_NCPL + 1], cvh[PH_NCPL + 1], cv1[PH_NCPL + 1], h, t, tc, s0, sh, s1;
    for (int l = 0; l < PH_W; l++) {
        h[l] = lanes[l].h;
        t[l] = lanes[l].t;
        tc[l] = c->tc[lanes[l].i];
    }
    /* the coupled coarse states at the start, middle and end (ph_coupled_at, the same
     * operations in the same order) */
    s0 = t - tc;
    sh = (t + 0.5 * h) - tc;
    s1 = (t + h) - tc;
    for (int k = 0; k < PH_NCPL; k++) {
        PH_VD yk, slope, curv;
        for (int l = 0; l < PH_W; l++) {
            const size_t i = (size_t)lanes[l].i;
            yk[l] = c->y[i * PH_NS + PH_CPL[k]];
            slope[l] = c->aux[i * PH_NAUX + PH_AUX_SLOPE + k];
            curv[l] = c->aux[i * PH_NAUX + PH_AUX_CURV + k];
        }
        const PH_VD v0 = yk + s0 * (slope + 0.5 * s0 * curv);
        const PH_VD vh = yk + sh * (slope + 0.5 * sh * curv);
        const PH_VD v1 = yk + s1 * (slope + 0.5 * s1 * curv);
        /* v > 0 ? v : 0, lane by lane (a comparison gives all ones or all zeros) */
        cv0[k] = (PH_VD)((v0 > 0.0) & (PH_VI)v0);
        cvh[k] = (PH_VD)((vh > 0.0) & (PH_VI)vh);
        cv1[k] = (PH_VD)((v1 > 0.0) & (PH_VI)v1);
    }
    const PH_VD(*co)[PH_NF] = PH_LANES_NAME(_coefs)(lanes, et, n, cc);
    const PH_VD *E2 = co[1], *Q = co[2], *F1 = co[3], *F2 = co[4], *F3 = co[5];
    PH_VD nu[PH_NF], na[PH_NF], nb[PH_NF], nc[PH_NF], a[PH_NF], s[PH_NF];
    PH_VD f0[PH_NFRC + 1], fc[PH_NFRC + 1];
#define PH_RATE_V(x, cv, r, f, want_f)                                                       \
    (nodrug ? PH_VRATE_NODRUG(x, pT, dT, uT, cv, r, f, want_f)                               \
            : PH_VRATE(x, pT, dT, uT, cv, r, f, want_f))
    PH_RATE_V(y, cv0, nu, f0, 1);
    for (int j = 0; j < n; j++) a[j] = E2[j] * y[j] + Q[j] * nu[j];
    PH_RATE_V(a, cvh, na, NULL, 0);
    for (int j = 0; j < n; j++) s[j] = E2[j] * y[j] + Q[j] * na[j];
    PH_RATE_V(s, cvh, nb, NULL, 0);
    for (int j = 0; j < n; j++) s[j] = E2[j] * a[j] + Q[j] * (2.0 * nb[j] - nu[j]);
    PH_RATE_V(s, cv1, nc, fc, 1);
#undef PH_RATE_V
    for (int j = 0; j < n; j++)
        y[j] = (E2[j] * E2[j]) * y[j] + F1[j] * nu[j] + F2[j] * (na[j] + nb[j]) + F3[j] * nc[j];
    const PH_VD w = 0.5 * h, se = s0 + h;
    for (int k = 0; k < PH_NFRC; k++) {
        acc[k] += w * (f0[k] + fc[k]);
        acc[PH_NFRC + k] += w * (s0 * f0[k] + se * fc[k]);
    }
}

/* Lane l's fast states and forcing integrals between the vectors and its patient's memory. */
static inline void PH_LANES_NAME(_store)(const ph_cohort *c, const ph_lane *L, int l,
                                         const PH_VD *y, const PH_VD *acc) {
    double *ys = c->y + (size_t)L->i * PH_NS, *as = c->aux + (size_t)L->i * PH_NAUX;
    for (int j = 0; j < PH_NF; j++) ys[j] = y[j][l];
    for (int k = 0; k < 2 * PH_NFRC; k++) as[k] = acc[k][l];
}

static inline void PH_LANES_NAME(_load)(const ph_cohort *c, const ph_lane *L, int l,
                                        PH_VD *y, PH_VD *acc) {
    const double *ys = c->y + (size_t)L->i * PH_NS, *as = c->aux + (size_t)L->i * PH_NAUX;
    for (int j = 0; j < PH_NF; j++) y[j][l] = ys[j];
    for (int k = 0; k < 2 * PH_NFRC; k++) acc[k][l] = as[k];
}

/* Give lane l patient i (its parameters, inputs and ladder coefficients into element l)
 * and plan its first interval; returns whether it has one. */
static inline int PH_LANES_NAME(_assign)(const ph_cohort *c, ph_lane *L, int l, int i,
                                         PH_VD *pT, PH_VD *dT, PH_VD *uT,
                                         PH_VD (*et)[PH_NCOEF][PH_NF],
                                         PH_LANES_NAME(_cache) *cc, double t1,
                                         const double *samples, int ns, double *out, int exact) {
    for (int k = 0; k < PH_NP; k++) pT[k][l] = c->p[(size_t)i * PH_NP + k];
    for (int k = 0; k < PH_ND; k++) dT[k][l] = c->d[(size_t)i * PH_ND + k];
    for (int k = 0; k < PH_NI; k++) uT[k][l] = c->u[(size_t)i * PH_NI + k];
    const double *etab = c->etab + (size_t)i * c->n_levels * PH_NCOEF * PH_NF;
    for (int v = 0; v < c->n_levels; v++)
        for (int r = 0; r < PH_NCOEF; r++)
            for (int j = 0; j < PH_NF; j++)
                et[v][r][j][l] = etab[((size_t)v * PH_NCOEF + r) * PH_NF + j];
    cc->level[l] = -1; /* its coefficient rows are not written yet */
    cc->n[l] = 0;
    L->i = i;
    L->out = out ? out + (size_t)i * ns * c->n_obs : NULL;
    L->hc = ph_coarse_cap(c, c->p + (size_t)i * PH_NP, c->d + (size_t)i * PH_ND);
    L->k = 0;
    L->t = c->tp[i];
    return ph_lane_plan(c, L, t1, samples, ns, L->out, exact);
}

/* ph_advance_one for the patients [i0, i1) (out: the cohort's sample rows, n x ns x n_obs,
 * or NULL): PH_W at a time, each lane taking the next patient as soon as its patient is
 * done, so that the lanes step together until the range runs out; the last ones go on
 * one at a time. Returns how many of them have a non-finite state. */
static int PH_LANES_NAME(_run)(const ph_cohort *c, int i0, int i1, double t1,
                                const double *samples, int ns, double *out, int exact) {
    ph_lane lanes[PH_W];
    PH_VD pT[PH_NP], dT[PH_ND], uT[PH_NI];
    PH_VD et[c->n_levels][PH_NCOEF][PH_NF]; /* the lanes' ladder coefficients, transposed */
    PH_LANES_NAME(_cache) cc;
    for (int l = 0; l < PH_W; l++) lanes[l].active = 0, lanes[l].i = -1;
    int next = i0, bad = 0;
    /* the lanes' fast states and forcing integrals; held[l]: lane l's are here, not (yet)
     * in its patient's memory, which scalar code reads and writes */
    PH_VD Y[PH_NF], ACC[2 * PH_NFRC];
    int held[PH_W] = {0};
#define PH_TO_MEMORY(l)                                                                      \
    do {                                                                                     \
        if (held[l]) PH_LANES_NAME(_store)(c, &lanes[l], (l), Y, ACC);                       \
        held[l] = 0;                                                                         \
    } while (0)
    for (;;) {
        int stepping = 0, nodrug = 0;
        for (int l = 0; l < PH_W; l++) {
            ph_lane *L = &lanes[l];
            for (;;) {
                while (L->active && !ph_lane_step_setup(c, L)) {
                    PH_TO_MEMORY(l);
                    L->active = ph_lane_finish(c, L, t1, samples, ns, L->out, exact);
                    if (!L->active) bad += ph_nonfinite(c, L->i);
                }
                if (L->active || next >= i1) break;
                const int i = next++;
                L->active = PH_LANES_NAME(_assign)(c, L, l, i, pT, dT, uT, et, &cc, t1, samples,
                                                   ns, out, exact);
                if (!L->active) bad += ph_nonfinite(c, i);
            }
            if (L->active) {
                stepping++;
                nodrug += L->nodrug;
            }
        }
        if (!stepping) break;
        if (stepping < PH_W && next >= i1) {
            /* the range's last patients: each goes on alone from where it is (on its
             * ladder, before its next step), as partly filled lanes step one by one */
            for (int l = 0; l < PH_W; l++) {
                ph_lane *L = &lanes[l];
                if (!L->active) continue;
                PH_TO_MEMORY(l);
                c->tp[L->i] = L->t;
                bad += ph_advance_from(c, L->i, t1, samples, L->k, ns, L->out, exact) != 0;
                L->active = 0;
            }
            break;
        }
        const int vector = stepping == PH_W && (nodrug == PH_W || nodrug == 0);
        if (vector) {
            for (int l = 0; l < PH_W; l++)
                if (!held[l]) {
                    PH_LANES_NAME(_load)(c, &lanes[l], l, Y, ACC);
                    held[l] = 1;
                }
            /* constant n and nodrug, so that each call is compiled for its mode */
            if (nodrug)
                PH_LANES_NAME(_step)(c, lanes, (const PH_VD(*)[PH_NCOEF][PH_NF])et, &cc, pT, dT,
                                     uT, Y, ACC, PH_NE, 1);
            else
                PH_LANES_NAME(_step)(c, lanes, (const PH_VD(*)[PH_NCOEF][PH_NF])et, &cc, pT, dT,
                                     uT, Y, ACC, PH_NF, 0);
        } else {
            for (int l = 0; l < PH_W; l++)
                if (lanes[l].active) {
                    PH_TO_MEMORY(l);
                    ph_lane_step_scalar(c, &lanes[l]);
                }
        }
        for (int l = 0; l < PH_W; l++) {
            ph_lane *L = &lanes[l];
            if (!L->active) continue;
            if (ph_lane_step_advance(c, L)) {
                PH_TO_MEMORY(l);
                ph_lane_coarse(c, L);
            }
            if (!ph_lane_goes_on(L)) {
                PH_TO_MEMORY(l);
                L->active = ph_lane_finish(c, L, t1, samples, ns, L->out, exact);
                if (!L->active) bad += ph_nonfinite(c, L->i);
            }
        }
    }
#undef PH_TO_MEMORY
    return bad;
}
