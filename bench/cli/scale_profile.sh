#!/usr/bin/env bash
# Where berthd's CPU per start grows with the number of containers (issue 10, "1,000th container
# setup vs the first"): a private berthd in a namespace of its own (bsp<pid>h), two bridge
# networks, N containers `run -d --network NET -p H-H+9:80-89 sleep …`, and `perf record -g`
# of berthd and the inits it spawns over starts 1–50 and N−49…N. Prints berthd's CPU and the
# wall time per start of each window, the perf data's total per start, and the per-start cost of
# the kernel paths that grow with the bridge's ports (the announcements' flood, the port's
# addition, pivot_root's walk of every task, the netns-id lookups of the all-namespace monitor).
# Usage (root): bench/cli/scale_profile.sh [N] [BIN_DIR] [OUT_DIR]   (defaults 1000,
#   target/release, a new /tmp/bsp.* kept for `perf report -i OUT/perf-{first,last}.data`)
# Needs perf. The machine's own network is never touched; at exit the containers are removed
# through the CLI, then berthd is ended by PID (bench/cli/private_berthd.sh).
set -euo pipefail
n="${1:-1000}"
bin="${2:-target/release}"
out="${3:-$(mktemp -d /tmp/bsp.XXXXXX)}"
mkdir -p "$out"
rec=""
# shellcheck source=private_berthd.sh
. "$(dirname "$0")/private_berthd.sh"
start_private_berthd bsp "$bin/berthd" "$bin/berth"
cleanup() {
    set +e
    [ -n "$rec" ] && kill -INT "$rec" 2>/dev/null && wait "$rec" 2>/dev/null
    stop_private_berthd
}
trap cleanup EXIT
trap 'exit 130' INT TERM
b() { "$bin/berth" -H "unix://$sock" "$@"; }
b network create --subnet 10.96.0.0/22 na >/dev/null
b network create --subnet 10.97.0.0/22 nb >/dev/null
start() { # container $1: its network and ten published ports
    local h=$((20000 + $1 * 10)) net=na
    [ $(($1 % 2)) = 1 ] && net=nb
    b run -d --network "$net" -p "$h-$((h + 9)):80-89" sleep 100000 >/dev/null
}
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz="$(getconf CLK_TCK)"
window() { # name first last
    local c0 c1 t0 t1 total
    perf record -q -F 1999 -g -p "$pid" -o "$out/perf-$1.data" >/dev/null 2>&1 &
    rec=$!
    sleep 0.3
    c0=$(ticks); t0=$EPOCHREALTIME
    for i in $(seq "$2" "$3"); do start "$i"; done
    c1=$(ticks); t1=$EPOCHREALTIME
    kill -INT "$rec"; wait "$rec" 2>/dev/null || true; rec=""
    local k=$(($3 - $2 + 1))
    total=$(perf report -i "$out/perf-$1.data" --stdio --sort comm 2>/dev/null |
        awk '/^# Event count/ {print $NF}')
    printf '%s (starts %d-%d, load %s): berthd CPU %.1f ms/start, wall %.1f ms/start, perf total (berthd + inits) %.1f ms/start\n' \
        "$1" "$2" "$3" "$(cut -d' ' -f1 /proc/loadavg)" \
        "$(echo "($c1 - $c0) * 1000 / $hz / $k" | bc -l)" \
        "$(echo "(${t1/./} - ${t0/./}) / 1000 / $k" | bc -l)" \
        "$(echo "${total:-0} / 1000000 / $k" | bc -l)"
    perf report -i "$out/perf-$1.data" --children --sort sym --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+% +[0-9.]+% ' >"$out/children-$1.txt" || true
    for sym in br_flood arp_xmit br_add_if __do_sys_pivot_root idr_for_each; do
        awk -v s="] $sym" -v t="${total:-0}" -v k="$k" \
            'index($0, s) && substr($0, length($0) - length(s) + 1) == s {
                 v = $1; sub(/%/, "", v); printf "  %-20s %5.2f %%  %.2f ms/start\n", substr(s, 3), v, v * t / 100 / 1e6 / k; exit }' \
            "$out/children-$1.txt"
    done
}
for i in 1 2 3; do b run --rm --network na true; done
window first 1 50
for i in $(seq 51 $((n - 50))); do start "$i"; done
window last $((n - 49)) "$n"
echo "perf data: $out"
