// The tests' own look at the CPU (tests/hardware.py): CPUID leaves 1, 7 and 0xD, and XCR0,
// printed raw as one JSON line, so expected values never come from fptrace's own code.
#include <cpuid.h>
#include <stdio.h>

static void leaf(unsigned l, unsigned s, unsigned r[4])
{
    __cpuid_count(l, s, r[0], r[1], r[2], r[3]);
}

int main(void)
{
    unsigned r[4], max, ecx1, ebx7 = 0, edx7 = 0;
    unsigned long long xcr0 = 0;
    leaf(0, 0, r);
    max = r[0];
    leaf(1, 0, r);
    ecx1 = r[2];
    if (max >= 7) {
        leaf(7, 0, r);
        ebx7 = r[1];
        edx7 = r[3];
    }
    if (ecx1 & (1u << 27)) {  // OSXSAVE: the kernel allows XGETBV
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((unsigned long long)hi << 32) | lo;
    }
    printf("{\"ecx1\": %u, \"ebx7\": %u, \"edx7\": %u, \"xcr0\": %llu, \"leaf_d\": {",
           ecx1, ebx7, edx7, xcr0);
    for (unsigned i = 0; max >= 0xd && i < 63; i++) {
        leaf(0xd, i, r);
        printf("%s\"%u\": [%u, %u, %u, %u]", i ? ", " : "", i, r[0], r[1], r[2], r[3]);
    }
    printf("}}\n");
    return 0;
}
