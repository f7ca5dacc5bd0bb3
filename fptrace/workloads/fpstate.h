// fptrace workloads: put exactly the chosen xstate components in use, and check it.
//
// Compiled without AVX code generation, so GCC never emits vzeroupper (which would put AVX
// and ZMM_Hi256 back into init state before a syscall); syscalls are issued inline for the
// same reason (see ../shared/docs/platform.md).  XINUSE (xgetbv with ECX=1) is the check.
#ifndef FPTRACE_FPSTATE_H
#define FPTRACE_FPSTATE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

enum state { STATE_INIT, STATE_SSE, STATE_AVX, STATE_AVX512, STATE_AMX, STATE_NONE, STATE_COUNT };

static const char *const state_names[STATE_COUNT] = {"init", "sse", "avx", "avx512", "amx", "none"};

// Components each level puts in use (checked against XINUSE; "none" leaves whatever libc left).
static const uint64_t state_bits[STATE_COUNT] = {
    [STATE_INIT] = 0,
    [STATE_SSE] = 1u << 1,
    [STATE_AVX] = (1u << 1) | (1u << 2),
    [STATE_AVX512] = (1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7),
    [STATE_AMX] = (1u << 17) | (1u << 18),
    [STATE_NONE] = 0,
};

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define AMX_MASK ((1ull << 17) | (1ull << 18))
// PKRU (component 9) is not vector state, and no level puts it in use: the kernel writes
// it (WRPKRU at context switches), and a CPU may report it in use in its init value (the
// SDM allows XINUSE[i] = 1 for a component in its initial configuration).  Seen on an
// Intel Xeon with PKU, 6.18: XINUSE 0x200 right after the init XRSTOR set PKRU to 0.
#define PKRU_BIT (1ull << 9)

static int parse_state(const char *name)
{
    for (int i = 0; i < STATE_COUNT; i++)
        if (!strcmp(name, state_names[i]))
            return i;
    return -1;
}

static inline long sys3(long n, long a, long b, long c)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static inline long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static void cpuid2(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c, unsigned *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline uint64_t xgetbv(unsigned ecx)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(ecx));
    return ((uint64_t)hi << 32) | lo;
}

// XGETBV faults (#UD) unless the kernel set CR4.OSXSAVE: not under `noxsave`.
static int has_osxsave(void)
{
    unsigned a, b, c, d;
    cpuid2(1, 0, &a, &b, &c, &d);
    return (c >> 27) & 1;
}

static int has_xgetbv1(void)
{
    unsigned a, b, c, d;
    if (!has_osxsave())
        return 0;
    cpuid2(0xd, 1, &a, &b, &c, &d);
    return (a >> 2) & 1;
}

static uint64_t xinuse(void) { return has_xgetbv1() ? xgetbv(1) : 0; }

// What the init level restores from: an XSAVE area whose header says "all in init state".
static uint8_t init_area[4096] __attribute__((aligned(64)));
static struct tilecfg {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64))) tile_config = {.palette = 1, .colsb = {64}, .rows = {16}};
static uint8_t tile_data[16 * 64] __attribute__((aligned(64)));

// XRSTOR with XSTATE_BV = 0 puts every requested component into its init state.  AMX is
// left out of the mask: with XFD armed, touching tile data would fault (#NM).
static inline void to_init(void)
{
    uint64_t mask = xgetbv(0) & ~AMX_MASK;
    __asm__ volatile("xrstor %0" ::"m"(init_area), "a"((uint32_t)mask), "d"((uint32_t)(mask >> 32))
                     : "memory");
}

static inline void dirty(int s)
{
    switch (s) {
    case STATE_INIT:
        to_init();
        break;
    case STATE_SSE:
        __asm__ volatile("pcmpeqd %%xmm3, %%xmm3" ::: "xmm3");
        break;
    case STATE_AVX:
        __asm__ volatile("vpcmpeqd %%ymm3, %%ymm3, %%ymm3" ::: "xmm3");
        break;
    case STATE_AVX512:
        // zmm19 and k1 are not declared clobbered: GCC refuses to name them without
        // -mavx512f, and code built without it never uses them.
        __asm__ volatile("vpternlogd $0xff, %%zmm3, %%zmm3, %%zmm3\n\t"
                         "vpternlogd $0xff, %%zmm19, %%zmm19, %%zmm19\n\t"
                         "kxnorw %%k1, %%k1, %%k1" ::: "xmm3");
        break;
    case STATE_AMX:
        __asm__ volatile("tileloadd (%0,%1,1), %%tmm0" ::"r"(tile_data), "r"(64L) : "memory");
        break;
    default:
        break;
    }
}

static int cpu_has(int s)
{
    unsigned a, b, c, d;
    cpuid2(7, 0, &a, &b, &c, &d);
    switch (s) {
    case STATE_AVX:
        return __builtin_cpu_supports("avx");
    case STATE_AVX512:
        return __builtin_cpu_supports("avx512f");
    case STATE_AMX:
        return (d >> 24) & 1;
    case STATE_INIT:  // XRSTOR needs XSAVE enabled by the kernel
        return has_osxsave();
    default:
        return 1;
    }
}

// Per process, before first use: AMX needs permission (arch_prctl), then a tile config.
// Returns 0, or an errno when the kernel refuses.
static int state_setup(int s)
{
    uint32_t mxcsr = 0x1f80;  // the init area must carry a valid MXCSR
    memcpy(init_area + 24, &mxcsr, sizeof(mxcsr));
    if (s != STATE_AMX)
        return 0;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
        return errno;
    memset(tile_data, 1, sizeof(tile_data));
    return 0;
}

// Per thread (tile config is per thread, and not inherited by a new thread).
static inline void state_thread_setup(int s)
{
    if (s == STATE_AMX)
        __asm__ volatile("ldtilecfg (%0)" ::"r"(&tile_config) : "memory");
}

static int state_live(int s, uint64_t seen)
{
    // After an init XRSTOR some CPUs still report x87/SSE (and PKRU, above) in use: init
    // means no AVX and beyond.
    if (s == STATE_INIT)
        return (seen & ~AMX_MASK & ~3ull & ~PKRU_BIT) == 0;
    return (seen & state_bits[s]) == state_bits[s];
}

#endif
