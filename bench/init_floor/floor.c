// The bare kernel floor of a berth container init's namespace and mount work (docs/PERFORMANCE.md,
// "Tenth pass"), at 0 and N existing "containers" (holders doing the same sequence, then sleeping).
//   gcc -O2 -o /tmp/floor bench/init_floor/floor.c && /tmp/floor STAGING_EMPTY_DIR HOLDERS ROUNDS   (root)
// Per round (timed by phase): unshare(NEWNET) (berthd's part), unshare(NEWNS|UTS|PID|IPC),
// / rprivate, fork pid 1; pid 1: bind / on staging (rec), mount_setattr ro+nodev (rec),
// tmpfs /tmp /run, proc, sysfs, /dev tmpfs + 6 device binds + devpts + shm + mqueue,
// chdir, pivot_root(".", "."), umount2(".", MNT_DETACH), exit; the parent waits (teardown).
// Everything happens in namespaces this program makes; the machine's own are never touched.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NODEV 0x4
#define AT_RECURSIVE 0x8000
struct mount_attr { unsigned long long attr_set, attr_clr, propagation, userns_fd; };
#endif

#define NPH 13
static const char *names[NPH] = {"newnet", "unshare", "rprivate", "fork", "bind_root", "setattr",
                                 "tmpfs2", "proc", "sysfs", "dev", "pivot_root", "exit+wait", "umount_old"};
static double *shm;
static int ready_w; // per phase, ms, written by the child for its phases

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static void die(const char *w) { perror(w); _exit(111); }

static char staging[4096];

static void j(char *out, const char *a, const char *b) { snprintf(out, 4096, "%s%s", a, b); }

// pid 1's setup, as berth's stage 2 (rootfs.rs prepare + enter), default privileges.
static void setup(int timed) {
    double t = now(), t2;
    char p[4096];
    if (mount("/", staging, NULL, MS_BIND | MS_REC, NULL)) die("bind /");
    t2 = now(); if (timed) shm[4] = t2 - t; t = t2;
    struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV};
    if (syscall(SYS_mount_setattr, AT_FDCWD, staging, AT_RECURSIVE, &a, sizeof a)) die("setattr");
    t2 = now(); if (timed) shm[5] = t2 - t; t = t2;
    j(p, staging, "/tmp"); if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")) die("tmp");
    j(p, staging, "/run"); if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")) die("run");
    t2 = now(); if (timed) shm[6] = t2 - t; t = t2;
    j(p, staging, "/proc");
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) die("proc");
    t2 = now(); if (timed) shm[7] = t2 - t; t = t2;
    j(p, staging, "/sys");
    if (mount("sysfs", p, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL)) die("sysfs");
    t2 = now(); if (timed) shm[8] = t2 - t; t = t2;
    char dev[4096];
    j(dev, staging, "/dev");
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=755,size=65536k")) die("dev");
    const char *devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (int i = 0; i < 6; i++) {
        char host[64], d[4096];
        snprintf(host, sizeof host, "/dev/%s", devs[i]);
        snprintf(d, sizeof d, "%s/%s", dev, devs[i]);
        int fd = open(d, O_CREAT | O_WRONLY | O_CLOEXEC, 0644); if (fd < 0) die("create dev"); close(fd);
        if (mount(host, d, NULL, MS_BIND, NULL)) die("bind dev");
    }
    snprintf(p, sizeof p, "%s/pts", dev); mkdir(p, 0755);
    if (mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")) die("pts");
    snprintf(p, sizeof p, "%s/shm", dev); mkdir(p, 0755);
    if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")) die("shm");
    snprintf(p, sizeof p, "%s/mqueue", dev); mkdir(p, 0755);
    if (mount("mqueue", p, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) die("mq");
    t2 = now(); if (timed) shm[9] = t2 - t; t = t2;
    if (chdir(staging)) die("chdir");
    if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
    t2 = now(); if (timed) shm[10] = t2 - t; t = t2;
    if (umount2(".", MNT_DETACH)) die("umount old");
    if (chdir("/")) die("chdir /");
    t2 = now(); if (timed) shm[12] = t2 - t;
}

// One container: returns pid 1's pid (holders) or waits for it (timed round).
static void one(int hold) {
    double t = now(), t2;
    if (unshare(CLONE_NEWNET)) die("unshare net");
    t2 = now(); if (!hold) shm[0] = t2 - t; t = t2;
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWIPC)) die("unshare");
    t2 = now(); if (!hold) shm[1] = t2 - t; t = t2;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("rprivate");
    t2 = now(); if (!hold) shm[2] = t2 - t; t = t2;
    pid_t c = fork();
    if (c < 0) die("fork");
    if (c == 0) {
        if (!hold) shm[3] = now() - t;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setup(!hold);
        if (hold) {
            if (write(ready_w, "1", 1) != 1) die("ready");
            close(ready_w);
            // The command: a third process, as berth's (stage 1, stage 2, the command).
            pid_t s = fork();
            if (s == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); for (;;) pause(); }
            for (;;) pause();
        }
        _exit(0);
    }
    if (hold) { for (;;) pause(); }
    t = now();
    int st;
    // Timed from pid 1's last phase to its reaping: its exit (the mount namespace's teardown).
    waitpid(c, &st, 0);
    shm[11] = now() - t;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#include <sys/mman.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: floor STAGING HOLDERS ROUNDS\n"); return 2; }
    snprintf(staging, sizeof staging, "%s", argv[1]);
    int holders = atoi(argv[2]), rounds = atoi(argv[3]);
    shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) die("mmap");
    int pr[2];
    if (pipe(pr)) die("pipe");
    ready_w = pr[1];
    pid_t *hp = calloc(holders + 1, sizeof *hp);
    double t0 = now();
    for (int i = 0; i < holders; i++) {
        pid_t h = fork();
        if (h < 0) die("fork holder");
        if (h == 0) { close(pr[0]); prctl(PR_SET_PDEATHSIG, SIGKILL); one(1); _exit(0); }
        hp[i] = h;
    }
    close(pr[1]);
    char b;
    for (int i = 0; i < holders; i++) if (read(pr[0], &b, 1) != 1) die("holder ready");
    fprintf(stderr, "%d holders ready in %.0f ms\n", holders, now() - t0);
    double *v = calloc((size_t)rounds * (NPH + 1), sizeof *v);
    for (int r = 0; r < rounds; r++) {
        memset(shm, 0, NPH * sizeof *shm);
        double t = now();
        pid_t c = fork();
        if (c == 0) { one(0); _exit(0); }
        int st;
        waitpid(c, &st, 0);
        double total = now() - t;
        if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "round failed %d\n", st); return 1; }
        for (int k = 0; k < NPH; k++) v[k * rounds + r] = shm[k];
        v[NPH * rounds + r] = total;
    }
    printf("holders=%d rounds=%d  phase: median p90 (ms)\n", holders, rounds);
    for (int k = 0; k <= NPH; k++) {
        double *x = v + (size_t)k * rounds;
        qsort(x, rounds, sizeof *x, cmp);
        printf("  %-14s %8.3f %8.3f\n", k < NPH ? names[k] : "total", x[rounds / 2], x[rounds * 9 / 10]);
    }
    for (int i = 0; i < holders; i++) kill(hp[i], SIGKILL);
    for (int i = 0; i < holders; i++) waitpid(hp[i], NULL, 0);
    return 0;
}
