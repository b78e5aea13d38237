/*
 * bf16.h: the host's bf16 conversion, used wherever bf16 values are stored or read on the
 * host (bf16 checkpoints, bf16 optimizer moments on the CPU, test references).
 * bf16 = the top 16 bits of an fp32. bf16_from_float rounds to nearest even and keeps a NaN a
 * (quiet) NaN, as __float2bfloat16_rn does on the GPU; bf16_to_float is exact.
 */
#ifndef GRASS_BF16_H
#define GRASS_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t bf16_from_float(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

#endif // GRASS_BF16_H
