/*
 * optim/state_io.h: the optimizer's state files (docs/FORMATS.md): the signature that must match, the
 * moments, selections and projectors, the master weights, and ZeRO-1's per-rank shard files.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_STATE_IO_H
#define GRASS_OPTIM_STATE_IO_H

#include "optim/step.h"
#include "checksum.h"   // ZeRO-1 shard files

// ---- state files -----------------------------------------------------------------------------
// Written after the model checkpoint; see docs/FORMATS.md. Host-side copies through the backend.
static void write_backend_bytes(FILE* f, const void* d, size_t n, const char* path) {
    const size_t chunk = (size_t)1 << 26;
    char* buf = (char*)malloc_check((n < chunk ? n : chunk) + 1);
    for (size_t off = 0; off < n; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        backend_download(buf, (const char*)d + off, c);
        fwrite_check(buf, 1, c, f, path);
    }
    free(buf);
}
static void read_backend_bytes(FILE* f, void* d, size_t n, const char* path) {
    const size_t chunk = (size_t)1 << 26;
    char* buf = (char*)malloc_check((n < chunk ? n : chunk) + 1);
    for (size_t off = 0; off < n; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        fread_check(buf, 1, c, f, path);
        backend_upload((char*)d + off, buf, c);
    }
    free(buf);
}

// the signature's int32 fields (16 of them, the last two unused): their indices
enum {
    SIG_OPTIMIZER = 0, SIG_N_PROJECTED = 1, SIG_DENSE_VALUES = 2, SIG_SELECT = 3, SIG_UPDATE_FREQ = 4,
    SIG_PROJ_MASK = 5, SIG_FUSED = 6, SIG_RANK_SUM = 7, SIG_SEED = 8, SIG_STATE_DTYPE = 9, SIG_MASTER_WEIGHTS = 10,
    SIG_ZERO_RANKS = 11, SIG_UPSCALE = 12, SIG_LAYOUT = 13, SIG_REFRESH = 14, SIG_COUNT = 16
};
// sig[SIG_REFRESH]: 0 the method's moments rule at a refresh from before the flags (Grass reset,
// GaLore keep; and every older file), 1 the other (Grass keep: the per-row step counts follow each
// matrix's selection; GaLore reset), so that a reset run's state file is the bytes it was before
static int32_t optim_refresh_signature(const OptimConfig* c) {
    if (c->type == OPT_GRASS) return c->grass_refresh == REFRESH_KEEP;
    if (c->type == OPT_GALORE) return c->galore_refresh == REFRESH_RESET;
    return 0;
}
// the optimizer fields that must match for a state file to be loadable
static void optim_signature(const Optimizer* o, int32_t sig[SIG_COUNT]) {
    memset(sig, 0, SIG_COUNT * sizeof(int32_t));
    sig[SIG_OPTIMIZER] = o->cfg.type; sig[SIG_N_PROJECTED] = o->n_gm;
    sig[SIG_DENSE_VALUES] = (int32_t)(o->grad_total & 0x7fffffff);
    sig[SIG_SELECT] = o->cfg.type == OPT_GRASS ? o->cfg.select : -1;
    sig[SIG_UPDATE_FREQ] = o->cfg.type != OPT_ADAMW ? o->cfg.update_freq : 0;
    sig[SIG_PROJ_MASK] = o->cfg.type != OPT_ADAMW ? o->cfg.proj_mask : 0;
    sig[SIG_FUSED] = o->cfg.type != OPT_ADAMW ? o->cfg.fused : 0;
    for (int k = 0; k < o->n_gm; k++) sig[SIG_RANK_SUM] += o->gm[k].r;
    sig[SIG_SEED] = (int32_t)(o->cfg.seed & 0x7fffffff);
    sig[SIG_STATE_DTYPE] = o->cfg.state_dtype;  // 0 (fp32) in files written before bf16 states existed
    sig[SIG_MASTER_WEIGHTS] = o->cfg.master_weights;
    sig[SIG_ZERO_RANKS] = o->rt.sharded ? o->rt.world_size : 0;
    sig[SIG_UPSCALE] = o->cfg.type == OPT_GRASS ? o->cfg.upscale : 0;  // 0 (paper) in files before the rule existed
    sig[SIG_LAYOUT] = 1;  // 1 = the previous step's gradient norm follows the step count (0 in older files)
    sig[SIG_REFRESH] = optim_refresh_signature(&o->cfg);
}

// what each signature field is, by name, and its value as a reader would write it
static const char* OPTIM_SIGNATURE_NAMES[SIG_COUNT] = {
    "--optimizer", "projected matrices", "full-rank values", "--grass-select",
    "--update-freq", "--grass-layers", "--grass-fused", "sum of Grass ranks (--rank)", "--seed (low 31 bits)",
    "--state-dtype", "--master-weights", "--zero ranks", "--grass-upscale", "state layout",
    "--grass-refresh-state / --galore-refresh-state", "(unused)"};
static void optim_signature_value(int field, int32_t v, char* buf, size_t n) {
    if (field == SIG_OPTIMIZER && v >= 0 && v < OPTIMIZER_COUNT) snprintf(buf, n, "%s", OPTIMIZER_NAMES[v]);
    else if (field == SIG_SELECT && v >= 0 && v < SEL_COUNT) snprintf(buf, n, "%s", GRASS_SELECT_NAMES[v]);
    else if (field == SIG_SELECT && v < 0) snprintf(buf, n, "none (not grass)");
    else if (field == SIG_PROJ_MASK) {
        size_t len = 0;
        buf[0] = '\0';
        for (int t = 0; t < LIN_NONE; t++)
            if ((v >> t) & 1)
                len += snprintf(buf + len, len < n ? n - len : 0, "%s%s", len ? "," : "", LINEAR_TYPE_NAMES[t]);
        if (len == 0) snprintf(buf, n, "none");
    }
    else if (field == SIG_STATE_DTYPE) snprintf(buf, n, "%s", v == STATE_BF16 ? "bf16" : "fp32");
    else if (field == SIG_UPSCALE && v >= 0 && v < UPSCALE_COUNT) snprintf(buf, n, "%s", GRASS_UPSCALE_NAMES[v]);
    else if (field == SIG_REFRESH && (v == 0 || v == 1))
        snprintf(buf, n, "%s", v ? "grass keep, galore reset" : "grass reset, galore keep");
    else snprintf(buf, n, "%d", (int)v);
}

static void optim_save(const Optimizer* o, FILE* f, const char* path) {
    int32_t sig[SIG_COUNT];
    optim_signature(o, sig);
    fwrite_check(sig, sizeof(int32_t), SIG_COUNT, f, path);
    int64_t step = o->step;
    fwrite_check(&step, sizeof(int64_t), 1, f, path);
    fwrite_check(&o->prev_norm, sizeof(float), 1, f, path);  // sig[SIG_LAYOUT] = 1
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    if (!o->rt.sharded) {  // sharded moments go to one file per rank (optim_save_shard)
        write_backend_bytes(f, o->m, o->grad_total * ssz, path);
        write_backend_bytes(f, o->v, o->grad_total * ssz, path);
    }
    for (int k = 0; k < o->n_gm; k++) {
        const ProjMatrix* g = &o->gm[k];
        int32_t hdr[4] = {g->tensor, g->cols_side, g->r, g->r_eff};
        fwrite_check(hdr, sizeof(int32_t), 4, f, path);
        fwrite_check(&g->t, sizeof(int64_t), 1, f, path);
        if (o->cfg.type == OPT_GALORE) {  // the projector in place of the selection
            if (g->r_eff > 0) write_backend_bytes(f, g->Pt, (size_t)g->r * g->dim_sel * sizeof(float), path);
        } else {
            fwrite_check(g->h_sel.idx, sizeof(int), g->r_eff, f, path);
            fwrite_check(g->h_sel.scale, sizeof(float), g->r_eff, f, path);
            fwrite_check(g->h_sel.upscale, sizeof(float), g->r_eff, f, path);
            if (g->row_t != NULL) fwrite_check(g->row_t, sizeof(int64_t), g->r_eff, f, path);  // sig[SIG_REFRESH] = 1
        }
        write_backend_bytes(f, g->m, proj_sub_numel(g) * ssz, path);
        write_backend_bytes(f, g->v, proj_sub_numel(g) * ssz, path);
    }
    if (o->master != NULL) write_backend_bytes(f, o->master, o->pt->total * sizeof(float), path);
}

static void optim_load(Optimizer* o, FILE* f, const char* path) {
    int32_t sig[SIG_COUNT], want[SIG_COUNT];
    fread_check(sig, sizeof(int32_t), SIG_COUNT, f, path);
    optim_signature(o, want);
    int has_prev_norm = sig[SIG_LAYOUT] == 1;
    want[SIG_LAYOUT] = sig[SIG_LAYOUT];  // either layout loads
    if (sig[SIG_OPTIMIZER] != want[SIG_OPTIMIZER]) {  // another optimizer: its other fields mean other things
        char a[48], b[48];
        optim_signature_value(SIG_OPTIMIZER, sig[SIG_OPTIMIZER], a, sizeof(a));
        optim_signature_value(SIG_OPTIMIZER, want[SIG_OPTIMIZER], b, sizeof(b));
        fatal("'%s' holds the state of another optimizer setup (--optimizer: file %s, this run %s); resume with the "
              "same optimizer flags", path, a, b);
    }
    if (sig[SIG_ZERO_RANKS] != want[SIG_ZERO_RANKS])
        fatal("'%s' was written %s ZeRO-1 (%d ranks) and this run %s; resume with the same --zero and number of ranks",
              path, sig[SIG_ZERO_RANKS] ? "with" : "without", sig[SIG_ZERO_RANKS],
              want[SIG_ZERO_RANKS] ? "shards" : "does not shard");
    if (sig[SIG_UPSCALE] != want[SIG_UPSCALE])
        fatal("'%s' was written with --grass-upscale %s and this run uses %s; resume with the same rule", path,
              sig[SIG_UPSCALE] >= 0 && sig[SIG_UPSCALE] < UPSCALE_COUNT ? GRASS_UPSCALE_NAMES[sig[SIG_UPSCALE]] : "?",
              GRASS_UPSCALE_NAMES[want[SIG_UPSCALE]]);
    if (sig[SIG_REFRESH] != want[SIG_REFRESH]) {
        const char* flag = o->cfg.type == OPT_GALORE ? "--galore-refresh-state" : "--grass-refresh-state";
        int fk = o->cfg.type == OPT_GALORE ? !sig[SIG_REFRESH] : sig[SIG_REFRESH];  // the file's: keep?
        fatal("'%s' was written with %s %s and this run uses %s; resume with the same setting (files from before the "
              "flag hold grass reset, galore keep)", path, flag, fk ? "keep" : "reset", fk ? "reset" : "keep");
    }
    if (sig[SIG_MASTER_WEIGHTS] != want[SIG_MASTER_WEIGHTS])
        fatal("'%s' was written %s fp32 master weights and this run %s them; resume with the same --master-weights",
              path, sig[SIG_MASTER_WEIGHTS] ? "with" : "without", want[SIG_MASTER_WEIGHTS] ? "keeps" : "does not keep");
    if (memcmp(sig, want, sizeof(sig)) != 0) {
        // name every field that differs, with the file's value and this run's
        char diff[1024] = "";
        size_t len = 0;
        for (int i = 0; i < SIG_COUNT; i++) {
            if (sig[i] == want[i]) continue;
            char a[48], b[48];
            optim_signature_value(i, sig[i], a, sizeof(a));
            optim_signature_value(i, want[i], b, sizeof(b));
            append_item(diff, sizeof(diff), &len, "%s: file %s, this run %s", OPTIM_SIGNATURE_NAMES[i], a, b);
            if (len >= sizeof(diff)) break;
        }
        fatal("'%s' holds the state of another optimizer setup (%s); resume with the same optimizer flags", path, diff);
    }
    int64_t step;
    fread_check(&step, sizeof(int64_t), 1, f, path);
    o->step = step;
    o->prev_norm = 0.0f;  // older files: the first resumed step is not clipped under the fused rule
    if (has_prev_norm) fread_check(&o->prev_norm, sizeof(float), 1, f, path);
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    if (!o->rt.sharded) {
        read_backend_bytes(f, o->m, o->grad_total * ssz, path);
        read_backend_bytes(f, o->v, o->grad_total * ssz, path);
    }
    for (int k = 0; k < o->n_gm; k++) {
        ProjMatrix* g = &o->gm[k];
        int32_t hdr[4];
        fread_check(hdr, sizeof(int32_t), 4, f, path);
        if (hdr[0] != g->tensor || hdr[1] != g->cols_side || hdr[2] != g->r || hdr[3] < 0 || hdr[3] > g->r_cap)
            fatal("'%s': Grass matrix %d does not match this model (tensor %d side %d rank %d)", path, k, hdr[0],
                  hdr[1], hdr[2]);
        g->r_eff = hdr[3];
        fread_check(&g->t, sizeof(int64_t), 1, f, path);
        if (o->cfg.type == OPT_GALORE) {
            if (g->r_eff != 0 && g->r_eff != g->r)
                fatal("'%s': GaLore matrix %d holds %d of %d projector rows", path, k, g->r_eff, g->r);
            if (g->r_eff > 0) {
                size_t np = (size_t)g->r * g->dim_sel;
                float* h = (float*)malloc_check(np * sizeof(float));
                fread_check(h, sizeof(float), np, f, path);
                backend_upload(g->Pt, h, np * sizeof(float));
                if ((void*)g->Ptx != (void*)g->Pt) backend_upload_floats(g->Ptx, h, np);
                free(h);
            }
        } else {
            fread_check(g->h_sel.idx, sizeof(int), g->r_eff, f, path);
            fread_check(g->h_sel.scale, sizeof(float), g->r_eff, f, path);
            fread_check(g->h_sel.upscale, sizeof(float), g->r_eff, f, path);
            for (int j = 0; j < g->r_eff; j++)
                if (g->h_sel.idx[j] < 0 || g->h_sel.idx[j] >= g->dim_sel)
                    fatal("'%s': selected index %d out of range", path, g->h_sel.idx[j]);
            if (g->row_t != NULL) {  // keep (the signature matched): the rows' own step counts
                fread_check(g->row_t, sizeof(int64_t), g->r_eff, f, path);
                for (int j = 0; j < g->r_eff; j++)
                    if (g->row_t[j] < 0 || g->row_t[j] > o->step)
                        fatal("'%s': row step count %lld out of range", path, (long long)g->row_t[j]);
            }
            grass_upload_selection(g);
        }
        read_backend_bytes(f, g->m, proj_sub_numel(g) * ssz, path);
        read_backend_bytes(f, g->v, proj_sub_numel(g) * ssz, path);
    }
    if (o->master != NULL) read_backend_bytes(f, o->master, o->pt->total * sizeof(float), path);
}
// ZeRO-1 shard files: this rank's block of the AdamW moments. int64 header {magic 20261130,
// rank, ranks, block length, moment dtype, dense gradient count}, m, v (block length values
// each, in the moment dtype), int64 magic again, the checksum trailer (checksum.h). Written to a
// temporary file and renamed. Magic 20261106: the same without the trailer (read unchecked).
#define ZERO_SHARD_MAGIC 20261130
#define ZERO_SHARD_MAGIC_UNCHECKED 20261106
static void optim_save_shard(const Optimizer* o, const char* path) {
    char tmp[1200];
    FILE* f = ckpt_file_open(path, tmp, sizeof(tmp));
    int64_t h[6] = {ZERO_SHARD_MAGIC, o->rt.rank, o->rt.world_size, (int64_t)o->zero.shard, o->cfg.state_dtype,
                    (int64_t)o->grad_total};
    fwrite_check(h, sizeof(int64_t), 6, f, tmp);
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    write_backend_bytes(f, o->m, o->zero.shard * ssz, tmp);
    write_backend_bytes(f, o->v, o->zero.shard * ssz, tmp);
    int64_t end = ZERO_SHARD_MAGIC;
    fwrite_check(&end, sizeof(int64_t), 1, f, tmp);
    ckpt_file_commit(f, tmp, path);
}
static void optim_load_shard(Optimizer* o, const char* path) {
    FILE* f = fopen_check(path, "rb");
    int64_t h[6];
    fread_check(h, sizeof(int64_t), 6, f, path);
    if (h[0] != ZERO_SHARD_MAGIC && h[0] != ZERO_SHARD_MAGIC_UNCHECKED)
        fatal("'%s' is not a grass.c ZeRO-1 shard file", path);
    int64_t magic = h[0];  // ZERO_SHARD_MAGIC: its trailer was checked by the resume's find_resume_checkpoint
    if (h[1] != o->rt.rank || h[2] != o->rt.world_size || h[3] != (int64_t)o->zero.shard ||
        h[4] != o->cfg.state_dtype ||
        h[5] != (int64_t)o->grad_total)
        fatal("'%s' holds block %lld of %lld (length %lld, dtype %lld, %lld dense values); this rank needs block %d of "
              "%d (length %zu, dtype %d, %zu)", path, (long long)h[1], (long long)h[2], (long long)h[3],
              (long long)h[4], (long long)h[5], o->rt.rank, o->rt.world_size, o->zero.shard, o->cfg.state_dtype,
              o->grad_total);
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    read_backend_bytes(f, o->m, o->zero.shard * ssz, path);
    read_backend_bytes(f, o->v, o->zero.shard * ssz, path);
    int64_t end = 0;
    fread_check(&end, sizeof(int64_t), 1, f, path);
    if (end != magic) fatal("'%s' is corrupt (bad end marker)", path);
    fclose_check(f, path);
}

#endif // GRASS_OPTIM_STATE_IO_H
