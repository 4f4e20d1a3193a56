/* What one `cpuid` instruction costs on this machine, per leaf glibc's start-up asks
 * (init_cpu_features and, on AMD, handle_amd's cache leaves): on a VM each one leaves the
 * guest. Prints µs per instruction, the mean of ROUNDS (default 1000) per leaf.
 * Build: gcc -O2 -o cpuid cpuid.c; run: ./cpuid [ROUNDS] (no root). */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 1000;
    static const unsigned leaves[] = {0x0, 0x1, 0x7, 0xd, 0x14, 0x19, 0x80000000,
                                      0x80000001, 0x80000005, 0x80000006, 0x80000008,
                                      0x8000001d, 0x8000001e};
    if (rounds < 1) rounds = 1;
    for (size_t k = 0; k < sizeof leaves / sizeof leaves[0]; k++) {
        unsigned a, b, c, d;
        double t = now_us();
        for (int i = 0; i < rounds; i++) __cpuid_count(leaves[k], 0, a, b, c, d);
        printf("leaf %#x\t%.2f us\n", leaves[k], (now_us() - t) / rounds);
    }
    return 0;
}
