#!/usr/bin/env bash
# Where a `berth run --rm --network NET true` spends its wall time, from the kernel's own
# exec/exit events (perf, system-wide, two tracepoints: little overhead): the CLI's exec → the
# container init's exec (request, create, network namespace, spawn) → the command's exec
# (namespaces, root, network gate) → the CLI's exit (the command, its exit told, the answer).
# Medians over RUNS (the first three not counted). A/B: run it once per build, alternating.
# Usage (root, perf installed): bench/cli/start_timeline.sh RUNS BIN_DIR
# berthd runs in a network namespace this script creates (btl<pid>h, private_berthd.sh) and
# removes; the machine's own network is never touched.
set -euo pipefail
runs="${1:-30}"
bin="${2:?BIN_DIR}"
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 2; }
# shellcheck source=bench/cli/private_berthd.sh
. "$(dirname "$0")/private_berthd.sh"
start_private_berthd btl "$bin/berthd" "$bin/berth"
cli="$bin/berth -H unix://$sock"
$cli network create --subnet 10.96.0.0/24 n >/dev/null
data="$dir/perf.data"
perf record -q -o "$data" -a -e sched:sched_process_exec,sched:sched_process_exit -- \
    bash -c "for i in \$(seq $runs); do $cli run --rm --network n true; done" 2>/dev/null
perf script -i "$data" -F comm,pid,time,event,trace 2>/dev/null | python3 -c '
import sys, statistics as st
runs, cur = [], None
for line in sys.stdin:
    f = line.split()
    if "sched_process_exec" in line:
        t = float(f[2].rstrip(":"))
        name = [x for x in f if x.startswith("filename=")][0][9:]
        if name.endswith("/berth"):
            cur = {"cli": t}
            runs.append(cur)
        elif cur is not None and name.endswith("berth-init") and "init" not in cur:
            cur["init"] = t
        elif cur is not None and name.endswith("/true") and "cmd" not in cur:
            cur["cmd"] = t
    elif "sched_process_exit" in line and cur is not None and f[0] == "berth" \
            and "cmd" in cur and "end" not in cur:
        cur["end"] = float(f[2].rstrip(":"))
runs = [r for r in runs if len(r) == 4][3:]
m = lambda a, b: st.median([(r[b] - r[a]) * 1000 for r in runs])
print("| runs | CLI exec → init exec | init exec → command exec | command exec → CLI exit | total |")
print("|---|---|---|---|---|")
print("| %d | %.2f | %.2f | %.2f | %.2f |" % (len(runs), m("cli", "init"), m("init", "cmd"),
      m("cmd", "end"), m("cli", "end")))
'
echo "load $(cut -d' ' -f1-3 /proc/loadavg), $bin"
