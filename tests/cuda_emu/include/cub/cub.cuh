/*
 * cub/cub.cuh (CUDA emulator): cub::DeviceRadixSort::SortPairs / SortPairsDescending on the CPU,
 * with CUB's ordering: keys compared by their radix bits [begin_bit, end_bit) after CUB's
 * twiddle (floats: sign-magnitude to unsigned order, -0.0 equal to +0.0; signed integers: sign
 * bit flipped); stable, so equal keys keep their input order in both directions.
 */
#ifndef GRASS_EMU_CUB_CUH
#define GRASS_EMU_CUB_CUH
#include <stdint.h>
#include <string.h>
#include <vector>
#include <algorithm>
#include <type_traits>

namespace cub {
namespace emu_detail {
template <typename K> inline uint64_t radix_bits(K key) {
    if (std::is_floating_point<K>::value) {
        if (key == (K)0) key = (K)0;  // -0.0 -> +0.0
        uint64_t u = 0;
        memcpy(&u, &key, sizeof(K));
        uint64_t sign = (uint64_t)1 << (8 * sizeof(K) - 1);
        uint64_t all = sizeof(K) == 8 ? ~(uint64_t)0 : (((uint64_t)1 << (8 * sizeof(K))) - 1);
        return (u & sign) ? (~u & all) : (u | sign);
    }
    uint64_t u = 0;
    memcpy(&u, &key, sizeof(K));
    if (std::is_signed<K>::value) u ^= (uint64_t)1 << (8 * sizeof(K) - 1);
    return u;
}
template <typename K, typename V>
inline cudaError_t sort_pairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out, const V* vals_in, V* vals_out,
                              int n, int begin_bit, int end_bit, bool descending) {
    if (temp == NULL) { temp_bytes = 256; return cudaSuccess; }
    if (temp_bytes < 256 || begin_bit < 0 || end_bit > (int)(8 * sizeof(K)) || begin_bit >= end_bit || n < 0)
        return cudaErrorInvalidValue;
    if (!emu::in_device(temp, temp_bytes) || (n > 0 && (!emu::in_device(keys_in, n * sizeof(K)) ||
        !emu::in_device(keys_out, n * sizeof(K)) || !emu::in_device(vals_in, n * sizeof(V)) ||
        !emu::in_device(vals_out, n * sizeof(V)))))
        return cudaErrorInvalidValue;
    int width = end_bit - begin_bit;
    uint64_t mask = width >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << width) - 1);
    std::vector<uint64_t> digit(n);
    std::vector<int> order(n);
    for (int i = 0; i < n; i++) { digit[i] = (radix_bits(keys_in[i]) >> begin_bit) & mask; order[i] = i; }
    if (descending) std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return digit[a] > digit[b]; });
    else std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return digit[a] < digit[b]; });
    std::vector<K> k(n);
    std::vector<V> v(n);
    for (int i = 0; i < n; i++) { k[i] = keys_in[order[i]]; v[i] = vals_in[order[i]]; }
    for (int i = 0; i < n; i++) { keys_out[i] = k[i]; vals_out[i] = v[i]; }
    return cudaSuccess;
}
}  // namespace emu_detail

struct DeviceRadixSort {
    template <typename K, typename V>
    static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out, const V* vals_in,
                                 V* vals_out, int n, int begin_bit = 0, int end_bit = sizeof(K) * 8, cudaStream_t = 0) {
        return emu_detail::sort_pairs(temp, temp_bytes, keys_in, keys_out, vals_in, vals_out, n, begin_bit, end_bit, false);
    }
    template <typename K, typename V>
    static cudaError_t SortPairsDescending(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out, const V* vals_in,
                                           V* vals_out, int n, int begin_bit = 0, int end_bit = sizeof(K) * 8,
                                           cudaStream_t = 0) {
        return emu_detail::sort_pairs(temp, temp_bytes, keys_in, keys_out, vals_in, vals_out, n, begin_bit, end_bit, true);
    }
};
}  // namespace cub
#endif
