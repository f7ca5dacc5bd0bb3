// Known-answer workload for restore classification: signal handlers that return, that
// leave with siglongjmp, and nested ones, in threads that switch often.
//
//   signals --mode return|longjmp|nested|nested-longjmp [--rounds N] [--threads T]
//
// Each thread sends itself SIGUSR1 N times (pthread_kill: delivered to that thread, before
// the call returns) and keeps SSE state live; pairs of threads pass a byte through pipes
// every round, so they switch on the 2 CPUs.  Modes:
//   return          the handler returns: one delivery and one sigreturn per signal;
//   longjmp         the handler siglongjmps out: deliveries, no sigreturn;
//   nested          the SIGUSR1 handler raises SIGUSR2; both handlers return;
//   nested-longjmp  the SIGUSR2 handler siglongjmps out of both frames.
// At the end each thread prints one line: tid, caught (handlers entered = signal frames
// built) and returned (handlers that returned = sigreturns).  What the kernel did with the
// FPU state is counted by the test's own oracle, not here.
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

enum mode { RETURN, LONGJMP, NESTED, NESTED_LONGJMP };
static enum mode mode;
static long rounds = 2000;

static __thread sigjmp_buf jump;
static __thread volatile long caught, returned;

static void on_usr2(int sig)
{
    (void)sig;
    caught++;
    if (mode == NESTED_LONGJMP)
        siglongjmp(jump, 1);
    returned++;
}

static void on_usr1(int sig)
{
    (void)sig;
    caught++;
    if (mode == NESTED || mode == NESTED_LONGJMP)
        pthread_kill(pthread_self(), SIGUSR2);  // delivered here, inside this handler
    if (mode == LONGJMP)
        siglongjmp(jump, 1);
    returned++;
}

struct peer {
    int in, out;  // read from in, write to out
    int first;    // writes before it reads
};

static void *run(void *arg)
{
    struct peer *p = arg;
    volatile double acc = 1.0;  // SSE state the kernel has to save
    char byte = 0;
    for (volatile long i = 0; i < rounds; i++) {  // volatile: survives siglongjmp
        if (sigsetjmp(jump, 1) == 0)
            pthread_kill(pthread_self(), SIGUSR1);
        acc = acc * 1.000001 + 0.5;
        if (p->first && write(p->out, &byte, 1) != 1)
            exit(2);
        if (read(p->in, &byte, 1) != 1)
            exit(2);
        if (!p->first && write(p->out, &byte, 1) != 1)
            exit(2);
    }
    printf("tid=%ld caught=%ld returned=%ld\n", (long)syscall(SYS_gettid), (long)caught,
           (long)returned);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: signals --mode return|longjmp|nested|nested-longjmp "
                    "[--rounds N] [--threads T (even)]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int threads = 4;
    const char *m = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mode"))
            m = argv[i + 1];
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else
            usage();
    }
    if (!m || rounds <= 0 || threads <= 0 || threads % 2 || threads > 64)
        usage();
    if (!strcmp(m, "return"))
        mode = RETURN;
    else if (!strcmp(m, "longjmp"))
        mode = LONGJMP;
    else if (!strcmp(m, "nested"))
        mode = NESTED;
    else if (!strcmp(m, "nested-longjmp"))
        mode = NESTED_LONGJMP;
    else
        usage();
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    pthread_t tids[64];
    struct peer peers[64];
    for (int t = 0; t < threads; t += 2) {
        int ab[2], ba[2];
        if (pipe(ab) || pipe(ba))
            return 2;
        peers[t] = (struct peer){.in = ba[0], .out = ab[1], .first = 1};
        peers[t + 1] = (struct peer){.in = ab[0], .out = ba[1], .first = 0};
    }
    for (int t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, run, &peers[t]))
            return 2;
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    return 0;
}
