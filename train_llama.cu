/*
 * train_llama.cu: LLaMA pretraining with full-rank AdamW or Grass, for the CPU and the GPU.
 *
 * This file is the trainer: the memory plan, the steps of a run, and main(), their table of
 * contents. The command line is train_args.h, checkpoints and resume train_checkpoint.h. The
 * model is llama_model.h, the optimizers grass_optim.cuh; both are written
 * once and built two ways, with the kernels of a backend:
 *   nvcc  -> backend_cuda.cuh  (bf16, cuBLASLt, NCCL)      make train_llama
 *   g++   -> backend_cpu.h     (fp32, OpenMP, OpenBLAS, MPI) make train_llama_cpu
 * docs/ARCHITECTURE.md shows who calls whom.
 */
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include "utils.h"
#include "llama_model.h"    // the model; it brings the backend (CPU or CUDA) and backend.h
#include "comm.h"
#include "grass_optim.cuh"
#include "dataloader.h"
#include "tokenizer.h"
#include "train_args.h"       // the command line: the option table, parsing, the saved setup
#include "train_checkpoint.h" // checkpoints: writing them, and finding and loading one for -y 1

// ----------------------------------------------------------------------------------------------
// memory plan, schedule, evaluation, samples

static double gib(size_t b) { return b / 1073741824.0; }

// "12.345 GiB" from 1 GiB up, else "123.4 MiB", so small and large models both read well
static const char* fmt_bytes(size_t b, char* buf) {
    if (b >= ((size_t)1 << 30)) snprintf(buf, 32, "%9.3f GiB", gib(b));
    else snprintf(buf, 32, "%9.1f MiB", b / 1048576.0);
    return buf;
}

// bytes a run may plan for: --memory-limit-gb when given, else what the backend reports free (0: unknown)
static size_t memory_available(float limit_gb) {
    return limit_gb > 0 ? (size_t)(limit_gb * 1073741824.0) : backend_memory_free();
}

// Prints what the run will allocate (pt: the parameter table setup builds) and refuses a run that
// cannot fit; returns the planned total.
static size_t memory_plan(const ParamTable* pt, const LlamaConfig* c, const OptimConfig* oc, const OptimRuntime* rt,
                          int B, int T, int recompute, float limit_gb, int refuse) {
    int rank = rt->rank;
    OptimPlan op;
    optim_plan(oc, rt, pt, &op);
    size_t weights = pt->total * sizeof(floatX);
    size_t acts = llama_activation_bytes(c, B, T, recompute);
    WorkspaceSizes ws;
    ws.N = (size_t)B * T; ws.att_rows = (size_t)B * c->n_heads * T; ws.d = c->dim; ws.T = T;
    ws.gather = ws.N * op.max_gather; ws.norm_block = op.max_matrix; ws.wire = op.max_sub;
    ws.select_dim = oc->select_on_device ? op.max_dim_sel : 0;
    ws.B = B; ws.nh = c->n_heads; ws.nkv = c->n_kv_heads; ws.hd = llama_head_dim(c);
    size_t work = backend_workspace_bytes(&ws);
    char att_note[768];
    size_t att_work = backend_attention_workspace_bytes(&ws, att_note, sizeof(att_note));  // cuDNN's, --attention cudnn
    size_t total = weights + op.master_bytes + op.dense_grad_bytes + op.compressed_bytes + op.state_bytes +
                   op.other_bytes + op.normpass_bytes + op.work_bytes + acts + work + att_work;
    if (rank == 0) {
        char b[6][32];
        printf("memory plan (%s weights, %s optimizer states):\n", FLOATX_NAME,
               oc->state_dtype == STATE_BF16 ? "bf16" : "fp32");
        printf("  parameters        %12zu  %s", pt->total_hf, fmt_bytes(weights, b[0]));
        if (pt->total != pt->total_hf)
            printf("   (stored: %zu, the ffn padded from %d to %d)", pt->total, c->ffn_dim, pt->ffn_stored);
        printf("\n");
        printf("  gradients (dense) %12s  %s   (%s, %zu bytes per value)\n", "", fmt_bytes(op.dense_grad_bytes, b[1]),
               oc->grad_dtype == GRAD_FP32 ? "fp32" : FLOATX_NAME, grad_dtype_size(oc->grad_dtype));
        optim_plan_rows_gradients(oc, &op, fmt_bytes);
        printf("  optimizer states  %12s  %s\n", "", fmt_bytes(op.state_bytes, b[3]));
        if (op.master_bytes)
            printf("  master weights    %12s  %s   (fp32 copy)\n", "", fmt_bytes(op.master_bytes, b[4]));
        optim_plan_rows_refresh(oc, rt, &op, fmt_bytes);
        if (op.other_bytes)
            printf("  optimizer other   %12s  %s   (%snorm scalars%s)\n", "", fmt_bytes(op.other_bytes, b[4]),
                                   optim_plan_other_note(oc),
                                   rt->overlap && sizeof(floatX) < sizeof(float) ? ", all-reduce wire buffers" : "");
        printf("  activations       %12s  %s   (B=%d, T=%d%s)\n", "", fmt_bytes(acts, b[5]), B, T,
               recompute ? ", recomputed per layer" : "");
        printf("  backend workspace %12s  %s   (GEMM workspace, scratch; estimate)\n", "", fmt_bytes(work, b[5]));
        if (att_note[0]) printf("  attention workspace%11s  %s   (%s)\n", "", fmt_bytes(att_work, b[5]), att_note);
        printf("  total             %12s  %s\n", "", fmt_bytes(total, b[0]));
        printf("communication per optimizer step with several ranks: %.3f MiB all-reduced (dense gradients %.3f MiB "
               "in %s)", op.comm_step_bytes / 1048576.0, op.comm_dense_bytes / 1048576.0,
               oc->grad_dtype == GRAD_FP32 ? "fp32" : FLOATX_NAME);
        optim_plan_comm_refresh(oc, &op);
        printf("\n");
    }
    size_t avail = memory_available(limit_gb);
    if (refuse && avail > 0 && total > avail) {
        fatal("this run needs %.2f GiB but %.2f GiB is available (%s); reduce -b/--batch, -t/--seq or the model, "
              "or use --optimizer grass with a smaller --rank", gib(total), gib(avail),
              limit_gb > 0 ? "--memory-limit-gb" : "free memory reported by the backend");
    }
    return total;
}

// linear warmup to the peak, then cosine down to min_ratio * peak at the last step
static float lr_at(const TrainArgs* a, int step) {
    if (a->warmup > 0 && step < a->warmup) return a->lr * (float)(step + 1) / (float)a->warmup;
    int span = a->steps - a->warmup;
    if (span <= 1) return a->lr;
    double progress = (double)(step - a->warmup) / (double)(span - 1);
    if (progress > 1.0) progress = 1.0;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return (float)(a->lr * (a->min_lr_ratio + (1.0 - a->min_lr_ratio) * cosine));
}

// Executed FLOPs per token of one optimizer step: what the GEMMs and attention of this step do,
// where the model-FLOPs formula (6 N + 12 L d T) counts a full-rank step. Per linear weight
// (m x n): forward 2mn, input gradient 2mn, weight gradient 2mn (dense) or 2 r_eff n' (Grass's
// gathered GEMM, n' the other dimension). A refresh step adds its norm pass: a forward and an
// input-gradient pass over every matrix, plus per projected matrix 2mn (norms or whole
// gradients) or 2k(m + n) (the sketch). Attention: 12 L d T, as in the model formula.
static double executed_flops_per_token(const Llama* m, const Optimizer* o, int T, int refresh) {
    const ParamTable* pt = &m->pt;
    double f = 12.0 * m->config.n_layers * m->config.dim * (double)T;
    for (int i = 0; i < pt->n; i++) {
        const ParamTensor* t = &pt->t[i];
        int head_tied = i == pt->embed && pt->lm_head == pt->embed;
        if (t->kind != PT_LINEAR && t->kind != PT_HEAD && !head_tied) continue;
        double mn = (double)t->numel;
        f += 4.0 * mn + optim_weight_grad_flops(o, i, mn);  // the optimizer's: dense, gathered or projected
        if (!refresh) continue;
        f += 4.0 * mn;
        if (o->gm_of_tensor[i] >= 0) f += optim_norm_pass_flops(o, i, mn);
    }
    return f;
}

// Mean validation loss over eval_batches micro-batches of every rank.
static double validation_loss(Llama* m, DataLoader* val, int eval_batches, ProcessGroup* pg) {
    dataloader_reset(val);
    double sum = 0.0;
    for (int i = 0; i < eval_batches; i++) {
        dataloader_next_batch(val);
        sum += llama_forward(m, val->inputs, val->targets, val->B, val->T, 0, 0.0f);
    }
    double buf[2] = {sum, (double)eval_batches};
    comm_allreduce_sum_double(pg, buf, 2, "the all-reduce of the validation loss (MPI_Allreduce)");
    return buf[0] / buf[1];
}

// Generates n tokens after a BOS, sampling from softmax(logits) with a host RNG.
static void print_sample(Llama* m, Tokenizer* tok, int n, uint64_t* rng, int step) {
    int T = m->T < m->config.max_seq_len ? m->T : m->config.max_seq_len;
    if (n > T - 1) n = T - 1;
    int* ids = (int*)calloc_check(T, sizeof(int));
    int* zeros = (int*)calloc_check(T, sizeof(int));
    float* logits = (float*)malloc_check((size_t)m->config.vocab_size * sizeof(float));
    ids[0] = tok->bos_id;
    int V = m->config.vocab_size;
    for (int t = 1; t <= n; t++) {
        llama_forward_queue(m, ids, zeros, 1, t, 0, 0.0f);  // the logits are what is read
        backend_download_floats(logits, m->logits + (size_t)(t - 1) * V, V);
        float mx = logits[0];
        for (int j = 1; j < V; j++) if (logits[j] > mx) mx = logits[j];
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)(logits[j] - mx));
        double u = rng_uniform01(rng) * sum, c = 0.0;
        int pick = V - 1;
        for (int j = 0; j < V; j++) { c += exp((double)(logits[j] - mx)); if (c > u) { pick = j; break; } }
        ids[t] = pick;
        if (pick == tok->eos_id) { n = t; break; }
    }
    size_t len = 0;
    char* text = tokenizer_decode_alloc(tok, ids + 1, n, &len);
    printf("---- sample at step %d%s ----\n%s\n----------------\n", step, step == 0 ? " (before training)" : "", text);
    free(text); free(ids); free(zeros); free(logits);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void format_eta(double s, char* buf, size_t n) {
    if (s < 0 || !isfinite(s)) { snprintf(buf, n, "?"); return; }
    int h = (int)(s / 3600), mi = (int)(s / 60) % 60, se = (int)s % 60;
    if (h > 0) snprintf(buf, n, "%dh%02dm", h, mi); else snprintf(buf, n, "%dm%02ds", mi, se);
}

// mkdir -p
static void make_dir(const char* path) {
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char* p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                fatal("cannot create directory '%s': %s", buf, strerror(errno));
            *p = c;
            if (c == '\0') break;
        }
    }
}

// SIGINT (Ctrl-C) or SIGTERM (kill, a scheduler's preemption): the run finishes the step it is
// in, writes a checkpoint and exits 0; -y 1 continues it. The ranks agree through the step's
// loss all-reduce, so a signal to any one rank stops them all after the same step. A second
// signal stops the process at once.
static volatile sig_atomic_t stop_signal = 0;
static void on_stop_signal(int sig) {
    if (stop_signal != 0) { signal(sig, SIG_DFL); raise(sig); return; }
    stop_signal = sig;
}
static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // reads and writes in flight continue
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        fatal("sigaction: %s", strerror(errno));
}

// Fault injection for the tests: GRASS_FAULT_RANK=r GRASS_FAULT_STEP=s makes rank r die at step s,
// as a crashed node would (the other ranks must not hang); GRASS_FAULT_SIGNAL_STEP=s (with
// GRASS_FAULT_SIGNAL_RANK=r, default 0) makes rank r send itself SIGTERM at step s, as a
// scheduler's preemption would. tests/test_faults.sh, tests/test_mpi.sh.
static void fault_injection(ProcessGroup* pg, int step) {
    const char* fr = getenv("GRASS_FAULT_RANK");
    const char* fs = getenv("GRASS_FAULT_STEP");
    if (fr != NULL && fs != NULL && atoi(fr) == pg->rank && atoi(fs) == step) {
        fprintf(stderr, "rank %d: GRASS_FAULT_RANK/GRASS_FAULT_STEP: dying at step %d\n", pg->rank, step);
        _exit(3);
    }
    const char* ss = getenv("GRASS_FAULT_SIGNAL_STEP");
    const char* sr = getenv("GRASS_FAULT_SIGNAL_RANK");
    if (ss != NULL && atoi(ss) == step && (sr == NULL ? 0 : atoi(sr)) == pg->rank) {
        fprintf(stderr, "rank %d: GRASS_FAULT_SIGNAL_STEP: sending itself SIGTERM at step %d\n", pg->rank, step);
        raise(SIGTERM);
    }
}

// ----------------------------------------------------------------------------------------------
// the run: main's steps, and what they share

// One training run: the resolved flags, the ranks, the model, the optimizer, the data and the
// log. setup and build_run fill it; the steps of the loop read and advance it.
typedef struct {
    ProcessGroup pg;
    TrainArgs a;
    int master;                   // rank 0: prints, and writes log.txt
    LlamaConfig config;
    OptimRuntime rt;
    long long micro_tokens;       // tokens of one micro-batch over all ranks
    int accum;                    // micro-batches per optimizer step (gradient accumulation)
    int have_checkpoint;          // -y 1 found a checkpoint to resume from: this step and files
    long long resume_step;
    char resume_model[1024], resume_state[1024];
    char attention_note[256];     // with --attention cudnn: cuDNN's and its frontend's versions
    size_t planned_bytes;         // the memory plan's total
    DataLoader train, val;
    int have_val, eval_batches;
    Tokenizer tok;
    int have_tok;
    Llama model;
    Optimizer opt;
    TrainState ts;
    int resumed;                  // the weights and state came from a checkpoint
    FILE* logf;                   // log.txt (rank 0; NULL elsewhere)
    double flops_per_token;       // model FLOPs per token (MFU's numerator)
    double peak;                  // peak FLOP/s of the device (0: unknown, no MFU)
    float dloss;                  // the loss gradient's scale: 1 / tokens per optimizer step
    double time_sum;              // seconds of the timed steps (all but the first), for the ETA
    int timed_steps;
} TrainRun;

// What one optimizer step reports to log_step.
typedef struct {
    float lr, gnorm;
    double loss, dt;
    int refreshed;                // the step began with a refresh (its norm pass ran)
    int stop_now;                 // a stop signal reached some rank: checkpoint and stop
} StepResult;

// The flags, and under -y 1 the checkpoint's saved setup, become the model config and the
// optimizer's config; the run's setup text is fixed from here on.
static void read_setup(TrainRun* r, int argc, char** argv) {
    TrainArgs* a = &r->a;
    train_args_defaults(a);
    parse_args(a, argc, argv, r->pg.rank);
    // from here on, every wait on the other ranks is timed (comm_watchdog.h)
    watchdog_start(r->pg.rank, r->pg.world_size, (const char(*)[64])r->pg.hosts, a->comm_timeout);
    // -y 1 with a checkpoint: the run's setup (model, batch, optimizer, data, schedule) comes from
    // its state file, the command line only changes what may change (apply_saved_setup)
    r->resume_model[0] = r->resume_state[0] = '\0';
    r->resume_step = -1;
    r->have_checkpoint = a->resume && find_resume_checkpoint(&r->pg, a->out_dir, &r->resume_step, r->resume_model,
                                                             r->resume_state, sizeof(r->resume_model));
    if (r->have_checkpoint) {
        char* saved = run_setup_from_state(r->resume_state);
        if (saved != NULL) apply_saved_setup(a, r->resume_state, saved);
        else apply_implied_setup(a);  // a file from before saved setups: what such runs did
    }
    if (a->init_from != NULL && !r->have_checkpoint) config_from_model_file(a, a->init_from, &r->config);
    else resolve_config(a, &r->config);
    resolve_optim(a);
    a->setup = run_setup_text(a);
}

// The backend, and the run's derived sizes: gradient accumulation, the optimizer's runtime, warmup.
static void start_backend(TrainRun* r) {
    TrainArgs* a = &r->a;
    g_llama_ffn_align = a->ffn_align;  // before any model or plan is built
    backend_init(r->pg.local_rank);
    r->master = r->pg.rank == 0;
    r->attention_note[0] = '\0';
    int use_cudnn = strcmp(a->attention, "cudnn") == 0;
    if (!use_cudnn && strcmp(a->attention, "own") != 0) fatal("--attention '%s': own | cudnn", a->attention);
    if (!backend_attention_select(use_cudnn, r->attention_note, sizeof(r->attention_note)))
        fatal("--attention cudnn: %s", r->attention_note);

    if (a->T > r->config.max_seq_len)
        fatal("-t/--seq %d is longer than the model's max_seq_len %d", a->T, r->config.max_seq_len);
    r->micro_tokens = (long long)a->B * a->T * r->pg.world_size;
    if (a->total_batch < 0) a->total_batch = r->micro_tokens;
    if (a->total_batch % r->micro_tokens != 0)
        fatal("--total-batch %lld is not a multiple of B*T*ranks = %d*%d*%d = %lld", a->total_batch, a->B, a->T,
              r->pg.world_size, r->micro_tokens);
    r->accum = (int)(a->total_batch / r->micro_tokens);
    r->rt = optim_runtime(&a->oc, r->pg.rank, r->pg.world_size, r->accum, a->B * a->T);
    if (a->warmup < 0) a->warmup = a->steps / 10;
    if (a->warmup >= a->steps && a->warmup > 0)
        fatal("--warmup %d must be smaller than --steps %d", a->warmup, a->steps);
}

// rank 0: the backend, the ranks, the model, the batch and the optimizer, before the memory plan
static void print_banner(const TrainRun* r) {
    const TrainArgs* a = &r->a;
    const ProcessGroup* pg = &r->pg;
    printf("grass.c | backend %s | %d rank%s\n", backend_name(), pg->world_size, pg->world_size > 1 ? "s" : "");
    comm_print_hosts(pg);
    if (pg->world_size > 1 && a->comm_timeout > 0)
        printf("comm watchdog: a wait on the other ranks longer than %g s stops the job (--comm-timeout)\n",
               a->comm_timeout);
    else if (pg->world_size > 1)
        printf("comm watchdog: off (--comm-timeout 0): a lost or stalled peer hangs the job\n");
    llama_config_print(&r->config, stdout);
    if (r->attention_note[0]) printf("attention: cuDNN fused SDPA (%s)\n", r->attention_note);
    const char* gdt = a->oc.grad_dtype == GRAD_FP32 ? "fp32" : FLOATX_NAME;  // the dense gradients' dtype
    printf("batch: B=%d T=%d ranks=%d accumulation=%d -> %lld tokens per step\n", a->B, a->T, pg->world_size, r->accum,
           a->total_batch);
    optim_print_banner(&a->oc, &r->rt, a->lr, a->grass_layers, a->state_dtype, gdt);
    if (r->rt.sharded)
        printf("ZeRO-1: the full-rank AdamW moments are sharded over %d ranks\n", pg->world_size);
}

// Everything before memory is allocated: the setup, the backend, the optimizer's checks against
// the model's parameter table (built once, here), the banner and the memory plan, which refuses
// a run that cannot fit.
static void setup(TrainRun* r, int argc, char** argv) {
    read_setup(r, argc, argv);
    start_backend(r);
    TrainArgs* a = &r->a;
    ParamTable pt;
    param_table_build(&pt, &r->config, llama_ffn_align());
    char err[512];
    if (!optim_config_validate(&a->oc, &pt, err, sizeof(err))) fatal("%s", err);
    if (r->master) print_banner(r);
    if (optim_norms_fit_needed(&a->oc)) {  // exact norms where they fit, else the sketch
        OptimRuntime quiet = r->rt;
        quiet.rank = -1;  // plan without printing
        size_t exact_total = memory_plan(&pt, &r->config, &a->oc, &quiet, a->B, a->T, a->recompute, 0, 0);
        optim_fit_norms(&a->oc, &r->rt, &pt, exact_total, memory_available(a->memory_limit_gb));
    }
    r->planned_bytes = memory_plan(&pt, &r->config, &a->oc, &r->rt, a->B, a->T, a->recompute, a->memory_limit_gb,
                                   !a->plan_only);
    param_table_free(&pt);
}

// The data, the tokenizer for samples, the model and the optimizer (allocated once, here), a
// fresh training state, and what the step's loss and MFU need.
static void build_run(TrainRun* r) {
    TrainArgs* a = &r->a;
    ProcessGroup* pg = &r->pg;
    dataloader_init(&r->train, a->train_pattern, a->B, a->T, pg->rank, pg->world_size, 1, (uint64_t)a->seed,
                    r->config.vocab_size);
    r->have_val = a->val_pattern != NULL && a->val_pattern[0] != '\0' && strcmp(a->val_pattern, "none") != 0;
    r->eval_batches = 0;
    if (r->have_val) {
        dataloader_init(&r->val, a->val_pattern, a->B, a->T, pg->rank, pg->world_size, 0, 0, r->config.vocab_size);
        r->eval_batches = (int)(a->eval_tokens / r->micro_tokens);
        if (r->eval_batches < 1) r->eval_batches = 1;
        if (r->eval_batches > dataloader_num_batches(&r->val)) r->eval_batches = (int)dataloader_num_batches(&r->val);
    }
    r->have_tok = 0;
    if (a->sample_every > 0) {
        tokenizer_init(&r->tok, a->tokenizer_path);  // exits with a clear message when missing
        r->have_tok = 1;
    }

    llama_build(&r->model, &r->config, a->B, a->T, a->recompute);
    optim_init(&r->opt, &a->oc, &r->rt, &r->model.pt, r->model.params);
    memset(&r->ts, 0, sizeof(r->ts));
    r->ts.sample_rng = (uint64_t)a->seed ^ 0x5A5A5A5AULL;
    r->ts.world_size = pg->world_size;
    r->ts.best_val_loss = INFINITY;

    // MFU: model FLOPs per token = 6 N (matmul parameters) + 12 L d T (attention), PaLM's formula,
    // counted the same for every optimizer (Grass's cheaper weight-gradient GEMMs show up as higher
    // model-FLOPs MFU); the executed-FLOPs MFU counts what the step ran (executed_flops_per_token).
    r->flops_per_token = 6.0 * (double)param_table_matmul_params(&r->model.pt) +
                         12.0 * r->config.n_layers * r->config.dim * (double)a->T;
    r->peak = a->peak_tflops > 0 ? a->peak_tflops * 1e12 : backend_peak_flops();
    r->dloss = 1.0f / (float)((double)a->B * a->T * r->accum * pg->world_size);
    r->time_sum = 0.0;
    r->timed_steps = 0;
}

// -y 1: the checkpoint read_setup found, else (or without -y 1) --init-from's weights or a random init
static void resume_or_init(TrainRun* r) {
    TrainArgs* a = &r->a;
    make_dir(a->out_dir);
    r->resumed = 0;
    if (a->resume) {
        if (r->have_checkpoint) {
            checkpoint_resume(&r->pg, a->out_dir, r->resume_step, r->resume_model, r->resume_state, &r->model, &r->opt,
                              &r->ts, &r->train);
            r->resumed = 1;
            if (r->master) printf("resumed from step %lld (%s)\n", r->resume_step, r->resume_model);
        } else if (r->master) {
            printf("no checkpoint in %s yet: starting fresh\n", a->out_dir);
        }
        if (r->master) remove_partial_files(a->out_dir);
    }
    if (!r->resumed) {
        if (a->init_from != NULL) {
            checkpoint_load_model(&r->model, a->init_from, 0);
            if (r->master) printf("initialized from %s\n", a->init_from);
        } else {
            uint64_t ih[2];
            llama_init_random(&r->model, (uint64_t)a->seed, ih);
            // the same on every build (the GPU's fp32 draws equal the CPU's bit for bit): a GPU run's
            // line can be compared with the CPU build's for the same config and seed
            if (r->master)
                printf("init hash: fp32 %016llx bf16 %016llx (seed %lld)\n", (unsigned long long)ih[0],
                       (unsigned long long)ih[1], a->seed);
        }
        optim_weights_changed(&r->opt);
    }
}

// log.txt in --out-dir (rank 0): a new one with the run's header line, or on a resume the old one
// continued, with a line that says so
static void open_log(TrainRun* r) {
    const TrainArgs* a = &r->a;
    r->logf = NULL;
    if (!r->master) return;
    char lp[1024];
    snprintf(lp, sizeof(lp), "%s/log.txt", a->out_dir);
    r->logf = fopen_check(lp, r->resumed ? "a" : "w");
    if (!r->resumed) {
        fprintf(r->logf, "# grass.c config=%s dim=%d layers=%d optimizer=%s", a->config_name, r->config.dim,
                r->config.n_layers, a->optimizer);
        optim_log_header(r->logf, &a->oc, a->grass_rank);
        fprintf(r->logf, " lr=%g B=%d T=%d total_batch=%lld ranks=%d steps=%d grad_dtype=%s\n", a->lr, a->B, a->T,
                a->total_batch, r->pg.world_size, a->steps, a->grad_dtype);
    } else {
        fprintf(r->logf, "# resumed at step %lld with %d rank(s), as the checkpoint was written\n",
                (long long)r->ts.step, r->pg.world_size);
    }
    fflush(r->logf);
}

// The validation loss when it is due (every --eval-every steps, and at the end), and a text
// sample when one is due (step 0: before training)
static void evaluate(TrainRun* r, int step, int last) {
    const TrainArgs* a = &r->a;
    if (r->have_val && ((a->eval_every > 0 && step % a->eval_every == 0) || last)) {
        double vl = validation_loss(&r->model, &r->val, r->eval_batches, &r->pg);
        if (!isfinite(vl)) fatal("validation loss is %f at step %d", vl, step);
        if (vl < r->ts.best_val_loss) r->ts.best_val_loss = vl;
        if (r->master) {
            printf("step %d | val loss %.4f | val ppl %.4g\n", step, vl, exp(vl));
            fprintf(r->logf, "step=%d val_loss=%.6f val_ppl=%.4f\n", step, vl, exp(vl));
            fflush(r->logf);
        }
    }
    if (r->have_tok && r->master && a->sample_every > 0 && (step % a->sample_every == 0 || last))
        print_sample(&r->model, &r->tok, a->sample_tokens, &r->ts.sample_rng, step);
}

// A refresh step begins with the norm pass: the squared row norms of this step's gradient
// (GaLore: the gradients for its SVD), summed over micro-batches and ranks, from the same batches
// the step then trains on. Returns 1 when it ran.
static int refresh_pass(TrainRun* r, int step) {
    if (!optim_needs_refresh(&r->opt)) return 0;
    DataLoaderState before = dataloader_get_state(&r->train);
    optim_begin_norm_pass(&r->opt);
    for (int micro = 0; micro < r->accum; micro++) {
        dataloader_next_batch(&r->train);
        optim_begin_micro(&r->opt, micro);
        llama_forward_train(&r->model, r->train.inputs, r->train.targets, r->a.B, r->a.T, r->dloss, NULL);
        llama_backward(&r->model, &r->opt, r->a.B, r->a.T);
    }
    dataloader_set_state(&r->train, &before);
    optim_refresh(&r->opt);
    // numbered as the step's own line (step + 1), which follows
    if (r->master) optim_log_refresh(&r->opt, r->logf, step + 1, step % r->a.log_every == 0);
    return 1;
}

// One optimizer step: the refresh when due, accum micro-batches forward and backward, the
// update, and the loss and the stop flag agreed over the ranks. Stops the run on a loss or
// gradient norm that is not finite.
static StepResult train_step(TrainRun* r, int step) {
    TrainArgs* a = &r->a;
    StepResult s;
    double t0 = now_seconds();
    s.lr = lr_at(a, step);
    optim_begin_step(&r->opt, step, s.lr);
    fault_injection(&r->pg, step);
    s.refreshed = refresh_pass(r, step);
    // the steady-state step makes one host sync: optim_step's read of the step report (the
    // loss summed on the backend, the gradient norm), after everything else is queued
    for (int micro = 0; micro < r->accum; micro++) {
        dataloader_next_batch(&r->train);
        optim_begin_micro(&r->opt, micro);
        llama_forward_train(&r->model, r->train.inputs, r->train.targets, a->B, a->T, r->dloss,
                            optim_loss_acc(&r->opt));
        llama_backward(&r->model, &r->opt, a->B, a->T);
    }
    s.gnorm = optim_step(&r->opt);
    double loss = r->opt.report.loss_sum / r->accum;
    double lb[2] = {loss, stop_signal != 0 ? 1.0 : 0.0};  // the stop flag rides on the loss all-reduce
    comm_allreduce_sum_double(&r->pg, lb, 2, "the all-reduce of the step's loss and stop signal (MPI_Allreduce)");
    s.loss = lb[0] / r->pg.world_size;
    s.stop_now = lb[1] > 0;
    // a non-finite loss has updated the weights by now; the checkpoints on disk are all older
    if (!isfinite(s.loss)) {
        fatal("the loss became %f at step %d; stopping without writing a checkpoint (the last good one in %s "
              "is kept); try a lower --lr or --grad-clip", s.loss, step, a->out_dir);
    }
    if (!isfinite(s.gnorm))
        fatal("the gradient norm became %f at step %d; stopping without a checkpoint", s.gnorm, step);
    s.dt = now_seconds() - t0;
    r->ts.step = step + 1;
    return s;
}

// The step's line: printed every --log-every steps (and the last), written to log.txt always.
// Throughput and MFU come from the step's time; the ETA from the mean of the timed steps.
static void log_step(TrainRun* r, int step, int start_step, const StepResult* s) {
    const TrainArgs* a = &r->a;
    if (step > start_step) { r->time_sum += s->dt; r->timed_steps++; }  // the first step warms caches
    double tok_s = a->total_batch / s->dt;
    double mfu = r->peak > 0 ? r->flops_per_token * tok_s / r->peak : -1.0;
    double mfu_exec = r->peak > 0 ? executed_flops_per_token(&r->model, &r->opt, a->T, s->refreshed) * tok_s / r->peak
                                  : -1.0;
    double mem = gib(backend_memory_peak());
    if (!r->master) return;
    char eta[32];
    format_eta((a->steps - step - 1) * (r->timed_steps ? r->time_sum / r->timed_steps : s->dt), eta, sizeof(eta));
    if (step % a->log_every == 0 || step == a->steps - 1) {
        char mfus[48];
        if (mfu >= 0) snprintf(mfus, sizeof(mfus), "%.1f%% (executed %.1f%%)", 100 * mfu, 100 * mfu_exec);
        else snprintf(mfus, sizeof(mfus), "n/a");
        char comms[48] = "";
        if (r->pg.world_size > 1) snprintf(comms, sizeof(comms), " | comm %.2f MiB", r->opt.comm_bytes / 1048576.0);
        printf("step %d/%d | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | MFU %s | mem %.2f GiB%s | %.0f ms "
               "| ETA %s\n", step + 1, a->steps, s->loss, s->lr, s->gnorm, tok_s, mfus, mem, comms, s->dt * 1000, eta);
        fflush(stdout);
    }
    fprintf(r->logf, "step=%d loss=%.6f lr=%.6e grad_norm=%.6f tok_per_s=%.1f mfu=%.6g mfu_exec=%.6g mem_gib=%.4f "
            "dt_ms=%.2f comm_mib=%.4f\n", step + 1, s->loss, s->lr, s->gnorm, tok_s, mfu, mfu_exec, mem, s->dt * 1000,
            r->opt.comm_bytes / 1048576.0);
    fflush(r->logf);
}

// A checkpoint every --checkpoint-every steps and at the end; never at step 0
static void checkpoint_if_due(TrainRun* r, int step, int last) {
    const TrainArgs* a = &r->a;
    if ((a->checkpoint_every > 0 && step % a->checkpoint_every == 0 && step > 0) || (last && step > 0))
        write_checkpoint(&r->pg, a->out_dir, a->setup, &r->model, &r->opt, &r->ts, &r->train);
}

// A stop signal: the checkpoint of the step just done, and the line that says how to continue
static void stop_on_signal(TrainRun* r) {
    write_checkpoint(&r->pg, r->a.out_dir, r->a.setup, &r->model, &r->opt, &r->ts, &r->train);
    if (!r->master) return;
    const char* sn = stop_signal == SIGINT ? "SIGINT" : stop_signal == SIGTERM ? "SIGTERM" : "a signal on another rank";
    printf("stopped by %s after step %lld of %d: checkpoint written; continue with the same command and -y 1\n",
           sn, (long long)r->ts.step, r->a.steps);
    fprintf(r->logf, "# stopped by %s after step %lld; checkpoint written\n", sn, (long long)r->ts.step);
}

// The closing lines (a run that ran to its end), then everything is freed
static void finish(TrainRun* r, int stopped) {
    if (r->master && !stopped) {
        if (r->pg.world_size > 1)
            printf("ranks in sync: %d ranks hold identical weights and Grass selections\n", r->pg.world_size);
        printf("done: %d steps, best val loss %.4f\n", r->a.steps, r->ts.best_val_loss);
        // what the program allocated at its peak (backend_malloc's accounting) against the plan
        printf("peak memory held: %.3f GiB (plan %.3f GiB)\n", gib(backend_memory_peak()), gib(r->planned_bytes));
    }
    if (r->master) fclose_check(r->logf, "log.txt");
    if (r->have_tok) tokenizer_free(&r->tok);
    optim_free(&r->opt);
    llama_free(&r->model);
    dataloader_free(&r->train);
    if (r->have_val) dataloader_free(&r->val);
}

// ----------------------------------------------------------------------------------------------
// main: the table of contents

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);  // a run killed at a time limit keeps its last log lines
    static TrainRun r;                 // static: zeroed, and off the stack
    comm_init(&r.pg, &argc, &argv);
    setup(&r, argc, argv);             // flags, backend, banner, memory plan
    if (r.a.plan_only) { comm_finalize(&r.pg); return 0; }
    build_run(&r);                     // data, model, optimizer
    resume_or_init(&r);                // a checkpoint (-y 1), --init-from or a random init
    open_log(&r);                      // log.txt: a new one, or continued on a resume

    const int start_step = (int)r.ts.step;
    int stopped = 0;
    install_stop_handlers();
    for (int step = start_step; step <= r.a.steps; step++) {
        watchdog_set_step(step);
        int last = step == r.a.steps;
        evaluate(&r, step, last);
        if (step > start_step || last) checkpoint_if_due(&r, step, last);  // never rewrite the one resumed from
        if (last) { check_ranks_in_sync(&r.pg, &r.model, &r.opt); break; }
        StepResult s = train_step(&r, step);
        log_step(&r, step, start_step, &s);
        if (s.stop_now && r.ts.step < r.a.steps) {  // at the last step the loop's own final checkpoint follows
            stop_on_signal(&r);
            stopped = 1;
            break;
        }
    }
    finish(&r, stopped);
    comm_finalize(&r.pg);
    return 0;
}
