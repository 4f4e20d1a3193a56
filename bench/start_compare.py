#!/usr/bin/env python3
"""Container start time of two berth builds, measured in one run (issue 8's budget).

    python3 bench/start_compare.py OLD_BIN_DIR NEW_BIN_DIR [RUNS]

Each BIN_DIR holds `berthd` and `berth`. Each berthd runs in its own network namespace
(`bsc<pid>-old`, `bsc<pid>-new`) with its own state dir and socket under a temp dir; then
`berth run --rm true` (the default bridge network) is timed around the CLI process, RUNS times
per build (default 50), alternating, after 5 warm-ups each. Prints median, p90, min, max in ms.
Everything it made is removed at the end (processes by pid, namespaces by name), also on error.
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

OLD, NEW = sys.argv[1], sys.argv[2]
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 50
TAG = f"bsc{os.getpid()}"
BASE = tempfile.mkdtemp(prefix=f"{TAG}-", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
daemons, namespaces = [], []


def start(name, bindir):
    ns = f"{TAG}-{name}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    namespaces.append(ns)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    d = os.path.join(BASE, name)
    sock = os.path.join(d, "run", "berthd.sock")
    log = open(os.path.join(BASE, f"{name}.log"), "w")
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, os.path.join(bindir, "berthd"), "--state-dir",
         os.path.join(d, "state"), "--socket", sock],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    daemons.append(p)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.close()
            return [os.path.join(bindir, "berth"), "-H", f"unix://{sock}"]
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"berthd {name} did not start; see {BASE}/{name}.log")


def once(cli):
    t0 = time.perf_counter()
    r = subprocess.run(cli + ["run", "--rm", "true"], capture_output=True, timeout=30)
    t = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"{cli[0]} run failed: {r.stderr.decode()}")
    return t


def summary(xs):
    xs = sorted(xs)
    return (f"median {statistics.median(xs):.1f}  p90 {xs[int(len(xs) * 0.9) - 1]:.1f}  "
            f"min {xs[0]:.1f}  max {xs[-1]:.1f}  (n={len(xs)})")


try:
    clis = {"old": start("old", OLD), "new": start("new", NEW)}
    for _ in range(5):
        for cli in clis.values():
            once(cli)
    times = {k: [] for k in clis}
    for i in range(RUNS):
        order = list(clis) if i % 2 == 0 else list(reversed(list(clis)))
        for k in order:
            times[k].append(once(clis[k]))
    for k in clis:
        print(f"{k}: berth run --rm true  {summary(times[k])}  ms")
    print(f"difference of the medians: "
          f"{statistics.median(times['new']) - statistics.median(times['old']):+.1f} ms")
finally:
    for p in daemons:
        p.send_signal(signal.SIGTERM)
    for p in daemons:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns])
    shutil.rmtree(BASE, ignore_errors=True)
