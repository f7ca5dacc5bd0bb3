// fptrace known-answer workload: two processes pinned to one CPU ping-pong N round trips
// over pipes, each with chosen xstate components live at every context switch.
//
// Why this shape (../shared/docs/platform.md, kernel-lab.md):
// - each round trip blocks each task exactly once in read(): N switches out (saves) and
//   N returns to user after the other task ran on the CPU (restores), per task;
// - pipes, not sched_yield: yield does not switch deterministically on CFS kernels;
// - inline syscalls and no AVX code generation keep the state live (fpstate.h);
// - XINUSE (xgetbv with ECX=1) checks that the chosen components really are live.
// --mode amx asks for AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM), so the first tile
// load of each process makes the kernel reallocate its fpstate (a new VSO, ~10 KB).
//
// Usage: pingpong [--mode none|init|sse|avx|avx512|amx] [--rounds N] [--cpu C]
// Prints one JSON line (with both sides' context switches, from getrusage); exits 3 if the
// requested state was not live, 5 if unavailable.
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "fpstate.h"

// One side of the ping-pong: `first` writes before it reads.
static uint64_t play(int m, long rounds, int rfd, int wfd, int first)
{
    char byte = 'x';
    uint64_t seen = 0;
    state_thread_setup(m);  // per process: the first tile load reallocates the fpstate
    for (long i = 0; i < rounds; i++) {
        if (first) {
            dirty(m);
            if (sys3(SYS_write, wfd, (long)&byte, 1) != 1)
                _exit(4);
        }
        dirty(m);
        if (i == rounds - 1)
            seen = xinuse();
        if (sys3(SYS_read, rfd, (long)&byte, 1) != 1)
            _exit(4);
        if (!first) {
            dirty(m);
            if (sys3(SYS_write, wfd, (long)&byte, 1) != 1)
                _exit(4);
        }
    }
    return seen;
}

int main(int argc, char **argv)
{
    int m = STATE_NONE;
    long rounds = 10000;
    int cpu = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            m = parse_state(argv[++i]);
            if (m < 0) {
                fprintf(stderr, "pingpong: unknown mode %s (none|init|sse|avx|avx512|amx)\n",
                        argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--cpu") && i + 1 < argc) {
            cpu = atoi(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: pingpong [--mode none|init|sse|avx|avx512|amx] [--rounds N] [--cpu C]\n");
            return 2;
        }
    }
    if (rounds <= 0) {
        fprintf(stderr, "pingpong: --rounds must be positive\n");
        return 2;
    }
    if (!cpu_has(m)) {
        printf("{\"mode\": \"%s\", \"skipped\": \"CPU lacks %s\"}\n", state_names[m], state_names[m]);
        return 5;
    }
    int err = state_setup(m);
    if (err) {
        printf("{\"mode\": \"amx\", \"skipped\": \"kernel refused AMX permission: %s\"}\n",
               strerror(err));
        return 5;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        perror("pingpong: sched_setaffinity");
        return 2;
    }
    int ping[2], pong[2], report[2];
    if (pipe(ping) || pipe(pong) || pipe(report)) {
        perror("pingpong: pipe");
        return 2;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        perror("pingpong: fork");
        return 2;
    }
    // Each side closes the ends it does not use: when the other side dies, a read then sees
    // end of file (and the process exits) instead of waiting forever.
    if (child == 0) {
        close(ping[1]);
        close(pong[0]);
        close(report[0]);
        uint64_t seen = play(m, rounds, ping[0], pong[1], 0);
        if (write(report[1], &seen, sizeof(seen)) != sizeof(seen))
            _exit(4);
        _exit(0);
    }
    close(ping[0]);
    close(pong[1]);
    close(report[1]);
    uint64_t seen_parent = play(m, rounds, pong[0], ping[1], 1);
    uint64_t seen_child = 0;
    if (read(report[0], &seen_child, sizeof(seen_child)) != sizeof(seen_child))
        return 4;
    int status;
    waitpid(child, &status, 0);
    // The kernel's own count of context switches, as late as possible: the parent's up to
    // here, and the child's whole life (reaped: its exit included).  A test bounds the
    // saves it expects with these, rather than with a guessed tolerance.
    struct rusage self, kid;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kid);
    // Without XGETBV(1) (no XSAVE, or `noxsave`) nothing can confirm it: "live" is null.
    int checked = has_xgetbv1();
    int live = !checked || (state_live(m, seen_parent) && state_live(m, seen_child));
    printf("{\"mode\": \"%s\", \"rounds\": %ld, \"cpu\": %d, \"parent_pid\": %d, "
           "\"child_pid\": %d, \"xinuse_parent\": %llu, \"xinuse_child\": %llu, "
           "\"expected_bits\": %llu, \"live\": %s, \"nvcsw_parent\": %ld, "
           "\"nivcsw_parent\": %ld, \"nvcsw_child\": %ld, \"nivcsw_child\": %ld}\n",
           state_names[m], rounds, cpu, (int)getpid(), (int)child,
           (unsigned long long)seen_parent, (unsigned long long)seen_child,
           (unsigned long long)state_bits[m], !checked ? "null" : live ? "true" : "false",
           self.ru_nvcsw, self.ru_nivcsw, kid.ru_nvcsw, kid.ru_nivcsw);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 4;
    return live ? 0 : 3;
}
