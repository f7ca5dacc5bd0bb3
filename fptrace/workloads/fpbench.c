// fptrace bench: FPU-state-aware microbenchmarks.  One measurement per process run; the
// Python side (fptrace/bench) repeats, interleaves and does the statistics.
//
// Usage: fpbench BENCH --state init|sse|avx|avx512|amx [--iters N] [--cpu-a A] [--cpu-b B]
//                [--threads]
//   pipe, futex, yield   ping-pong between two tasks; ns per round trip (two switches)
//   signal               a caught signal sent to itself; ns per delivery + sigreturn
//   fork                 fork + child exit + wait; ns per operation
//   exec                 fork + exec of this program (noop) + wait; ns per operation
//   xsave                user-space XSAVEC / XRSTOR / XSAVE / XSAVEOPT; ns per instruction
//   amx-first            first tile load in a fresh process (XFD #NM + fpstate realloc)
// Prints one JSON line; exit 3 if the state was not live, 5 if the CPU/kernel lacks it.
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "fpstate.h"

static int g_state;
static long g_iters = 10000;
static int g_cpu_a, g_cpu_b;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static void report(const char *bench, const char *mode, double ns_per_op, long ops, long pid_a,
                   long pid_b, uint64_t seen_a, uint64_t seen_b, const char *extra)
{
    int live = state_live(g_state, seen_a) && (pid_b == 0 || state_live(g_state, seen_b));
    printf("{\"bench\": \"%s\", \"state\": \"%s\", \"mode\": \"%s\", \"ns_per_op\": %.3f, "
           "\"ops\": %ld, \"pid_a\": %ld, \"pid_b\": %ld, \"xinuse_a\": %llu, \"xinuse_b\": %llu, "
           "\"live\": %s%s}\n",
           bench, state_names[g_state], mode, ns_per_op, ops, pid_a, pid_b,
           (unsigned long long)seen_a, (unsigned long long)seen_b, live ? "true" : "false",
           extra ? extra : "");
    fflush(stdout);
    if (!live)
        exit(3);
}


/* Dirty the state before an operation; at the last one, note what was live (XINUSE). */
static inline void dirty_step(long i, uint64_t *seen)
{
    dirty(g_state);
    if (i == g_iters - 1)
        *seen = xinuse();
}

// ---- ping-pong: pipes, futex, yield ----

struct side {
    int kind;  // 0 pipe, 1 futex, 2 yield
    int rfd, wfd;
    int *turn;  // futex word: whose turn (0 or 1)
    int me;
    int cpu;
    uint64_t seen;
    long tid;
};

static void futex_wait(int *addr, int val)
{
    sys6(SYS_futex, (long)addr, FUTEX_WAIT, val, 0, 0, 0);
}

static void futex_wake(int *addr)
{
    sys6(SYS_futex, (long)addr, FUTEX_WAKE, 1, 0, 0, 0);
}

static void *play(void *arg)
{
    struct side *s = arg;
    char byte = 'x';
    pin(s->cpu);
    state_thread_setup(g_state);
    s->tid = syscall(SYS_gettid);
    for (long i = 0; i < g_iters; i++) {
        if (s->kind == 0) {
            if (s->me == 0) {
                dirty(g_state);
                sys3(SYS_write, s->wfd, (long)&byte, 1);
            }
            dirty_step(i, &s->seen);
            sys3(SYS_read, s->rfd, (long)&byte, 1);
            if (s->me == 1) {
                dirty(g_state);
                sys3(SYS_write, s->wfd, (long)&byte, 1);
            }
        } else if (s->kind == 1) {
            dirty_step(i, &s->seen);
            while (__atomic_load_n(s->turn, __ATOMIC_ACQUIRE) != s->me) {
                dirty(g_state);
                futex_wait(s->turn, !s->me);
            }
            __atomic_store_n(s->turn, !s->me, __ATOMIC_RELEASE);
            dirty(g_state);
            futex_wake(s->turn);
        } else {
            dirty_step(i, &s->seen);
            sys3(SYS_sched_yield, 0, 0, 0);
        }
    }
    return NULL;
}

static int bench_pingpong(int kind, int threads)
{
    static const char *names[] = {"pipe", "futex", "yield"};
    int ping[2], pong[2];
    if (pipe(ping) || pipe(pong))
        return 2;
    int *turn = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (turn == MAP_FAILED)
        return 2;
    *turn = 0;
    struct side a = {kind, pong[0], ping[1], turn, 0, g_cpu_a, 0, 0};
    struct side b = {kind, ping[0], pong[1], turn, 1, g_cpu_b, 0, 0};
    uint64_t t0 = now_ns();
    long pid_b = 0;
    uint64_t seen_b = 0;
    if (threads) {
        pthread_t th;
        pthread_create(&th, NULL, play, &b);
        play(&a);
        pthread_join(th, NULL);
        pid_b = b.tid;
        seen_b = b.seen;
    } else {
        int report_pipe[2];
        if (pipe(report_pipe))
            return 2;
        pid_t child = fork();
        if (child == 0) {
            play(&b);
            if (write(report_pipe[1], &b.seen, sizeof(b.seen)) < 0)
                _exit(4);
            _exit(0);
        }
        play(&a);
        if (read(report_pipe[0], &seen_b, sizeof(seen_b)) != sizeof(seen_b))
            return 4;
        waitpid(child, NULL, 0);
        pid_b = child;
    }
    double ns = (double)(now_ns() - t0) / g_iters;
    report(names[kind], threads ? "thread" : "process", ns, g_iters, a.tid, pid_b, a.seen, seen_b,
           NULL);
    return 0;
}

// ---- signals ----

static volatile long g_caught;
static void on_signal(int sig)
{
    (void)sig;
    g_caught++;
}

static int bench_signal(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    pin(g_cpu_a);
    state_thread_setup(g_state);
    long pid = getpid(), tid = syscall(SYS_gettid);
    uint64_t seen = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < g_iters; i++) {
        dirty_step(i, &seen);
        sys3(SYS_tgkill, pid, tid, SIGUSR1);
    }
    double ns = (double)(now_ns() - t0) / g_iters;
    if (g_caught != g_iters)
        return 4;
    report("signal", "process", ns, g_iters, tid, 0, seen, 0, NULL);
    return 0;
}

// ---- fork, exec ----

static int bench_fork(int do_exec, const char *self)
{
    pin(g_cpu_a);
    state_thread_setup(g_state);
    uint64_t seen = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < g_iters; i++) {
        dirty_step(i, &seen);
        long child = sys3(SYS_fork, 0, 0, 0);
        if (child == 0) {
            if (do_exec) {
                char *argv[] = {(char *)"fpbench", (char *)"noop", NULL};
                execv(self, argv);
            }
            sys3(SYS_exit, 0, 0, 0);
        }
        if (child < 0)
            return 2;
        sys6(SYS_wait4, child, 0, 0, 0, 0, 0);
    }
    double ns = (double)(now_ns() - t0) / g_iters;
    report(do_exec ? "exec" : "fork", "process", ns, g_iters, getpid(), 0, seen, 0, NULL);
    return 0;
}

// ---- user-space XSAVE family (calibration) ----

static uint8_t xbuf[16384] __attribute__((aligned(64)));

#define XLOOP(insn)                                                                          \
    do {                                                                                    \
        uint64_t t = now_ns();                                                              \
        for (long i = 0; i < g_iters; i++)                                                  \
            __asm__ volatile(insn " %0" : "+m"(xbuf) : "a"(lo), "d"(hi) : "memory");        \
        ns = (double)(now_ns() - t) / g_iters;                                              \
    } while (0)

static int bench_xsave(void)
{
    pin(g_cpu_a);
    state_thread_setup(g_state);
    dirty(g_state);
    uint64_t seen = xinuse();
    // The kernel saves with RFBM = all enabled features; AMX only where this process uses it.
    uint64_t mask = xgetbv(0) & (g_state == STATE_AMX ? ~0ull : ~AMX_MASK);
    uint32_t lo = (uint32_t)mask, hi = (uint32_t)(mask >> 32);
    double ns, xsavec_ns, xrstor_ns, xsave_ns, xsaveopt_ns;
    unsigned a, b, c, d;
    cpuid2(0xd, 1, &a, &b, &c, &d);
    int has_xsavec = (a >> 1) & 1, has_xsaveopt = a & 1;
    XLOOP("xsave");
    xsave_ns = ns;
    xsaveopt_ns = -1;
    if (has_xsaveopt) {
        XLOOP("xsaveopt");
        xsaveopt_ns = ns;
    }
    xsavec_ns = -1;
    if (has_xsavec) {
        XLOOP("xsavec");  // compacted + init optimisation: closest to the kernel's XSAVES
        xsavec_ns = ns;
    }
    XLOOP("xrstor");  // from the last buffer written (compacted if XSAVEC ran)
    xrstor_ns = ns;
    uint64_t xstate_bv;
    memcpy(&xstate_bv, xbuf + 512, sizeof(xstate_bv));
    char extra[256];
    snprintf(extra, sizeof(extra),
             ", \"xsavec_ns\": %.3f, \"xrstor_ns\": %.3f, \"xsave_ns\": %.3f, "
             "\"xsaveopt_ns\": %.3f, \"xstate_bv\": %llu, \"rfbm\": %llu",
             xsavec_ns, xrstor_ns, xsave_ns, xsaveopt_ns, (unsigned long long)xstate_bv,
             (unsigned long long)mask);
    report("xsave", "process", has_xsavec ? xsavec_ns : xsave_ns, g_iters, getpid(), 0, seen, 0,
           extra);
    return 0;
}

// ---- AMX first use ----

static int bench_amx_first(void)
{
    pin(g_cpu_a);
    state_thread_setup(STATE_AMX);
    uint64_t t0 = now_ns();
    dirty(STATE_AMX);  // XFD #NM, permission check, fpstate reallocation, then the load
    uint64_t t1 = now_ns();
    dirty(STATE_AMX);
    uint64_t t2 = now_ns();
    char extra[128];
    snprintf(extra, sizeof(extra), ", \"later_ns\": %llu", (unsigned long long)(t2 - t1));
    report("amx-first", "process", (double)(t1 - t0), 1, getpid(), 0, xinuse(), 0, extra);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "noop"))
        return 0;
    if (argc < 2) {
        fprintf(stderr, "usage: fpbench BENCH --state S [--iters N] [--cpu-a A] [--cpu-b B] "
                        "[--threads]\n");
        return 2;
    }
    const char *bench = argv[1];
    int threads = 0;
    g_state = STATE_SSE;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--state") && i + 1 < argc) {
            g_state = parse_state(argv[++i]);
            if (g_state < 0) {
                fprintf(stderr, "fpbench: unknown state %s\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            g_iters = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--cpu-a") && i + 1 < argc) {
            g_cpu_a = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--cpu-b") && i + 1 < argc) {
            g_cpu_b = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--threads")) {
            threads = 1;
        } else {
            fprintf(stderr, "fpbench: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (g_iters <= 0)
        return 2;
    if (!strcmp(bench, "amx-first"))
        g_state = STATE_AMX;
    int s = g_state;
    if (!cpu_has(s)) {
        printf("{\"bench\": \"%s\", \"state\": \"%s\", \"skipped\": \"CPU lacks %s\"}\n", bench,
               state_names[s], state_names[s]);
        return 5;
    }
    int err = state_setup(s);
    if (err) {
        printf("{\"bench\": \"%s\", \"state\": \"%s\", \"skipped\": \"kernel refused AMX "
               "permission: %s\"}\n",
               bench, state_names[s], strerror(err));
        return 5;
    }
    if (!strcmp(bench, "pipe"))
        return bench_pingpong(0, threads);
    if (!strcmp(bench, "futex"))
        return bench_pingpong(1, threads);
    if (!strcmp(bench, "yield"))
        return bench_pingpong(2, threads);
    if (!strcmp(bench, "signal"))
        return bench_signal();
    if (!strcmp(bench, "fork"))
        return bench_fork(0, NULL);
    if (!strcmp(bench, "exec"))
        return bench_fork(1, "/proc/self/exe");
    if (!strcmp(bench, "xsave"))
        return bench_xsave();
    if (!strcmp(bench, "amx-first"))
        return bench_amx_first();
    fprintf(stderr, "fpbench: unknown benchmark %s\n", bench);
    return 2;
}
