/*
 * comm_watchdog.h: a lost or stalled peer becomes a clean stop (--comm-timeout SECONDS).
 *
 * Every wait of a rank on the others is bracketed by watchdog_begin(what) / watchdog_end(): each
 * MPI collective of comm.h (the gradient all-reduces and their completion, ZeRO-1's reduce-scatter
 * and all-gather, the loss all-reduce that carries the stop signal, the agreement on checkpoints,
 * the barriers) and, on the GPU build, each NCCL call and each host wait on the stream that runs
 * them. A thread looks at the open wait every 100 ms; a wait open longer than the timeout makes it
 * print what this rank waited on (the step, the wait, how long, and its ring neighbours: when each
 * was last heard from and how far it had got), abort NCCL (GPU build), and end the process with
 * _exit(WATCHDOG_EXIT). mpirun sees a rank end without MPI_Finalize and ends the others.
 *
 * Waits are timed, not steps: long work between waits (a 13b checkpoint write, NCCL's init, a
 * GaLore refresh's SVDs on the CPU) never trips it. A thread that calls _exit rather than
 * MPI_Abort: the program runs MPI at its single-thread level, where only the main thread may call
 * MPI, and the main thread is the one that is stuck inside it.
 *
 * Neighbours: a collective cannot say which rank it is waiting for, so each rank's watchdog thread
 * sends its progress (step, waits begun and finished) in a small UDP datagram to the ranks before
 * and after it in the ring, every 0.5 s, at the address its host name resolves to (exchanged once
 * over MPI). A neighbour silent for longer than 2 s is named as the peer waited on; a rank that can
 * name none waits 2 s before it ends, so that the lost peer's neighbours are the ones heard. The
 * datagrams are only for that message: where UDP does not pass, the watchdog still stops the job,
 * and says it heard nothing.
 *
 *   watchdog_start(pg, seconds)   starts it (several ranks and seconds > 0; else it does nothing)
 *   watchdog_set_step(step)       the step the messages name
 *   watchdog_begin(what) / _end() a wait (nested ones count as the outer one)
 *   watchdog_on_fire(fn)          called before _exit (the CUDA backend: ncclCommAbort)
 *   watchdog_stop()               ends the thread (before MPI_Finalize)
 */
#ifndef GRASS_COMM_WATCHDOG_H
#define GRASS_COMM_WATCHDOG_H

#include <stdio.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <atomic>
#include <pthread.h>
#include <unistd.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define WATCHDOG_EXIT 75           // EX_TEMPFAIL: a temporary failure; re-queue with -y 1
#define WATCHDOG_QUIET_NS 2000000000LL  // a neighbour not heard from for this long is quiet
#define WATCHDOG_BEAT_NS 500000000LL

typedef struct {                    // one heartbeat datagram
    uint32_t magic;
    int32_t rank;
    int64_t step, waits_begun, waits_done;
} WatchdogBeat;
#define WATCHDOG_MAGIC 0x47574442u  // "GWDB"

typedef struct {
    int started;
    double timeout_s;
    int rank, world;
    const char* host;               // this rank's host name
    const char (*hosts)[64];        // every rank's (ProcessGroup.hosts)
    std::atomic<int64_t> wait_start_ns;   // 0: not waiting
    std::atomic<const char*> what;
    std::atomic<int64_t> step, waits_begun, waits_done;
    int depth;                      // nesting of begin/end (main thread only)
    std::atomic<int> stop;
    pthread_t thread;
    void (*on_fire)(void);
    // neighbours (ring: rank-1, rank+1; one peer with two ranks)
    int sock, n_nb, nb[2];
    struct sockaddr_in* addrs;      // every rank's heartbeat address (port 0: none)
    int64_t heard_ns[2];            // 0: never
    WatchdogBeat last[2];
} Watchdog;
static Watchdog g_watchdog;

static int64_t watchdog_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void watchdog_set_step(long long step) { g_watchdog.step.store(step, std::memory_order_relaxed); }
static inline void watchdog_begin(const char* what) {
    Watchdog* w = &g_watchdog;
    if (!w->started || w->depth++ > 0) return;
    w->what.store(what, std::memory_order_relaxed);
    w->waits_begun.fetch_add(1, std::memory_order_relaxed);
    w->wait_start_ns.store(watchdog_now_ns(), std::memory_order_release);
}
static inline void watchdog_end(void) {
    Watchdog* w = &g_watchdog;
    if (!w->started || --w->depth > 0) return;
    w->wait_start_ns.store(0, std::memory_order_release);
    w->waits_done.fetch_add(1, std::memory_order_relaxed);
}
static inline void watchdog_on_fire(void (*fn)(void)) { g_watchdog.on_fire = fn; }

static void watchdog_beat(Watchdog* w) {
    WatchdogBeat b = {WATCHDOG_MAGIC, w->rank, w->step.load(), w->waits_begun.load(), w->waits_done.load()};
    for (int i = 0; i < w->n_nb; i++) {
        const struct sockaddr_in* a = &w->addrs[w->nb[i]];
        if (a->sin_port != 0) (void)sendto(w->sock, &b, sizeof(b), MSG_DONTWAIT, (const struct sockaddr*)a, sizeof(*a));
    }
}

static void watchdog_listen(Watchdog* w, int64_t now) {
    WatchdogBeat b;
    for (;;) {
        ssize_t got = recv(w->sock, &b, sizeof(b), MSG_DONTWAIT);
        if (got < 0) return;
        if (got != (ssize_t)sizeof(b) || b.magic != WATCHDOG_MAGIC) continue;
        for (int i = 0; i < w->n_nb; i++)
            if (w->nb[i] == b.rank) { w->heard_ns[i] = now; w->last[i] = b; }
    }
}

// appends to msg (cap bytes, *n used so far), never past its end
static void watchdog_put(char* msg, int cap, int* n, const char* fmt, ...) {
    if (*n >= cap - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(msg + *n, (size_t)(cap - *n), fmt, ap);
    va_end(ap);
    if (k > 0) *n = *n + k < cap - 1 ? *n + k : cap - 1;
}

// the end of a rank the watchdog stops: its message in one write() (so that mpirun does not
// interleave it with other ranks'), after `linger` a pause of WATCHDOG_QUIET_NS, the backend's
// abort (ncclCommAbort), _exit
[[noreturn]] static void watchdog_exit(Watchdog* w, const char* msg, int n, int linger) {
    ssize_t wrote = write(2, msg, (size_t)n);
    (void)wrote;
    if (linger) {
        struct timespec later = {WATCHDOG_QUIET_NS / 1000000000LL, 0};
        nanosleep(&later, NULL);
    }
    if (w->on_fire) w->on_fire();
    _exit(WATCHDOG_EXIT);
}

// the message, written with one write() so that mpirun does not interleave it with other ranks'.
// frozen_s > 0: the watchdog's own thread did not run for that long, so this process itself was
// stopped (SIGSTOP, a debugger) or starved: it is the stalled peer, and its neighbours' heartbeats
// in the socket's queue are stale
static void watchdog_fire(Watchdog* w, int64_t now, int64_t start, double frozen_s) {
    char msg[2048];
    int n = 0;
#define PUT(...) watchdog_put(msg, (int)sizeof(msg), &n, __VA_ARGS__)
    const char* what = w->what.load();
    long long step = (long long)w->step.load(), mine = (long long)w->waits_begun.load();
    if (frozen_s > 0) {
        PUT("error: rank %d on %s: step %lld: this rank was frozen for %.1f s (stopped, e.g. SIGSTOP or a debugger, "
            "or starved of CPU) in %s (wait #%lld; --comm-timeout %g): it is the stalled peer. Stopping (exit %d); "
            "resume the job with -y 1\n", w->rank, w->host, step, frozen_s, what ? what : "a collective", mine,
            w->timeout_s, WATCHDOG_EXIT);
        watchdog_exit(w, msg, n, 0);
    }
    PUT("error: rank %d on %s: step %lld: no answer from the other ranks for %.1f s in %s (wait #%lld; "
        "--comm-timeout %g)", w->rank, w->host, step, (now - start) * 1e-9, what ? what : "a collective", mine,
        w->timeout_s);
    int named = 0;
    for (int i = 0; i < w->n_nb; i++) {
        int r = w->nb[i];
        if (w->heard_ns[i] == 0) {
            PUT("; waiting on rank %d on %s: never heard from%s", r, w->hosts[r],
                w->addrs[r].sin_port == 0 ? " (no heartbeat address)" : "");
            named++;
            continue;
        }
        double quiet = (now - w->heard_ns[i]) * 1e-9;
        const WatchdogBeat* b = &w->last[i];
        if (now - w->heard_ns[i] > WATCHDOG_QUIET_NS) {  // silent: lost, or stopped
            PUT("; waiting on rank %d on %s: last heard %.1f s ago at step %lld wait #%lld", r, w->hosts[r], quiet,
                (long long)b->step, (long long)b->waits_begun);
            named++;
        } else {  // alive; a wait behind this rank's means it is stuck one collective earlier, on someone else
            PUT("; rank %d on %s is alive (heard %.1f s ago, wait #%lld%s)", r, w->hosts[r], quiet,
                (long long)b->waits_begun, b->waits_begun < mine ? ", behind this rank: waiting too" : "");
        }
    }
    if (named == 0 && w->n_nb > 0)
        PUT("; the lost peer is not a neighbour of this rank: see the other ranks' messages");
    PUT(". A peer is lost (host down, link cut) or stalled: stopping this rank "
        "(exit %d); resume the job with -y 1\n", WATCHDOG_EXIT);
    // every rank times out at about the same moment, and mpirun ends the job at the first exit: a
    // rank that could not name the lost peer leaves a moment later, so that the lost peer's
    // neighbours, which can, are heard first
    watchdog_exit(w, msg, n, named == 0);
#undef PUT
}

static void* watchdog_thread(void* arg) {
    Watchdog* w = (Watchdog*)arg;
    int64_t timeout_ns = (int64_t)(w->timeout_s * 1e9), last_beat = 0, last_tick = watchdog_now_ns();
    struct timespec tick = {0, 100000000};  // 100 ms
    while (!w->stop.load()) {
        nanosleep(&tick, NULL);
        int64_t now = watchdog_now_ns();
        // a tick over a timeout's length late: this process was frozen (see watchdog_fire)
        double frozen_s = now - last_tick > timeout_ns ? (now - last_tick) * 1e-9 : 0.0;
        last_tick = now;
        if (w->sock >= 0) {
            watchdog_listen(w, now);
            if (now - last_beat >= WATCHDOG_BEAT_NS) { watchdog_beat(w); last_beat = now; }
        }
        int64_t start = w->wait_start_ns.load(std::memory_order_acquire);
        if (start != 0 && now - start > timeout_ns) watchdog_fire(w, now, start, frozen_s);
    }
    return NULL;
}

// this host's IPv4 address as its name resolves (0 when it does not)
static uint32_t watchdog_host_addr(const char* host) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) return 0;
    uint32_t a = ((struct sockaddr_in*)res->ai_addr)->sin_addr.s_addr;
    freeaddrinfo(res);
    return a;
}

// Starts the watchdog of this rank: call on every rank, after MPI is up, from the main thread
// (it exchanges the heartbeat addresses with one MPI_Allgather)
static void watchdog_start(int rank, int world, const char (*hosts)[64], double timeout_s) {
    Watchdog* w = &g_watchdog;
    if (w->started || world <= 1 || timeout_s <= 0) return;
    w->timeout_s = timeout_s;
    w->rank = rank; w->world = world; w->hosts = hosts; w->host = hosts[rank];
    w->addrs = (struct sockaddr_in*)calloc((size_t)world, sizeof(struct sockaddr_in));
    if (w->addrs == NULL) fatal("out of host memory for the watchdog's %d addresses", world);
    w->sock = -1;
    struct sockaddr_in me;
    memset(&me, 0, sizeof(me));
    me.sin_family = AF_INET;
    me.sin_addr.s_addr = watchdog_host_addr(w->host);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    socklen_t len = sizeof(me);
    if (s >= 0 && me.sin_addr.s_addr != 0 && bind(s, (struct sockaddr*)&me, sizeof(me)) == 0 &&
        getsockname(s, (struct sockaddr*)&me, &len) == 0) {
        w->sock = s;
    } else {
        if (s >= 0) close(s);
        me.sin_port = 0;  // no heartbeats from this rank; the timeout still holds
    }
    w->addrs[rank] = me;
#ifdef USE_MPI
    MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, w->addrs, (int)sizeof(struct sockaddr_in), MPI_BYTE,
                            MPI_COMM_WORLD));
#endif
    w->nb[0] = (rank + world - 1) % world;
    w->nb[1] = (rank + 1) % world;
    w->n_nb = world == 2 ? 1 : 2;
    w->heard_ns[0] = w->heard_ns[1] = 0;
    w->stop.store(0);
    w->wait_start_ns.store(0);
    w->depth = 0;
    if (pthread_create(&w->thread, NULL, watchdog_thread, w) != 0)
        fatal("could not start the communication watchdog thread");
    w->started = 1;
}

static void watchdog_stop(void) {
    Watchdog* w = &g_watchdog;
    if (!w->started) return;
    w->stop.store(1);
    pthread_join(w->thread, NULL);
    if (w->sock >= 0) close(w->sock);
    free(w->addrs);
    w->addrs = NULL;
    w->started = 0;
}

#endif // GRASS_COMM_WATCHDOG_H
