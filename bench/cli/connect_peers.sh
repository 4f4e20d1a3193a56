#!/usr/bin/env bash
# Issue 10's first two rows, as a user sees them: `berth network connect` / `disconnect` of a
# running container through the berth CLI against a private berthd, next to netavark 1.4's
# bridge setup / teardown (iptables installed, the bridge in use: an anchor container keeps
# it), in the same run, interleaved round by round. Optionally a second berth build (A) in the
# same rounds, for before/after figures.
#
# Usage (root): bench/cli/connect_peers.sh [RUNS] [BIN_DIR] [A_BIN_DIR|-] [GAP_S]
#   RUNS       rounds after one discarded warm-up (default 30)
#   BIN_DIR    berth build to measure (default target/release)
#   A_BIN_DIR  another build measured in the same rounds ("-": none)
#   GAP_S      pause after every operation (default 0.2 s): the kernel deletes a veth in its
#              own background work (~20 ms of RCU grace periods holding RTNL) and the next
#              operation of any tool would otherwise wait for that, whoever caused it.
# LOG_DIR=DIR  keeps each berthd's log there (B.log, A.log), at level info: its own timing of
#              every call ("connected … elapsed_us=…"), for an in-process A/B of the same rounds.
# Everything happens in network namespaces this script creates (bcp<pid>…) and removes; each
# tool has a host namespace of its own. Times come from bash's $EPOCHREALTIME in one shell per
# host namespace (no process per reading), so every tool pays the same start-up of its own
# command. Prints medians (p90) and ratios.
set -euo pipefail

NETAVARK=/usr/lib/podman/netavark
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
p90() { sort -n | awk '{v[NR]=$1} END {i=int(NR*0.9); if (i<1) i=1; print v[i]}'; }
# Timestamps in µs straight from $EPOCHREALTIME: no command substitution, which would fork a
# subshell per reading and add its ~0.6-0.9 ms to every interval (both tools alike, which
# shrank the ratios; measured 2026-12-01).

if [ "${1:-}" = "__loop" ]; then
    # Runs inside one host namespace: $2 = kind (berth|netavark), $3 = runs, $4 = gap,
    # $5 = out file, then kind-specific arguments. Waits for "go" lines on stdin, one per round,
    # so the outer script interleaves the tools.
    kind="$2"; runs="$3"; gap="$4"; out="$5"
    if [ "$kind" = berth ]; then
        bin="$6"; sock="$7"
        op() { "$bin/berth" -H "unix://$sock" network "$1" c s; }
        # The floor of any command: the same binary doing nothing but start and exit.
        idle() { "$bin/berth" --version >/dev/null; }
        # The floor of any request: the CLI, one HTTP round trip to berthd, a handler that
        # does no work (GET /version). With the front (berth-cli beside berth), `berth version`
        # is the front handing over to berth-cli: the floor of a connect through the front is
        # the front's own call that berthd refuses after one look-up (404).
        if [ -x "$bin/berth-cli" ]; then
            ask() { "$bin/berth" -H "unix://$sock" network disconnect no-such-network s >/dev/null 2>&1 || true; }
        else
            ask() { "$bin/berth" -H "unix://$sock" version >/dev/null; }
        fi
        # The kernel's part that no tool avoids: one veth pair created across two namespaces
        # (the `RTM_NEWLINK` of every connect), timed as `ip link add` minus an `ip` that asks
        # for nothing (`ip link show lo`), in two scratch namespaces of their own ($8 $9).
        vadd() { ip -n "$8" link add fa type veth peer name fb netns "$9"; }
        vshow() { ip -n "$8" link show lo >/dev/null; }
        vdel() { ip -n "$8" link del fa; }
    else
        cfg="$6"; cns="$7"; json="$8"
        op() {
            if [ "$1" = connect ]; then
                "$NETAVARK" --config "$cfg" setup "/run/netns/$cns" <"$json" >/dev/null
            else
                "$NETAVARK" --config "$cfg" teardown "/run/netns/$cns" <"$json" >/dev/null
            fi
        }
        idle() { "$NETAVARK" --version >/dev/null; }
        ask() { :; }
        vadd() { :; }
        vshow() { :; }
        vdel() { :; }
    fi
    : >"$out"
    while read -r _; do
        t0=${EPOCHREALTIME/./}; op connect; t1=${EPOCHREALTIME/./}; sleep "$gap"
        t2=${EPOCHREALTIME/./}; op disconnect; t3=${EPOCHREALTIME/./}; sleep "$gap"
        t4=${EPOCHREALTIME/./}; idle; t5=${EPOCHREALTIME/./}; /bin/true; t6=${EPOCHREALTIME/./}
        ask; t7=${EPOCHREALTIME/./}
        vadd "$@"; t8=${EPOCHREALTIME/./}; vshow "$@"; t9=${EPOCHREALTIME/./}
        vdel "$@"
        echo "$((t1 - t0)) $((t3 - t2)) $((t5 - t4)) $((t6 - t5)) $((t7 - t6)) $((t8 - t7)) $((t9 - t8))" >>"$out"
        echo "done"
    done
    exit 0
fi

runs="${1:-30}"
bin="$(readlink -f "${2:-target/release}")"
abin="${3:--}"
gap="${4:-0.2}"
[ "$abin" != "-" ] && abin="$(readlink -f "$abin")"
for tool in "$NETAVARK" /usr/sbin/iptables bc "$bin/berthd" "$bin/berth"; do
    [ -x "$tool" ] || command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
p="bcp$$"
dir="$(mktemp -d /tmp/bcp.XXXXXX)"
self="$(readlink -f "$0")"
pids=()
nss=()
cleanup() {
    for t in "${tools[@]:-}"; do
        [ -n "$t" ] && "${tbin[$t]}/berth" -H "unix://$dir/$t.sock" rm -f s >/dev/null 2>&1 || true
    done
    for fd in "${fds[@]:-}"; do [ -n "$fd" ] && eval "exec $fd>&-" 2>/dev/null || true; done
    for b in "${pids[@]:-}"; do [ -n "$b" ] && kill "$b" 2>/dev/null && wait "$b" 2>/dev/null || true; done
    for ns in "${nss[@]:-}"; do [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true; done
    if [ -n "${LOG_DIR:-}" ]; then
        mkdir -p "$LOG_DIR"
        for t in "${tools[@]:-}"; do [ -n "$t" ] && cp "$dir/$t.log" "$LOG_DIR/$t.log" 2>/dev/null; done
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
log_level=warn
[ -n "${LOG_DIR:-}" ] && log_level=info
mkns() { ip netns add "$1"; ip -n "$1" link set lo up; nss+=("$1"); }

# berth builds: one host namespace and berthd each, networks a and c, container s on a.
declare -A tbin fds
tools=(B)
[ "$abin" != "-" ] && tools+=(A)
tbin[B]="$bin"
[ "$abin" != "-" ] && tbin[A]="$abin"
for t in "${tools[@]}"; do
    ns="${p}${t}"; mkns "$ns"
    : >"$dir/resolv.conf"
    ip netns exec "$ns" "${tbin[$t]}/berthd" --state-dir "$dir/$t/state" --socket "$dir/$t.sock" \
        --log-level "$log_level" --resolv-conf "$dir/resolv.conf" >"$dir/$t.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do [ -S "$dir/$t.sock" ] && break; sleep 0.05; done
    bb() { "${tbin[$t]}/berth" -H "unix://$dir/$t.sock" "$@"; }
    bb network create --subnet 10.77.0.0/24 a >/dev/null
    bb network create --subnet 10.78.0.0/24 c >/dev/null
    bb run -d --name s --network a sleep 3600 >/dev/null
done

# netavark: its host namespace, an anchor container keeping the bridge, the measured one.
nh="${p}N"; mkns "$nh"; mkns "${p}na"; mkns "${p}nc"
id64() { printf "$1%.0s" $(seq 64); }
nvjson() { # $1 = container id letter, $2 = name, $3 = address
    cat <<EOF
{"container_id":"$(id64 "$1")","container_name":"$2",
 "networks":{"nv":{"static_ips":["$3"],"interface_name":"eth0"}},
 "network_info":{"nv":{"name":"nv","id":"$(id64 f)","driver":"bridge",
   "network_interface":"nvbr0","created":"2026-01-01T00:00:00.000000000Z",
   "subnets":[{"subnet":"10.88.0.0/24","gateway":"10.88.0.1"}],
   "ipv6_enabled":false,"internal":false,"dns_enabled":false,
   "ipam_options":{"driver":"host-local"}}}}
EOF
}
nvjson a anchor 10.88.0.2 >"$dir/nva.json"
nvjson c meas 10.88.0.3 >"$dir/nvc.json"
mkdir -p "$dir/nvcfg"
ip netns exec "$nh" env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$NETAVARK" --config "$dir/nvcfg" \
    setup "/run/netns/${p}na" <"$dir/nva.json" >/dev/null

# One loop per tool, each in its host namespace, fed "go" lines round by round.
start_loop() { # $1 = tool name, then __loop args
    local name="$1"; shift
    local fifo="$dir/$name.fifo"; mkfifo "$fifo"; mkfifo "$fifo.ack"
    "$@" <"$fifo" >"$fifo.ack" &
    pids+=($!)
    exec {fd}>"$fifo"; fds[$name]=$fd
    exec {afd}<"$fifo.ack"; fds[$name.ack]=$afd
}
for t in "${tools[@]}"; do
    mkns "${p}${t}f1"; mkns "${p}${t}f2"
    start_loop "$t" ip netns exec "${p}${t}" "$self" __loop berth "$runs" "$gap" "$dir/$t.out" \
        "${tbin[$t]}" "$dir/$t.sock" "${p}${t}f1" "${p}${t}f2"
done
start_loop N ip netns exec "$nh" env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$self" __loop netavark \
    "$runs" "$gap" "$dir/N.out" "$dir/nvcfg" "${p}nc" "$dir/nvc.json"
order=("${tools[@]}" N)
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 0 "$runs"); do
    # The starting tool rotates; round 0 is the warm-up.
    for k in $(seq 0 $(( ${#order[@]} - 1 ))); do
        t="${order[$(( (r + k) % ${#order[@]} ))]}"
        echo go >&"${fds[$t]}"
        read -r _ <&"${fds[$t.ack]}"
    done
done
load1="$(cut -d' ' -f1-3 /proc/loadavg)"
for t in "${order[@]}"; do eval "exec ${fds[$t]}>&-"; done
sleep 0.2

col() { tail -n +2 "$dir/$1.out" | awk -v c="$2" '{printf "%.3f\n", $c / 1000}'; }
declare -A med
row() { # label file column key
    local m q
    m=$(col "$2" "$3" | median); q=$(col "$2" "$3" | p90); med[$4]=$m
    printf '| %s | %s (%s) |\n' "$1" "$m" "$q"
}
echo "connect/disconnect through the CLI vs netavark 1.4 bridge, n=$runs, gap ${gap}s, load $load0 -> $load1"
echo
echo "| what | median ms (p90) |"
echo "|---|---|"
row "berth network connect ($(basename "$(dirname "$bin")")/$(basename "$bin"))" B 1 Bc
row "berth network disconnect" B 2 Bd
if [ "$abin" != "-" ]; then
    row "A: berth network connect ($abin)" A 1 Ac
    row "A: berth network disconnect" A 2 Ad
fi
row "netavark 1.4 setup, bridge in use, iptables" N 1 Nc
row "netavark 1.4 teardown" N 2 Nd
row "floor: \`berth --version\` (the CLI starting and exiting, no request; with the front, the front handing over to berth-cli)" B 3 Bf
row "floor: \`netavark --version\`" N 3 Nf
row "floor: \`/bin/true\` (fork + exec + wait of the smallest program, from the same shell)" B 4 Tf
if [ -x "$bin/berth-cli" ]; then
    row "floor: \`berth network disconnect no-such-network s\` (the front and one HTTP round trip to berthd, refused after one look-up)" B 5 Bv
else
    row "floor: \`berth version\` (the CLI and one HTTP round trip to berthd, no work)" B 5 Bv
fi
row "\`ip link add\` of a veth pair across two namespaces" B 6 Va
row "\`ip link show lo\` (the same \`ip\`, asking for nothing)" B 7 Vs
echo
echo "netavark setup / berth connect = $(echo "scale=2; ${med[Nc]} / ${med[Bc]}" | bc)x (goal >= 7x, berth <= 3 ms)"
echo "netavark teardown / berth disconnect = $(echo "scale=2; ${med[Nd]} / ${med[Bd]}" | bc)x (goal >= 5x, berth <= 5 ms)"
echo "the 7x goal asks for berth connect <= $(echo "scale=3; ${med[Nc]} / 7" | bc) ms, the 5x goal for disconnect <= $(echo "scale=3; ${med[Nd]} / 5" | bc) ms; a berth command that does nothing costs ${med[Bf]} ms here"
echo "berth connect / disconnect above that floor: $(echo "scale=3; ${med[Bc]} - ${med[Bf]}" | bc) / $(echo "scale=3; ${med[Bd]} - ${med[Bf]}" | bc) ms"
vk=$(echo "scale=3; ${med[Va]} - ${med[Vs]}" | bc)
echo "the kernel's veth creation (ip link add - ip link show): $vk ms; with a request that does nothing: a connect's floor here is $(echo "scale=3; ${med[Bv]} + $vk" | bc) ms"
echo "berthd's share (above a request that does nothing, ${med[Bv]} ms): connect $(echo "scale=3; ${med[Bc]} - ${med[Bv]}" | bc) / disconnect $(echo "scale=3; ${med[Bd]} - ${med[Bv]}" | bc) ms"
if [ "$abin" != "-" ]; then
    echo "connect: A - B = $(echo "scale=3; ${med[Ac]} - ${med[Bc]}" | bc) ms; disconnect: A - B = $(echo "scale=3; ${med[Ad]} - ${med[Bd]}" | bc) ms"
fi
# The kernel's whole part of a connect's endpoint, done bare in the same run (veth with its
# peer in a container namespace, port flags, FDB entry, disable_ipv6, address, both sides up):
# with a request that does nothing, the floor under any daemon's connect through a CLI.
# A failure there leaves the line out, not the figures above.
ef="$("$(dirname "$self")/endpoint_floor.sh" "${EF_N:-50}" "${EF_R:-3}" | sed -n 's/^endpoint floor (.*): \([0-9]*\) us$/\1/p')" || ef=""
if [ -n "$ef" ]; then
    ef_ms=$(echo "scale=3; $ef / 1000" | bc)
    echo "the endpoint's kernel work done bare (bench/cli/endpoint_floor.sh): $ef_ms ms; with a request that does nothing: a connect's full floor here is $(echo "scale=3; ${med[Bv]} + $ef_ms" | bc) ms; berth connect is $(echo "scale=3; ${med[Bc]} - ${med[Bv]} - $ef_ms" | bc) ms above it"
fi
