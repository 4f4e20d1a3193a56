#!/usr/bin/env bash
# A process's start-up floor on this machine, and how much of it is glibc's CPU probe.
# Times, from the same shell, N runs (default 500) each of: a static program with no C library
# (exec + exit only), an empty static C program (glibc's start-up: `init_cpu_features`, its
# `cpuid`s included), /bin/true (dynamic), and, if given, `BERTH --version` (the berth CLI
# starting and exiting); then the cost of one `cpuid` per leaf, and glibc's share of the empty
# C program's CPU samples (perf, if installed).
# Usage: bench/process_floor/run.sh [N] [BERTH]      (no root; builds into a temporary dir)
set -euo pipefail
n="${1:-500}"
berth="${2:-}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d /tmp/bpf.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
gcc -nostdlib -static -o "$dir/nolibc" "$here/nolibc.s"
gcc -O2 -static -o "$dir/empty_static" "$here/empty.c"
gcc -O2 -o "$dir/cpuid" "$here/cpuid.c"
per_run() {
    local a b
    a=${EPOCHREALTIME/./}
    for _ in $(seq "$n"); do "$@" >/dev/null; done
    b=${EPOCHREALTIME/./}
    echo "$(( (b - a) / n ))"
}
echo "| program, $n runs from the shell | µs per run |"
echo "|---|---|"
echo "| static, no C library (exec + exit) | $(per_run "$dir/nolibc") |"
echo "| empty C program, static glibc | $(per_run "$dir/empty_static") |"
echo "| /bin/true (dynamic glibc) | $(per_run /bin/true) |"
[ -n "$berth" ] && echo "| $berth --version | $(per_run "$berth" --version) |"
echo
echo "one cpuid, per leaf:"
"$dir/cpuid" 1000
if command -v perf >/dev/null; then
    perf record -q -F 20000 -o "$dir/p.data" -- sh -c "for i in \$(seq 300); do $dir/empty_static; done" >/dev/null 2>&1 || true
    total=$(perf report -i "$dir/p.data" --comm empty_static --sort comm --stdio -n 2>/dev/null | awk '/^ +[0-9]/ {print $2; exit}')
    probe=$(perf report -i "$dir/p.data" --comm empty_static --no-children --sort sym --stdio -n 2>/dev/null |
        awk '/handle_amd|handle_intel|intel_check_word|init_cpu_features|get_common_indices|get_extended_indices|update_active|__libc_start_main_impl|init_cacheinfo/ {s += $2} END {print s + 0}')
    [ -n "$total" ] && [ "$total" -gt 0 ] &&
        echo "glibc's CPU probe: $probe of $total samples of the empty static program ($(( probe * 100 / total )) %), ≈ $(( probe * 50 / 300 )) µs per process"
fi
