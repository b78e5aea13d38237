/*
 * mma.h (CUDA emulator): nvcuda::wmma on the CPU. A fragment is the whole tile as a plain matrix,
 * held and computed by lane 0 of the warp (the other lanes only take part in the barriers, which
 * is all a program can observe: fragments are opaque here, element access is not emulated);
 * load_matrix_sync and store_matrix_sync are warp barriers (all lanes have loaded before any
 * lane stores), and the pointer and stride rules of the real API (256-bit aligned pointers,
 * ldm a multiple of 16 bytes) are checked on every lane. mma_sync accumulates in
 * fp32 in k order (tensor cores use their own order; the tests' tolerances cover the difference).
 */
#ifndef GRASS_EMU_MMA_H
#define GRASS_EMU_MMA_H
#include <stdint.h>
#include <cuda_bf16.h>

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K> struct frag_shape;
template <int M, int N, int K> struct frag_shape<matrix_a, M, N, K> { enum { rows = M, cols = K }; };
template <int M, int N, int K> struct frag_shape<matrix_b, M, N, K> { enum { rows = K, cols = N }; };
template <int M, int N, int K> struct frag_shape<accumulator, M, N, K> { enum { rows = M, cols = N }; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    enum { rows = frag_shape<Use, M, N, K>::rows, cols = frag_shape<Use, M, N, K>::cols, num_elements = rows * cols };
    float v[rows * cols];  // logical tile, row-major, as floats
};

inline float emu_wmma_f(float x) { return x; }
inline float emu_wmma_f(__nv_bfloat16 x) { return __bfloat162float(x); }

inline int emu_wmma_lane() { return emu::current("wmma").lane; }

template <typename T>
inline void emu_wmma_check(const T* p, unsigned ldm, const char* what) {
    if (((uintptr_t)p & 31) != 0) emu::die("%s: pointer not 256-bit aligned (kernel %s)", what, emu::g_sched.blk.kernel);
    if ((ldm * sizeof(T)) % 16 != 0) emu::die("%s: ldm not a multiple of 16 bytes (kernel %s)", what, emu::g_sched.blk.kernel);
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
    emu_wmma_check(p, ldm, "wmma::load_matrix_sync");
    typedef fragment<Use, M, N, K, T, Layout> F;
    if (emu_wmma_lane() == 0)
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            f.v[r * F::cols + c] = emu_wmma_f(std::is_same<Layout, row_major>::value ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]);
    emu::warp_barrier(0xffffffffu, "wmma::load_matrix_sync");
}
template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout) {
    emu_wmma_check(p, ldm, "wmma::load_matrix_sync");
    if (emu_wmma_lane() == 0)
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) f.v[r * N + c] = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    emu::warp_barrier(0xffffffffu, "wmma::load_matrix_sync");
}
template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
    emu_wmma_check(p, ldm, "wmma::store_matrix_sync");
    emu::warp_barrier(0xffffffffu, "wmma::store_matrix_sync");
    if (emu_wmma_lane() == 0)
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) (layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.v[r * N + c];
}
template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float x) {
    for (int i = 0; i < fragment<Use, M, N, K, T, Layout>::num_elements; i++) f.v[i] = x;
}
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    if (emu_wmma_lane() != 0) return;
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.v[i * N + j];
            for (int k = 0; k < K; k++) s += a.v[i * K + k] * b.v[k * N + j];
            out[i * N + j] = s;
        }
    for (int i = 0; i < M * N; i++) d.v[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda
#endif
