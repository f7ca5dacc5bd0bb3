// fptrace known-answer workload: two processes pinned to one CPU ping-pong N round trips
// over pipes, each with chosen xstate components live at every context switch.
//
// Why this shape (../shared/docs/platform.md, kernel-lab.md):
// - each round trip blocks each task exactly once in read(): N switches out (saves) and
//   N returns to user after the other task ran on the CPU (restores), per task;
// - pipes, not sched_yield: yield does not switch deterministically on CFS kernels;
// - the syscalls are issued inline (`syscall` instruction) and this file is compiled
//   without AVX code generation, so GCC inserts no vzeroupper that would put AVX and
//   ZMM_Hi256 back into init state before the kernel saves them;
// - XINUSE (xgetbv with ECX=1) checks that the chosen components really are live.
//
// --mode amx asks for AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM), so the first tile
// load of each process makes the kernel reallocate its fpstate (a new VSO, ~10 KB).
//
// Usage: pingpong [--mode none|sse|avx|avx512|amx] [--rounds N] [--cpu C]
// Prints one JSON line; exits 3 if the requested state was not live.
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum mode { MODE_NONE, MODE_SSE, MODE_AVX, MODE_AVX512, MODE_AMX };

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

struct tilecfg {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64)));

static struct tilecfg tile_config = {.palette = 1, .colsb = {64}, .rows = {16}};
static uint8_t tile_data[16 * 64] __attribute__((aligned(64)));

static const uint64_t expected_bits[] = {
    [MODE_NONE] = 0,
    [MODE_SSE] = 1u << 1,
    [MODE_AVX] = (1u << 1) | (1u << 2),
    [MODE_AVX512] = (1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7),
    [MODE_AMX] = (1u << 17) | (1u << 18),
};

static long sys3(long n, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static inline void dirty(enum mode m)
{
    switch (m) {
    case MODE_SSE:
        __asm__ volatile("pcmpeqd %%xmm3, %%xmm3" ::: "xmm3");
        break;
    case MODE_AVX:
        __asm__ volatile("vpcmpeqd %%ymm3, %%ymm3, %%ymm3" ::: "xmm3");
        break;
    case MODE_AVX512:
        __asm__ volatile("vpternlogd $0xff, %%zmm3, %%zmm3, %%zmm3\n\t"
                         "vpternlogd $0xff, %%zmm19, %%zmm19, %%zmm19\n\t"
                         "kxnorw %%k1, %%k1, %%k1" ::: "xmm3");
        break;
    case MODE_AMX:
        __asm__ volatile("tileloadd (%0,%1,1), %%tmm0" ::"r"(tile_data), "r"(64L) : "memory");
        // zmm19 and k1 are not declared clobbered: GCC refuses to name them without
        // -mavx512f, and code built without it never uses them.
        break;
    default:
        break;
    }
}

static int has_xgetbv1(void)
{
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(1));
    return (a >> 2) & 1;
}

static uint64_t xinuse(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
    return ((uint64_t)hi << 32) | lo;
}

static int cpu_has_amx_tile(void)
{
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    return (d >> 24) & 1;
}

static int cpu_supports(enum mode m)
{
    switch (m) {
    case MODE_AMX:
        return cpu_has_amx_tile();
    case MODE_AVX:
        return __builtin_cpu_supports("avx");
    case MODE_AVX512:
        return __builtin_cpu_supports("avx512f");
    default:
        return 1;
    }
}

// One side of the ping-pong: `first` writes before it reads.
static uint64_t play(enum mode m, long rounds, int rfd, int wfd, int first)
{
    char byte = 'x';
    uint64_t seen = 0;
    if (m == MODE_AMX) {  // per process: the first tile load reallocates the fpstate
        memset(tile_data, 1, sizeof(tile_data));
        __asm__ volatile("ldtilecfg (%0)" ::"r"(&tile_config) : "memory");
    }
    for (long i = 0; i < rounds; i++) {
        if (first) {
            dirty(m);
            if (sys3(SYS_write, wfd, (long)&byte, 1) != 1)
                _exit(4);
        }
        dirty(m);
        if (i == rounds - 1 && has_xgetbv1())
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
    enum mode m = MODE_NONE;
    const char *mode_name = "none";
    long rounds = 10000;
    int cpu = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            mode_name = argv[++i];
            if (!strcmp(mode_name, "none"))
                m = MODE_NONE;
            else if (!strcmp(mode_name, "sse"))
                m = MODE_SSE;
            else if (!strcmp(mode_name, "avx"))
                m = MODE_AVX;
            else if (!strcmp(mode_name, "avx512"))
                m = MODE_AVX512;
            else if (!strcmp(mode_name, "amx"))
                m = MODE_AMX;
            else {
                fprintf(stderr, "pingpong: unknown mode %s (none|sse|avx|avx512|amx)\n",
                        mode_name);
                return 2;
            }
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--cpu") && i + 1 < argc) {
            cpu = atoi(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: pingpong [--mode none|sse|avx|avx512|amx] [--rounds N] [--cpu C]\n");
            return 2;
        }
    }
    if (rounds <= 0) {
        fprintf(stderr, "pingpong: --rounds must be positive\n");
        return 2;
    }
    if (!cpu_supports(m)) {
        printf("{\"mode\": \"%s\", \"skipped\": \"CPU lacks %s\"}\n", mode_name, mode_name);
        return 5;
    }
    if (m == MODE_AMX && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
        printf("{\"mode\": \"amx\", \"skipped\": \"kernel refused AMX permission: %s\"}\n",
               strerror(errno));
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
    if (child == 0) {
        uint64_t seen = play(m, rounds, ping[0], pong[1], 0);
        if (write(report[1], &seen, sizeof(seen)) != sizeof(seen))
            _exit(4);
        _exit(0);
    }
    uint64_t seen_parent = play(m, rounds, pong[0], ping[1], 1);
    uint64_t seen_child = 0;
    if (read(report[0], &seen_child, sizeof(seen_child)) != sizeof(seen_child))
        return 4;
    int status;
    waitpid(child, &status, 0);
    uint64_t want = expected_bits[m];
    int live = (seen_parent & want) == want && (seen_child & want) == want;
    printf("{\"mode\": \"%s\", \"rounds\": %ld, \"cpu\": %d, \"parent_pid\": %d, "
           "\"child_pid\": %d, \"xinuse_parent\": %llu, \"xinuse_child\": %llu, "
           "\"expected_bits\": %llu, \"live\": %s}\n",
           mode_name, rounds, cpu, (int)getpid(), (int)child, (unsigned long long)seen_parent,
           (unsigned long long)seen_child, (unsigned long long)want, live ? "true" : "false");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 4;
    return live ? 0 : 3;
}
