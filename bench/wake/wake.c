// What one hand-off between threads costs on this machine: the time from one thread giving
// work to another until that other thread runs, for a thread parked on a condition variable
// (berthd's spare thread, a tokio worker parked in epoll, the blocking pool's thread) and for
// one already running and waiting for it by spinning. The giver stays busy for BUSY_US after
// the hand-off, as berthd's worker does (it goes on planning the call), so the taker has to run
// on the other CPU. (Spinning is no cure in berthd: a spare thread woken ahead to spin for its
// job made connect 0.3 ms slower, docs/PERFORMANCE.md, stop 46.)
//   gcc -O2 -pthread -o /tmp/wake bench/wake/wake.c
//   /tmp/wake [ROUNDS] [BUSY_US]          (defaults 40, 300; no root needed)
// Prints the medians (p10, p90) in µs, the two threads on different CPUs (pinned: CPU 0 and
// 1) and left to the scheduler. On this project's VMs the pinned parked wake is ≈ 80 µs (an
// idle vCPU halted in the hypervisor is woken by an IPI), the spinning one < 1 µs, and the
// scheduler often places a woken thread on the giver's busy CPU, where it waits BUSY_US.
// Touches nothing but its own two threads.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int given;
static atomic_int given_spin;
static struct timespec sent;
static double took_us;

struct mode {
    int spin; // wait by spinning instead of parking
    int pin;  // taker on CPU 1, giver on CPU 0
};

static double us(struct timespec a, struct timespec b) {
    return (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
}

static void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");
}

static void *taker(void *arg) {
    const struct mode *m = arg;
    struct timespec now;
    if (m->pin) pin_to(1);
    if (m->spin) {
        while (!atomic_load(&given_spin)) {
        }
    } else {
        pthread_mutex_lock(&lock);
        while (!given) pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    took_us = us(sent, now);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run(const char *label, struct mode m, int rounds, double busy_us) {
    double *t = calloc(rounds, sizeof *t);
    if (!t) return;
    cpu_set_t all;
    sched_getaffinity(0, sizeof all, &all);
    if (m.pin) pin_to(0);
    for (int i = 0; i < rounds; i++) {
        pthread_t th;
        given = 0;
        atomic_store(&given_spin, 0);
        if (pthread_create(&th, NULL, taker, &m) != 0) {
            perror("pthread_create");
            break;
        }
        // Long enough for the taker to park (or to be spinning on its CPU).
        usleep(m.spin ? 2000 : 50000);
        clock_gettime(CLOCK_MONOTONIC, &sent);
        if (m.spin) {
            atomic_store(&given_spin, 1);
        } else {
            pthread_mutex_lock(&lock);
            given = 1;
            pthread_cond_signal(&cond);
            pthread_mutex_unlock(&lock);
        }
        struct timespec b0, b1;
        clock_gettime(CLOCK_MONOTONIC, &b0);
        do clock_gettime(CLOCK_MONOTONIC, &b1);
        while (us(b0, b1) < busy_us);
        pthread_join(th, NULL);
        t[i] = took_us;
    }
    sched_setaffinity(0, sizeof all, &all);
    qsort(t, rounds, sizeof *t, cmp);
    printf("| %s | %.1f (%.1f, %.1f) |\n", label, t[rounds / 2], t[rounds / 10],
           t[rounds - 1 - rounds / 10]);
    free(t);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    double busy = argc > 2 ? atof(argv[2]) : 300;
    if (rounds < 1) rounds = 40;
    printf("hand-off to another thread, the giver busy %.0f us after it, %d rounds\n\n", busy,
           rounds);
    printf("| taker | median us (p10, p90) |\n|---|---|\n");
    run("parked, other CPU (pinned)", (struct mode){.spin = 0, .pin = 1}, rounds, busy);
    run("spinning, other CPU (pinned)", (struct mode){.spin = 1, .pin = 1}, rounds, busy);
    run("parked, placed by the scheduler", (struct mode){.spin = 0, .pin = 0}, rounds, busy);
    return 0;
}
