// The bare kernel floor of a berth container start's namespace, link and mount work
// (docs/PERFORMANCE.md, "Tenth pass" and stop 43), at 0 and N existing "containers": holders
// doing the same sequence then sleeping (HOLDERS), or a running berthd's real containers
// (HOLDERS 0, as bench/cli/scale.sh runs it before and after its fill).
//   gcc -O2 -o /tmp/floor bench/init_floor/floor.c
//   [PIVOT=1] /tmp/floor STAGING_EMPTY_DIR HOLDERS ROUNDS [BRIDGE]   (root)
// Per round (timed by phase): unshare(NEWNET) (berthd's part); with BRIDGE, the endpoint as a
// bridge network's start makes it (crates/kernel/src/link.rs): a veth pair whose host side is
// a port of BRIDGE (`IFLA_MASTER` in the creating RTM_NEWLINK) and whose peer `eth0` is made in
// the new namespace, the host side's `addrgenmode none`, the peer's `disable_ipv6`, both ends
// up (the port's `br_add_if`, the `ff00::/8` route of its up: the walks that grow with the
// bridge's ports); then unshare(NEWNS|UTS|PID|IPC),
// / rprivate, fork pid 1; pid 1: copies (open_tree) of 6 device nodes and /dev/null,
// mount_setattr ro+nodev on / (rec), tmpfs /tmp /run, proc, sysfs, /dev tmpfs + the 6 nodes
// attached (move_mount) + devpts + shm + mqueue, /dev/null on /proc/kcore, exit; the parent
// waits (teardown). The sysfs is made with the namespace (fsopen/fsconfig/fsmount, in the
// "newnet" phase, which berthd runs ahead) and attached by pid 1, as berth does since stop 46;
// SYSFS_MOUNT=1: pid 1 mounts it (before stop 46). PIVOT=1: berth's sequence before stop 45
// instead (bind / on a staging directory, the same mounts there, chdir,
// pivot_root(".", "."), umount2(".", MNT_DETACH)).
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
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/veth.h>

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NODEV 0x4
#define AT_RECURSIVE 0x8000
struct mount_attr { unsigned long long attr_set, attr_clr, propagation, userns_fd; };
#endif

#define NPH 15
static const char *names[NPH] = {"newnet", "unshare", "rprivate", "fork", "bind_root", "setattr",
                                 "tmpfs2", "proc", "sysfs", "dev", "pivot_root", "exit+wait", "umount_old",
                                 "veth+port", "link_up"};
static double *shm;
static int ready_w; // per phase, ms, written by the child for its phases

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static void die(const char *w) { perror(w); _exit(111); }

static char staging[4096];
static unsigned bridge_index; // 0: no endpoint
static int round_no;

// A netlink request with its attributes, built in place.
struct req { struct nlmsghdr h; struct ifinfomsg i; char buf[1024]; };

static struct rtattr *add(struct nlmsghdr *h, int type, const void *data, int len) {
    struct rtattr *a = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(len);
    if (len) memcpy(RTA_DATA(a), data, len);
    h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
    return a;
}
static void end(struct nlmsghdr *h, struct rtattr *nest) { nest->rta_len = (char *)h + h->nlmsg_len - (char *)nest; }

// Sends `h` on `fd` and waits for its acknowledgement; dies on an error.
static void ask(int fd, struct nlmsghdr *h, const char *what) {
    h->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    if (send(fd, h, h->nlmsg_len, 0) < 0) die(what);
    char ack[4096];
    ssize_t n = recv(fd, ack, sizeof ack, 0);
    if (n < 0) die(what);
    struct nlmsghdr *r = (struct nlmsghdr *)ack;
    if (r->nlmsg_type == NLMSG_ERROR) {
        int e = ((struct nlmsgerr *)NLMSG_DATA(r))->error;
        if (e) { errno = -e; die(what); }
    }
}

static void link_req(struct req *q, int type, int flags) {
    memset(q, 0, sizeof *q);
    q->h.nlmsg_len = NLMSG_LENGTH(sizeof q->i);
    q->h.nlmsg_type = type;
    q->h.nlmsg_flags = flags;
    q->i.ifi_family = AF_UNSPEC;
}

// Brings link `name` up, through `fd` (a socket of the link's namespace).
static void link_up(int fd, const char *name, const char *what) {
    struct req q;
    link_req(&q, RTM_NEWLINK, 0);
    q.i.ifi_flags = IFF_UP;
    q.i.ifi_change = IFF_UP;
    add(&q.h, IFLA_IFNAME, name, strlen(name) + 1);
    ask(fd, &q.h, what);
}

static int rtnl(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) die("netlink socket");
    return fd;
}

// The endpoint: host side `bfl<pid>r<round>` on the bridge, peer `eth0` in the namespace of
// `nsfd` (the caller's new one); `host` is a socket of the host namespace. Timed as two phases.
static void endpoint(int host, int nsfd) {
    double t = now(), t2;
    char name[IFNAMSIZ];
    snprintf(name, sizeof name, "bfl%dr%d", getpid() % 100000, round_no);
    struct req q;
    link_req(&q, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    add(&q.h, IFLA_IFNAME, name, strlen(name) + 1);
    add(&q.h, IFLA_MASTER, &bridge_index, 4);
    struct rtattr *info = add(&q.h, IFLA_LINKINFO, NULL, 0);
    add(&q.h, IFLA_INFO_KIND, "veth", 5);
    struct rtattr *data = add(&q.h, IFLA_INFO_DATA, NULL, 0);
    struct rtattr *peer = add(&q.h, VETH_INFO_PEER, NULL, 0);
    struct ifinfomsg pi = {.ifi_family = AF_UNSPEC};
    // The peer's ifinfomsg, then its attributes.
    memcpy((char *)peer + RTA_LENGTH(0), &pi, sizeof pi);
    q.h.nlmsg_len += NLMSG_ALIGN(sizeof pi);
    add(&q.h, IFLA_IFNAME, "eth0", 5);
    unsigned fdv = nsfd;
    add(&q.h, IFLA_NET_NS_FD, &fdv, 4);
    end(&q.h, peer); end(&q.h, data); end(&q.h, info);
    ask(host, &q.h, "create the veth");
    // The port's `addrgenmode none` (no link-local address on it): what berth sent before stop
    // 45, which now writes the host side's `disable_ipv6` instead (a host-namespace sysctl this
    // process, already in the new namespace, cannot write; the other ports' IPv6 being off is
    // what shortened the walks).
    link_req(&q, RTM_NEWLINK, 0);
    add(&q.h, IFLA_IFNAME, name, strlen(name) + 1);
    struct rtattr *af = add(&q.h, IFLA_AF_SPEC, NULL, 0);
    struct rtattr *in6 = add(&q.h, AF_INET6, NULL, 0);
    unsigned char none = IN6_ADDR_GEN_MODE_NONE;
    add(&q.h, IFLA_INET6_ADDR_GEN_MODE, &none, 1);
    end(&q.h, in6); end(&q.h, af);
    ask(host, &q.h, "addrgenmode none");
    t2 = now(); shm[13] = t2 - t; t = t2;
    // The peer's side, from a socket of the new namespace (this process is in it).
    int fd = open("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) { if (write(fd, "1", 1) != 1) die("disable_ipv6"); close(fd); }
    int c = rtnl();
    link_up(c, "eth0", "eth0 up");
    close(c);
    link_up(host, name, "host side up");
    shm[14] = now() - t;
}

static void j(char *out, const char *a, const char *b) { snprintf(out, 4096, "%s%s", a, b); }

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x4
#endif
static int pivot; // PIVOT=1: the sequence before stop 45 (bind / on staging, pivot_root)
static int classic_sysfs; // SYSFS_MOUNT=1: the init mounts its sysfs (before stop 46)
static int sysfs_fd = -1; // the namespace's sysfs, made with it (berthd's pool, stop 46)

#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x1
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#define FSMOUNT_CLOEXEC 0x1
#endif
#ifndef MOUNT_ATTR_NOSUID
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NOEXEC 0x8
#endif
// A detached read-only sysfs of the caller's network namespace, as netns.rs's premount_sysfs:
// fsopen, fsconfig(source, CMD_CREATE), fsmount.
static int premount_sysfs(void) {
    int fs = syscall(SYS_fsopen, "sysfs", FSOPEN_CLOEXEC);
    if (fs < 0) die("fsopen sysfs");
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", "sysfs", 0)) die("fsconfig source");
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0)) die("fsconfig create");
    int m = syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    if (m < 0) die("fsmount sysfs");
    close(fs);
    return m;
}

// A detached copy of `path`'s mount (open_tree(OPEN_TREE_CLONE)), as rootfs.rs's MountCopy.
static int copy_of(const char *path) {
    int fd = syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | O_CLOEXEC);
    if (fd < 0) die("open_tree");
    return fd;
}
static void attach(int fd, const char *dest) {
    if (syscall(SYS_move_mount, fd, "", AT_FDCWD, dest, MOVE_MOUNT_F_EMPTY_PATH)) die("move_mount");
    close(fd);
}

// pid 1's setup, as berth's stage 2 (rootfs.rs prepare + enter), default privileges, no
// rootfs: the sources copied first (the device nodes, /dev/null for the masked files), the
// namespace's own root made read-only and covered in place (PIVOT=1: bound on a staging
// directory, covered there and entered with pivot_root, the old root detached).
static void setup(int timed) {
    double t = now(), t2;
    char p[4096];
    const char *root = pivot ? staging : "";
    const char *devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
    int copies[7];
    if (pivot) {
        if (mount("/", staging, NULL, MS_BIND | MS_REC, NULL)) die("bind /");
    } else {
        for (int i = 0; i < 6; i++) {
            char host[64];
            snprintf(host, sizeof host, "/dev/%s", devs[i]);
            copies[i] = copy_of(host);
        }
        copies[6] = copy_of("/dev/null");
    }
    t2 = now(); if (timed) shm[4] = t2 - t; t = t2;
    struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV};
    if (syscall(SYS_mount_setattr, AT_FDCWD, pivot ? staging : "/", AT_RECURSIVE, &a, sizeof a)) die("setattr");
    t2 = now(); if (timed) shm[5] = t2 - t; t = t2;
    j(p, root, "/tmp"); if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")) die("tmp");
    j(p, root, "/run"); if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")) die("run");
    t2 = now(); if (timed) shm[6] = t2 - t; t = t2;
    j(p, root, "/proc");
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) die("proc");
    t2 = now(); if (timed) shm[7] = t2 - t; t = t2;
    j(p, root, "/sys");
    if (sysfs_fd >= 0) attach(sysfs_fd, p);
    else if (mount("sysfs", p, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL)) die("sysfs");
    t2 = now(); if (timed) shm[8] = t2 - t; t = t2;
    char dev[4096];
    j(dev, root, "/dev");
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=755,size=65536k")) die("dev");
    for (int i = 0; i < 6; i++) {
        char host[64], d[4096];
        snprintf(host, sizeof host, "/dev/%s", devs[i]);
        snprintf(d, sizeof d, "%s/%s", dev, devs[i]);
        int fd = open(d, O_CREAT | O_WRONLY | O_CLOEXEC, 0644); if (fd < 0) die("create dev"); close(fd);
        if (pivot) { if (mount(host, d, NULL, MS_BIND, NULL)) die("bind dev"); }
        else attach(copies[i], d);
    }
    snprintf(p, sizeof p, "%s/pts", dev); mkdir(p, 0755);
    if (mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")) die("pts");
    snprintf(p, sizeof p, "%s/shm", dev); mkdir(p, 0755);
    if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")) die("shm");
    snprintf(p, sizeof p, "%s/mqueue", dev); mkdir(p, 0755);
    if (mount("mqueue", p, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) die("mq");
    // One masked file (/proc/interrupts) under /dev/null's copy.
    j(p, root, "/proc/interrupts");
    if (pivot) { if (mount("/dev/null", p, NULL, MS_BIND, NULL)) die("mask"); }
    else attach(copies[6], p);
    t2 = now(); if (timed) shm[9] = t2 - t; t = t2;
    if (!pivot) return;
    if (chdir(staging)) die("chdir");
    if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
    t2 = now(); if (timed) shm[10] = t2 - t; t = t2;
    if (umount2(".", MNT_DETACH)) die("umount old");
    if (chdir("/")) die("chdir /");
    t2 = now(); if (timed) shm[12] = t2 - t;
}

// One container: returns pid 1's pid (holders) or waits for it (timed round).
static void one(int hold) {
    // A socket of the host namespace, made before the unshare: it stays there.
    int host = (!hold && bridge_index) ? rtnl() : -1;
    double t = now(), t2;
    if (unshare(CLONE_NEWNET)) die("unshare net");
    if (!pivot && !classic_sysfs) sysfs_fd = premount_sysfs();
    t2 = now(); if (!hold) shm[0] = t2 - t;
    if (host >= 0) {
        int nsfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (nsfd < 0) die("open own netns");
        endpoint(host, nsfd);
        close(nsfd);
        close(host);
    }
    t = now();
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
    // Timed from the fork: pid 1's whole set-up (its phases above), its exit (the mount
    // namespace's teardown) and its reaping.
    waitpid(c, &st, 0);
    shm[11] = now() - t;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#include <sys/mman.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: floor STAGING HOLDERS ROUNDS [BRIDGE]\n"); return 2; }
    snprintf(staging, sizeof staging, "%s", argv[1]);
    int holders = atoi(argv[2]), rounds = atoi(argv[3]);
    pivot = getenv("PIVOT") && atoi(getenv("PIVOT"));
    classic_sysfs = getenv("SYSFS_MOUNT") && atoi(getenv("SYSFS_MOUNT"));
    if (argc > 4 && !(bridge_index = if_nametoindex(argv[4]))) die("bridge");
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
    // Per phase, then the round's total, then its start: the sum of the phases in the order
    // they ran, without pid 1's exit and reaping (a container's start does not wait for a
    // teardown), then that start less the namespace's creation (berthd makes namespaces
    // ahead, off a start's path).
    double *v = calloc((size_t)rounds * (NPH + 3), sizeof *v);
    for (int r = 0; r < rounds; r++) {
        memset(shm, 0, NPH * sizeof *shm);
        round_no = r;
        // The previous round's namespace (and with it its veth pair) is torn down by the
        // kernel's cleanup work after the exit: let it finish, as between spaced starts.
        if (r) usleep(20000);
        double t = now();
        pid_t c = fork();
        if (c == 0) { one(0); _exit(0); }
        int st;
        waitpid(c, &st, 0);
        double total = now() - t;
        if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "round failed %d\n", st); return 1; }
        for (int k = 0; k < NPH; k++) v[k * rounds + r] = shm[k];
        v[NPH * rounds + r] = total;
        double start = 0;
        for (int k = 0; k < NPH; k++)
            if (k != 11) start += shm[k];
        v[(NPH + 1) * rounds + r] = start;
        v[(NPH + 2) * rounds + r] = start - shm[0];
    }
    printf("holders=%d rounds=%d  phase: median p90 (ms)\n", holders, rounds);
    for (int k = 0; k <= NPH + 2; k++) {
        double *x = v + (size_t)k * rounds;
        qsort(x, rounds, sizeof *x, cmp);
        printf("  %-14s %8.3f %8.3f\n",
               k < NPH ? names[k] : k == NPH ? "total" : k == NPH + 1 ? "start" : "start-newnet",
               x[rounds / 2], x[rounds * 9 / 10]);
    }
    for (int i = 0; i < holders; i++) kill(hp[i], SIGKILL);
    for (int i = 0; i < holders; i++) waitpid(hp[i], NULL, 0);
    return 0;
}
