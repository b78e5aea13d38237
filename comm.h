/*
 * comm.h: the process group. With USE_MPI (the Makefile sets it when mpicc/mpi.h is found),
 * ranks come from MPI; without it, the program is one process and refuses to run when a
 * launcher (mpirun, srun) started several copies of it. Buffer collectives live in the
 * backends (MPI on the CPU, NCCL on the GPU); this header has the host-side ones.
 */
#ifndef GRASS_COMM_H
#define GRASS_COMM_H

#include <stdlib.h>
#include "utils.h"
#ifdef USE_MPI
#include <mpi.h>
#endif

typedef struct {
    int rank, world_size, local_rank;
} ProcessGroup;

#ifdef USE_MPI
#define MPI_CHECK(call) do { int rc_ = (call); if (rc_ != MPI_SUCCESS) { \
    char msg_[MPI_MAX_ERROR_STRING]; int len_ = 0; MPI_Error_string(rc_, msg_, &len_); \
    fprintf(stderr, "error: MPI call %s failed: %s\n  at %s:%d\n", #call, msg_, __FILE__, __LINE__); \
    MPI_Abort(MPI_COMM_WORLD, 1); exit(1); } } while (0)
#endif

// the world size a launcher asked for, from its environment (1 when not launched by one)
static int launcher_world_size(void) {
    const char* vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS"};
    for (int i = 0; i < 4; i++) {  // SLURM_NTASKS alone does not mean this process was launched as a rank
        const char* v = getenv(vars[i]);
        if (v != NULL && atoi(v) > 1) return atoi(v);
    }
    return 1;
}

static void comm_init(ProcessGroup* pg, int* argc, char*** argv) {
    pg->rank = 0; pg->world_size = 1; pg->local_rank = 0;
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
#else
    (void)argc; (void)argv;
    int n = launcher_world_size();
    if (n > 1) {
        fatal("this program was launched as one of %d ranks, but it was built without MPI, so every rank would "
              "train alone; rebuild with MPI (apt-get install libopenmpi-dev openmpi-bin; make clean; make) "
              "or run a single process", n);
    }
#endif
}

static void comm_finalize(ProcessGroup* pg) {
    (void)pg;
#ifdef USE_MPI
    MPI_Finalize();
#endif
}

#ifdef USE_MPI
// in-place MPI sum of n floats over MPI_COMM_WORLD, in chunks (MPI counts are int); the
// backends' host-side all-reduce (the CPU's, and the CUDA build's fallback without NCCL)
static void mpi_allreduce_floats(float* x, size_t n) {
    const size_t maxc = (size_t)1 << 30;
    for (size_t off = 0; off < n; off += maxc) {
        int cnt = (int)((n - off) < maxc ? (n - off) : maxc);
        int rc = MPI_Allreduce(MPI_IN_PLACE, x + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) fatal("MPI_Allreduce of %d floats failed (code %d)", cnt, rc);
    }
}
#endif

// sum doubles over ranks, in place
static void comm_allreduce_sum_double(ProcessGroup* pg, double* x, int n) {
    (void)pg; (void)x; (void)n;
#ifdef USE_MPI
    if (pg->world_size > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
#endif
}

// max of an int over ranks (used to agree on "stop now" decisions)
static int comm_allreduce_max_int(ProcessGroup* pg, int x) {
    (void)pg;
#ifdef USE_MPI
    if (pg->world_size > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
#endif
    return x;
}

// Checks that every rank holds the same 64-bit value (a hash of weights or selections);
// a mismatch means the ranks have drifted apart, which must never pass silently.
static void comm_check_same_u64(ProcessGroup* pg, uint64_t v, const char* what) {
    (void)pg; (void)v; (void)what;
#ifdef USE_MPI
    if (pg->world_size <= 1) return;
    unsigned long long lo = v, hi = v;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD));
    if (lo != hi) fatal("rank %d: the ranks disagree on %s (hashes %016llx .. %016llx); data-parallel state diverged",
                        pg->rank, what, lo, hi);
#endif
}

static void comm_barrier(ProcessGroup* pg) {
    (void)pg;
#ifdef USE_MPI
    if (pg->world_size > 1) MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
#endif
}

// on a fatal error in one rank, bring the whole job down instead of leaving the others hanging
static void comm_abort(ProcessGroup* pg, int code) {
    (void)pg;
#ifdef USE_MPI
    if (pg->world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}
#endif // GRASS_COMM_H
