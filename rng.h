/*
 * rng.h: the one random-number generator of the program, the same on the host and the device.
 * splitmix64 (Steele, Lea, Flood 2014): a 64-bit state advanced by the golden-ratio constant and
 * a 3-step mix. Everything that must agree across ranks, builds and resumes draws from it:
 * initialization, the data order, Grass's selection (host and device), stochastic rounding.
 *   splitmix64(&s)        the next value of the stream s
 *   splitmix64_mix(z)     the mix alone: value k of the stream that starts at s is
 *                         splitmix64_mix(s + (k + 1) * SPLITMIX64_GOLDEN), so a GPU thread can
 *                         jump straight to its draw
 *   rng_uniform01(&s)     uniform double in [0, 1) (53 bits); rng_uniform01_at(s, k): its (k+1)-th
 *                         value from state s (the GPU selection's draws)
 *   rng_below(&s, n)      uniform integer in [0, n), by rejection (no modulo bias)
 *   rng_seed_for(seed, step, tensor)  a stream per (seed, step, tensor), independent of rank
 * Normal draws that round the same on every build (the initial weights, llama_init_random):
 *   rng_log(x), rng_sincos_2pi(u)  our own log and sin/cos(2 pi u), from correctly rounded
 *                         operations only (below: why)
 *   rng_normal_pair(b1, b2)  two standard normals from two 64-bit draws (Box-Muller)
 *   rng_init_pair(key, k, std)  pair k of a parameter tensor's initial values
 *   rng_hash_term(i, v)   a term of an order-free hash of float values (their sum mod 2^64)
 */
#ifndef GRASS_RNG_H
#define GRASS_RNG_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__CUDACC__)
#define RNG_HD static __host__ __device__ inline
#else
#define RNG_HD static inline
#endif

#define SPLITMIX64_GOLDEN 0x9E3779B97F4A7C15ULL

RNG_HD uint64_t splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
RNG_HD uint64_t splitmix64(uint64_t* s) { return splitmix64_mix(*s += SPLITMIX64_GOLDEN); }
RNG_HD double rng_uniform01(uint64_t* s) { return (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }
// the (k+1)-th rng_uniform01 of the stream whose state is s, without stepping through the first k
RNG_HD double rng_uniform01_at(uint64_t s, uint64_t k) {
    return (splitmix64_mix(s + (k + 1) * SPLITMIX64_GOLDEN) >> 11) * (1.0 / 9007199254740992.0);
}
RNG_HD uint64_t rng_below(uint64_t* s, uint64_t n) {
    uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    uint64_t x;
    do { x = splitmix64(s); } while (x < threshold);
    return x % n;
}
RNG_HD uint64_t rng_seed_for(uint64_t seed, uint64_t step, uint64_t tensor) {
    uint64_t s = seed ^ 0x6A09E667F3BCC909ULL;
    uint64_t a = splitmix64(&s) ^ (step * SPLITMIX64_GOLDEN);
    uint64_t b = splitmix64(&a) ^ (tensor * 0xC2B2AE3D27D4EB4FULL);
    return splitmix64(&b);
}

// ---- normal draws that round the same on every build ------------------------------------------
// libm's log/sin/cos and CUDA's round their last bits differently, so values drawn with them
// differ between the CPU and the GPU build. rng_log and rng_sincos_2pi use an exact range
// reduction, then polynomials, and nothing but the operations that IEEE 754 rounds correctly and
// both compilers implement as such in double: + - * / sqrt and fma (g++ on x86-64: SSE2, no
// x87; nvcc: add/mul/div/sqrt/fma.rn.f64, which --use_fast_math does not touch in double).
// What could still differ is contraction: g++ (-ffp-contract=fast, its default outside ISO mode,
// with -march=native's FMA) and nvcc (--fmad=true) may fuse a product and a sum into one fma,
// each where it likes, and a fused fma rounds once where the separate operations round twice.
// So every product that feeds a sum is written as fma(), and no other product reaches a + or -
// (the two exceptions are exact products, fused or not the same bits: they say so). That keeps
// the code immune whatever the flags, which compile options could not promise on three compilers
// (g++ for the CPU build and the emulator, nvcc's device pass); dev/check_fp_contract.sh checks it.
// Accuracy (tests/test_ops.c, against libm): log and sin/cos within a few 1e-16, the normals far
// inside the float they are rounded to.

RNG_HD uint64_t rng_double_bits(double x) { uint64_t b; memcpy(&b, &x, 8); return b; }
RNG_HD double rng_bits_double(uint64_t b) { double x; memcpy(&x, &b, 8); return x; }

// natural log of a positive normal double x (not 0, subnormal, inf or nan)
RNG_HD double rng_log(double x) {
    uint64_t b = rng_double_bits(x);
    uint64_t mant = b & 0x000FFFFFFFFFFFFFULL;
    int e = (int)((b >> 52) & 0x7FF) - 1023;
    // x = m 2^e with m in [sqrt(1/2), sqrt(2)): m's exponent field is 1023 (m in [1, 2)), or
    // 1022 (m in [1/2, 1)) when its mantissa is at or above sqrt(2)'s (0x3FF6A09E667F3BCD)
    uint64_t mexp = 1023;
    if (mant >= 0x6A09E667F3BCDULL) { mexp = 1022; e += 1; }
    double m = rng_bits_double(mant | (mexp << 52));
    // log m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m - 1) / (m + 1), |s| <= 0.1716;
    // m - 1 is exact (Sterbenz). Eleven terms: the next one is below 1e-18 of the sum.
    double s = (m - 1.0) / (m + 1.0);
    double z = s * s;
    double q = 0.047619047619047616;         // 1/21
    q = fma(q, z, 0.05263157894736842);      // 1/19
    q = fma(q, z, 0.058823529411764705);     // 1/17
    q = fma(q, z, 0.06666666666666667);      // 1/15
    q = fma(q, z, 0.07692307692307693);      // 1/13
    q = fma(q, z, 0.09090909090909091);      // 1/11
    q = fma(q, z, 0.1111111111111111);       // 1/9
    q = fma(q, z, 0.14285714285714285);      // 1/7
    q = fma(q, z, 0.2);                      // 1/5
    q = fma(q, z, 0.3333333333333333);       // 1/3
    double s2 = s + s;                       // exact
    double lm = fma(s2 * z, q, s2);          // 2s + 2s z q(z)
    // + e log 2, with log 2 in two parts (fdlibm's): hi has 32 significant bits, so e * hi is exact
    double fe = (double)e;
    return fma(fe, 6.93147180369123816490e-01, fma(fe, 1.90821492927058770002e-10, lm));
}

// sin(2 pi u) and cos(2 pi u) for u in [0, 1)
RNG_HD void rng_sincos_2pi(double u, double* sn, double* cs) {
    // 2 pi u = (q + r) pi/2 with q an integer and r in [-1/2, 1/2], every step exact: 4u (a power
    // of two; fused into the subtraction or not, the same bits), t - q (Sterbenz), r - 1 (Sterbenz)
    double t = u * 4.0;
    int q = (int)t;
    double r = t - (double)q;
    if (r >= 0.5) { r = r - 1.0; q += 1; }
    // sin(pi/2 r) = r S(r^2), cos(pi/2 r) = C(r^2): Taylor series in r, |pi/2 r| <= pi/4, the
    // first omitted terms below 1e-17
    double z = r * r;
    double sp = 6.0669357311061955e-12;
    sp = fma(sp, z, -6.688035109811468e-10);
    sp = fma(sp, z, 5.692172921967927e-08);
    sp = fma(sp, z, -3.598843235212085e-06);
    sp = fma(sp, z, 0.00016044118478735983);
    sp = fma(sp, z, -0.004681754135318688);
    sp = fma(sp, z, 0.07969262624616705);
    sp = fma(sp, z, -0.6459640975062463);
    sp = fma(sp, z, 1.5707963267948966);     // pi/2
    double cp = 6.565963114979473e-11;
    cp = fma(cp, z, -6.386603083791852e-09);
    cp = fma(cp, z, 4.710874778818172e-07);
    cp = fma(cp, z, -2.5202042373060607e-05);
    cp = fma(cp, z, 0.0009192602748394266);
    cp = fma(cp, z, -0.02086348076335296);
    cp = fma(cp, z, 0.25366950790104803);
    cp = fma(cp, z, -1.2337005501361697);
    cp = fma(cp, z, 1.0);
    double s = r * sp, c = cp;
    switch (q & 3) {  // rotate by q quarter turns
        case 0: *sn = s; *cs = c; break;
        case 1: *sn = c; *cs = -s; break;
        case 2: *sn = -s; *cs = -c; break;
        default: *sn = -c; *cs = s; break;
    }
}

// Box-Muller: two independent standard normals from two 64-bit draws, u1 in (0, 1] and u2 in
// [0, 1) of 53 bits each (the conversions and scalings are exact)
RNG_HD void rng_normal_pair(uint64_t b1, uint64_t b2, double* z0, double* z1) {
    double u1 = (double)((b1 >> 11) + 1) * (1.0 / 9007199254740992.0);
    double u2 = (double)(b2 >> 11) * (1.0 / 9007199254740992.0);
    double rad = sqrt(-2.0 * rng_log(u1));
    double sn, cs;
    rng_sincos_2pi(u2, &sn, &cs);
    *z0 = rad * cs;
    *z1 = rad * sn;
}

// Pair k of a parameter tensor's initial values: values 2k and 2k+1 of its Hugging Face layout,
// normal(0, std) rounded to float, from the stream key ^ (k * 0xD1B54A32D192ED03) (key: the
// tensor's rng_seed_for). Both builds call this, so they draw the same floats.
RNG_HD void rng_init_pair(uint64_t key, uint64_t k, double std, float* v0, float* v1) {
    uint64_t s = key ^ (k * 0xD1B54A32D192ED03ULL);
    uint64_t b1 = splitmix64(&s), b2 = splitmix64(&s);
    double z0, z1;
    rng_normal_pair(b1, b2, &z0, &z1);
    *v0 = (float)(std * z0);
    *v1 = (float)(std * z1);
}

// A term of the hash of a sequence of floats v_i: the hash is the sum mod 2^64 over i of
// rng_hash_term(i, v_i), so threads and blocks may add their terms in any order and grouping
// (integer sums are exact). Two different bit patterns at one index give different terms.
RNG_HD uint64_t rng_hash_term(uint64_t i, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return splitmix64_mix(splitmix64_mix((i + 1) * SPLITMIX64_GOLDEN) ^ (uint64_t)bits);
}

#endif // GRASS_RNG_H
