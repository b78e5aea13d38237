/*
 * train_checkpoint.h: the trainer's checkpoints. A checkpoint of step s is model_<s>.bin (the
 * weights, llama_model.h), state_<s>.bin (TrainState, the run's setup as text and the optimizer's
 * state) and, with ZeRO-1, one state_<s>.zeroR.bin per rank; checkpoint_latest.txt, written last,
 * names the newest complete one. Here: writing them on every rank in order, and for -y 1 finding
 * the newest intact one (checksum trailers), its saved setup, and loading it. The file formats
 * are docs/FORMATS.md. Part of train_llama.cu.
 */
#ifndef GRASS_TRAIN_CHECKPOINT_H
#define GRASS_TRAIN_CHECKPOINT_H

#include <dirent.h>
#include "utils.h"
#include "checksum.h"
#include "llama_model.h"    // the model file, the checkpoint header
#include "comm.h"
#include "grass_optim.cuh"  // optim_save/optim_load, the ZeRO-1 shard files
#include "dataloader.h"     // the train loader's position, part of TrainState

// ---- the state file ---------------------------------------------------------------------------

#define STATE_MAGIC 20261103

// Training state: everything besides the weights that resuming needs to continue bit for bit.
typedef struct {
    int64_t step;            // steps completed
    DataLoaderState data;    // train loader position
    uint64_t sample_rng;     // RNG for text samples
    int32_t world_size;      // ranks that wrote it
    double best_val_loss;
} TrainState;

// h[STATE_HAS_SETUP] = 1: the run's setup (its options as text, run_setup_text) follows the
// TrainState as an int32 length and the bytes; files written before 2026-11-30 have 0 there
#define STATE_HAS_SETUP 20
// h[STATE_HAS_CHECKSUM] = 1: the file ends in a checksum trailer (checksum.h); 0 before 2026-11-30
#define STATE_HAS_CHECKSUM 21
// h[STATE_FFN_STORED]: the ffn size the optimizer state is laid out for (llama_ffn_stored: padded on
// the GPU build); 0 in files written before the padding existed, which were laid out for ffn_dim
#define STATE_FFN_STORED 22

static void state_save(const char* path, const Llama* m, const Optimizer* o, const TrainState* ts, const char* setup) {
    char tmp[1100];
    FILE* f = ckpt_file_open(path, tmp, sizeof(tmp));
    int32_t h[64];
    checkpoint_header(&m->config, h, 0, ts->step);
    h[CKPT_H_MAGIC] = STATE_MAGIC;
    h[STATE_HAS_SETUP] = 1;
    h[STATE_HAS_CHECKSUM] = 1;
    h[STATE_FFN_STORED] = m->pt.ffn_stored;
    fwrite_check(h, sizeof(int32_t), 64, f, tmp);
    fwrite_check(ts, sizeof(TrainState), 1, f, tmp);
    int32_t len = (int32_t)strlen(setup);
    fwrite_check(&len, sizeof(int32_t), 1, f, tmp);
    fwrite_check(setup, 1, len, f, tmp);
    optim_save(o, f, tmp);
    int32_t end = STATE_MAGIC;
    fwrite_check(&end, sizeof(int32_t), 1, f, tmp);
    ckpt_file_commit(f, tmp, path);
}

// Reads a state file that find_resume_checkpoint has found intact (checksum trailer included).
static void state_load(const char* path, const Llama* m, Optimizer* o, TrainState* ts) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[64], want[64];
    fread_check(h, sizeof(int32_t), 64, f, path);
    checkpoint_header(&m->config, want, 0, 0);
    want[CKPT_H_MAGIC] = STATE_MAGIC;
    if (h[CKPT_H_MAGIC] != STATE_MAGIC)
        fatal("'%s' is not a grass.c training-state file (magic %d)", path, h[CKPT_H_MAGIC]);
    if (h[CKPT_H_VERSION] != CHECKPOINT_VERSION)
        fatal("'%s' has state version %d; this build reads %d", path, h[CKPT_H_VERSION], CHECKPOINT_VERSION);
    h[CKPT_H_STEP] = 0;
    int has_setup = h[STATE_HAS_SETUP] == 1;
    want[STATE_HAS_SETUP] = h[STATE_HAS_SETUP];
    want[STATE_HAS_CHECKSUM] = h[STATE_HAS_CHECKSUM];  // its trailer: checked by find_resume_checkpoint
    int file_ffn = h[STATE_FFN_STORED] > 0 ? h[STATE_FFN_STORED] : m->config.ffn_dim;
    if (file_ffn != m->pt.ffn_stored)
        fatal("'%s' holds optimizer state laid out for the ffn stored as %d, this run stores it as %d (--ffn-align: "
              "the GPU build pads to a multiple of 64, the CPU build does not); resume with the same --ffn-align, or "
              "start from the model file alone with --init-from", path, file_ffn, m->pt.ffn_stored);
    want[STATE_FFN_STORED] = h[STATE_FFN_STORED];
    if (memcmp(h, want, sizeof(h)) != 0)
        fatal("'%s' was written for another model config; use the same model flags", path);
    fread_check(ts, sizeof(TrainState), 1, f, path);
    if (has_setup) {  // read by run_setup_from_state before the model was built; skipped here
        int32_t len = 0;
        fread_check(&len, sizeof(int32_t), 1, f, path);
        if (len < 0 || len > (1 << 20)) fatal("'%s' is corrupt (setup length %d)", path, len);
        if (fseek(f, len, SEEK_CUR) != 0) fatal("'%s': cannot skip its setup block: %s", path, strerror(errno));
    }
    optim_load(o, f, path);
    int32_t end = 0;
    fread_check(&end, sizeof(int32_t), 1, f, path);
    if (end != STATE_MAGIC) fatal("'%s' is corrupt (bad end marker)", path);
    fclose_check(f, path);
}

// The setup saved in a state file, or NULL when the file predates saved setups. The text stays
// allocated: string options point into it.
static char* run_setup_from_state(const char* path) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[64];
    fread_check(h, sizeof(int32_t), 64, f, path);
    if (h[CKPT_H_MAGIC] != STATE_MAGIC)
        fatal("'%s' is not a grass.c training-state file (magic %d)", path, h[CKPT_H_MAGIC]);
    char* text = NULL;
    if (h[STATE_HAS_SETUP] == 1) {
        TrainState ts;
        fread_check(&ts, sizeof(TrainState), 1, f, path);
        int32_t len = 0;
        fread_check(&len, sizeof(int32_t), 1, f, path);
        if (len < 0 || len > (1 << 20)) fatal("'%s' is corrupt (setup length %d)", path, len);
        text = (char*)malloc_check((size_t)len + 1);
        fread_check(text, 1, len, f, path);
        text[len] = '\0';
    }
    fclose_check(f, path);
    return text;
}

// ---- finding the checkpoint to resume from ---------------------------------------------------
// checkpoint_latest.txt names the newest complete checkpoint (written last, once every file of
// it is in place). -y 1 checks that checkpoint's files against their checksum trailers before it
// loads anything; a damaged one is reported by name and the newest older intact checkpoint in the
// directory is used instead.

static void checkpoint_paths(const char* out_dir, long long step, char* model_path, char* state_path, size_t n) {
    snprintf(model_path, n, "%s/model_%08lld.bin", out_dir, step);
    snprintf(state_path, n, "%s/state_%08lld.bin", out_dir, step);
}

// ZeRO-1: this rank's block of the AdamW moments, next to the step's state file
static void zero_shard_path(char* buf, size_t len, const char* out_dir, long long step, int rank) {
    snprintf(buf, len, "%s/state_%08lld.zero%d.bin", out_dir, step, rank);
}

// the three files of a checkpoint, for checkpoint_file_intact
typedef enum { CKPT_KIND_MODEL = 0, CKPT_KIND_STATE = 1, CKPT_KIND_SHARD = 2 } CheckpointKind;
// 1 if a checkpoint file is complete: its header says it has a checksum trailer and the trailer
// matches, or it predates trailers (then the loader's size and end-marker checks are all there
// is). 0 with the file's name and the reason in why[] otherwise.
static int checkpoint_file_intact(const char* path, CheckpointKind kind, char* why, size_t n) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { snprintf(why, n, "'%s': %s", path, strerror(errno)); return 0; }
    int32_t h[64] = {0};
    size_t got = fread(h, sizeof(int32_t), 64, f);
    fclose(f);
    int64_t shard_magic = (int64_t)(uint32_t)h[0] | ((int64_t)h[1] << 32);
    int flagged;
    if (kind == CKPT_KIND_SHARD) {
        if (got < 2 || (shard_magic != ZERO_SHARD_MAGIC && shard_magic != ZERO_SHARD_MAGIC_UNCHECKED)) {
            snprintf(why, n, "'%s' is not a ZeRO-1 shard file (bad magic or shorter than its header)", path); return 0;
        }
        flagged = shard_magic == ZERO_SHARD_MAGIC;
    } else {
        int magic = kind == CKPT_KIND_MODEL ? MODEL_MAGIC : STATE_MAGIC;
        if (got < 64 || h[0] != magic) {
            snprintf(why, n, "'%s' has a bad magic or is shorter than its header", path);
            return 0;
        }
        flagged = kind == CKPT_KIND_MODEL ? h[CKPT_HAS_CHECKSUM] == 1 : h[STATE_HAS_CHECKSUM] == 1;
    }
    if (!flagged) return 1;
    char reason[256];
    if (file_verify_checksum(path, reason, sizeof(reason))) return 1;
    snprintf(why, n, "'%s': %s", path, reason);
    return 0;
}

// the steps of the model_<step>.bin files in out_dir below `below`, newest first
static int older_checkpoint_steps(const char* out_dir, long long below, long long* steps, int max) {
    DIR* d = opendir(out_dir);
    if (d == NULL) return 0;
    int n = 0;
    struct dirent* e;
    while ((e = readdir(d)) != NULL && n < max) {
        long long st; char tail[8];
        if (strlen(e->d_name) == 18 && sscanf(e->d_name, "model_%8lld%4s", &st, tail) == 2 &&
            strcmp(tail, ".bin") == 0 && st < below)
            steps[n++] = st;
    }
    closedir(d);
    for (int i = 1; i < n; i++)  // insertion sort, descending
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            long long t = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = t;
        }
    return n;
}

// The checkpoint -y 1 resumes from: 1 with its step and paths, 0 when out_dir has none yet
// (no checkpoint_latest.txt). Exits when checkpoints exist but none is intact. Every rank checks
// the shared files and its own ZeRO-1 block; all ranks take the same step.
static int find_resume_checkpoint(ProcessGroup* pg, const char* out_dir, long long* step, char* model_path,
                                  char* state_path, size_t n) {
    char lp[1024];
    snprintf(lp, sizeof(lp), "%s/checkpoint_latest.txt", out_dir);
    if (!file_exists(lp)) return 0;
    long long latest = -1;
    FILE* f = fopen_check(lp, "r");
    if (fscanf(f, "%lld", &latest) != 1 || latest < 0) latest = -1;
    fclose_check(f, lp);
    if (latest < 0 && pg->rank == 0)
        fprintf(stderr, "warning: '%s' does not hold a step number; looking for the newest intact checkpoint\n", lp);
    long long cand[4096];
    int nc = 0;
    if (latest >= 0) cand[nc++] = latest;
    nc += older_checkpoint_steps(out_dir, latest >= 0 ? latest : (1LL << 62), cand + nc, 4096 - nc);
    char damaged[4096] = "";
    size_t dlen = 0;
    for (int i = 0; i < nc; i++) {
        char mp[1024], sp[1024], zp[1100], why[1400] = "";
        checkpoint_paths(out_dir, cand[i], mp, sp, sizeof(mp));
        zero_shard_path(zp, sizeof(zp), out_dir, cand[i], pg->rank);
        int ok = checkpoint_file_intact(mp, CKPT_KIND_MODEL, why, sizeof(why)) &&
                 checkpoint_file_intact(sp, CKPT_KIND_STATE, why, sizeof(why)) &&
                 (!file_exists(zp) || checkpoint_file_intact(zp, CKPT_KIND_SHARD, why, sizeof(why)));
        double all[1] = {ok ? 1.0 : 0.0};
        // intact on every rank, or not used
        comm_allreduce_sum_double(pg, all, 1, "the agreement on a checkpoint to resume from (MPI_Allreduce)");
        if (all[0] == (double)pg->world_size) {
            if (i > 0 && pg->rank == 0)
                fprintf(stderr, "falling back to the checkpoint at step %lld, the newest intact one\n", cand[i]);
            *step = cand[i];
            snprintf(model_path, n, "%s", mp);
            snprintf(state_path, n, "%s", sp);
            return 1;
        }
        if (!ok) {
            // one write per line: mpirun interleaves the ranks' output by write, and a split line
            // lost its "rank N: " prefix once (tests/test_mpi.sh greps for it)
            char who[32] = "";
            if (pg->world_size > 1) snprintf(who, sizeof(who), "rank %d: ", pg->rank);
            fprintf(stderr, "%sthe checkpoint at step %lld is damaged: %s\n", who, cand[i], why);
            append_item(damaged, sizeof(damaged), &dlen, "step %lld: %s", cand[i], why);
        } else {
            append_item(damaged, sizeof(damaged), &dlen, "step %lld: damaged on another rank", cand[i]);
        }
    }
    fatal("-y 1: no intact checkpoint in '%s' (%s); restore one, or start afresh in another --out-dir",
          out_dir, dlen ? damaged : "checkpoint_latest.txt names none and there are no model files");
    return 0;
}

// -y 1: files a checkpoint write left under their temporary names (a SIGKILL mid-write) are
// removed, so that a partial file never lingers next to the checkpoints
static void remove_partial_files(const char* out_dir) {
    DIR* d = opendir(out_dir);
    if (d == NULL) return;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".tmp") != 0) continue;
        if (strncmp(e->d_name, "model_", 6) != 0 && strncmp(e->d_name, "state_", 6) != 0 &&
            strncmp(e->d_name, "checkpoint_latest", 17) != 0) continue;
        char p[1400];
        snprintf(p, sizeof(p), "%s/%s", out_dir, e->d_name);
        if (remove(p) == 0) printf("removed '%s', left by a checkpoint write that did not finish\n", p);
        else fprintf(stderr, "warning: cannot remove '%s': %s\n", p, strerror(errno));
    }
    closedir(d);
}

static void write_latest(const char* out_dir, int64_t step) {
    char path[1024], tmp[1100];
    snprintf(path, sizeof(path), "%s/checkpoint_latest.txt", out_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    partial_file_begin(tmp);
    FILE* f = fopen_check(tmp, "w");
    if (fprintf(f, "%lld\n", (long long)step) < 0) fatal("cannot write '%s': %s", tmp, strerror(errno));
    fclose_sync_check(f, tmp);
    rename_check(tmp, path);
    partial_file_end();
}

// rank 0's part: the model and state files of step ts->step; `setup`: the run's options as text
// (run_setup_text), saved in the state file
static void save_checkpoint(const char* out_dir, const char* setup, Llama* m, Optimizer* o, const TrainState* ts) {
    char mp[1024], sp[1024];
    checkpoint_paths(out_dir, (long long)ts->step, mp, sp, sizeof(mp));
    checkpoint_save_model(m, mp, ts->step);
    state_save(sp, m, o, ts, setup);
    write_latest(out_dir, ts->step);  // only once both files are complete
    printf("wrote checkpoint %s and %s\n", mp, sp);
}

// FNV-1a over the weights and the Grass selections: equal on every rank, or the run stops
static void check_ranks_in_sync(ProcessGroup* pg, Llama* m, Optimizer* o) {
    if (pg->world_size <= 1) return;
    uint64_t h = 1469598103934665603ULL;
    const size_t chunk = (size_t)1 << 22;
    float* buf = (float*)malloc_check(chunk * sizeof(float));
    for (size_t off = 0; off < m->pt.total; off += chunk) {
        size_t n = m->pt.total - off < chunk ? m->pt.total - off : chunk;
        backend_download_floats(buf, m->params + off, n);
        const unsigned char* b = (const unsigned char*)buf;
        for (size_t i = 0; i < n * sizeof(float); i++) { h ^= b[i]; h *= 1099511628211ULL; }
    }
    free(buf);
    comm_check_same_u64(pg, h, "the model weights");
    comm_check_same_u64(pg, optim_selection_hash(o), "the Grass row selections");
}

// A checkpoint of step ts->step on every rank: ZeRO-1 blocks first, then the model and state
// files (rank 0), checkpoint_latest.txt last, so it only ever names a complete checkpoint
static void write_checkpoint(ProcessGroup* pg, const char* out_dir, const char* setup, Llama* m, Optimizer* o,
                             TrainState* ts, DataLoader* train) {
    check_ranks_in_sync(pg, m, o);
    ts->data = dataloader_get_state(train);
    if (o->rt.sharded) {
        char zp[1100];
        zero_shard_path(zp, sizeof(zp), out_dir, (long long)ts->step, pg->rank);
        optim_save_shard(o, zp);
        comm_barrier(pg);
    }
    if (pg->rank == 0) save_checkpoint(out_dir, setup, m, o, ts);
    comm_barrier(pg);
}

// -y 1: loads the checkpoint of `step` that find_resume_checkpoint chose (its files checked
// intact): the weights, the training state and optimizer state, this rank's ZeRO-1 block, and
// the train loader's position. It must have been written by as many ranks as this run has.
static void checkpoint_resume(ProcessGroup* pg, const char* out_dir, long long step, const char* model_path,
                              const char* state_path, Llama* m, Optimizer* o, TrainState* ts, DataLoader* train) {
    checkpoint_load_model(m, model_path, 1);  // its checksum: checked by find_resume_checkpoint
    state_load(state_path, m, o, ts);
    if (o->rt.sharded) {
        char zp[1100];
        zero_shard_path(zp, sizeof(zp), out_dir, step, pg->rank);
        optim_load_shard(o, zp);
    }
    if (ts->world_size != pg->world_size)
        fatal("'%s' was written by %d ranks; resume it with %d ranks (mpirun -np %d) to continue bit for bit",
              state_path, ts->world_size, ts->world_size, ts->world_size);
    dataloader_set_state(train, &ts->data);
}

#endif // GRASS_TRAIN_CHECKPOINT_H
