/*
 * train_args.h: the trainer's command line. One table of options (build_options) drives the
 * parser, the help text (-h) and the run's setup that every checkpoint saves (run_setup_text);
 * -y 1 takes that setup back (apply_saved_setup), and the flags become a model config
 * (resolve_config, config_from_model_file) and an OptimConfig (resolve_optim).
 * Part of train_llama.cu; the state file that carries the setup is train_checkpoint.h's.
 */
#ifndef GRASS_TRAIN_ARGS_H
#define GRASS_TRAIN_ARGS_H

#include <math.h>
#include "utils.h"
#include "llama_model.h"    // LlamaConfig, the named configs, checkpoint_read_header (--init-from)
#include "grass_optim.cuh"  // OptimConfig and the optimizer's names for its flags' values

// ----------------------------------------------------------------------------------------------
// command line: one table drives both the parser and the help text

#define MAX_OPTIONS 96  // room for build_options' table (checked there)

typedef struct {
    const char* train_pattern;
    const char* val_pattern;
    const char* config_name;
    int vocab_size, dim, ffn_dim, n_layers, n_heads, n_kv_heads, max_seq_len, tie;  // -1: from the named config
    int ffn_align;           // llama_ffn_stored's multiple; 0: the backend's
    float norm_eps, rope_theta;
    int B, T;
    long long total_batch;   // tokens per optimizer step (all ranks); -1 = B*T*world
    float lr, min_lr_ratio;
    int warmup, steps;
    int eval_every, sample_every, sample_tokens, checkpoint_every;
    long long eval_tokens;
    const char* out_dir;
    long long seed;
    int resume;
    const char* init_from;
    const char* tokenizer_path;
    const char* optimizer;
    const char* grass_select;
    const char* grass_norms; // --grass-norms: auto | exact | sketch | micro
    const char* grass_upscale; // --grass-upscale: paper | one | mean
    const char* grass_refresh; // --grass-refresh-state: reset | keep
    const char* galore_refresh; // --galore-refresh-state: keep | reset
    const char* attention;     // --attention: own | cudnn
    const char* grass_rank;  // --rank as given: an integer, a fraction, or "full" (optim_set_grass_rank)
    const char* grass_layers;
    float peak_tflops;
    float memory_limit_gb;
    float comm_timeout;     // seconds a rank may wait on the others before the job stops (0: never)
    int log_every;
    int plan_only;
    int recompute;
    const char* state_dtype;
    const char* grad_dtype;  // --grad-dtype: model | fp32
    const char* adam_eps_style; // --adam-eps-style: corrected | raw | auto (resolve_optim sets the resolved name)
    const char* galore_side;    // --galore-side: official | rows
    OptimConfig oc;
    unsigned char given[MAX_OPTIONS]; // given[k]: option k (build_options order) was on the command line
    char* setup;             // this run's setup as text (run_setup_text), saved with every checkpoint
} TrainArgs;

typedef struct {
    const char* flag;       // short form
    const char* name;       // long form
    char type;              // i int, f float, s string, L int64
    void* ptr;
    double lo, hi;          // range for numbers
    const char* help;
} OptionSpec;

static int build_options(TrainArgs* a, OptionSpec* s) {
    int n = 0;
#define OPT(f, nm, t, p, lo, hi, h) s[n++] = (OptionSpec){f, nm, t, (void*)(p), lo, hi, h}
    OPT("-i", "--train-data", 's', &a->train_pattern, 0, 0,
        "glob of training shards (dev/data/prepare.py writes them)");
    OPT("-j", "--val-data", 's', &a->val_pattern, 0, 0, "glob of validation shards (optional)");
    OPT("-c", "--config", 's', &a->config_name, 0, 0, "model: tiny d6 20m 60m 130m 350m 1b 7b 13b");
    OPT("", "--vocab", 'i', &a->vocab_size, 2, 1 << 30, "override: vocabulary size");
    OPT("", "--dim", 'i', &a->dim, 2, 1 << 20, "override: hidden size");
    OPT("", "--ffn", 'i', &a->ffn_dim, 1, 1 << 22, "override: intermediate size");
    OPT("", "--layers", 'i', &a->n_layers, 1, 1024, "override: layers");
    OPT("", "--heads", 'i', &a->n_heads, 1, 1024, "override: attention heads");
    OPT("", "--kv-heads", 'i', &a->n_kv_heads, 1, 1024, "override: key/value heads (grouped-query attention)");
    OPT("", "--max-seq", 'i', &a->max_seq_len, 1, 1 << 20, "override: max positions");
    OPT("", "--tie", 'i', &a->tie, 0, 1, "override: tie embeddings and lm_head (0/1)");
    OPT("", "--ffn-align", 'i', &a->ffn_align, 0, 4096,
        "store the ffn size padded to a multiple of this, with zero rows/columns (exact; when ffn > dim); 0: the "
        "backend's (64 on the GPU, for aligned GEMMs; 1 on the CPU)");
    OPT("", "--norm-eps", 'f', &a->norm_eps, 1e-12, 1, "override: RMSNorm eps");
    OPT("", "--rope-theta", 'f', &a->rope_theta, 1, 1e9, "override: RoPE base");
    OPT("-b", "--batch", 'i', &a->B, 1, 1 << 20, "micro-batch size per rank (sequences)");
    OPT("-t", "--seq", 'i', &a->T, 1, 1 << 20, "sequence length");
    OPT("-d", "--total-batch", 'L', &a->total_batch, -1, 1e15,
        "tokens per optimizer step over all ranks (-1: B*T*ranks); gradient accumulation fills it");
    OPT("-l", "--lr", 'f', &a->lr, 0, 10, "peak learning rate");
    OPT("", "--min-lr-ratio", 'f', &a->min_lr_ratio, 0, 1, "final lr as a fraction of the peak (cosine)");
    OPT("-u", "--warmup", 'i', &a->warmup, -1, 1 << 30, "linear warmup steps (-1: 10% of --steps, the paper's recipe)");
    OPT("-x", "--steps", 'i', &a->steps, 1, 1 << 30, "optimizer steps in all");
    OPT("", "--weight-decay", 'f', &a->oc.weight_decay, 0, 10,
        "decoupled weight decay (matrices and embeddings, not norms)");
    OPT("", "--grad-clip", 'f', &a->oc.grad_clip, 0, 1e9, "clip the global gradient norm to this (0: off)");
    OPT("", "--beta1", 'f', &a->oc.b1, 0, 0.999999, "Adam beta1");
    OPT("", "--beta2", 'f', &a->oc.b2, 0, 0.999999, "Adam beta2");
    OPT("", "--adam-eps", 'f', &a->oc.eps, 1e-30, 1, "Adam epsilon");
    OPT("", "--adam-eps-style", 's', &a->adam_eps_style, 0, 0,
        "where Adam's epsilon enters: corrected (m^/(sqrt(v^)+eps), torch.optim.AdamW) | raw (lr*sqrt(bc2)/bc1 * "
        "m/(sqrt(v)+eps), galore_torch's and transformers' old AdamW) | auto (raw for galore, else corrected)");
    OPT("-v", "--eval-every", 'i', &a->eval_every, 0, 1 << 30, "validate every N steps (0: only at the end)");
    OPT("", "--eval-tokens", 'L', &a->eval_tokens, 1, 1e15, "tokens per validation (all ranks)");
    OPT("-s", "--sample-every", 'i', &a->sample_every, 0, 1 << 30, "print a text sample every N steps (0: never)");
    OPT("-g", "--sample-tokens", 'i', &a->sample_tokens, 1, 1 << 20, "tokens per text sample");
    OPT("-n", "--checkpoint-every", 'i', &a->checkpoint_every, 0, 1 << 30,
        "write a checkpoint every N steps (0: only at the end)");
    OPT("-o", "--out-dir", 's', &a->out_dir, 0, 0, "output directory for the log and checkpoints");
    OPT("", "--seed", 'L', &a->seed, 0, 9e18, "seed for init, data order and Grass selection");
    OPT("-y", "--resume", 'i', &a->resume, 0, 1, "resume from the latest checkpoint in --out-dir (0/1)");
    OPT("", "--init-from", 's', &a->init_from, 0, 0, "start from a model checkpoint (e.g. made by dev/import_hf.py)");
    OPT("-e", "--tokenizer", 's', &a->tokenizer_path, 0, 0, "tokenizer.bin for text samples");
    OPT("", "--optimizer", 's', &a->optimizer, 0, 0,
        "adamw | grass | galore (GaLore: --rank, --update-freq, --galore-scale)");
    OPT("", "--grass-select", 's', &a->grass_select, 0, 0, "topr | multinorm | multinorm-nr | uniform | uniform-nr");
    OPT("", "--rank", 's', &a->grass_rank, 0, 0,
        "Grass rank: an integer, a fraction of the selected dimension (< 1), or full");
    OPT("", "--update-freq", 'i', &a->oc.update_freq, 1, 1 << 30, "Grass: re-select rows every K steps");
    OPT("", "--grass-norms", 's', &a->grass_norms, 0, 0,
        "Grass row scores at a refresh: exact (the step's gradient), sketch (unbiased, k columns), micro (per "
        "micro-batch sum), auto (exact where it fits)");
    OPT("", "--grass-upscale", 's', &a->grass_upscale, 0, 0,
        "Grass up-projection factor per selected row: paper (count*rho), one (1, as top-r), mean (count*rho over its "
        "mean)");
    OPT("", "--grass-refresh-state", 's', &a->grass_refresh, 0, 0,
        "Grass moments at a refresh: reset (every row starts at zero) | keep (a row selected again keeps its m, v, "
        "rescaled to its new rho, and its own step count)");
    OPT("", "--galore-refresh-state", 's', &a->galore_refresh, 0, 0,
        "GaLore moments at a projector refresh: keep (GaLore's rule) | reset (zero, step count 0)");
    OPT("", "--sketch-dim", 'i', &a->oc.sketch_dim, 1, 4096,
        "Grass: columns k of the norm sketch (--grass-norms sketch; relative std of a score <= sqrt(2/k))");
    OPT("", "--grass-scale", 'f', &a->oc.alpha, 0, 1e6,
        "Grass scale factor alpha: the projected matrices step lr * alpha");
    OPT("", "--galore-scale", 'f', &a->oc.alpha, 0, 1e6, "GaLore's scale alpha (the same setting as --grass-scale)");
    OPT("", "--galore-side", 's', &a->galore_side, 0, 0,
        "GaLore's projected side: official (galore_torch's: the columns of a matrix with out >= in, square ones "
        "included, else the rows) | rows (the shorter side, square matrices from their rows: before 2026-12-07)");
    OPT("", "--grass-fused", 'i', &a->oc.fused, 0, 1,
        "Grass: apply each layer's update during the backward pass (0/1)");
    OPT("", "--select-on-device", 'i', &a->oc.select_on_device, 0, 1,
        "Grass: select rows on the GPU (same result as the host selection; 0/1, the CPU build selects on the host)");
    OPT("", "--grass-row-align", 'i', &a->oc.row_align, 0, 16,
        "Grass: pad each selection to a multiple of this many rows (1, 2, 4, 8, 16) with rows the update skips "
        "(exact), so the gathered GEMMs' leading dimensions are 16-byte aligned; 0: the backend's (16 on the GPU, 1 "
        "on the CPU)");
    OPT("", "--zero", 'i', &a->oc.zero, 0, 1,
        "ZeRO-1 with several ranks: each rank keeps the full-rank AdamW moments of 1/ranks of the dense tensors (0/1)");
    OPT("", "--master-weights", 'i', &a->oc.master_weights, 0, 1,
        "keep fp32 master weights; bf16 weights get them rounded to nearest instead of stochastic rounding (0/1)");
    OPT("", "--state-dtype", 's', &a->state_dtype, 0, 0,
        "storage of the Adam moments: fp32 | bf16 (half the memory; arithmetic stays fp32)");
    OPT("", "--grad-dtype", 's', &a->grad_dtype, 0, 0,
        "dense (full-rank) gradients: model (the weights' dtype, bf16 on the GPU) | fp32 (accumulated, all-reduced "
        "and read by AdamW in fp32, as Grass's compressed ones; the CPU build is fp32 either way: same results)");
    OPT("", "--attention", 's', &a->attention, 0, 0,
        "own (the attention kernels of cuda/attention.cuh; the default, and the CPU build's) | cudnn (cuDNN's fused "
        "SDPA on the GPU build, bf16; not yet run on a GPU: compare with dev/cuda/attention_check first)");
    OPT("", "--recompute", 'i', &a->recompute, 0, 1,
        "activation recomputation: keep only each layer's input, recompute the rest in the backward (0/1)");
    OPT("", "--overlap-comm", 'i', &a->oc.overlap_comm, 0, 1,
        "with several ranks: all-reduce each layer's gradients while the next layer's backward runs (0/1)");
    OPT("", "--matrix-lr-scale", 'f', &a->oc.matrix_lr_scale, 1e-6, 1e6,
        "AdamW: the matrices of the --grass-layers types take lr * this; embeddings, head and norms keep lr (Grass's "
        "split of lr * alpha)");
    OPT("", "--grass-layers", 's', &a->grass_layers, 0, 0,
        "projected layer types, comma separated: q,k,v,o,gate,up,down");
    OPT("", "--peak-tflops", 'f', &a->peak_tflops, 0, 1e6, "peak TFLOP/s for MFU (0: the backend's table)");
    OPT("", "--memory-limit-gb", 'f', &a->memory_limit_gb, 0, 1e6,
        "refuse a run whose memory plan exceeds this (0: what the backend reports free)");
    OPT("", "--comm-timeout", 'f', &a->comm_timeout, 0, 1e6,
        "with several ranks: seconds one wait on the other ranks (a collective) may last before every rank says what "
        "it waited on and the job stops, exit 75, to resume with -y 1 (0: wait forever)");
    OPT("", "--log-every", 'i', &a->log_every, 1, 1 << 30, "print a progress line every N steps");
    OPT("", "--plan-only", 'i', &a->plan_only, 0, 1,
        "print the memory and communication plan and exit (0/1); needs no data");
#undef OPT
    if (n > MAX_OPTIONS) fatal("build_options: %d options, MAX_OPTIONS is %d", n, MAX_OPTIONS);
    return n;
}

static void train_args_defaults(TrainArgs* a) {
    memset(a, 0, sizeof(*a));
    a->train_pattern = "data/tinyshakespeare/tinyshakespeare_train_*.bin";
    a->val_pattern = "data/tinyshakespeare/tinyshakespeare_val_*.bin";
    a->config_name = "d6";
    a->vocab_size = a->dim = a->ffn_dim = a->n_layers = a->n_heads = a->n_kv_heads = a->max_seq_len = a->tie = -1;
    a->norm_eps = -1.0f; a->rope_theta = -1.0f;
    a->B = 8; a->T = 256; a->total_batch = -1;
    a->lr = 1e-3f; a->min_lr_ratio = 0.1f; a->warmup = -1; a->steps = 200;
    a->eval_every = 50; a->eval_tokens = 32768; a->sample_every = 0; a->sample_tokens = 64; a->checkpoint_every = 0;
    a->out_dir = "out"; a->seed = 1337; a->resume = 0; a->init_from = NULL;
    a->tokenizer_path = "data/tinyshakespeare/tokenizer.bin";
    a->optimizer = "adamw"; a->grass_select = "multinorm"; a->grass_rank = "128"; a->grass_norms = "auto";
    a->grass_upscale = "mean"; a->attention = "own"; a->grass_layers = "q,k,v,o,gate,up,down";
    a->grass_refresh = "reset"; a->galore_refresh = "keep";
    a->peak_tflops = 0; a->memory_limit_gb = 0; a->comm_timeout = 600; a->log_every = 1;
    a->state_dtype = "fp32"; a->grad_dtype = "model";
    a->adam_eps_style = "auto"; a->galore_side = "official";
    optim_config_defaults(&a->oc);
    a->oc.overlap_comm = 1;
}

static void print_usage(OptionSpec* s, int n) {
    TrainArgs d; OptionSpec ds[MAX_OPTIONS];
    train_args_defaults(&d);
    build_options(&d, ds);
    printf("usage: train_llama [options]\n\n"
           "LLaMA pretraining with full-rank AdamW or Grass. Options (default in brackets):\n");
    for (int i = 0; i < n; i++) {
        char def[96] = "";
        switch (ds[i].type) {
            case 'i': snprintf(def, sizeof(def), "%d", *(int*)ds[i].ptr); break;
            case 'L': snprintf(def, sizeof(def), "%lld", *(long long*)ds[i].ptr); break;
            case 'f': snprintf(def, sizeof(def), "%g", *(float*)ds[i].ptr); break;
            case 's':
                snprintf(def, sizeof(def), "%s", *(const char**)ds[i].ptr ? *(const char**)ds[i].ptr : "none");
                break;
        }
        if (strncmp(ds[i].help, "override:", 9) == 0) snprintf(def, sizeof(def), "from -c");
        printf("  %-3s %-20s %s [%s]\n", s[i].flag, s[i].name, s[i].help, def);
    }
    printf("  -h  --help                 this text\n");
}

// sets option s from its text (the command line or a saved setup); `source` names where it came from
static void option_set(const OptionSpec* s, const char* val, const char* source) {
    if (s->type == 's') { *(const char**)s->ptr = val; return; }
    char* end = NULL;
    double x = strtod(val, &end);
    if (end == val || *end != '\0' || !isfinite(x)) fatal("option %s%s: '%s' is not a number", s->name, source, val);
    if (x < s->lo || x > s->hi) fatal("option %s%s: %s is out of range [%g, %g]", s->name, source, val, s->lo, s->hi);
    if ((s->type == 'i' || s->type == 'L') && x != floor(x))
        fatal("option %s%s: '%s' must be an integer", s->name, source, val);
    if (s->type == 'i') *(int*)s->ptr = (int)x;
    else if (s->type == 'L') *(long long*)s->ptr = (long long)x;
    else *(float*)s->ptr = (float)x;
}
// option s's current value as text that option_set reads back to the same value
static void option_text(const OptionSpec* s, char* buf, size_t n) {
    switch (s->type) {
        case 'i': snprintf(buf, n, "%d", *(int*)s->ptr); break;
        case 'L': snprintf(buf, n, "%lld", *(long long*)s->ptr); break;
        case 'f': snprintf(buf, n, "%.9g", *(float*)s->ptr); break;
        default: snprintf(buf, n, "%s", *(const char**)s->ptr ? *(const char**)s->ptr : ""); break;
    }
}
static int option_index(const OptionSpec* specs, int n, const char* arg) {
    for (int k = 0; k < n; k++)
        if ((specs[k].flag[0] && strcmp(arg, specs[k].flag) == 0) || strcmp(arg, specs[k].name) == 0) return k;
    return -1;
}

static void parse_args(TrainArgs* a, int argc, char** argv, int rank) {
    OptionSpec specs[MAX_OPTIONS];
    int n = build_options(a, specs);
    memset(a->given, 0, sizeof(a->given));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            if (rank == 0) print_usage(specs, n);
            exit(0);
        }
        int k = option_index(specs, n, argv[i]);
        if (k < 0) fatal("unknown option '%s' (see -h)", argv[i]);
        if (i + 1 >= argc) fatal("option %s needs a value", argv[i]);
        option_set(&specs[k], argv[++i], "");
        a->given[k] = 1;
    }
}

// ---- the run's setup, saved with every checkpoint ---------------------------------------------
// -y 1 takes every option that defines the run (model, batch, optimizer, seed, data) from the
// checkpoint's state file; the command line is needed only for what may change on a resume, the
// options below (steps, lr schedule, evaluation, output). A setup option given with another value
// than the checkpoint's is refused, naming both values.
static const char* RUN_OPTIONS[] = {"--train-data", "--val-data", "--lr", "--min-lr-ratio", "--warmup", "--steps",
    "--eval-every", "--eval-tokens", "--sample-every", "--sample-tokens", "--checkpoint-every", "--out-dir", "--resume",
    "--init-from", "--tokenizer", "--peak-tflops", "--memory-limit-gb", "--log-every", "--plan-only", "--overlap-comm",
    "--recompute", "--select-on-device", "--grad-dtype", "--grass-row-align", "--attention", "--comm-timeout"};
static int is_run_option(const char* name) {
    for (size_t i = 0; i < sizeof(RUN_OPTIONS) / sizeof(RUN_OPTIONS[0]); i++)
        if (strcmp(RUN_OPTIONS[i], name) == 0) return 1;
    return 0;
}
// never saved: where this invocation writes and how it starts
static int is_unsaved_option(const char* name) {
    return strcmp(name, "--out-dir") == 0 || strcmp(name, "--resume") == 0 || strcmp(name, "--init-from") == 0 ||
           strcmp(name, "--plan-only") == 0;
}

// Options newer than saved setups, with the value a state file without their line holds (what
// runs did before the option): their line is written only when the value differs (so such a run's
// state file is the bytes it was before the option), and a file without it, or without any saved
// setup, resumes with that value, whatever the default is now.
static const char* const SETUP_IMPLIED[][2] = {
    {"--grass-refresh-state", "reset"},  // Grass zeroed every row's moments at a refresh before 2026-12-07
    {"--galore-refresh-state", "keep"},  // GaLore kept them
    {"--adam-eps-style", "corrected"},   // saved resolved: GaLore used the corrected convention before 2026-12-07
    {"--galore-side", "rows"},           // and projected square matrices from their rows
};
static const char* setup_implied(const char* name) {
    for (size_t i = 0; i < sizeof(SETUP_IMPLIED) / sizeof(SETUP_IMPLIED[0]); i++)
        if (strcmp(SETUP_IMPLIED[i][0], name) == 0) return SETUP_IMPLIED[i][1];
    return NULL;
}

// "--name<TAB>value" lines of every saved option, defaults included (a later build with other
// defaults resumes the same run); the model overrides only where set (-1: from -c)
static char* run_setup_text(TrainArgs* a) {
    TrainArgs d;
    train_args_defaults(&d);
    OptionSpec specs[MAX_OPTIONS], dspecs[MAX_OPTIONS];
    int n = build_options(a, specs);
    build_options(&d, dspecs);
    size_t cap = 1 << 14, len = 0;
    char* text = (char*)malloc_check(cap);
    text[0] = '\0';
    for (int k = 0; k < n; k++) {
        if (is_unsaved_option(specs[k].name)) continue;
        char v[1100], dv[1100];
        option_text(&specs[k], v, sizeof(v));
        option_text(&dspecs[k], dv, sizeof(dv));
        if (strncmp(specs[k].help, "override:", 9) == 0 && strcmp(v, dv) == 0) continue;
        if (specs[k].type == 's' && *(const char**)specs[k].ptr == NULL) continue;  // unset (e.g. no --init-from)
        if (setup_implied(specs[k].name) != NULL && strcmp(v, setup_implied(specs[k].name)) == 0) continue;
        if (strchr(v, '\n') != NULL || strchr(v, '\t') != NULL)
            fatal("option %s: a value with a tab or newline cannot be saved", specs[k].name);
        size_t need = strlen(specs[k].name) + strlen(v) + 3;
        if (len + need >= cap) {
            cap = 2 * (len + need);
            text = (char*)realloc(text, cap);
            if (text == NULL) fatal("out of memory");
        }
        len += snprintf(text + len, cap - len, "%s\t%s\n", specs[k].name, v);
    }
    return text;
}

// a state file without a setup (before 2026-11-30): the options of SETUP_IMPLIED not given take
// the values such a file ran with
static void apply_implied_setup(TrainArgs* a) {
    OptionSpec specs[MAX_OPTIONS];
    int n = build_options(a, specs);
    for (int k = 0; k < n; k++) {
        const char* implied = setup_implied(specs[k].name);
        if (implied != NULL && !a->given[k]) option_set(&specs[k], implied, " (the value of an older state file)");
    }
}

// -y 1 with a checkpoint in --out-dir: every option not on the command line takes the saved
// value; a setup option given with another value is refused with both values
static void apply_saved_setup(TrainArgs* a, const char* state_path, char* text) {
    OptionSpec specs[MAX_OPTIONS], dspecs[MAX_OPTIONS];
    int n = build_options(a, specs);
    TrainArgs d;
    train_args_defaults(&d);
    build_options(&d, dspecs);
    unsigned char in_file[MAX_OPTIONS] = {0};
    char conflicts[2048] = "";
    size_t clen = 0;
    char source[1200];
    snprintf(source, sizeof(source), " (saved in '%s')", state_path);
    for (int k = 0; k < n; k++)  // a line left out holds the implied value
        if (setup_implied(specs[k].name) != NULL) {
            option_set(&dspecs[k], setup_implied(specs[k].name), source);
            if (!a->given[k]) option_set(&specs[k], setup_implied(specs[k].name), source);
        }
    for (char* line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char* tab = strchr(line, '\t');
        if (tab == NULL) fatal("'%s': a setup line without a value: '%s'", state_path, line);
        *tab = '\0';
        int k = option_index(specs, n, line);
        if (k < 0) fatal("'%s' was written with option '%s', which this build does not know", state_path, line);
        in_file[k] = 1;
        if (!a->given[k]) { option_set(&specs[k], tab + 1, source); continue; }
        if (is_run_option(specs[k].name)) continue;  // may change: the command line's value
        char now[1100];
        option_text(&specs[k], now, sizeof(now));
        OptionSpec probe = dspecs[k];  // the saved text through the same parser, for a like-for-like comparison
        option_set(&probe, tab + 1, source);
        char was[1100];
        option_text(&probe, was, sizeof(was));
        if (strcmp(now, was) != 0)
            append_item(conflicts, sizeof(conflicts), &clen, "%s: checkpoint %s, command line %s", specs[k].name, was,
                        now);
    }
    for (int k = 0; k < n; k++) {  // given, not in the file: the checkpoint has the default (or the implied value)
        if (!a->given[k] || in_file[k] || is_run_option(specs[k].name) || is_unsaved_option(specs[k].name)) continue;
        char now[1100], was[1100];
        option_text(&specs[k], now, sizeof(now));
        option_text(&dspecs[k], was, sizeof(was));
        if (strcmp(now, was) != 0)
            append_item(conflicts, sizeof(conflicts), &clen, "%s: checkpoint %s, command line %s", specs[k].name,
                        was[0] ? was : "(none)", now);
    }
    if (clen > 0)
        fatal("'%s' was written with another setup (%s); -y 1 takes the setup from the checkpoint: leave these flags "
              "out, or start a new --out-dir", state_path, conflicts);
}

// the model-size flags that were set (-1: not), on top of c; --heads also sets the kv heads
// unless --kv-heads is given
static void apply_config_overrides(const TrainArgs* a, LlamaConfig* c) {
    if (a->vocab_size > 0) c->vocab_size = a->vocab_size;
    if (a->dim > 0) c->dim = a->dim;
    if (a->ffn_dim > 0) c->ffn_dim = a->ffn_dim;
    if (a->n_layers > 0) c->n_layers = a->n_layers;
    if (a->n_heads > 0) { c->n_heads = a->n_heads; if (a->n_kv_heads <= 0) c->n_kv_heads = a->n_heads; }
    if (a->n_kv_heads > 0) c->n_kv_heads = a->n_kv_heads;
    if (a->max_seq_len > 0) c->max_seq_len = a->max_seq_len;
    if (a->tie >= 0) c->tie_embeddings = a->tie;
    if (a->norm_eps > 0) c->norm_eps = a->norm_eps;
    if (a->rope_theta > 0) c->rope_theta = a->rope_theta;
}

// the model config: a named one, then any explicit overrides
static void resolve_config(const TrainArgs* a, LlamaConfig* c) {
    if (!llama_config_by_name(a->config_name, c)) {
        char names[256] = "";
        for (int i = 0; i < N_NAMED_CONFIGS; i++) { strcat(names, " "); strcat(names, NAMED_CONFIGS[i].name); }
        fatal("unknown model config '%s'; known:%s (or override sizes with --dim, --layers, ...)", a->config_name,
              names);
    }
    apply_config_overrides(a, c);
    char err[256];
    if (!llama_config_validate(c, err, sizeof(err))) fatal("model config: %s", err);
}

// --init-from without a checkpoint to resume: the model config is the file's. A model flag on
// the command line must agree with it (refused otherwise, with both values).
static void config_from_model_file(TrainArgs* a, const char* path, LlamaConfig* c) {
    LlamaConfig fc;
    int dtype; int64_t step;
    checkpoint_read_header(path, &fc, &dtype, &step);
    OptionSpec specs[MAX_OPTIONS];
    int n = build_options(a, specs);
    int any = 0;
    for (int k = 0; k < n; k++)
        if (a->given[k] && (strcmp(specs[k].name, "--config") == 0 || strncmp(specs[k].help, "override:", 9) == 0))
            any = 1;
    if (any) {  // what the flags say, field by field against the file: -c's config (else the file's)
                // with the given overrides on top
        LlamaConfig uc = fc;
        int named_given = 0;
        for (int k = 0; k < n; k++) named_given |= a->given[k] && strcmp(specs[k].name, "--config") == 0;
        if (named_given && !llama_config_by_name(a->config_name, &uc))
            fatal("unknown model config '%s'", a->config_name);
        apply_config_overrides(a, &uc);
        const char* names[] = {"--vocab", "--dim", "--ffn", "--layers", "--heads", "--kv-heads", "--max-seq", "--tie"};
        int uv[] = {uc.vocab_size, uc.dim, uc.ffn_dim, uc.n_layers, uc.n_heads, uc.n_kv_heads, uc.max_seq_len,
                    uc.tie_embeddings};
        int fv[] = {fc.vocab_size, fc.dim, fc.ffn_dim, fc.n_layers, fc.n_heads, fc.n_kv_heads, fc.max_seq_len,
                    fc.tie_embeddings};
        char conflicts[1024] = "";
        size_t clen = 0;
        for (int i = 0; i < 8; i++)
            if (uv[i] != fv[i])
                append_item(conflicts, sizeof(conflicts), &clen, "%s: file %d, flags %d", names[i], fv[i], uv[i]);
        if (uc.norm_eps != fc.norm_eps || uc.rope_theta != fc.rope_theta)
            append_item(conflicts, sizeof(conflicts), &clen, "--norm-eps/--rope-theta: file %g/%g, flags %g/%g",
                        fc.norm_eps, fc.rope_theta, uc.norm_eps, uc.rope_theta);
        if (clen > 0)
            fatal("--init-from '%s' holds another model config than the flags give (%s); the file's config is used "
                  "when no model flag is given", path, conflicts);
    }
    *c = fc;
    // the overrides spell out the file's config, so that the saved setup reproduces it
    a->vocab_size = fc.vocab_size; a->dim = fc.dim; a->ffn_dim = fc.ffn_dim; a->n_layers = fc.n_layers;
    a->n_heads = fc.n_heads; a->n_kv_heads = fc.n_kv_heads; a->max_seq_len = fc.max_seq_len; a->tie = fc.tie_embeddings;
    a->norm_eps = fc.norm_eps; a->rope_theta = fc.rope_theta;
}

// optimizer flags -> OptimConfig
static void resolve_optim(TrainArgs* a) {
    OptimConfig* oc = &a->oc;
    if (!optim_set_type(oc, a->optimizer)) fatal("unknown --optimizer '%s' (adamw | grass | galore)", a->optimizer);
    oc->norms = name_index(GRASS_NORMS_NAMES, NORMS_COUNT, a->grass_norms);
    if (oc->norms < 0) fatal("unknown --grass-norms '%s' (auto | exact | sketch | micro)", a->grass_norms);
    oc->upscale = name_index(GRASS_UPSCALE_NAMES, UPSCALE_COUNT, a->grass_upscale);
    if (oc->upscale < 0) fatal("unknown --grass-upscale '%s' (paper | one | mean)", a->grass_upscale);
    oc->grass_refresh = name_index(REFRESH_STATE_NAMES, REFRESH_COUNT, a->grass_refresh);
    if (oc->grass_refresh < 0) fatal("unknown --grass-refresh-state '%s' (reset | keep)", a->grass_refresh);
    oc->galore_refresh = name_index(REFRESH_STATE_NAMES, REFRESH_COUNT, a->galore_refresh);
    if (oc->galore_refresh < 0) fatal("unknown --galore-refresh-state '%s' (keep | reset)", a->galore_refresh);
    int sel = grass_select_from_name(a->grass_select);
    if (sel < 0)
        fatal("unknown --grass-select '%s' (topr | multinorm | multinorm-nr | uniform | uniform-nr)", a->grass_select);
    oc->select = (GrassSelect)sel;
    if (strcmp(a->state_dtype, "fp32") == 0) oc->state_dtype = STATE_FP32;
    else if (strcmp(a->state_dtype, "bf16") == 0) oc->state_dtype = STATE_BF16;
    else fatal("unknown --state-dtype '%s' (fp32 | bf16)", a->state_dtype);
    if (strcmp(a->grad_dtype, "model") == 0) oc->grad_dtype = GRAD_MODEL;
    else if (strcmp(a->grad_dtype, "fp32") == 0) oc->grad_dtype = GRAD_FP32;
    else fatal("unknown --grad-dtype '%s' (model | fp32)", a->grad_dtype);
    oc->eps_style = name_index(ADAM_EPS_STYLE_NAMES, EPS_STYLE_COUNT, a->adam_eps_style);
    if (oc->eps_style < 0) fatal("unknown --adam-eps-style '%s' (corrected | raw | auto)", a->adam_eps_style);
    optim_resolve_eps_style(oc);
    a->adam_eps_style = ADAM_EPS_STYLE_NAMES[oc->eps_style];  // the setup saves what the run used
    oc->galore_side = name_index(GALORE_SIDE_NAMES, GALORE_SIDE_COUNT, a->galore_side);
    if (oc->galore_side < 0) fatal("unknown --galore-side '%s' (official | rows)", a->galore_side);
    char err[256];
    if (!optim_set_grass_rank(oc, a->grass_rank, err, sizeof(err))) fatal("%s", err);
    oc->proj_mask = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", a->grass_layers);
    for (char* tok = strtok(buf, ","); tok != NULL; tok = strtok(NULL, ",")) {
        int found = -1;
        for (int t = 0; t < LIN_NONE; t++) if (strcmp(tok, LINEAR_TYPE_NAMES[t]) == 0) found = t;
        if (found < 0) fatal("--grass-layers: unknown layer type '%s' (q,k,v,o,gate,up,down)", tok);
        oc->proj_mask |= 1 << found;
    }
    oc->seed = (uint64_t)a->seed;
}

#endif // GRASS_TRAIN_ARGS_H
