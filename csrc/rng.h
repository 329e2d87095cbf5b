/* Counter-based random numbers for pulsehpg.
 *
 * Each patient owns a 64-bit key (derived in Python from the sweep seed, the point,
 * the replicate and the patient index with numpy's SeedSequence) and a counter.
 * The n-th draw is splitmix64's output function applied to key + n * golden-gamma
 * (Steele, Lea & Flood 2014), so a patient's draws depend only on its key and how
 * many numbers it has used: never on batch size, thread or shard.
 */
#ifndef PULSEHPG_RNG_H
#define PULSEHPG_RNG_H
#include <math.h>
#include <stdint.h>

static inline uint64_t ph_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* uniform on the open interval (0, 1) */
static inline double ph_uniform(uint64_t key, uint64_t *ctr) {
    *ctr += 1;
    uint64_t z = ph_mix64(key + *ctr * 0x9e3779b97f4a7c15ULL);
    return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* standard normal (Box-Muller, one of the pair) */
static inline double ph_normal(uint64_t key, uint64_t *ctr) {
    double u1 = ph_uniform(key, ctr);
    double u2 = ph_uniform(key, ctr);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* gamma(shape, 1) for shape >= 1 (Marsaglia & Tsang 2000) */
static inline double ph_gamma(uint64_t key, uint64_t *ctr, double shape) {
    const double dd = shape - 1.0 / 3.0;
    const double c = 1.0 / sqrt(9.0 * dd);
    for (;;) {
        double x = ph_normal(key, ctr);
        double v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = ph_uniform(key, ctr);
        if (log(u) < 0.5 * x * x + dd - dd * v + dd * log(v)) return dd * v;
    }
}

#endif
