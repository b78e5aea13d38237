/*
 * comm.h: the process group, and every host-side MPI loop of the program.
 * With USE_MPI (the Makefile sets it when mpicxx is found, cuda.mk likewise for the GPU build),
 * ranks come from MPI; without it, the program is one process and refuses to run when a
 * launcher (mpirun, srun) started several copies of it.
 * The buffer collectives of backend.h live in the backends (MPI on the CPU, NCCL on the GPU);
 * the MPI ones are the mpi_* functions below, on plain host buffers over MPI_COMM_WORLD:
 *   mpi_world(&rank)                          ranks (1 when MPI was never started: tests)
 *   mpi_allreduce_floats(x, n)                in-place sum
 *   mpi_reducescatter_floats(x, shard)        in-place sum of world x shard floats, this
 *                                             rank's block of the sum left in place (ZeRO-1)
 *   mpi_allgather_floats(x, shard)            in place: every rank's block to every rank
 *   mpi_bcast(x, n, type, root)               n elements of an MPI datatype from root
 *   mpi_iallreduce_floats(x, n, reqs, &count, max) / mpi_waitall(reqs, &count)
 *                                             asynchronous in-place sum and its completion
 * Each is a no-op on one rank. MPI counts are int, so each splits its buffer into pieces of at
 * most COMM_MPI_MAX_COUNT elements (mpi_chunk), and each MPI call's result is checked
 * (mpi_check names the call on failure).
 */
#ifndef GRASS_COMM_H
#define GRASS_COMM_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "utils.h"
#ifdef USE_MPI
#include <mpi.h>
#endif

#define COMM_HOST_LEN 64
typedef struct {
    int rank, world_size, local_rank;
    int n_hosts;                      // distinct host names among the ranks
    char (*hosts)[COMM_HOST_LEN];     // every rank's host name (world_size entries; messages name a peer's host)
} ProcessGroup;

#ifdef USE_MPI
#define MPI_CHECK(call) do { int rc_ = (call); if (rc_ != MPI_SUCCESS) { \
    char msg_[MPI_MAX_ERROR_STRING]; int len_ = 0; MPI_Error_string(rc_, msg_, &len_); \
    fprintf(stderr, "error: MPI call %s failed: %s\n  at %s:%d\n", #call, msg_, __FILE__, __LINE__); \
    MPI_Abort(MPI_COMM_WORLD, 1); exit(1); } } while (0)
#endif
#include "comm_watchdog.h"  // every wait below is timed (--comm-timeout)

// the world size a launcher asked for, from its environment (1 when not launched by one)
static int launcher_world_size(void) {
    const char* vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS"};
    for (int i = 0; i < 4; i++) {  // SLURM_NTASKS alone does not mean this process was launched as a rank
        const char* v = getenv(vars[i]);
        if (v != NULL && atoi(v) > 1) return atoi(v);
    }
    return 1;
}

// 1 when no rank before r is on r's host (rank r is the first one listed there)
static int comm_first_on_host(const ProcessGroup* pg, int r) {
    for (int q = 0; q < r; q++) if (strcmp(pg->hosts[q], pg->hosts[r]) == 0) return 0;
    return 1;
}

// this machine's host name, or "?" when it has none
static void comm_hostname(char* out) {
    if (gethostname(out, COMM_HOST_LEN) != 0) snprintf(out, COMM_HOST_LEN, "?");
    out[COMM_HOST_LEN - 1] = '\0';
}

static void comm_init(ProcessGroup* pg, int* argc, char*** argv) {
    pg->rank = 0; pg->world_size = 1; pg->local_rank = 0; pg->n_hosts = 1; pg->hosts = NULL;
#ifdef USE_MPI
    MPI_CHECK(MPI_Init(argc, argv));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &pg->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &pg->world_size));
    // errors return codes (checked) instead of aborting silently
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_Comm local;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, pg->rank, MPI_INFO_NULL, &local));
    MPI_CHECK(MPI_Comm_rank(local, &pg->local_rank));
    MPI_CHECK(MPI_Comm_free(&local));
    pg->hosts = (char(*)[COMM_HOST_LEN])calloc((size_t)pg->world_size, COMM_HOST_LEN);
    if (pg->hosts == NULL) fatal("out of host memory for %d host names", pg->world_size);
    comm_hostname(pg->hosts[pg->rank]);
    MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, pg->hosts, COMM_HOST_LEN, MPI_CHAR, MPI_COMM_WORLD));
    pg->n_hosts = 0;
    for (int r = 0; r < pg->world_size; r++) pg->n_hosts += comm_first_on_host(pg, r);
#else
    (void)argc; (void)argv;
    int n = launcher_world_size();
    if (n > 1) {
        fatal("this program was launched as one of %d ranks, but it was built without MPI, so every rank would "
              "train alone; rebuild with MPI (apt-get install libopenmpi-dev openmpi-bin; make clean; make) "
              "or run a single process", n);
    }
#endif
    if (pg->hosts == NULL) {
        pg->hosts = (char(*)[COMM_HOST_LEN])calloc(1, COMM_HOST_LEN);
        if (pg->hosts == NULL) fatal("out of host memory");
        comm_hostname(pg->hosts[0]);
    }
}

// "hosts: 2 for 4 ranks: node1 (ranks 0 1) node2 (ranks 2 3)", on rank 0
static void comm_print_hosts(const ProcessGroup* pg) {
    if (pg->rank != 0 || pg->world_size == 1) return;
    printf("hosts: %d for %d ranks:", pg->n_hosts, pg->world_size);
    for (int r = 0; r < pg->world_size; r++) {
        if (!comm_first_on_host(pg, r)) continue;
        printf(" %s (ranks", pg->hosts[r]);
        for (int q = r; q < pg->world_size; q++) if (strcmp(pg->hosts[q], pg->hosts[r]) == 0) printf(" %d", q);
        printf(")");
    }
    printf("\n");
}

static void comm_finalize(ProcessGroup* pg) {
    watchdog_stop();
    free(pg->hosts);
    pg->hosts = NULL;
#ifdef USE_MPI
    MPI_Finalize();
#endif
}

#ifdef USE_MPI
// ---- host MPI loops -------------------------------------------------------------------------
// MPI counts are int: a buffer of n elements goes in pieces of COMM_MPI_MAX_COUNT elements at
// offsets 0, COMM_MPI_MAX_COUNT, ...; the piece at offset off has mpi_chunk(n, off) elements.
#ifndef COMM_MPI_MAX_COUNT  // (a test may set it small to exercise the pieces)
#define COMM_MPI_MAX_COUNT ((size_t)1 << 30)
#endif
static int mpi_chunk(size_t n, size_t off) { return (int)(n - off < COMM_MPI_MAX_COUNT ? n - off : COMM_MPI_MAX_COUNT); }

// stops the program when an MPI call failed, naming the call, its size and MPI's reason
static void mpi_check(int rc, const char* call, size_t count, const char* unit) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof(msg), "unknown error");
    fatal("%s of %zu %s failed (code %d: %s)", call, count, unit, rc, msg);
}

// ranks in MPI_COMM_WORLD, and this one's in *rank; 1 (rank 0) for a single-process caller
// (a test) that never started MPI
static int mpi_world(int* rank) {
    int initialized = 0, world = 1;
    *rank = 0;
    mpi_check(MPI_Initialized(&initialized), "MPI_Initialized", 1, "flag");
    if (!initialized) return 1;
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world), "MPI_Comm_size", 1, "int");
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, rank), "MPI_Comm_rank", 1, "int");
    return world;
}

// in-place sum of n floats over the ranks; the backends' host-side all-reduce (the CPU's, and
// the CUDA build's fallback without NCCL)
static void mpi_allreduce_floats(float* x, size_t n) {
    int rank;
    if (n == 0 || mpi_world(&rank) == 1) return;
    for (size_t off = 0; off < n; off += COMM_MPI_MAX_COUNT) {
        int cnt = mpi_chunk(n, off);
        watchdog_begin("an all-reduce of floats (MPI_Allreduce)");
        mpi_check(MPI_Allreduce(MPI_IN_PLACE, x + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                  "MPI_Allreduce", (size_t)cnt, "floats");
        watchdog_end();
    }
}

// broadcast of n elements of `type` at x from rank root to every rank (as MPI_BYTE with n in
// bytes, any element type, such as bf16, passes unchanged)
static void mpi_bcast(void* x, size_t n, MPI_Datatype type, int root) {
    int rank, size = 0;
    if (n == 0 || mpi_world(&rank) == 1) return;
    mpi_check(MPI_Type_size(type, &size), "MPI_Type_size", 1, "datatype");
    for (size_t off = 0; off < n; off += COMM_MPI_MAX_COUNT) {
        int cnt = mpi_chunk(n, off);
        watchdog_begin("a broadcast (MPI_Bcast)");
        mpi_check(MPI_Bcast((char*)x + off * (size_t)size, cnt, type, root, MPI_COMM_WORLD),
                  "MPI_Bcast", (size_t)cnt, "elements");
        watchdog_end();
    }
}

// ZeRO-1's reduce-scatter, in place: x holds world x shard floats on every rank; afterwards
// this rank's block x[rank * shard, (rank + 1) * shard) holds that block's sum over the ranks
// (the other blocks are scratch). A shard over COMM_MPI_MAX_COUNT sums everything instead
// (the same result in this rank's block, more traffic).
static void mpi_reducescatter_floats(float* x, size_t shard) {
    int rank, world = mpi_world(&rank);
    if (world == 1 || shard == 0) return;
    if (shard > COMM_MPI_MAX_COUNT) {
        mpi_allreduce_floats(x, shard * world);
        return;
    }
    // the in-place form leaves this rank's block of the sum at the start of x
    watchdog_begin("ZeRO-1's reduce-scatter (MPI_Reduce_scatter_block)");
    mpi_check(MPI_Reduce_scatter_block(MPI_IN_PLACE, x, (int)shard, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Reduce_scatter_block", shard, "floats per rank");
    watchdog_end();
    if (rank > 0) memmove(x + (size_t)rank * shard, x, shard * sizeof(float));
}

// ZeRO-1's all-gather, in place: x holds world x shard floats, this rank's block
// x[rank * shard, (rank + 1) * shard) is sent to every rank, and every other block is
// received from its owner. A shard over COMM_MPI_MAX_COUNT goes as one broadcast per block.
static void mpi_allgather_floats(float* x, size_t shard) {
    int rank, world = mpi_world(&rank);
    if (world == 1 || shard == 0) return;
    if (shard > COMM_MPI_MAX_COUNT) {
        for (int r = 0; r < world; r++) mpi_bcast(x + (size_t)r * shard, shard, MPI_FLOAT, r);
        return;
    }
    watchdog_begin("ZeRO-1's all-gather (MPI_Allgather)");
    mpi_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, (int)shard, MPI_FLOAT, MPI_COMM_WORLD),
              "MPI_Allgather", shard, "floats per rank");
    watchdog_end();
}

// starts an in-place sum of n floats over the ranks (MPI_Iallreduce, one per piece) and
// appends its requests to reqs[*count .. max), advancing *count; x must stay untouched until
// mpi_waitall(reqs, count). Stops the program when more than max requests would be pending.
static void mpi_iallreduce_floats(float* x, size_t n, MPI_Request* reqs, int* count, int max) {
    int rank;
    if (n == 0 || mpi_world(&rank) == 1) return;
    for (size_t off = 0; off < n; off += COMM_MPI_MAX_COUNT) {
        if (*count >= max) fatal("mpi_iallreduce_floats: more than %d reductions in flight", max);
        int cnt = mpi_chunk(n, off);
        mpi_check(MPI_Iallreduce(MPI_IN_PLACE, x + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &reqs[*count]),
                  "MPI_Iallreduce", (size_t)cnt, "floats");
        (*count)++;
    }
}

// completes the *count requests of reqs (from mpi_iallreduce_floats) and sets *count to 0
static void mpi_waitall(MPI_Request* reqs, int* count) {
    if (*count == 0) return;
    watchdog_begin("the overlapped gradient all-reduce (MPI_Waitall)");
    mpi_check(MPI_Waitall(*count, reqs, MPI_STATUSES_IGNORE), "MPI_Waitall", (size_t)*count, "requests");
    watchdog_end();
    *count = 0;
}
#endif

// sum doubles over ranks, in place; `what` names the wait for the watchdog (a string literal)
static void comm_allreduce_sum_double(ProcessGroup* pg, double* x, int n, const char* what) {
    (void)pg; (void)x; (void)n; (void)what;
#ifdef USE_MPI
    if (pg->world_size <= 1) return;
    watchdog_begin(what);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    watchdog_end();
#endif
}

// Checks that every rank holds the same 64-bit value (a hash of weights or selections);
// a mismatch means the ranks have drifted apart, which must never pass silently.
static void comm_check_same_u64(ProcessGroup* pg, uint64_t v, const char* what) {
    (void)pg; (void)v; (void)what;
#ifdef USE_MPI
    if (pg->world_size <= 1) return;
    unsigned long long lo = v, hi = v;
    watchdog_begin("the ranks' comparison of weight and selection hashes (MPI_Allreduce)");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD));
    watchdog_end();
    if (lo != hi) fatal("rank %d: the ranks disagree on %s (hashes %016llx .. %016llx); data-parallel state diverged",
                        pg->rank, what, lo, hi);
#endif
}

static void comm_barrier(ProcessGroup* pg) {
    (void)pg;
#ifdef USE_MPI
    if (pg->world_size <= 1) return;
    watchdog_begin("the barrier around a checkpoint write (MPI_Barrier)");
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    watchdog_end();
#endif
}

#endif // GRASS_COMM_H
