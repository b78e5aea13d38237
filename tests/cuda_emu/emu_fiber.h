/*
 * emu_fiber.h: the thread-block scheduler of the CUDA emulator (see tests/cuda_emu/README.md).
 *
 * A kernel launch runs its blocks one after another on the calling CPU thread. Inside a block,
 * every CUDA thread is a fiber with its own stack; a fiber runs until it reaches a barrier
 * (__syncthreads, a warp shuffle, __syncwarp, a WMMA operation) or returns, and the scheduler then
 * resumes the next fiber: the lanes of warp 0 first, as far as they can get before a
 * __syncthreads, then warp 1, and so on. So a thread sees another thread's shared-memory writes
 * only across a barrier, as on the GPU, and a missing barrier shows up as a wrong result instead
 * of hiding behind lock-step execution. Barriers that can never complete (a __syncthreads that
 * some threads skip, a shuffle whose mask names an exited or nonexistent lane) stop the program
 * with a message naming the kernel.
 *
 * The context switch is a few lines of x86-64 assembly (callee-saved registers, the SSE and x87
 * control words); other architectures use ucontext, which is slower (a system call per switch).
 */
#ifndef GRASS_EMU_FIBER_H
#define GRASS_EMU_FIBER_H

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <vector>
#include <functional>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>  // so that valgrind knows the fiber stacks (a no-op outside valgrind)
#define EMU_VALGRIND_STACK(lo, hi) VALGRIND_STACK_REGISTER(lo, hi)
#endif
#endif
#ifndef EMU_VALGRIND_STACK
#define EMU_VALGRIND_STACK(lo, hi) 0
#endif

namespace emu {

[[noreturn]] inline void die(const char* fmt, const char* a = "", const char* b = "") {
    fprintf(stderr, "cuda_emu: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void** save_sp, void* load_sp);
__asm__(
    ".text\n"
    ".globl emu_ctx_switch\n"
    ".type emu_ctx_switch,@function\n"
    "emu_ctx_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $16, %rsp\n  stmxcsr 8(%rsp)\n  fnstcw (%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr 8(%rsp)\n  fldcw (%rsp)\n  addq $16, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_ctx_switch, .-emu_ctx_switch\n");
#endif

enum FiberState { F_RUNNABLE, F_WAIT_BLOCK, F_WAIT_WARP, F_DONE };

struct Fiber {
#if defined(__x86_64__)
    void* sp;
#else
    ucontext_t uc;
#endif
    char* stack;  // usable stack (a guard page sits below it)
    int state;
    unsigned wait_gen;
    unsigned tx, ty, tz;
    int linear, warp, lane;
};

static const size_t EMU_STACK_BYTES = (size_t)256 << 10;
static const int EMU_MAX_THREADS = 1024;

struct Block {
    int nthreads, nwarps;
    std::vector<Fiber> fibers;
    int live, arrived;
    unsigned gen;                          // block barrier
    std::vector<int> wlive, warrived;      // per warp: lanes not exited, lanes at the warp barrier
    std::vector<unsigned> wgen, wmask;     // per warp: barrier generation, mask of the pending barrier
    std::vector<unsigned> wexist, walive;  // per warp: lanes that exist, lanes that have not exited
    std::vector<uint64_t> wslot;           // one 8-byte shuffle slot per thread
    const char* kernel;
};

struct Scheduler {
    Block blk;
    Fiber* cur;
#if defined(__x86_64__)
    void* sched_sp;
#else
    ucontext_t sched_uc;
#endif
    std::vector<char*> stacks;  // pool, one per thread index, mapped once
    std::function<void()> body;
    int in_kernel;
};
inline Scheduler g_sched;

inline char* stack_for(int i) {
    Scheduler& s = g_sched;
    while ((int)s.stacks.size() <= i) {
        size_t page = 4096;
        char* m = (char*)mmap(NULL, EMU_STACK_BYTES + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) die("mmap of a %s fiber stack failed", "256 KiB");
        if (mprotect(m, page, PROT_NONE) != 0) die("mprotect of a fiber stack guard page failed");
        s.stacks.push_back(m + page);
        (void)EMU_VALGRIND_STACK(m + page, m + page + EMU_STACK_BYTES);
    }
    return s.stacks[i];
}

inline void switch_to_scheduler() {
    Scheduler& s = g_sched;
#if defined(__x86_64__)
    emu_ctx_switch(&s.cur->sp, s.sched_sp);
#else
    swapcontext(&s.cur->uc, &s.sched_uc);
#endif
}

// the calling thread leaves the block: it no longer counts for barriers
inline void thread_exit_bookkeeping(Fiber& f) {
    Block& b = g_sched.blk;
    f.state = F_DONE;
    b.live--;
    if (b.arrived > 0 && b.arrived == b.live) { b.arrived = 0; b.gen++; }
    b.wlive[f.warp]--;
    b.walive[f.warp] &= ~(1u << f.lane);
}

inline void fiber_main() {
    g_sched.body();
    thread_exit_bookkeeping(*g_sched.cur);
    switch_to_scheduler();
    die("a finished fiber was resumed");
}
#if !defined(__x86_64__)
inline void fiber_main_uc() { fiber_main(); }
#endif

inline void fiber_start(Fiber& f, char* stack) {
    f.stack = stack;
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)stack + EMU_STACK_BYTES) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)(top - 80);
    uint32_t mx = 0;
    uint16_t cw = 0;
    __asm__ volatile("stmxcsr %0" : "=m"(mx));
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    memset(sp, 0, 80);
    memcpy((char*)sp, &cw, 2);        // fldcw (%rsp)
    memcpy((char*)sp + 8, &mx, 4);    // ldmxcsr 8(%rsp)
    sp[8] = (uint64_t)(uintptr_t)&fiber_main;  // after 16 bytes of control words and 6 registers
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = stack;
    f.uc.uc_stack.ss_size = EMU_STACK_BYTES;
    f.uc.uc_link = NULL;
    makecontext(&f.uc, (void (*)())fiber_main_uc, 0);
#endif
}

inline void resume(Fiber& f) {
    Scheduler& s = g_sched;
    s.cur = &f;
#if defined(__x86_64__)
    emu_ctx_switch(&s.sched_sp, f.sp);
#else
    swapcontext(&s.sched_uc, &f.uc);
#endif
}

inline Fiber& current(const char* what) {
    if (!g_sched.in_kernel || g_sched.cur == NULL) die("%s called outside a kernel", what);
    return *g_sched.cur;
}

// __syncthreads: wait until every thread of the block that has not exited is here
inline void block_barrier() {
    Fiber& f = current("__syncthreads");
    Block& b = g_sched.blk;
    if (++b.arrived == b.live) { b.arrived = 0; b.gen++; return; }
    f.state = F_WAIT_BLOCK;
    f.wait_gen = b.gen;
    switch_to_scheduler();
}

// a warp-synchronous point for the lanes in mask: every named lane must exist and not have exited
inline void warp_barrier(unsigned mask, const char* what) {
    Fiber& f = current(what);
    Block& b = g_sched.blk;
    int w = f.warp;
    if (!(mask >> f.lane & 1u)) die("%s: the calling lane is not in the mask (kernel %s)", what, b.kernel);
    unsigned exist = b.wexist[w], alive = b.walive[w];
    if (mask & ~exist) die("%s: the mask names lanes beyond the block's last thread (kernel %s)", what, b.kernel);
    if (mask & ~alive) die("%s: the mask names lanes that have already returned (kernel %s)", what, b.kernel);
    if (b.warrived[w] == 0) b.wmask[w] = mask;
    else if (b.wmask[w] != mask) die("%s: lanes of one warp wait with different masks (kernel %s)", what, b.kernel);
    int expected = __builtin_popcount(mask);
    if (++b.warrived[w] == expected) { b.warrived[w] = 0; b.wgen[w]++; return; }
    f.state = F_WAIT_WARP;
    f.wait_gen = b.wgen[w];
    switch_to_scheduler();
}

// Runs body once per thread of one block; block index and dims are set by the caller.
inline void run_block(int nthreads, unsigned bx, unsigned by, const char* kernel) {
    Scheduler& s = g_sched;
    Block& b = s.blk;
    b.kernel = kernel;
    b.nthreads = nthreads;
    b.nwarps = (nthreads + 31) / 32;
    b.fibers.resize(nthreads);
    b.live = nthreads; b.arrived = 0; b.gen = 0;
    b.wlive.assign(b.nwarps, 0); b.warrived.assign(b.nwarps, 0);
    b.wgen.assign(b.nwarps, 0); b.wmask.assign(b.nwarps, 0);
    b.wslot.assign(nthreads, 0);
    b.wexist.assign(b.nwarps, 0);
    for (int w = 0; w < b.nwarps; w++) {
        int lanes = nthreads - w * 32 < 32 ? nthreads - w * 32 : 32;
        b.wexist[w] = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
    }
    b.walive = b.wexist;
    for (int i = 0; i < nthreads; i++) {
        Fiber& f = b.fibers[i];
        f.state = F_RUNNABLE;
        f.linear = i; f.warp = i / 32; f.lane = i % 32;
        f.tx = i % bx; f.ty = (i / bx) % by; f.tz = i / (bx * by);
        b.wlive[f.warp]++;
        fiber_start(f, stack_for(i));
    }
    // Order: warp 0 runs as far as it can (through its warp barriers) before warp 1 starts, and
    // so on; within a warp, each lane runs to its next barrier before the next lane. A read of
    // data that another warp writes before a missing __syncthreads (or another lane before a
    // missing __syncwarp) therefore sees the old value, every time.
    int remaining = nthreads;
    while (remaining > 0) {
        int progressed = 0;
        for (int w = 0; w < b.nwarps; w++) {
            int lo = w * 32, hi = lo + 32 < nthreads ? lo + 32 : nthreads;
            for (int warp_progressed = 1; warp_progressed;) {
                warp_progressed = 0;
                for (int i = lo; i < hi; i++) {
                    Fiber& f = b.fibers[i];
                    if (f.state == F_DONE) continue;
                    if (f.state == F_WAIT_BLOCK && f.wait_gen == b.gen) continue;
                    if (f.state == F_WAIT_WARP && f.wait_gen == b.wgen[f.warp]) continue;
                    f.state = F_RUNNABLE;
                    resume(f);
                    progressed = warp_progressed = 1;
                    if (f.state == F_DONE) remaining--;
                }
            }
        }
        if (!progressed) {
            int at_block = 0, at_warp = 0;
            for (int i = 0; i < nthreads; i++) {
                at_block += b.fibers[i].state == F_WAIT_BLOCK;
                at_warp += b.fibers[i].state == F_WAIT_WARP;
                if (b.fibers[i].state == F_WAIT_WARP && (b.wmask[b.fibers[i].warp] & ~b.walive[b.fibers[i].warp]))
                    die("a warp barrier or shuffle whose mask names lanes that have already returned (kernel %s)", kernel);
            }
            char msg[128];
            snprintf(msg, sizeof(msg), "%d threads at __syncthreads, %d at a warp barrier", at_block, at_warp);
            die("deadlock in kernel %s: %s (a barrier that not every live thread reaches)", kernel, msg);
        }
    }
    s.cur = NULL;
}

}  // namespace emu

#endif  // GRASS_EMU_FIBER_H
