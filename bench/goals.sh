#!/usr/bin/env bash
# Issue 10's goal table in one run: every row's bench, one after the other on the same machine
# in the same hour, each next to its peer, and one summary of the lines that carry the ratios
# and the goals. Each bench creates and removes its own namespaces (see its header); the
# machine's own network is never touched. Full outputs stay in OUT (printed at the end).
#
# Usage (root): bench/goals.sh [BIN_DIR]        (default target/release)
#   env: QUICK=1 (smaller runs, ~6 min, for a smoke check), SCALE_N (default 1000, QUICK 200),
#        SKIP="dns ports ..." (rows to leave out: connect macvlan start ports dns scale)
# A full run takes about 25 minutes on 2 vCPUs (scale.sh at 1,000 is half of it).
set -euo pipefail
bin="${1:-target/release}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
quick="${QUICK:-0}"
skip=" ${SKIP:-} "
out="$(mktemp -d /tmp/berth-goals.XXXXXX)"
if [ "$quick" = 1 ]; then
    n_conn=8 n_mac=6 n_start=8 dns_r=1 dns_s=3 scale_n="${SCALE_N:-200}" idle=3 ports_runs=3
else
    n_conn=30 n_mac=20 n_start=30 dns_r=2 dns_s=8 scale_n="${SCALE_N:-1000}" idle=10 ports_runs=7
fi
note() { printf '[goals %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
want() { [[ "$skip" != *" $1 "* ]]; }
# One bench: its name, then its command; output to OUT/NAME.txt, errors to OUT/NAME.err.
bench() {
    local name="$1"
    shift
    note "$name: $* (load $(load))"
    if "$@" >"$out/$name.txt" 2>"$out/$name.err"; then
        echo "$name: done, load $(load)" >>"$out/loads.txt"
    else
        echo "$name: FAILED (exit $?), see $out/$name.err" | tee -a "$out/loads.txt" >&2
    fi
}
for t in berthd berth; do
    [ -x "$bin/$t" ] || { echo "missing $bin/$t: cargo build --release -p berthd && crates/front/install.sh release" >&2; exit 2; }
done
# run.sh builds the CLI and the container init static (their start-up is on every measured
# path); a plain `cargo build` leaves dynamic ones, which measure ~1 ms slower per command.
for t in berth berth-cli berth-init; do
    if [ -x "$bin/$t" ] && ! file "$bin/$t" | grep -q 'statically linked'; then
        note "warning: $bin/$t is not static: build it as ./run.sh does"
    fi
done
echo "start $(date -u +%H:%M:%S) UTC, load $(load), build $(git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$out/loads.txt"

want connect && bench connect bench/cli/connect_peers.sh "$n_conn" "$bin" - 0.2
want macvlan && bench macvlan bench/cli/macvlan.sh "$n_mac" "$bin" 2 2
# run --rm: the same build as A and B (two samples of one build, interleaved).
want start && bench start bench/cli/start_ab.sh "$n_start" "$bin" "$bin"
if want ports; then
    ports_bin="$bin/berth-bench-ports"
    if [ ! -x "$ports_bin" ]; then
        cargo build --release -p berth-bench >&2
        ports_bin=target/release/berth-bench-ports
    fi
    bench ports "$ports_bin" --berthd "$bin/berthd" --berth "$bin/berth" --levels 0,10000 \
        --runs "$ports_runs" --range-runs 9 --skip-conntrack --skip-throughput \
        --peer-levels 0 --peer-runs 3 --peer-budget 300
fi
# DNS: each resolver on a core of its own and the client on the other (PIN=1); g100 is the
# client cheap enough not to be the limit (UDP GSO bursts), w100 the one query per send.
want dns && bench dns env MODES=adaptive IDLE=5 PIN=1 CLIENTS="g100 w100 q100" KINDS=local \
    bench/dns/run.sh "$dns_r" "$dns_s"
want scale && bench scale env BUDGET=600 bench/cli/scale.sh "$scale_n" "$bin" "$idle"
echo "end $(date -u +%H:%M:%S) UTC, load $(load)" >>"$out/loads.txt"

show() { # name, then an extended regex of the lines to keep
    [ -s "$out/$1.txt" ] || return 0
    printf '\n### %s\n\n' "$1"
    grep -E "$2" "$out/$1.txt" || echo "(no summary line: see $out/$1.txt)"
}
echo "## Issue 10's goals, one run ($(head -1 "$out/loads.txt"))"
show connect '^\||x \(goal|floor'
show macvlan '^\||goal|floor|%'
show start '^\|'
show ports '^###|^\|'
show dns '^\| names|^\|---|\| (qps|cpu_s_per_M|client_cpu_s_per_M|core|in_flight|p50_us) \||loadavg|idle'
show scale '^\||starts in|per start|under strace|start-up after|bare kernel work|wider blocks'
echo
cat "$out/loads.txt"
echo "full outputs: $out"
