#!/usr/bin/env bash
# Scale and efficiency (issue 10), end to end through the berth CLI against a private berthd:
#   * `berth run -d --network NET -p H-H+9:80-89 sleep …` of containers 1…N, each timed
#     (medians of blocks 1–10, 91–100, 491–500, 991–1000: the Nth container's setup vs the first);
#   * berthd's resident memory (VmRSS) and CPU time (utime+stime) at 0, 100 and N containers, and
#     those of the container helpers (each container's stage 1 and stage 2 inits);
#   * berthd's idle CPU over IDLE seconds with 0 and with N containers (and after the restarts:
#     adopted containers);
#   * berthd restarted with N running containers and N×10 published ports, nothing to change,
#     after SIGTERM and after SIGKILL: time from its exec to its socket answering (berthd binds
#     the socket only after its start-up pass and the published ports' convergence), and the
#     kernel writes it made, counted three ways: berthd's own (`/metrics` steps, "repaired at
#     start-up" log lines), the kernel's notifications (`ip monitor` of links, addresses, routes
#     and rules in berthd's namespace and in SAMPLE container namespaces, `nft monitor` of every
#     nf_tables change), and a snapshot of every container namespace's links (with their
#     ifindex), addresses and routes, and of the host namespace and `nft -a list ruleset`, taken
#     before and after and compared;
#   * `berth rm -f` of every container, each timed;
#   * the filesystem's share of each start (INODES=0 skips it; needs perf and python3): the
#     ext4 inode allocations berthd and the inits made while it was in flight, timed by the
#     kernel's tracepoints (ext4:ext4_request_inode → ext4:ext4_allocate_inode of one thread).
#     On an ext4 without a journal each allocation steps over the inodes its group freed in
#     the last minutes (`find_inode_bit` → `recently_deleted`), whoever freed them: 0.1–0.9 ms
#     each on the project machine, so the blocks' medians move with the machine's recent
#     deletions; the table gives the starts with and without that time;
#   * the kernel's floor in the same run (FLOOR=0 skips it; needs gcc): bench/init_floor/floor.c
#     does a start's kernel work bare, with no berthd and no store (a network namespace, a veth
#     pair whose host side becomes a port of berth's first bridge and whose peer is made in the
#     namespace, both ends up, then a stage-1/stage-2 init's namespaces, mounts, sysfs and
#     `pivot_root`), FLOOR_ROUNDS times (default 30) at 0 containers and again at N, berthd
#     stopped (SIGSTOP) meanwhile so it does not react to the foreign port: what of the growth
#     is the kernel's whoever asks (the bridge's ports, every task, every sysfs), and what is
#     left to berth's own work.
# Usage (root): bench/cli/scale.sh [N] [BIN_DIR] [IDLE_SECS]   (defaults 1000, target/release, 30)
#   env: NETS (bridge networks the containers are spread over, default 2; a bridge holds at most
#   1,023 ports), PORTS (published ports per container, default 10), SAMPLE (container
#   namespaces with an `ip monitor` during the restarts, default 20), BUDGET (seconds allowed
#   for the N starts, default 600: the run goes on with the containers it has by then;
#   SAME_PORTS=1 publishes each container's ports to the same container ports, `-p H-H+9:H-H+9`,
#   so that PORTS ≥ 32 makes each container's range one `publish4_any_runs` element;
#   RM_BUDGET the same for the removals, default 300: the rest are ended by the clean-up).
# Everything happens in a network namespace this script creates (bsc<pid>h) and in the
# containers' own namespaces; the machine's own network is never touched. berthd, the monitors
# and (if the script is interrupted) the containers' init processes are ended by PID.
set -euo pipefail
n="${1:-1000}"
bin="${2:-target/release}"
idle="${3:-30}"
nets="${NETS:-2}"
per="${PORTS:-10}"
sample="${SAMPLE:-20}"
budget="${BUDGET:-600}"
rm_budget="${RM_BUDGET:-300}"
ns="bsc$$h"
dir="$(mktemp -d /tmp/bsc.XXXXXX)"
sock="$dir/berthd.sock"
state="$dir/state"
log="$dir/berthd.log"
pid=""
mons=()
inode_rec=""
hz="$(getconf CLK_TCK)"

stop_monitors() {
    for m in "${mons[@]}"; do kill "$m" 2>/dev/null && wait "$m" 2>/dev/null || true; done
    mons=()
}
# The init processes of this run's containers: their command line names this state dir.
container_inits() {
    local p
    for p in /proc/[0-9]*; do
        grep -qsF "$state/containers/" "$p/cmdline" 2>/dev/null && echo "${p#/proc/}"
    done
    return 0
}
cleanup() {
    set +e
    stop_monitors
    if [ -n "$inode_rec" ]; then kill -INT "$inode_rec" 2>/dev/null && wait "$inode_rec" 2>/dev/null; fi
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; fi
    # Containers left running (an interrupted run): their stage 1 and 2 inits, by PID; the
    # commands die with stage 2 (pid 1 of their pid namespace).
    for p in $(container_inits); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

b() { "$bin/berth" -H "unix://$sock" "$@"; }
api() { curl -sf --max-time 10 --unix-socket "$sock" "http://berth$1"; }
# ms, median, load, mib, note, usage_of, pss_cpu_of, remove_each, block, rblock,
# run_ratio, table_blocks.
# shellcheck source=bench/cli/scale_lib.sh
. "$(dirname "$(readlink -f "$0")")/scale_lib.sh"

start_berthd() { # [strace output file]
    local tracer=()
    # shellcheck disable=SC2054 # strace's own comma-separated list
    [ -n "${1:-}" ] && tracer=(strace -f -qq -e trace=sendto,sendmsg,openat -o "$1")
    rm -f "$sock"
    ip netns exec "$ns" "${tracer[@]}" "$bin/berthd" --state-dir "$state" --socket "$sock" \
        --log-level info >>"$log" 2>&1 &
    pid=$!
}
# Waits (≤ 120 s) until the socket answers; prints the ms since $1 (µs).
wait_ready() {
    local t1
    for _ in $(seq 24000); do
        if [ -S "$sock" ]; then
            t1=${EPOCHREALTIME/./}
            api /_ping >/dev/null && { ms "$1" "$t1"; return 0; }
        fi
        kill -0 "$pid" 2>/dev/null || { note "berthd died: $(tail -5 "$log")"; return 1; }
        sleep 0.005
    done
    note "berthd not ready after 120 s"
    return 1
}
# berthd's CPU time so far in clock ticks (utime + stime), read by bash itself (no process per
# sample: it is taken around every start).
cpu_ticks() {
    local -a st
    read -r -a st <"/proc/$pid/stat" || { echo 0; return; }
    echo $((st[13] + st[14]))
}
# "RSS_KiB CPU_ms threads" of berthd.
daemon_usage() { usage_of "$pid"; }
# "PSS_KiB CPU_ms processes" of the container helpers (stage 1 and stage 2 of every init; the
# containers' commands are not counted).
helper_usage() {
    # shellcheck disable=SC2046 # one argument per pid
    pss_cpu_of $(container_inits)
}
# Voluntary + involuntary context switches of all berthd's threads (wake-ups).
daemon_switches() {
    cat /proc/"$pid"/task/*/status 2>/dev/null |
        awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
declare -A fig
# Idle CPU of berthd over $idle s: "cpu_ms wakeups".
idle_cpu() {
    local c0 c1 w0 w1
    c0=$(daemon_usage | cut -d' ' -f2); w0=$(daemon_switches)
    sleep "$idle"
    c1=$(daemon_usage | cut -d' ' -f2); w1=$(daemon_switches)
    echo "$(echo "$c1 - $c0" | bc) $((w1 - w0))"
}

# A snapshot of what berth owns in the kernel: berthd's namespace (links with ifindex and
# flags, addresses, routes, rules, the nft rule set with handles) and every container
# namespace (links, addresses, routes). Anything recreated or changed shows as a difference
# (an element re-added with the same key and value would not: the nft monitor sees those).
snapshot() {
    local out="$1" p
    {
        ip -n "$ns" -o link | sed 's/ *link\/ether.*//'
        ip -n "$ns" -o addr | sed 's/valid_lft.*//'
        ip -n "$ns" route show table all
        ip -n "$ns" -6 route show table all
        ip -n "$ns" rule
        ip netns exec "$ns" nft -a list ruleset
    } >"$out.host"
    : >"$out.containers"
    for p in $(cat "$dir/inits"); do
        {
            echo "== $p"
            # One ip process per namespace (IPv4 routes: the networks here are IPv4-only).
            printf 'link show\naddr show\nroute show table all\n' |
                nsenter -t "$p" -n ip -o -batch - | sed 's/valid_lft.*//'
        } 2>&1 | { grep -v '^Error: Peer netns reference is invalid' || true; } >>"$out.containers"
        # (ip's own lookup of a veth peer's namespace id fails now and then while it prints;
        # nothing changed in the kernel.)
    done
}
# The command pids of the running containers (their namespaces), from the store's view.
record_inits() {
    # shellcheck disable=SC2046 # one argument per id
    b inspect -f '{{.State.Pid}}' $(b ps -q --no-trunc) >"$dir/inits"
}

# One restart, $1 = TERM or KILL (in this shell, not a subshell: it starts the new berthd):
# fig[r_$1] = "ready_ms berthd_steps log_lines ip_host ip_containers nft_lines snapshot_diffs".
# STRACE: a SIGTERM restart with the new berthd under strace: every netlink message it (or an
# `nft` it runs) sends and every file it opens, in fig[strace] = "netlink_writes sysctl_writes
# netlink_reads"; berthd is then restarted once more without strace (untimed).
restart() {
    local how="$1" t0 ready steps logged iph ipc nftl diffs p k=0 logstart sig="$1"
    [ "$how" = STRACE ] && sig=TERM
    note "restart ($how): snapshot before"
    snapshot "$dir/before"
    ip -n "$ns" -ts monitor link address route rule >"$dir/mon.host" 2>&1 &
    mons+=("$!")
    ip netns exec "$ns" nft monitor >"$dir/mon.nft" 2>&1 &
    mons+=("$!")
    : >"$dir/mon.containers"
    # SAMPLE container namespaces spread over the run.
    local total step
    total=$(wc -l <"$dir/inits")
    step=$(( total / sample )); [ "$step" -lt 1 ] && step=1
    while read -r p; do
        if [ $((k % step)) -eq 0 ]; then
            nsenter -t "$p" -n ip monitor link address route rule >>"$dir/mon.containers" 2>&1 &
            mons+=("$!")
        fi
        k=$((k + 1))
    done <"$dir/inits"
    sleep 1
    logstart=$(wc -l <"$log")
    note "restart ($how): SIG$sig to berthd"
    kill -"$sig" "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    t0=${EPOCHREALTIME/./}
    if [ "$how" = STRACE ]; then start_berthd "$dir/strace.txt"; else start_berthd; fi
    note "restart ($how): new berthd started"
    ready=$(wait_ready "$t0")
    note "restart ($how): ready"
    # Passes that follow the start-up (container namespaces' notifications, the adopted
    # containers' first checks) have 3 s to write something too.
    sleep 3
    stop_monitors
    steps=$(api /metrics | awk '/^berth_reconcile_steps_total/ {print $2}')
    if [ "$how" = STRACE ]; then
        # Requests that change something: any netlink message type but the dumps and gets
        # (strace names some, and shows rtnetlink's from sockets opened in other namespaces
        # as numbers: 0x12 GETLINK, 0x16 GETADDR, 0x1a GETROUTE, 0xa10 nft GETGEN).
        local nlw nlr sysw
        nlr=$(grep -o 'nlmsg_type=[^,]*' "$dir/strace.txt" | grep -c 'GET\|0x12 \|0x16 \|0x1a \|0xa10 ' || true)
        nlw=$(grep -o 'nlmsg_type=[^,]*' "$dir/strace.txt" | grep -vc 'GET\|0x12 \|0x16 \|0x1a \|0xa10 ' || true)
        sysw=$(grep '"/proc/sys/' "$dir/strace.txt" | grep -c 'O_WRONLY\|O_RDWR' || true)
        fig[strace]="$nlw $sysw $nlr"
        if [ "$nlw" -gt 0 ] || [ "$sysw" -gt 0 ]; then cp "$dir/strace.txt" /tmp/bsc-strace.txt; fi
        # berthd runs under strace: end it (the strace process is our child), start it plain.
        local traced
        traced=$(pgrep -P "$pid" | head -1)
        [ -n "$traced" ] && kill -TERM "$traced"
        wait "$pid" 2>/dev/null || true
        start_berthd
        wait_ready "${EPOCHREALTIME/./}" >/dev/null
    fi
    logged=$(tail -n +"$((logstart + 1))" "$log" | grep -c 'repaired at start-up\|repaired drift\|applied' || true)
    # berthd's own account of its start-up (adoption, the full pass, the published ports).
    fig[su_$how]=$(tail -n +"$((logstart + 1))" "$log" | grep -m1 'start-up converged' |
        sed 's/\x1b\[[0-9;]*m//g' | grep -o '[a-z]*_ms=[0-9]*' | tr '\n' ' ' || true)
    iph=$(grep -cv '^$' "$dir/mon.host" || true)
    ipc=$(grep -cv '^$' "$dir/mon.containers" || true)
    nftl=$(grep -cv '^$' "$dir/mon.nft" || true)
    note "restart ($how): snapshot after"
    snapshot "$dir/after"
    diffs=$(( $(diff "$dir/before.host" "$dir/after.host" | grep -c '^[<>]' || true) +
              $(diff "$dir/before.containers" "$dir/after.containers" | grep -c '^[<>]' || true) ))
    if [ "$diffs" -gt 0 ] || [ "$iph" -gt 0 ] || [ "$nftl" -gt 0 ] || [ "$ipc" -gt 0 ]; then
        cp "$dir/mon.host" "/tmp/bsc-$how-mon.host"; cp "$dir/mon.nft" "/tmp/bsc-$how-mon.nft"
        cp "$dir/mon.containers" "/tmp/bsc-$how-mon.containers"
        diff "$dir/before.host" "$dir/after.host" >"/tmp/bsc-$how-diff.host" || true
        diff "$dir/before.containers" "$dir/after.containers" >"/tmp/bsc-$how-diff.containers" || true
        note "restart ($how): changes kept in /tmp/bsc-$how-*"
    fi
    fig[r_$how]="$ready ${steps:-?} $logged $iph $ipc $nftl $diffs"
}

# The bare start (see the header): "start_ms newnet veth+port link_up sysfs pivot_root" medians,
# start_ms without the namespace's creation (berthd makes its namespaces ahead of the starts),
# in fig[floor_$1], berthd stopped meanwhile.
floor_bin=""
if [ "${FLOOR:-1}" != 0 ] && command -v gcc >/dev/null; then
    gcc -O2 -o "$dir/floor" "$(dirname "$(readlink -f "$0")")/../init_floor/floor.c" 2>/dev/null &&
        floor_bin="$dir/floor"
fi
floor_at() {
    [ -n "$floor_bin" ] || return 0
    local br out
    br=$(ip -n "$ns" -o link show type bridge | awk '{sub(":", "", $2); print $2}' | grep '^berth-' | sort | head -1)
    local made_br=""
    if [ -z "$br" ]; then
        # No container yet, so no bridge of berth's (a network's first start makes it): an
        # empty bridge of our own, as the first start finds its own.
        br=bflempty
        ip -n "$ns" link add "$br" type bridge && ip -n "$ns" link set "$br" up && made_br=1
    fi
    mkdir -p "$dir/floor-staging"
    # Counted before: the rounds' own ports go with their namespaces, in the kernel's cleanup
    # work after each round.
    fig[floor_br_$1]=$(ip -n "$ns" -o link show master "$br" | wc -l)
    kill -STOP "$pid"
    out=$(ip netns exec "$ns" "$floor_bin" "$dir/floor-staging" 0 "${FLOOR_ROUNDS:-30}" "$br" 2>/dev/null) || out=""
    kill -CONT "$pid"
    [ -n "$made_br" ] && ip -n "$ns" link del "$br"
    fig[floor_$1]=$(awk '{m[$1]=$2} END {if ("start-newnet" in m) print m["start-newnet"], m["newnet"], m["veth+port"], m["link_up"], m["sysfs"], m["pivot_root"]}' <<<"$out")
    note "kernel floor at $1 containers ($br, ${fig[floor_br_$1]} ports): ${fig[floor_$1]:-failed}"
}

ip netns add "$ns"
ip -n "$ns" link set lo up
run_start=$(date -u '+%Y-%m-%d %H:%M UTC')
start_berthd
wait_ready "${EPOCHREALTIME/./}" >/dev/null
for k in $(seq 0 $((nets - 1))); do
    # A /22 each: room for 1,000 containers on one network too.
    b network create --subnet "10.$((80 + k)).0.0/22" "s$k" >/dev/null
done
read -r rss cpu thr <<<"$(daemon_usage)"
fig[rss0]=$rss; fig[cpu0]=$cpu; fig[thr0]=$thr
note "0 containers: RSS ${rss} KiB, CPU ${cpu} ms; idle ${idle} s"
read -r c w <<<"$(idle_cpu)"
fig[idle0]=$c; fig[wake0]=$w; fig[load_idle0]=$(load)
floor_at 0

runs=()
# Each start's window (µs, bash's realtime clock), for the inode allocations made in it.
t0s=()
t1s=()
clock_offset=""
if [ "${INODES:-1}" != 0 ] && command -v perf >/dev/null && command -v python3 >/dev/null; then
    # perf's clock here: CLOCK_MONOTONIC (its realtime id is refused); the offset to bash's
    # realtime is taken once (the two do not drift apart in a run's minutes).
    perf record -q -a -k mono -e ext4:ext4_request_inode -e ext4:ext4_allocate_inode \
        -o "$dir/inodes.data" >/dev/null 2>&1 &
    inode_rec=$!
    sleep 0.5
    clock_offset=$(python3 -c 'import time; print(int((time.time() - time.monotonic()) * 1e6))')
fi
# berthd's CPU ticks before start i (cpus[i-1]) and after the last: a block's CPU per start is
# a difference of two samples, so work a start leaves behind (its namespace watch, a pass
# 200 ms later) counts in the block it falls in.
cpus=()
t_begin=$SECONDS
made=0
for i in $(seq "$n"); do
    net="s$(( (i - 1) % nets ))"
    pflag=()
    if [ "$per" -gt 0 ]; then
        hp=$((20000 + (i - 1) * per))
        if [ "${SAME_PORTS:-0}" = 1 ]; then
            pflag=(-p "$hp-$((hp + per - 1)):$hp-$((hp + per - 1))")
        else
            pflag=(-p "$hp-$((hp + per - 1)):80-$((80 + per - 1))")
        fi
    fi
    cpus+=("$(cpu_ticks)")
    t0=${EPOCHREALTIME/./}
    b run -d --name "c$i" --network "$net" "${pflag[@]}" sleep 100000 >/dev/null
    t1=${EPOCHREALTIME/./}
    runs+=("$(ms "$t0" "$t1")")
    t0s+=("$t0")
    t1s+=("$t1")
    made=$i
    if [ "$i" -eq 100 ]; then
        read -r rss cpu thr <<<"$(daemon_usage)"
        fig[rss100]=$rss; fig[cpu100]=$cpu; fig[thr100]=$thr
        fig[h100]=$(helper_usage)
    fi
    if [ $((i % 100)) -eq 0 ]; then note "$i containers, last run ${runs[-1]} ms, load $(load)"; fi
    if [ $((SECONDS - t_begin)) -gt "$budget" ]; then
        note "budget of $budget s spent after $i containers: going on with those"
        break
    fi
done
sleep 0.5
cpus+=("$(cpu_ticks)")
# The inode allocations in each start's window: inode_ms[i-1] (ms) and inode_n[i-1], and the
# start's time without them, bare[i-1].
inode_ms=()
inode_n=()
bare=()
if [ -n "$inode_rec" ]; then
    kill -INT "$inode_rec" 2>/dev/null && wait "$inode_rec" 2>/dev/null || true
    inode_rec=""
    paste -d' ' <(printf '%s\n' "${t0s[@]}") <(printf '%s\n' "${t1s[@]}") >"$dir/windows"
    perf script -i "$dir/inodes.data" -F pid,tid,comm,time,event >"$dir/inodes.txt" 2>/dev/null || true
    # One line per start: "count ms". berthd's threads (its pid) and the inits (comm).
    python3 - "$dir/windows" "$dir/inodes.txt" "$clock_offset" "$pid" >"$dir/inode_runs" <<'PY'
import bisect, sys
wins = [tuple(int(x) - int(sys.argv[3]) for x in l.split()) for l in open(sys.argv[1])]
starts = [w[0] for w in wins]
count = [0] * len(wins)
took = [0.0] * len(wins)
asked = {}
for line in open(sys.argv[2]):
    f = line.split()
    try:
        i = next(k for k, x in enumerate(f) if "/" in x and x.replace("/", "").isdigit())
        pid, tid = f[i].split("/")
        t = int(round(float(f[i + 1].rstrip(":")) * 1e6))
    except (StopIteration, ValueError, IndexError):
        continue
    if pid != sys.argv[4] and " ".join(f[:i]) != "berth-init":
        continue
    if "request_inode" in line:
        asked[tid] = t
    elif "allocate_inode" in line and tid in asked:
        t_req = asked.pop(tid)
        k = bisect.bisect_right(starts, t_req) - 1
        if k >= 0 and t_req <= wins[k][1]:
            count[k] += 1
            took[k] += (t - t_req) / 1000
for n, ms in zip(count, took):
    print(n, f"{ms:.3f}")
PY
    k=0
    while read -r n_ms; do
        read -r n m <<<"$n_ms"
        inode_n+=("$n")
        inode_ms+=("$m")
        bare+=("$(echo "${runs[$k]} - $m" | bc)")
        k=$((k + 1))
    done <"$dir/inode_runs"
fi
fig[load_runs]=$(load)
fig[runs_s]=$((SECONDS - t_begin))
read -r rss cpu thr <<<"$(daemon_usage)"
fig[rssN]=$rss; fig[cpuN]=$cpu; fig[thrN]=$thr
fig[hN]=$(helper_usage)
note "$made containers: RSS ${rss} KiB; idle ${idle} s"
read -r c w <<<"$(idle_cpu)"
fig[idleN]=$c; fig[wakeN]=$w; fig[load_idleN]=$(load)
record_inits
check="$(b system check >/dev/null 2>&1 && echo in-sync || echo NOT-in-sync)"
fig[check0]=$check

for how in TERM KILL STRACE; do
    fig[load_$how]=$(load)
    restart "$how"
    read -r rss cpu thr <<<"$(daemon_usage)"
    fig[rss_$how]=$rss
    note "after restart ($how): ${fig[r_$how]}"
    if [ "$how" != STRACE ]; then
        read -r c w <<<"$(idle_cpu)"
        fig[idle_$how]=$c; fig[wake_$how]=$w
    fi
    fig[check_$how]="$(b system check >/dev/null 2>&1 && echo in-sync || echo NOT-in-sync)"
done

floor_at "$made"
note "removing $made containers"
remove_each b
fig[load_rm]=$(load)
read -r rss cpu thr <<<"$(daemon_usage)"
fig[rss_end]=$rss

# berthd's CPU per start over containers first..last, ms (mean: ticks are 10 ms).
cblock() {
    [ "$2" -le "$made" ] || { echo "-"; return; }
    echo "scale=1; (${cpus[$2]} - ${cpus[$(($1 - 1))]}) * 1000 / $hz / ($2 - $1 + 1)" | bc
}
first=$(block runs 1 10)
cfirst=$(cblock 1 10)
printf '\n## berth at scale: %s containers on %s networks, %s ports each (%s)\n\n' "$made" "$nets" "$per" "$run_start"
printf '| containers i | `run -d` median ms | ratio to 1–10 | berthd CPU per start, ms | ratio to 1–10 | `rm -f` median ms |\n|---|---|---|---|---|---|\n'
table_blocks
for r in "${blocks[@]}"; do
    set -- $r
    read -r m ratio <<<"$(run_ratio runs "$first" "$1" "$2")"
    c=$(cblock "$1" "$2")
    cratio="-"; [ "$c" != "-" ] && [ "$cfirst" != "0" ] && cratio=$(echo "scale=2; $c / $cfirst" | bc)
    printf '| %s–%s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$m" "$ratio" "$c" "$cratio" "$(rblock rms "$1" "$2")"
done
if [ -n "${fig[floor_0]:-}" ] && [ -n "${fig[floor_$made]:-}" ] && [ "$made" -ge 10 ]; then
    read -r -a f0 <<<"${fig[floor_0]}"
    read -r -a f1 <<<"${fig[floor_$made]}"
    printf '\n| the same start'"'"'s kernel work, bare (`floor.c`, %s rounds, berthd stopped), median ms | at 0 containers | at %s (%s ports on its bridge) | growth |\n|---|---|---|---|\n' \
        "${FLOOR_ROUNDS:-30}" "$made" "${fig[floor_br_$made]}"
    k=0
    for what in "a start: every phase in turn, the namespace's creation left out" "network namespace (berthd: made ahead)" "veth pair + bridge port" \
        "both ends up" "sysfs mount" "pivot_root"; do
        printf '| %s | %s | %s | %+.3f |\n' "$what" "${f0[$k]}" "${f1[$k]}" "$(echo "${f1[$k]} - ${f0[$k]}" | bc)"
        k=$((k + 1))
    done
    blast=$(block runs $((made - 9)) "$made")
    grow=$(echo "${f1[0]} - ${f0[0]}" | bc)
    # berth runs the endpoint (veth, port, up: berthd's thread) beside the init's mounts
    # (sysfs, pivot_root: stage 2), and both beside its own work, on two CPUs: the bare growth
    # is what its start would gain if nothing overlapped, along the longer of the two paths
    # or both in turn (berth's own start has grown by less).
    egrow=$(echo "${f1[2]} + ${f1[3]} - ${f0[2]} - ${f0[3]}" | bc)
    igrow=$(echo "${f1[4]} + ${f1[5]} - ${f0[4]} - ${f0[5]}" | bc)
    mgrow=$(echo "if ($egrow > $igrow) $egrow else $igrow" | bc)
    printf '\nberth'"'"'s `run -d` %.2f → %.2f ms (%+.2f); the bare kernel work grew %+.2f ms in sequence: %+.2f on the endpoint'"'"'s path (veth, port, up), %+.2f on the init'"'"'s (sysfs, pivot_root), which berth runs side by side (and beside its own work): not overlapped, that growth alone would make berth'"'"'s first start %.2f× (the longer path) to %.2f× (both in turn)\n' \
        "$first" "$blast" "$(echo "$blast - $first" | bc)" "$grow" "$egrow" "$igrow" \
        "$(echo "scale=4; ($first + $mgrow) / $first" | bc)" "$(echo "scale=4; ($first + $grow) / $first" | bc)"
fi
if [ "$made" -ge 100 ]; then
    first50=$(block runs 1 50)
    read -r last50 ratio50 <<<"$(run_ratio runs "$first50" $((made - 49)) "$made")"
    printf '\n`run -d` medians over wider blocks (less block noise): 1–50 %s ms, %s–%s %s ms: %.2f×\n' \
        "$first50" "$((made - 49))" "$made" "$last50" "$ratio50"
fi
if [ "${#bare[@]}" -eq "$made" ] && [ "$made" -ge 10 ]; then
    bfirst=$(block bare 1 10)
    printf '\n| containers i | ext4 inode allocations per start (median) | their ms per start (median) | `run -d` without them, median ms | ratio to 1–10 |\n|---|---|---|---|---|\n'
    for r in "${blocks[@]}"; do
        set -- $r
        read -r m ratio <<<"$(run_ratio bare "$bfirst" "$1" "$2")"
        printf '| %s–%s | %s | %s | %s | %s |\n' "$1" "$2" "$(block inode_n "$1" "$2")" \
            "$(block inode_ms "$1" "$2")" "$m" "$ratio"
    done
    printf '\nthe filesystem'"'"'s inode allocations per start: %s ms over all %s starts (mean)\n' \
        "$(printf '%s\n' "${inode_ms[@]}" | awk '{s += $1} END {if (NR) printf "%.2f", s / NR}')" "$made"
fi
if [ "$made" -ge 100 ]; then
    printf '\nberthd CPU per start over wider blocks (less tick noise): 1–50 %s ms, %s–%s %s ms\n' \
        "$(cblock 1 50)" "$((made - 49))" "$made" "$(cblock $((made - 49)) "$made")"
fi
printf '\n%s starts in %s s (load after: %s); %s removals in %s s (load after: %s)\n' \
    "$made" "${fig[runs_s]}" "${fig[load_runs]}" "$removed" "${fig[rm_s]}" "${fig[load_rm]}"

read -r hp100 hc100 hn100 <<<"${fig[h100]:-- - -}"
read -r hpN hcN hnN <<<"${fig[hN]}"
printf '\n| berthd | 0 containers | 100 | %s | after SIGTERM restart | after SIGKILL restart | all removed |\n|---|---|---|---|---|---|---|\n' "$made"
printf '| VmRSS MiB | %s | %s | %s | %s | %s | %s |\n' \
    "$(mib "${fig[rss0]}")" "$(mib "${fig[rss100]:-}")" \
    "$(mib "${fig[rssN]}")" "$(mib "${fig[rss_TERM]}")" \
    "$(mib "${fig[rss_KILL]}")" "$(mib "${fig[rss_end]}")"
printf '| threads | %s | %s | %s | | | |\n' "${fig[thr0]}" "${fig[thr100]:--}" "${fig[thrN]}"
printf '| CPU used so far, ms | %s | %s | %s | | | |\n' "${fig[cpu0]}" "${fig[cpu100]:--}" "${fig[cpuN]}"
printf '| idle CPU over %s s, ms (wake-ups) | %s (%s) | | %s (%s) | %s (%s) | %s (%s) | |\n' "$idle" \
    "${fig[idle0]}" "${fig[wake0]}" "${fig[idleN]}" "${fig[wakeN]}" \
    "${fig[idle_TERM]}" "${fig[wake_TERM]}" "${fig[idle_KILL]}" "${fig[wake_KILL]}"
printf '| helpers (stage 1+2 inits): processes, PSS MiB, CPU ms | | %s, %s, %s | %s, %s, %s | | | |\n' \
    "$hn100" "$(mib "$hp100")" "$hc100" "$hnN" "$(mib "$hpN")" "$hcN"
printf '\nidle loads: %s (0), %s (%s)\n' "${fig[load_idle0]}" "${fig[load_idleN]}" "$made"

printf '\n| restart, %s containers, %s ports | ready ms | berthd steps | "applied"/"repaired" log lines | ip monitor lines, host | ip monitor lines, %s containers | nft monitor lines | snapshot differences | system check after | load |\n|---|---|---|---|---|---|---|---|---|---|\n' \
    "$made" "$((made * per))" "$sample"
for how in TERM KILL STRACE; do
    read -r ready steps logged iph ipc nftl diffs <<<"${fig[r_$how]}"
    label="SIG$how"; [ "$how" = STRACE ] && label="SIGTERM, new berthd under strace"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$ready" "$steps" "$logged" \
        "$iph" "$ipc" "$nftl" "$diffs" "${fig[check_$how]}" "${fig[load_$how]}"
done
for how in TERM KILL; do
    printf '\nberthd start-up after SIG%s, its log: %s' "$how" "${fig[su_$how]:-?}"
done
printf '\n'
read -r nlw sysw nlr <<<"${fig[strace]}"
printf '\nunder strace: %s netlink requests that change something (of %s sent), %s sysctl files opened for writing\n' \
    "$nlw" "$((nlw + nlr))" "$sysw"
printf '\nsystem check before the restarts: %s\n' "${fig[check0]}"
