// Known-answer workload for process churn: N short-lived child processes, at most P alive
// at once, each with live SSE state and a few context switches before it exits.
//
//   forker --children N [--parallel P]
//
// Prints one JSON line at the end: the parent's pid, how many children were forked and
// reaped, and how many distinct pids they had (fewer than N once the kernel reuses pids).
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void child(void)
{
    volatile double acc = 1.0;  // SSE state the kernel has to save at the switches
    for (int i = 0; i < 3; i++) {
        acc = acc * 1.5 + 0.25;
        sched_yield();
    }
    _exit(acc > 0 ? 0 : 1);
}

int main(int argc, char **argv)
{
    long n = 0, parallel = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--children"))
            n = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--parallel"))
            parallel = atol(argv[i + 1]);
    }
    if (n <= 0 || parallel <= 0) {
        fprintf(stderr, "usage: forker --children N [--parallel P]\n");
        return 2;
    }
    int max_pid = 1 << 22;
    unsigned char *seen = calloc(max_pid / 8 + 1, 1);
    long forked = 0, reaped = 0, distinct = 0, alive = 0;
    while (reaped < n) {
        while (alive < parallel && forked < n) {
            pid_t pid = fork();
            if (pid < 0) {
                perror("fork");
                return 1;
            }
            if (pid == 0)
                child();
            forked++;
            alive++;
            if (pid < max_pid && !(seen[pid / 8] & (1 << (pid % 8)))) {
                seen[pid / 8] |= 1 << (pid % 8);
                distinct++;
            }
        }
        int status;
        if (wait(&status) > 0) {
            reaped++;
            alive--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return 1;
        }
    }
    printf("{\"pid\": %d, \"forked\": %ld, \"reaped\": %ld, \"distinct_pids\": %ld}\n",
           (int)getpid(), forked, reaped, distinct);
    return 0;
}
