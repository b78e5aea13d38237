/*
 * cuda/attention_cudnn.cuh: causal grouped-query attention through cuDNN's fused SDPA (flash
 * attention) graph, forward and backward, bf16 in and out, fp32 softmax statistics
 * (--attention cudnn). Built only with -DGRASS_CUDNN (cuda.mk: USE_CUDNN=1, on by default where
 * cudnn.h and the cudnn_frontend headers are found: `pip install nvidia-cudnn-frontend`, or
 * CUDNN_FRONTEND_INCLUDE=...). The attention kernels of cuda/attention.cuh stay the default and
 * the emulator's path; scripts/gpu_check.sh compares the two (dev/cuda/attention_check).
 *
 * Layouts, the same buffers as the own kernels use: q, k and v side by side in the fused qkv
 * buffer, (B, T, heads, hd) each with its tokens ld_q (q) or ld_kv (k, v) elements apart (dq, dk,
 * dv the same), which cuDNN sees as [B, heads, T, hd] with strides (T*ld, hd, ld, 1); out and dout
 * contiguous (ld = nh*hd); the statistics are cuDNN's softmax stats in the lse buffer, [B, nh, T]
 * (its backward reads them; nothing else does while this path is on).
 *
 * One graph per (B, T, nh, nkv, hd, ld_q, ld_kv, direction), built on first use and kept (a
 * training run uses two, plus the evaluation's batch shape). Its workspace comes from a scratch
 * buffer that grows on the first calls only, so the steady state allocates nothing.
 * NOT RUN ON A GPU YET: compiled and linked here (nvcc, cuDNN 9), never executed; the first GPU
 * session runs dev/cuda/attention_check against the CPU reference before anything trusts it.
 */
#ifndef GRASS_CUDA_ATTENTION_CUDNN_CUH
#define GRASS_CUDA_ATTENTION_CUDNN_CUH

#include <cudnn.h>
#include <cudnn_frontend.h>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>
#include "common.cuh"

namespace cudnn_fe = cudnn_frontend;

enum { CUDNN_ATT_Q = 1, CUDNN_ATT_K, CUDNN_ATT_V, CUDNN_ATT_O, CUDNN_ATT_STATS, CUDNN_ATT_DO, CUDNN_ATT_DQ, CUDNN_ATT_DK,
       CUDNN_ATT_DV };

static cudnnHandle_t g_cudnn_handle = NULL;
static CuScratch g_cudnn_ws = {NULL, 0};

static void cudnn_status_check(cudnnStatus_t s, const char* call) {
    if (s != CUDNN_STATUS_SUCCESS) fatal("cuDNN: %s failed: %s", call, cudnnGetErrorString(s));
}
static void cudnn_fe_check(cudnn_fe::error_t e, const char* step, int B, int T, int nh, int nkv, int hd) {
    if (e.is_bad())
        fatal("cuDNN fused attention (B=%d T=%d heads %d/%d head_dim %d): %s: %s; use --attention own", B, T, nh, nkv, hd,
              step, e.get_message().c_str());
}
static cudnnHandle_t cudnn_att_handle(void) {
    if (g_cudnn_handle == NULL) {
        cudnn_status_check(cudnnCreate(&g_cudnn_handle), "cudnnCreate");
        cudnn_status_check(cudnnSetStream(g_cudnn_handle, g_cu.stream), "cudnnSetStream");
    }
    return g_cudnn_handle;
}

// what cuDNN's flash attention takes: bf16 (or fp16) storage, head_dim a multiple of 8 up to 256
static int cudnn_attention_supported(char* why, size_t n) {
    if (sizeof(floatX) != 2) { snprintf(why, n, "this is the fp32 build; cuDNN's fused attention needs bf16"); return 0; }
    return 1;
}

typedef std::tuple<int, int, int, int, int, int, int, int> CudnnAttKey;  // B, T, nh, nkv, hd, ld_q, ld_kv, backward
static std::map<CudnnAttKey, std::shared_ptr<cudnn_fe::graph::Graph>>& cudnn_att_graphs(void) {
    static std::map<CudnnAttKey, std::shared_ptr<cudnn_fe::graph::Graph>> graphs;
    return graphs;
}

// a [B, heads, T, hd] view of a (B, T, heads, hd) buffer whose tokens are ld elements apart
static cudnn_fe::graph::Tensor_attributes cudnn_att_bthd(const char* name, int uid, int B, int T, int heads, int hd, int ld) {
    return cudnn_fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(uid)
        .set_dim({B, heads, T, hd})
        .set_stride({(int64_t)T * ld, hd, (int64_t)ld, 1});
}

static std::shared_ptr<cudnn_fe::graph::Graph> cudnn_att_graph(int B, int T, int nh, int nkv, int hd, int ld_q, int ld_kv,
                                                                int backward) {
    CudnnAttKey key(B, T, nh, nkv, hd, ld_q, ld_kv, backward);
    auto& graphs = cudnn_att_graphs();
    auto it = graphs.find(key);
    if (it != graphs.end()) return it->second;
    auto g = std::make_shared<cudnn_fe::graph::Graph>();
    g->set_io_data_type(cudnn_fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(cudnn_fe::DataType_t::FLOAT)
        .set_compute_data_type(cudnn_fe::DataType_t::FLOAT);
    auto Q = g->tensor(cudnn_att_bthd("Q", CUDNN_ATT_Q, B, T, nh, hd, ld_q));
    auto K = g->tensor(cudnn_att_bthd("K", CUDNN_ATT_K, B, T, nkv, hd, ld_kv));
    auto V = g->tensor(cudnn_att_bthd("V", CUDNN_ATT_V, B, T, nkv, hd, ld_kv));
    float scale = 1.0f / sqrtf((float)hd);
    if (!backward) {
        cudnn_fe::graph::SDPA_attributes opt;
        opt.set_name("sdpa").set_generate_stats(true).set_causal_mask(true).set_attn_scale(scale);
        auto outs = g->sdpa(Q, K, V, opt);
        auto O = outs[0], stats = outs[1];
        O->set_output(true).set_uid(CUDNN_ATT_O).set_dim({B, nh, T, hd}).set_stride({(int64_t)T * nh * hd, hd, (int64_t)nh * hd, 1});
        stats->set_output(true).set_uid(CUDNN_ATT_STATS).set_data_type(cudnn_fe::DataType_t::FLOAT)
            .set_dim({B, nh, T, 1}).set_stride({(int64_t)nh * T, T, 1, 1});
    } else {
        auto O = g->tensor(cudnn_att_bthd("O", CUDNN_ATT_O, B, T, nh, hd, nh * hd));
        auto dO = g->tensor(cudnn_att_bthd("dO", CUDNN_ATT_DO, B, T, nh, hd, nh * hd));
        auto stats = g->tensor(cudnn_fe::graph::Tensor_attributes().set_name("stats").set_uid(CUDNN_ATT_STATS)
                                   .set_dim({B, nh, T, 1}).set_stride({(int64_t)nh * T, T, 1, 1})
                                   .set_data_type(cudnn_fe::DataType_t::FLOAT));
        cudnn_fe::graph::SDPA_backward_attributes opt;
        opt.set_name("sdpa_backward").set_causal_mask(true).set_attn_scale(scale);
        auto grads = g->sdpa_backward(Q, K, V, O, dO, stats, opt);
        grads[0]->set_output(true).set_uid(CUDNN_ATT_DQ).set_dim({B, nh, T, hd}).set_stride({(int64_t)T * ld_q, hd, (int64_t)ld_q, 1});
        grads[1]->set_output(true).set_uid(CUDNN_ATT_DK).set_dim({B, nkv, T, hd}).set_stride({(int64_t)T * ld_kv, hd, (int64_t)ld_kv, 1});
        grads[2]->set_output(true).set_uid(CUDNN_ATT_DV).set_dim({B, nkv, T, hd}).set_stride({(int64_t)T * ld_kv, hd, (int64_t)ld_kv, 1});
    }
    cudnnHandle_t h = cudnn_att_handle();
    cudnn_fe_check(g->validate(), "validate", B, T, nh, nkv, hd);
    cudnn_fe_check(g->build_operation_graph(h), "build_operation_graph", B, T, nh, nkv, hd);
    cudnn_fe_check(g->create_execution_plans({cudnn_fe::HeurMode_t::A}), "create_execution_plans", B, T, nh, nkv, hd);
    cudnn_fe_check(g->check_support(h), "check_support (no engine for this shape)", B, T, nh, nkv, hd);
    cudnn_fe_check(g->build_plans(h), "build_plans", B, T, nh, nkv, hd);
    graphs[key] = g;
    return g;
}

static void* cudnn_att_workspace(const std::shared_ptr<cudnn_fe::graph::Graph>& g) {
    int64_t bytes = 0;
    if (g->get_workspace_size(bytes).is_bad() || bytes < 0) fatal("cuDNN fused attention: get_workspace_size failed");
    return bytes > 0 ? cu_scratch(&g_cudnn_ws, (size_t)bytes, "cuDNN attention workspace") : NULL;
}

void attention_forward_cudnn(floatX* out, float* lse, const floatX* q, const floatX* k, const floatX* v, int ld_q, int ld_kv,
                             int B, int T, int nh, int nkv, int hd) {
    auto g = cudnn_att_graph(B, T, nh, nkv, hd, ld_q, ld_kv, 0);
    void* ws = cudnn_att_workspace(g);
    std::unordered_map<int64_t, void*> pack = {{CUDNN_ATT_Q, (void*)q}, {CUDNN_ATT_K, (void*)k}, {CUDNN_ATT_V, (void*)v},
                                               {CUDNN_ATT_O, (void*)out}, {CUDNN_ATT_STATS, (void*)lse}};
    cudnn_fe_check(g->execute(cudnn_att_handle(), pack, ws), "execute (forward)", B, T, nh, nkv, hd);
    if (g_cu.sync_debug) cudaCheck(cudaStreamSynchronize(g_cu.stream));
}

void attention_backward_cudnn(floatX* dq, floatX* dk, floatX* dv, const floatX* dout, const floatX* out, const floatX* q,
                              const floatX* k, const floatX* v, int ld_q, int ld_kv, const float* lse, int B, int T, int nh,
                              int nkv, int hd) {
    auto g = cudnn_att_graph(B, T, nh, nkv, hd, ld_q, ld_kv, 1);
    void* ws = cudnn_att_workspace(g);
    std::unordered_map<int64_t, void*> pack = {
        {CUDNN_ATT_Q, (void*)q},     {CUDNN_ATT_K, (void*)k},   {CUDNN_ATT_V, (void*)v},   {CUDNN_ATT_O, (void*)out},
        {CUDNN_ATT_DO, (void*)dout}, {CUDNN_ATT_STATS, (void*)lse}, {CUDNN_ATT_DQ, (void*)dq}, {CUDNN_ATT_DK, (void*)dk},
        {CUDNN_ATT_DV, (void*)dv}};
    cudnn_fe_check(g->execute(cudnn_att_handle(), pack, ws), "execute (backward)", B, T, nh, nkv, hd);
    if (g_cu.sync_debug) cudaCheck(cudaStreamSynchronize(g_cu.stream));
}

#endif // GRASS_CUDA_ATTENTION_CUDNN_CUH
