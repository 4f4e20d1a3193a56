#!/usr/bin/env bash
# DNS bench: berth's embedded resolver next to aardvark-dns 1.4 (Debian), same names, same
# upstream, same clients, interleaved in one run. See bench/dns/README.md.
#
# Everything runs in namespaces this script creates (bdns-*) and removes on exit; the machine's
# own network is never touched. DNS traffic goes only to addresses inside those namespaces: the
# upstream of both resolvers is dnsmasq in bdns-o, which knows a few names and forwards nothing.
# Processes are ended by the PIDs this script started.
#
# Each measurement window also records the CPU time (utime+stime, /proc/PID/stat) of the
# resolver's whole process, berthd or aardvark-dns, before and after: CPU seconds per million
# answered queries. berthd runs once per spin mode in MODES (env BERTH_DNS_SPIN, restarted in
# between; the containers stay, the next berthd adopts them), and once idle for IDLE seconds.
#
# A/B and noise: BERTHDS="LABEL=PATH …" runs each berthd binary as a resolver of its own
# (LABEL-MODE, e.g. BERTHDS="base=/tmp/base/berthd new=target/release/berthd", or the same
# binary twice to see the spread of one build); default "berth=target/release/berthd".
# ECHO=1 adds "echo" (bench/dns/echo.rs, container names only): a server that sends each query
# back, the kernel's floor for a one-thread recv_from/send_to resolver in the same topology.
# CLIENTS (default "q100 w100 seq", plus "r100" = windowq 100 in flight paced at RATE q/s,
# default 20000, and "g100" = windowq 100 in flight sending in UDP GSO bursts, a client cheap
# enough not to be the limit; container names only) and KINDS (default "local fwd") choose the
# measurements.
# PIN=1 gives each side a core of its own: every resolver (all of berthd's threads,
# aardvark-dns's, the echo server) on CPU 1, the client on CPU 0, so the client no longer takes
# the resolver's CPU. Each line then also says how busy the resolver's core was (`core=`): a
# resolver below ~90 % of its core was not the limit (the client was), so its queries/s, and
# its ratio to a resolver that saturated its core, are lower bounds.
#
# Usage: sudo [MODES="adaptive fixed off"] [IDLE=30] [BERTHD_ARGS=…] [BERTHDS=…] [ECHO=1]
#        [CLIENTS=…] [KINDS=…] [RATE=…] [PIN=1] bench/dns/run.sh [ROUNDS=3] [SECONDS=10]
set -euo pipefail

ROUNDS=${1:-3}
SECS=${2:-10}
MODES=${MODES:-adaptive fixed off}
IDLE=${IDLE:-30}
# Extra berthd options, e.g. "--check-interval 3600" to see what the drift timer costs idle.
read -r -a BERTHD_EXTRA <<<"${BERTHD_ARGS:-}"
TCK=$(getconf CLK_TCK)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/berth-dns-bench.XXXXXX)
BERTHD=$ROOT/target/release/berthd
BERTH=${BERTH:-$ROOT/target/release/berth}
BERTHDS=${BERTHDS:-berth=$BERTHD}
BERTHD=${BERTHDS%% *}
BERTHD=${BERTHD#*=}
ECHO=${ECHO:-0}
CLIENTS=${CLIENTS:-q100 w100 seq}
KINDS=${KINDS:-local fwd}
RATE=${RATE:-20000}
PIN=${PIN:-0}
# Pins process $1 (every thread, and those it makes later) to the resolvers' core.
pin_resolver() { [ "$PIN" = 1 ] && taskset -a -p -c 1 "$1" >/dev/null; return 0; }
AARDVARK=/usr/lib/podman/aardvark-dns
NS_H=bdns-h NS_O=bdns-o NS_A=bdns-a NS_AC=bdns-ac
PIDS=()
BPID=

log() { echo "[dns-bench] $*" >&2; }

cleanup() {
    set +e
    if [ -S "$WORK/berthd.sock" ]; then
        ids=$("$BERTH" -H "unix://$WORK/berthd.sock" ps -a -q --no-trunc 2>/dev/null)
        [ -n "$ids" ] && timeout 60 "$BERTH" -H "unix://$WORK/berthd.sock" rm -f $ids >/dev/null 2>&1
    fi
    for pid in "${PIDS[@]}" $BPID; do kill "$pid" 2>/dev/null; done
    if [ -f "$WORK/aard/aardvark.pid" ]; then
        apid=$(cat "$WORK/aard/aardvark.pid")
        if [ "$(cat "/proc/$apid/comm" 2>/dev/null)" = "aardvark-dns" ]; then kill "$apid"; fi
    fi
    sleep 0.5
    for ns in $NS_H $NS_O $NS_A $NS_AC; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "/etc/netns/$NS_A"
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in dnsperf dnsmasq rustc python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y dnsperf dnsmasq-base)" >&2; exit 1; }
done
[ -x "$AARDVARK" ] || { echo "needs $AARDVARK (apt-get install -y aardvark-dns)" >&2; exit 1; }
for ns in $NS_H $NS_O $NS_A $NS_AC; do
    if ip netns list | grep -qw "$ns"; then echo "namespace $ns exists: another run?" >&2; exit 1; fi
done
[ -x "$BERTHD" ] && [ -x "$BERTH" ] || { log "building release binaries"; (cd "$ROOT" && cargo build --release -p berthd && crates/front/install.sh release); }
rustc -O --edition 2021 "$ROOT/bench/dns/windowq.rs" -o "$WORK/windowq"
rustc -O --edition 2021 "$ROOT/bench/dns/echo.rs" -o "$WORK/echo"

# ---- namespaces: h (berthd) and a (aardvark) each reach o (upstream) over a veth.
for ns in $NS_H $NS_O $NS_A $NS_AC; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n $NS_H link add uplink type veth peer name lanh netns $NS_O
ip -n $NS_A link add uplink type veth peer name lana netns $NS_O
ip -n $NS_H addr add 198.18.250.1/24 dev uplink; ip -n $NS_O addr add 198.18.250.2/24 dev lanh
ip -n $NS_A addr add 198.18.251.1/24 dev uplink; ip -n $NS_O addr add 198.18.251.2/24 dev lana
for l in "$NS_H uplink" "$NS_A uplink" "$NS_O lanh" "$NS_O lana"; do set -- $l; ip -n "$1" link set "$2" up; done

# ---- upstream: dnsmasq answers ext0..ext9.test and nothing else (no upstream of its own).
HOSTREC=()
for i in $(seq 0 9); do HOSTREC+=("--host-record=ext$i.test,192.0.2.$((10 + i))"); done
ip netns exec $NS_O dnsmasq -k -C /dev/null --no-resolv --no-hosts --bind-interfaces \
    --listen-address=198.18.250.2,198.18.251.2 --port 53 -u root --cache-size=0 \
    --dns-forward-max=1000 "${HOSTREC[@]}" >"$WORK/dnsmasq.log" 2>&1 &
PIDS+=($!)

# ---- berthd with 10 named containers and a client container.
echo "nameserver 198.18.250.2" >"$WORK/resolv.conf"
BMODE=
# (Re)starts berthd LABEL ($2, from BERTHDS; the first by default) with BERTH_DNS_SPIN=$1.
# SIGTERM leaves the containers running and the next berthd adopts them; it is ready when its
# resolver answers c3 (once there are containers).
start_berthd() {
    local label=${2:-${BERTHDS%%=*}} bin=
    for e in $BERTHDS; do [ "${e%%=*}" = "$label" ] && bin=${e#*=}; done
    [ -x "$bin" ] || { echo "no berthd for $label in BERTHDS" >&2; exit 1; }
    if [ -n "$BPID" ]; then
        kill "$BPID"
        for _ in $(seq 100); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
    fi
    BERTH_DNS_SPIN=$1 ip netns exec $NS_H "$bin" --state-dir "$WORK/state" \
        --socket "$WORK/berthd.sock" --resolv-conf "$WORK/resolv.conf" --log-level warn \
        "${BERTHD_EXTRA[@]}" >>"$WORK/berthd.log" 2>&1 &
    BPID=$! BMODE=$label-$1
    pin_resolver "$BPID"
    for _ in $(seq 100); do [ -S "$WORK/berthd.sock" ] && break; sleep 0.1; done
    if [ -n "${CPID:-}" ]; then
        for _ in $(seq 100); do
            [ -n "$("${IN_B[@]}" dig +short +time=1 +tries=1 @10.98.0.1 c3 A)" ] && return
            sleep 0.1
        done
        echo "berthd (spin $1) does not answer after a restart" >&2
        exit 1
    fi
}
start_berthd "${MODES%% *}"
B() { "$BERTH" -H "unix://$WORK/berthd.sock" "$@"; }
B network create --subnet 10.98.0.0/24 bench >/dev/null
for i in $(seq 0 9); do B run -d --name "c$i" --network bench sleep 3600 >/dev/null; done
B run -d --name client --network bench sleep 3600 >/dev/null
CPID=$(B inspect client | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["State"]["Pid"])')
IN_B=(nsenter -t "$CPID" -n)
EPID=
if [ "$ECHO" = 1 ]; then
    ip netns exec $NS_H "$WORK/echo" 10.98.0.1:5353 &
    EPID=$!
    pin_resolver "$EPID"
    PIDS+=($EPID)
fi

# ---- aardvark-dns with the same names, on its own bridge, upstream = the same dnsmasq.
mkdir -p "/etc/netns/$NS_A" "$WORK/aard"
echo "nameserver 198.18.251.2" >"/etc/netns/$NS_A/resolv.conf"
ip -n $NS_A link add aard0 type bridge
ip -n $NS_A addr add 10.99.0.1/24 dev aard0
ip -n $NS_A link set aard0 up
ip -n $NS_A link add av0 type veth peer name eth0 netns $NS_AC
ip -n $NS_A link set av0 master aard0 up
ip -n $NS_AC addr add 10.99.0.2/24 dev eth0
ip -n $NS_AC link set eth0 up
{
    echo "10.99.0.1"
    echo "$(printf 'f%.0s' $(seq 64)) 10.99.0.2  client"
    for i in $(seq 0 9); do echo "$(printf "%064x" $((i + 1))) 10.99.0.$((10 + i))  c$i"; done
} >"$WORK/aard/bench"
ip netns exec $NS_A "$AARDVARK" --config "$WORK/aard" -p 53 run >"$WORK/aardvark.log" 2>&1
for _ in $(seq 50); do [ -s "$WORK/aard/aardvark.pid" ] && break; sleep 0.1; done
APID=$(cat "$WORK/aard/aardvark.pid")
pin_resolver "$APID"
IN_A=(ip netns exec $NS_AC)

# utime+stime of a whole process (all its threads, live and gone), in clock ticks. The fields
# after "(comm)" are counted from the state (field 3): utime and stime are fields 14 and 15.
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# "tid run-time-ns" of a process's live threads (schedstat): finer than ticks, for the idle
# check. A thread that ends between two snapshots is missed, so the delta is a lower bound.
runtime_snap() { for t in /proc/"$1"/task/*; do echo "${t##*/} $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null)"; done; }
runtime_delta_us() {
    awk 'NF < 2 {next} NR == FNR {a[$1] = $2; next} {s += $2 - ($1 in a ? a[$1] : 0)} END {printf "%d", s / 1000}' "$1" "$2"
}
# CPU seconds per million answered queries: $1 ticks over $2 answers.
per_m() { python3 -c "print(round($1 / $TCK / max($2, 1) * 1e6, 2))"; }

# ---- query files
for i in $(seq 0 9); do echo "c$i A"; done >"$WORK/q-local.txt"
for i in $(seq 0 9); do echo "ext$i.test A"; done >"$WORK/q-fwd.txt"
LOCAL_NAMES=$(seq -f 'c%g' 0 9 | tr '\n' ' ')
FWD_NAMES=$(seq -f 'ext%g.test' 0 9 | tr '\n' ' ')

# Sanity: both answer both kinds.
for who in berth aard; do
    if [ $who = berth ]; then cmd=("${IN_B[@]}"); srv=10.98.0.1; else cmd=("${IN_A[@]}"); srv=10.99.0.1; fi
    for n in c3 ext3.test; do
        a=$("${cmd[@]}" dig +short +time=2 +tries=1 "@$srv" "$n" A)
        log "$who: $n -> $a"
        [ -n "$a" ] || { echo "$who does not answer $n" >&2; exit 1; }
    done
done

# ---- idle: berthd with its network and 11 containers, nobody asking anything.
sleep 3 # past the settling after the last change
i0=$(ticks "$BPID") a0=$(ticks "$APID")
runtime_snap "$BPID" >"$WORK/idle0"
sleep "$IDLE"
i1=$(ticks "$BPID") a1=$(ticks "$APID")
runtime_snap "$BPID" >"$WORK/idle1"
IDLE_LINE="berthd${BERTHD_EXTRA[*]:+ ${BERTHD_EXTRA[*]}} idle ${IDLE} s (1 network, 11 containers, spin $BMODE): $((i1 - i0)) ticks \
utime+stime (1 tick = $((1000 / TCK)) ms), ≥ $(runtime_delta_us "$WORK/idle0" "$WORK/idle1") µs run time of its threads; \
aardvark-dns: $((a1 - a0)) ticks; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
log "$IDLE_LINE"

RES="$WORK/results.txt"
: >"$RES"
# Sets cmd, srv and pid for resolver $1 (berth-MODE or aard), restarting berthd in that mode
# when it runs another.
target() {
    if [ "$1" = aard ]; then
        cmd=("${IN_A[@]}") srv=10.99.0.1 pid=$APID
    elif [ "$1" = echo ]; then
        cmd=("${IN_B[@]}") srv=10.98.0.1:5353 pid=$EPID
    else
        [ "$1" = "$BMODE" ] || start_berthd "${1##*-}" "${1%-*}"
        cmd=("${IN_B[@]}") srv=10.98.0.1 pid=$BPID
    fi
    if [ "$PIN" = 1 ]; then cmd+=(taskset -c 0); fi
}
# How busy the resolver's core was over the window: ticks / (seconds × CLK_TCK), in %.
core() { python3 -c "print(round($1 / $TCK / $SECS * 100))"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# dnsperf -c 1 -q 100 (100 outstanding), as in peers.md.
perf() { # who kind
    local who=$1 kind=$2 cmd srv pid out c0 c1
    target "$who"
    c0=$(ticks "$pid")
    out=$("${cmd[@]}" dnsperf -s $srv -d "$WORK/q-$kind.txt" -c 1 -q 100 -l "$SECS" 2>&1)
    c1=$(ticks "$pid")
    local qps lost lat ans
    qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
    lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
    lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
    ans=$(awk '/Queries completed/ {print $3}' <<<"$out")
    # Little's law: what dnsperf really kept in flight (queries/s × average latency).
    echo "$who $kind q100 qps=$qps lost=$lost avg_ms=$(python3 -c "print(round($lat*1000,3))")" \
        "in_flight=$(python3 -c "print(round($qps*$lat,1))") answered=$ans cpu_ticks=$((c1 - c0)) cpu_s_per_M=$(per_m $((c1 - c0)) "$ans") core=$(core $((c1 - c0)))% load1=$(load1)" |
        tee -a "$RES" >&2
}
# windowq with WINDOW queries in flight at all times, two system calls per query in the
# client: 100 next to dnsperf (see bench/dns/windowq.rs for why), 1 for strictly one at a time.
win() { # who kind window label
    local who=$1 kind=$2 cmd srv pid names out c0 c1 ans
    target "$who"
    if [ "$kind" = local ]; then names=$LOCAL_NAMES; else names=$FWD_NAMES; fi
    c0=$(ticks "$pid")
    out=$("${cmd[@]}" "$WORK/windowq" $srv "$SECS" "$3" $names)
    c1=$(ticks "$pid")
    ans=$(sed 's/.*answered=\([0-9]*\).*/\1/' <<<"$out")
    echo "$who $kind $4 $out cpu_ticks=$((c1 - c0)) cpu_s_per_M=$(per_m $((c1 - c0)) "$ans") core=$(core $((c1 - c0)))% load1=$(load1)" |
        tee -a "$RES" >&2
}

WHO=()
for e in $BERTHDS; do for m in $MODES; do WHO+=("${e%%=*}-$m"); done; done
WHO+=(aard)
[ "$ECHO" = 1 ] && WHO+=(echo)
log "rounds=$ROUNDS seconds=$SECS modes=$MODES; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
    # Rotate who goes first, so none always runs on a warmer or quieter machine. Each resolver
    # does all its measurements in a row: berthd restarts once per mode and round.
    k=$(((r - 1) % ${#WHO[@]}))
    order=("${WHO[@]:$k}" "${WHO[@]:0:$k}")
    for who in "${order[@]}"; do
        for kind in $KINDS; do
            [ "$who" = echo ] && [ "$kind" != local ] && continue
            for c in $CLIENTS; do
                [ "$c" = g100 ] && [ "$kind" != local ] && continue
                case $c in
                q100) [ "$who" = echo ] || perf "$who" "$kind" ;;
                w100) win "$who" "$kind" 100 w100 ;;
                g100) win "$who" "$kind" 100g g100 ;;
                r100) win "$who" "$kind" "100@$RATE" r100 ;;
                seq) win "$who" "$kind" 1 seq ;;
                esac
            done
        done
    done
done
log "loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

B info >/dev/null
curl -sf --unix-socket "$WORK/berthd.sock" http://berth/metrics | grep -v '^#' >&2 || true

# Medians per (who, kind, mode, field) as a markdown table, ratios to aardvark-dns.
python3 - "$RES" "${WHO[*]}" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, kind, mode, *fields = line.split()
    for f in fields:
        k, v = f.split("=")
        rows.setdefault((kind, mode, k), {}).setdefault(who, []).append(float(v.rstrip("%")))
berths = [w for w in sys.argv[2].split() if w != "aard"]
head = [f"{b}" for b in berths] + ["aardvark-dns"]
head += [f"{b} / aardvark" for b in berths]
print("| names | client | figure | " + " | ".join(head) + " |")
print("|---|---|---|" + "---|" * len(head))
rng = lambda v: f"{statistics.median(v):g} ({min(v):g}–{max(v):g})" if v else "–"
for (kind, mode, k), by in sorted(rows.items()):
    if k in ("answered", "errors", "p999_us", "cpu_ticks", "lost", "unexpected"):
        continue
    a = by.get("aard", [])
    cells = [rng(by.get(b, [])) for b in berths] + [rng(a)]
    for b in berths:
        v = by.get(b, [])
        ok = v and a and statistics.median(a)
        cells.append(f"{statistics.median(v) / statistics.median(a):.2f}×" if ok else "–")
    names = "container" if kind == "local" else "forwarded"
    client = {"q100": "dnsperf -c 1 -q 100", "w100": "windowq, 100 in flight",
              "g100": "windowq, 100 in flight, GSO bursts",
              "r100": "windowq, 100 in flight, paced"}.get(mode, "sequential")
    print(f"| {names} | {client} | {k} | " + " | ".join(cells) + " |")
EOF
echo
echo "loadavg at the start of the rounds $LOAD_START, at the end $LOAD_END"
echo "$IDLE_LINE"
