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
 */
#ifndef GRASS_RNG_H
#define GRASS_RNG_H

#include <stdint.h>

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

#endif // GRASS_RNG_H
