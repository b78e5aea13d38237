/*
 * cuda/attention_cudnn.cu: causal grouped-query attention through cuDNN's fused SDPA (flash
 * attention) graph, forward and backward, bf16 in and out, fp32 softmax statistics
 * (--attention cudnn). Its own translation unit, the only one that includes the cudnn_frontend
 * headers (minutes and gigabytes of host compilation): cuda.mk compiles it once into
 * build/cuda/attention_cudnn_<arch>.o and links it where USE_CUDNN=1; the rest of the program sees
 * cuda/attention_cudnn.h. It includes no other header of this project (the backend's headers
 * define functions, which would clash at link), so errors are reported here, in the same words.
 *
 * cuDNN sees a (B, T, heads, hd) buffer whose tokens are ld elements apart as [B, heads, T, hd]
 * with strides (T*ld, hd, ld, 1): q, k, v side by side in the fused qkv buffer, out and dout
 * contiguous, stats [B, nh, T, 1] fp32.
 * One graph per (B, T, nh, nkv, hd, ld_q, ld_kv, direction), built on first use and kept (a
 * training run uses two, plus the evaluation's batch shape). Graph construction runs inside
 * try/catch: the frontend reports through error_t and, from inside, exceptions
 * (cudnn_frontend::cudnnException is a std::runtime_error); either ends in one error naming the
 * shape, the strides, the cuDNN and frontend versions and the hint --attention own.
 * The backward asks for cuDNN's deterministic algorithm (set_deterministic_algorithm: no atomic
 * accumulation of dQ, so two runs give the same bits, as the own kernels do); where cuDNN has no
 * deterministic engine for a shape the graph is rebuilt without it and the reason is handed back
 * (cudnn_att_workspace_bytes), for the trainer to print.
 * NOT RUN ON A GPU YET: compiled and linked here (nvcc 13, cuDNN 9.19, frontend 1.32, sm_90),
 * never executed; dev/cuda/attention_check compares it with the CPU reference on the first GPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <exception>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <cudnn_frontend.h>
#include "attention_cudnn.h"

namespace fe = cudnn_frontend;

enum { ATT_Q = 1, ATT_K, ATT_V, ATT_O, ATT_STATS, ATT_DO, ATT_DQ, ATT_DK, ATT_DV };

// the shape a graph is built for: B, T, nh, nkv, hd, ld_q, ld_kv, backward
typedef std::tuple<int, int, int, int, int, int, int, int> AttKey;
struct AttGraph {
    std::shared_ptr<fe::graph::Graph> g;
    int64_t workspace;      // bytes
    int deterministic;      // backward only: 1 when built with set_deterministic_algorithm(true)
    std::string why_not;    // backward only: cuDNN's reason when it was not
};

static cudnnHandle_t g_handle = NULL;
static std::map<AttKey, AttGraph> g_graphs;

void cudnn_att_versions(char* out, size_t n) {
    size_t v = cudnnGetVersion();  // the library loaded at run time: major*10000 + minor*100 + patch (cuDNN 9)
    snprintf(out, n, "cuDNN %zu.%zu.%zu (built with %d.%d.%d), cudnn_frontend %d.%d.%d", v / 10000, (v / 100) % 100, v % 100,
             CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL, CUDNN_FRONTEND_MAJOR_VERSION, CUDNN_FRONTEND_MINOR_VERSION,
             CUDNN_FRONTEND_PATCH_VERSION);
}

// the one way this file fails: what, for which shape, with which cuDNN, and what to do instead
[[noreturn]] static void att_fail(const char* step, const char* msg, const AttKey& key) {
    char ver[160];
    cudnn_att_versions(ver, sizeof(ver));
    int B = std::get<0>(key), T = std::get<1>(key), nh = std::get<2>(key), nkv = std::get<3>(key), hd = std::get<4>(key);
    int ld_q = std::get<5>(key), ld_kv = std::get<6>(key), bwd = std::get<7>(key);
    fprintf(stderr,
            "error: cuDNN fused attention (%s): %s failed: %s\n"
            "  shape: B=%d T=%d heads=%d kv_heads=%d head_dim=%d; q strides [B,h,T,d] (%lld, %d, %d, 1), k/v strides (%lld, %d, %d, 1)\n"
            "  %s\n"
            "  hint: --attention own (the default attention kernels) runs this shape\n",
            bwd ? "backward" : "forward", step, msg, B, T, nh, nkv, hd, (long long)T * ld_q, hd, ld_q, (long long)T * ld_kv, hd,
            ld_kv, ver);
    fflush(stderr);
    exit(1);
}

static cudnnHandle_t att_handle(const AttKey& key) {
    if (g_handle == NULL) {
        cudnnStatus_t s = cudnnCreate(&g_handle);
        if (s != CUDNN_STATUS_SUCCESS) att_fail("cudnnCreate", cudnnGetErrorString(s), key);
    }
    return g_handle;
}

// a [B, heads, T, hd] view of a (B, T, heads, hd) buffer whose tokens are ld elements apart
static fe::graph::Tensor_attributes att_bthd(const char* name, int uid, int B, int T, int heads, int hd, int ld) {
    return fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(uid)
        .set_dim({B, heads, T, hd})
        .set_stride({(int64_t)T * ld, hd, (int64_t)ld, 1});
}

// Builds the graph of `key` (backward: with the deterministic algorithm or not). Returns "" on
// success, else the failing step and cuDNN's message; exceptions are caught here.
static std::string att_try_build(const AttKey& key, int deterministic, AttGraph* out) {
    int B = std::get<0>(key), T = std::get<1>(key), nh = std::get<2>(key), nkv = std::get<3>(key), hd = std::get<4>(key);
    int ld_q = std::get<5>(key), ld_kv = std::get<6>(key), backward = std::get<7>(key);
    const char* step = "graph definition";
    try {
        auto g = std::make_shared<fe::graph::Graph>();
        g->set_io_data_type(fe::DataType_t::BFLOAT16)
            .set_intermediate_data_type(fe::DataType_t::FLOAT)
            .set_compute_data_type(fe::DataType_t::FLOAT);
        auto Q = g->tensor(att_bthd("Q", ATT_Q, B, T, nh, hd, ld_q));
        auto K = g->tensor(att_bthd("K", ATT_K, B, T, nkv, hd, ld_kv));
        auto V = g->tensor(att_bthd("V", ATT_V, B, T, nkv, hd, ld_kv));
        float scale = 1.0f / sqrtf((float)hd);
        if (!backward) {
            fe::graph::SDPA_attributes opt;
            opt.set_name("sdpa").set_generate_stats(true).set_causal_mask(true).set_attn_scale(scale);
            auto outs = g->sdpa(Q, K, V, opt);
            outs[0]->set_output(true).set_uid(ATT_O).set_dim({B, nh, T, hd}).set_stride({(int64_t)T * nh * hd, hd, (int64_t)nh * hd, 1});
            outs[1]->set_output(true).set_uid(ATT_STATS).set_data_type(fe::DataType_t::FLOAT)
                .set_dim({B, nh, T, 1}).set_stride({(int64_t)nh * T, T, 1, 1});
        } else {
            auto O = g->tensor(att_bthd("O", ATT_O, B, T, nh, hd, nh * hd));
            auto dO = g->tensor(att_bthd("dO", ATT_DO, B, T, nh, hd, nh * hd));
            auto stats = g->tensor(fe::graph::Tensor_attributes().set_name("stats").set_uid(ATT_STATS)
                                       .set_dim({B, nh, T, 1}).set_stride({(int64_t)nh * T, T, 1, 1})
                                       .set_data_type(fe::DataType_t::FLOAT));
            fe::graph::SDPA_backward_attributes opt;
            opt.set_name("sdpa_backward").set_causal_mask(true).set_attn_scale(scale).set_deterministic_algorithm(deterministic != 0);
            auto grads = g->sdpa_backward(Q, K, V, O, dO, stats, opt);
            grads[0]->set_output(true).set_uid(ATT_DQ).set_dim({B, nh, T, hd}).set_stride({(int64_t)T * ld_q, hd, (int64_t)ld_q, 1});
            grads[1]->set_output(true).set_uid(ATT_DK).set_dim({B, nkv, T, hd}).set_stride({(int64_t)T * ld_kv, hd, (int64_t)ld_kv, 1});
            grads[2]->set_output(true).set_uid(ATT_DV).set_dim({B, nkv, T, hd}).set_stride({(int64_t)T * ld_kv, hd, (int64_t)ld_kv, 1});
        }
        cudnnHandle_t h = att_handle(key);
        fe::error_t e;
        step = "validate";
        if ((e = g->validate()).is_bad()) return std::string(step) + ": " + e.get_message();
        step = "build_operation_graph";
        if ((e = g->build_operation_graph(h)).is_bad()) return std::string(step) + ": " + e.get_message();
        step = "create_execution_plans";
        if ((e = g->create_execution_plans({fe::HeurMode_t::A})).is_bad()) return std::string(step) + ": " + e.get_message();
        step = "check_support (no engine for this shape)";
        if ((e = g->check_support(h)).is_bad()) return std::string(step) + ": " + e.get_message();
        step = "build_plans";
        if ((e = g->build_plans(h)).is_bad()) return std::string(step) + ": " + e.get_message();
        int64_t ws = 0;
        step = "get_workspace_size";
        if ((e = g->get_workspace_size(ws)).is_bad()) return std::string(step) + ": " + e.get_message();
        if (ws < 0) return "get_workspace_size: a negative size";
        out->g = g;
        out->workspace = ws;
        out->deterministic = backward ? deterministic : 0;
        return "";
    } catch (const std::exception& ex) {
        return std::string(step) + ": exception: " + ex.what();
    } catch (...) {
        return std::string(step) + ": an exception that is not a std::exception";
    }
}

static AttGraph& att_graph(int B, int T, int nh, int nkv, int hd, int ld_q, int ld_kv, int backward) {
    AttKey key(B, T, nh, nkv, hd, ld_q, ld_kv, backward);
    auto it = g_graphs.find(key);
    if (it != g_graphs.end()) return it->second;
    AttGraph ag;
    std::string err = att_try_build(key, 1, &ag);
    if (!err.empty() && backward) {  // no deterministic engine for this shape: the ordinary one, and say why
        std::string det_err = err;
        err = att_try_build(key, 0, &ag);
        ag.why_not = det_err;
    }
    if (!err.empty()) {
        size_t colon = err.find(": ");
        std::string step = colon == std::string::npos ? err : err.substr(0, colon);
        std::string msg = colon == std::string::npos ? "" : err.substr(colon + 2);
        att_fail(step.c_str(), msg.c_str(), key);
    }
    return g_graphs[key] = ag;
}

size_t cudnn_att_workspace_bytes(int B, int T, int nh, int nkv, int hd, int ld_q, int ld_kv, int* deterministic, char* why,
                                 size_t why_n) {
    AttGraph& f = att_graph(B, T, nh, nkv, hd, ld_q, ld_kv, 0);
    AttGraph& b = att_graph(B, T, nh, nkv, hd, ld_q, ld_kv, 1);
    if (deterministic) *deterministic = b.deterministic;
    if (why && why_n) snprintf(why, why_n, "%s", b.why_not.c_str());
    return (size_t)(f.workspace > b.workspace ? f.workspace : b.workspace);
}

static void att_execute(AttGraph& ag, std::unordered_map<int64_t, void*>& pack, void* ws, size_t ws_bytes, cudaStream_t stream,
                        const AttKey& key) {
    if ((size_t)ag.workspace > ws_bytes) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the workspace given is %zu bytes, the graph needs %lld", ws_bytes, (long long)ag.workspace);
        att_fail("execute", msg, key);
    }
    cudnnHandle_t h = att_handle(key);
    cudnnStatus_t s = cudnnSetStream(h, stream);
    if (s != CUDNN_STATUS_SUCCESS) att_fail("cudnnSetStream", cudnnGetErrorString(s), key);
    try {
        fe::error_t e = ag.g->execute(h, pack, ws);
        if (e.is_bad()) att_fail("execute", e.get_message().c_str(), key);
    } catch (const std::exception& ex) {
        att_fail("execute", ex.what(), key);
    }
}

void cudnn_att_forward(void* out, float* stats, const void* q, const void* k, const void* v, int ld_q, int ld_kv, int B, int T,
                       int nh, int nkv, int hd, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    AttGraph& ag = att_graph(B, T, nh, nkv, hd, ld_q, ld_kv, 0);
    std::unordered_map<int64_t, void*> pack = {{ATT_Q, (void*)q}, {ATT_K, (void*)k}, {ATT_V, (void*)v}, {ATT_O, out},
                                               {ATT_STATS, (void*)stats}};
    att_execute(ag, pack, workspace, workspace_bytes, stream, AttKey(B, T, nh, nkv, hd, ld_q, ld_kv, 0));
}

void cudnn_att_backward(void* dq, void* dk, void* dv, const void* dout, const void* out, const void* q, const void* k,
                        const void* v, int ld_q, int ld_kv, const float* stats, int B, int T, int nh, int nkv, int hd,
                        void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    AttGraph& ag = att_graph(B, T, nh, nkv, hd, ld_q, ld_kv, 1);
    std::unordered_map<int64_t, void*> pack = {
        {ATT_Q, (void*)q},     {ATT_K, (void*)k},         {ATT_V, (void*)v}, {ATT_O, (void*)out}, {ATT_DO, (void*)dout},
        {ATT_STATS, (void*)stats}, {ATT_DQ, dq}, {ATT_DK, dk}, {ATT_DV, dv}};
    att_execute(ag, pack, workspace, workspace_bytes, stream, AttKey(B, T, nh, nkv, hd, ld_q, ld_kv, 1));
}
