#!/usr/bin/env bash
# The scale row as an A/B of two builds in the same minutes: two private berthds (A and B),
# each filled to N containers (`run -d --network sI sleep …`, two bridge networks each, no
# published ports), one start of A and one of B in turn, each timed through its own CLI; both
# see the same machine and the same 2×N running containers. Prints, per build, the medians of
# starts 1–50 and N-49…N and their ratio (and of the first and last ten), and berthd's CPU per
# start over the first and last fifty (clock ticks).
# Usage (root): bench/cli/scale_ab.sh N A_BIN_DIR B_BIN_DIR   (N ≥ 100)
# Each berthd runs in a network namespace this script creates (bsab<pid>a / …b) with its
# state under a fresh /tmp directory; at exit every container is removed, then the daemons,
# the namespaces and the directory. The machine's own network is never touched.
set -euo pipefail
n="${1:?N}"
bins=("${2:?A_BIN_DIR}" "${3:?B_BIN_DIR}")
tags=(a b)
[ "$n" -ge 100 ] || { echo "N must be at least 100" >&2; exit 2; }
dir="$(mktemp -d /tmp/bsab.XXXXXX)"
pids=()
cli() { "${bins[$1]}/berth" -H "unix://$dir/${tags[$1]}.sock" "${@:2}"; }
cleanup() {
    set +e
    for k in 0 1; do
        ids="$(cli "$k" ps -aq 2>/dev/null)"
        # shellcheck disable=SC2086 # one id per word
        [ -n "$ids" ] && cli "$k" rm -f $ids >/dev/null 2>&1
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for t in "${tags[@]}"; do ip netns del "bsab$$$t" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT
for k in 0 1; do
    ns="bsab$$${tags[$k]}"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" "${bins[$k]}/berthd" --state-dir "$dir/${tags[$k]}" \
        --socket "$dir/${tags[$k]}.sock" --log-level warn >"$dir/${tags[$k]}.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 200); do [ -S "$dir/${tags[$k]}.sock" ] && break; sleep 0.05; done
    cli "$k" network create --subnet 10.80.0.0/22 s0 >/dev/null
    cli "$k" network create --subnet 10.81.0.0/22 s1 >/dev/null
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
declare -A cpu
for k in 0 1; do cpu[$k,0]=$(ticks "${pids[$k]}"); done
for i in $(seq "$n"); do
    for k in 0 1; do
        s=$(date +%s%N)
        cli "$k" run -d --network "s$((i % 2))" sleep 100000 >/dev/null
        e=$(date +%s%N)
        echo "${tags[$k]} $i $(((e - s) / 1000))"
    done
    if [ "$i" = 50 ]; then for k in 0 1; do cpu[$k,50]=$(ticks "${pids[$k]}"); done; fi
    if [ "$i" = $((n - 50)) ]; then for k in 0 1; do cpu[$k,last]=$(ticks "${pids[$k]}"); done; fi
done >"$dir/times"
for k in 0 1; do cpu[$k,end]=$(ticks "${pids[$k]}"); done
hz="$(getconf CLK_TCK)"
echo "scale A/B, $n containers each, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$dir/times" "$n" "${bins[0]}" "${bins[1]}" <<'PY'
import sys, statistics as st
path, n, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t = {}
for line in open(path):
    k, i, us = line.split()
    t.setdefault(k, {})[int(i)] = int(us) / 1000
print("| build | starts 1–50 | %d–%d | ratio | 1–10 | %d–%d | ratio |" % (n - 49, n, n - 9, n))
print("|---|---|---|---|---|---|---|")
for k, name in (("a", a), ("b", b)):
    m = lambda lo, hi: st.median(t[k][i] for i in range(lo, hi + 1))
    f, l, f10, l10 = m(1, 50), m(n - 49, n), m(1, 10), m(n - 9, n)
    print(f"| {k}: {name} | {f:.2f} | {l:.2f} | {l/f:.2f}× | {f10:.2f} | {l10:.2f} | {l10/f10:.2f}× |")
PY
for k in 0 1; do
    first=$(((cpu[$k,50] - cpu[$k,0]) * 1000 / hz))
    last=$(((cpu[$k,end] - cpu[$k,last]) * 1000 / hz))
    echo "${tags[$k]}: berthd CPU per start, first fifty $((first / 50)) ms, last fifty $((last / 50)) ms"
done
