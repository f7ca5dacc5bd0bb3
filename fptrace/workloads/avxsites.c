// fptrace known-answer workload for `record --stacks`: where vector state is live when a
// task leaves the CPU, and why it leaves.
//
//   --mode block        dirty_ymm() puts AVX in use (no vzeroupper), then wait_in_read()
//                       blocks in read(): every AVX-live voluntary save is in wait_in_read
//   --mode block-clean  the same, with vzeroupper in wait_in_read before the read(): no
//                       voluntary save has AVX live
//   --mode spin         avx_spin_loop() keeps YMM live for --ms; with --spinners 2 both
//                       processes spin on one CPU and preempt each other: involuntary saves
//                       in avx_spin_loop
//   --mode memset       glibc memset() of a 64 KiB buffer, then wait_in_read(): on a CPU with
//                       AVX-512, glibc's EVEX memset uses ymm16-31 (Hi16_ZMM live)
//
// The blocking modes ping-pong --rounds with a child that echoes each byte, pinned to
// another CPU where there is one: the parent then nearly always blocks in its read (on one
// CPU the woken child would often preempt it first, and the byte be there before it reads).  Every state change starts from the init state (XRSTOR), so what
// libc left live does not leak in.  Built with frame pointers (workloads/build.py): the
// kernel walks user stacks by them.  Syscalls are inline (fpstate.h), in the named function.
//
// Usage: avxsites --mode block|block-clean|spin|memset [--rounds N] [--ms MS]
//                 [--spinners N] [--cpu C]
// Prints one JSON line.
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "fpstate.h"

static char big[64 << 10];

__attribute__((noinline)) void dirty_ymm(void)
{
    to_init();
    __asm__ volatile("vpcmpeqd %%ymm3, %%ymm3, %%ymm3" ::: "xmm3");
}

__attribute__((noinline)) void glibc_memset(void)
{
    to_init();
    void *(*volatile fn)(void *, int, size_t) = memset;  // the real glibc call
    fn(big, 1 + (big[0] & 1), sizeof(big));
}

__attribute__((noinline)) long wait_in_read(int fd, int clean)
{
    char byte;
    if (clean)
        __asm__ volatile("vzeroupper" ::: "memory");
    return sys3(SYS_read, fd, (long)&byte, 1);
}

__attribute__((noinline)) void avx_spin_loop(long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    to_init();
    for (;;) {
        for (int i = 0; i < 100000; i++)
            __asm__ volatile("vpaddd %%ymm3, %%ymm3, %%ymm3" ::: "xmm3");
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
            return;
    }
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

int main(int argc, char **argv)
{
    const char *mode = "block";
    long rounds = 10000, ms = 1000;
    int cpu = 0, spinners = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mode"))
            mode = argv[i + 1];
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--ms"))
            ms = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--spinners"))
            spinners = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--cpu"))
            cpu = atoi(argv[i + 1]);
    }
    int block = !strcmp(mode, "block"), clean = !strcmp(mode, "block-clean");
    int spin = !strcmp(mode, "spin"), mset = !strcmp(mode, "memset");
    if (!(block || clean || spin || mset)) {
        fprintf(stderr, "avxsites: unknown mode %s (block|block-clean|spin|memset)\n", mode);
        return 2;
    }
    if (!__builtin_cpu_supports("avx")) {
        fprintf(stderr, "avxsites: this CPU has no AVX\n");
        return 5;
    }
    state_setup(STATE_AVX);
    pin(cpu);
    if (spin) {
        pid_t kids[64];
        int n = spinners < 1 ? 1 : spinners > 64 ? 64 : spinners;
        for (int k = 0; k < n; k++) {
            kids[k] = fork();
            if (kids[k] == 0) {
                avx_spin_loop(ms);
                _exit(0);
            }
        }
        printf("{\"mode\": \"spin\", \"parent_pid\": %d, \"spinners\": [", getpid());
        for (int k = 0; k < n; k++) {
            waitpid(kids[k], NULL, 0);
            printf("%s%d", k ? ", " : "", kids[k]);
        }
        printf("], \"ms\": %ld}\n", ms);
        return 0;
    }
    int to_child[2], to_parent[2];
    if (pipe(to_child) || pipe(to_parent))
        return 4;
    pid_t child = fork();
    if (child == 0) {
        char byte;
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        pin(ncpu > 1 ? (cpu + 1) % (int)ncpu : cpu);
        close(to_child[1]);
        close(to_parent[0]);
        for (long i = 0; i < rounds; i++) {
            if (sys3(SYS_read, to_child[0], (long)&byte, 1) != 1 ||
                sys3(SYS_write, to_parent[1], (long)&byte, 1) != 1)
                _exit(4);
        }
        _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    char byte = 'x';
    uint64_t seen = 0;
    for (long i = 0; i < rounds; i++) {
        if (mset)  // before the write: the parent then blocks right after it (as block does)
            glibc_memset();
        if (sys3(SYS_write, to_child[1], (long)&byte, 1) != 1)
            return 4;
        if (!mset)
            dirty_ymm();
        if (i == rounds - 1)
            seen = xinuse();
        if (wait_in_read(to_parent[0], clean) != 1)
            return 4;
    }
    int status = 0;
    waitpid(child, &status, 0);
    printf("{\"mode\": \"%s\", \"rounds\": %ld, \"parent_pid\": %d, \"child_pid\": %d, "
           "\"xinuse_before_read\": %llu}\n",
           mode, rounds, getpid(), child, (unsigned long long)seen);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 4;
}
