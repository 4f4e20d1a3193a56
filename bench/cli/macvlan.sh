#!/usr/bin/env bash
# macvlan goals of issue 12, in one run, in namespaces this script creates and removes:
#  (a) setup of a macvlan endpoint end to end through the berth CLI against a private berthd
#      (`berth network connect lan s` of a running container, and `berth run --rm --network lan
#      true` next to `--network none`), interleaved round by round with netavark 1.4's macvlan
#      setup/teardown (its JSON network config, driver macvlan, parent lan0, static address)
#      from the same namespace; medians and ratios;
#  (b) TCP throughput LAN machine -> macvlan container vs LAN machine -> host (iperf3, the
#      two alternated, each run bounded by `timeout`), and -> a bare macvlan namespace.
# Usage (root): bench/cli/macvlan.sh [RUNS] [BIN_DIR] [IPERF_SECONDS] [IPERF_ROUNDS]
#               (defaults 30, target/release, 5, 3)
# The LAN: namespace <p>l holds bridge br0 (the LAN's router 192.168.77.1); berthd's namespace
# <p>h has lan0 (192.168.77.2, the parent), a port of br0; <p>m is a LAN machine
# (192.168.77.10). The machine's own network is never touched; timings use $EPOCHREALTIME (no
# fork per timestamp) in a shell running inside <p>h, so berth and netavark pay the same.
set -euo pipefail

NETAVARK=/usr/lib/podman/netavark
ms() { echo "scale=3; ($2 - $1) * 1000 / 1" | bc; }
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

if [ "${1:-}" = "__inner" ]; then
    # Inside berthd's namespace: the timing loop. Args: runs bin sock dir container-netns
    # scratch-netns.
    runs="$2"; bin="$3"; sock="$4"; dir="$5"; cns="$6"; scr="$7"
    b() { "$bin/berth" -H "unix://$sock" "$@"; }
    nv() { "$NETAVARK" --config "$dir/netavark" "$1" "/run/netns/$cns" <"$dir/nv.json" >/dev/null; }
    con=(); dis=(); nvs=(); nvt=(); net=(); none=(); bfl=(); nfl=(); tfl=(); vfl=(); kad=(); ksh=()
    # One warm-up round, discarded.
    b network connect lan s; b network disconnect lan s; nv setup; nv teardown
    b run --rm --network lan true; b run --rm --network none true
    for _ in $(seq "$runs"); do
        t0=$EPOCHREALTIME; b network connect lan s; t1=$EPOCHREALTIME
        b network disconnect lan s; t2=$EPOCHREALTIME
        con+=("$(ms "$t0" "$t1")"); dis+=("$(ms "$t1" "$t2")")
        t0=$EPOCHREALTIME; nv setup; t1=$EPOCHREALTIME
        nv teardown; t2=$EPOCHREALTIME
        nvs+=("$(ms "$t0" "$t1")"); nvt+=("$(ms "$t1" "$t2")")
        t0=$EPOCHREALTIME; b run --rm --network lan true; t1=$EPOCHREALTIME
        b run --rm --network none true; t2=$EPOCHREALTIME
        net+=("$(ms "$t0" "$t1")"); none+=("$(ms "$t1" "$t2")")
        # The floor of any command: each binary starting and exiting, and the smallest one.
        t0=$EPOCHREALTIME; "$bin/berth" --version >/dev/null; t1=$EPOCHREALTIME
        "$NETAVARK" --version >/dev/null; t2=$EPOCHREALTIME; /bin/true; t3=$EPOCHREALTIME
        bfl+=("$(ms "$t0" "$t1")"); nfl+=("$(ms "$t1" "$t2")"); tfl+=("$(ms "$t2" "$t3")")
        # The floor of any request: the CLI and one HTTP round trip to berthd that does no work.
        # And the kernel's part no tool avoids: a macvlan on lan0 created into another
        # namespace, timed as `ip link add` minus an `ip` that asks for nothing.
        t0=$EPOCHREALTIME; b version >/dev/null; t1=$EPOCHREALTIME
        ip link add link lan0 name fm0 netns "$scr" type macvlan mode bridge; t2=$EPOCHREALTIME
        ip link show lo >/dev/null; t3=$EPOCHREALTIME
        ip -n "$scr" link del fm0
        vfl+=("$(ms "$t0" "$t1")"); kad+=("$(ms "$t1" "$t2")"); ksh+=("$(ms "$t2" "$t3")")
    done
    m() { printf '%s\n' "$@" | median; }
    mc=$(m "${con[@]}"); md=$(m "${dis[@]}"); ms_=$(m "${nvs[@]}"); mt=$(m "${nvt[@]}")
    mn=$(m "${net[@]}"); mo=$(m "${none[@]}")
    mbf=$(m "${bfl[@]}"); mnf=$(m "${nfl[@]}"); mtf=$(m "${tfl[@]}")
    mvf=$(m "${vfl[@]}"); mka=$(m "${kad[@]}"); mks=$(m "${ksh[@]}")
    printf '| what (n=%s, load %s) | median ms |\n|---|---|\n' "$runs" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf '| berth network connect lan (running container: macvlan endpoint setup) | %s |\n' "$mc"
    printf '| berth network disconnect lan | %s |\n' "$md"
    printf '| netavark 1.4 setup, macvlan (same parent, static address) | %s |\n' "$ms_"
    printf '| netavark 1.4 teardown, macvlan | %s |\n' "$mt"
    printf '| berth run --rm --network lan true | %s |\n' "$mn"
    printf '| berth run --rm --network none true | %s |\n' "$mo"
    printf '| floor: berth --version (the CLI starting and exiting, no request) | %s |\n' "$mbf"
    printf '| floor: netavark --version | %s |\n' "$mnf"
    printf '| floor: /bin/true (fork + exec + wait of the smallest program) | %s |\n' "$mtf"
    printf '| floor: berth version (the CLI and one HTTP round trip to berthd, no work) | %s |\n' "$mvf"
    printf '| ip link add of a macvlan on lan0 into another namespace | %s |\n' "$mka"
    printf '| ip link show lo (the same ip, asking for nothing) | %s |\n' "$mks"
    echo
    echo "setup: netavark / berth connect = $(echo "scale=2; $ms_ / $mc" | bc)x (goal >= 7x; berth goal <= 3 ms)"
    echo "the 7x goal asks for berth connect <= $(echo "scale=3; $ms_ / 7" | bc) ms; a berth command that does nothing costs $mbf ms here (connect above that floor: $(echo "scale=3; $mc - $mbf" | bc) ms)"
    mk=$(echo "scale=3; $mka - $mks" | bc)
    echo "the kernel's macvlan creation (ip link add - ip link show): $mk ms; with a request that does nothing, a macvlan connect's floor here is $(echo "scale=3; $mvf + $mk" | bc) ms; berthd's share above that request: $(echo "scale=3; $mc - $mvf" | bc) ms"
    echo "setup+teardown: netavark / berth connect+disconnect = $(echo "scale=2; ($ms_ + $mt) / ($mc + $md)" | bc)x"
    echo "berth run: --network lan costs $(echo "scale=3; $mn - $mo" | bc) ms more than --network none"
    exit 0
fi

runs="${1:-30}"
bin="${2:-target/release}"
secs="${3:-5}"
rounds="${4:-3}"
for tool in "$NETAVARK" /usr/bin/iperf3 bc python3 "$bin/berthd" "$bin/berth"; do
    [ -x "$tool" ] || command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
p="bmv$$"; h="${p}h"; l="${p}l"; mach="${p}m"; cns="${p}c"; bare="${p}b"
dir="$(mktemp -d /tmp/bmv.XXXXXX)"
sock="$dir/berthd.sock"
pid=""
bg=()
cleanup() {
    for b in "${bg[@]}"; do kill "$b" 2>/dev/null || true; done
    if [ -n "$pid" ]; then
        "$bin/berth" -H "unix://$sock" rm -f ips s >/dev/null 2>&1 || true
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    fi
    for ns in "$bare" "$cns" "$mach" "$l" "$h" "${p}s"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
for ns in "$h" "$l" "$mach" "$cns" "$bare" "${p}s"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$l" link add br0 type bridge
ip -n "$l" addr add 192.168.77.1/24 dev br0
ip -n "$l" link set br0 up
ip -n "$l" link add p-host type veth peer name lan0 netns "$h"
ip -n "$l" link add p-mach type veth peer name m0 netns "$mach"
for port in p-host p-mach; do ip -n "$l" link set "$port" master br0; ip -n "$l" link set "$port" up; done
ip -n "$h" addr add 192.168.77.2/24 dev lan0
ip -n "$h" link set lan0 up
ip -n "$mach" addr add 192.168.77.10/24 dev m0
ip -n "$mach" link set m0 up
ip -n "$mach" route add default via 192.168.77.1

# berthd forwards to nothing outside: an empty resolv.conf.
: >"$dir/resolv.conf"
ip netns exec "$h" "$bin/berthd" --state-dir "$dir/state" --socket "$sock" --log-level warn \
    --resolv-conf "$dir/resolv.conf" >"$dir/berthd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
b() { "$bin/berth" -H "unix://$sock" "$@"; }
b network create -d macvlan --subnet 192.168.77.0/24 --gateway 192.168.77.1 \
    --ip-range 192.168.77.192/27 -o parent=lan0 lan >/dev/null
b network create --subnet 10.77.0.0/24 a >/dev/null
b run -d --name s --network a sleep 3600 >/dev/null

id64() { printf "$1%.0s" $(seq 64); }
cat >"$dir/nv.json" <<EOF
{"container_id":"$(id64 a)","container_name":"nv",
 "networks":{"lan":{"static_ips":["192.168.77.230"],"interface_name":"eth0"}},
 "network_info":{"lan":{"name":"lan","id":"$(id64 b)","driver":"macvlan",
   "network_interface":"lan0","created":"2026-01-01T00:00:00.000000000Z",
   "subnets":[{"subnet":"192.168.77.0/24","gateway":"192.168.77.1"}],
   "ipv6_enabled":false,"internal":false,"dns_enabled":false,
   "ipam_options":{"driver":"host-local"},"options":{"mode":"bridge"}}}}
EOF

echo "## (a) macvlan endpoint setup"
ip netns exec "$h" "$(readlink -f "$0")" __inner "$runs" "$(readlink -f "$bin")" "$sock" "$dir" "$cns" "${p}s"

echo
echo "## (b) TCP throughput from the LAN machine (iperf3, ${secs} s per run, ${rounds} rounds)"
b run -d --name ips --network lan --ip 192.168.77.210 /usr/bin/iperf3 -s -p 5201 >/dev/null
ip netns exec "$h" /usr/bin/iperf3 -s -B 192.168.77.2 -p 5201 >/dev/null 2>&1 &
bg+=($!)
# The kernel's own macvlan path without berth: a macvlan link on lan0 in a bare namespace, the
# server unconfined (tells berth's share of any gap from the driver's).
ip -n "$h" link add mvbare link lan0 type macvlan mode bridge
ip -n "$h" link set mvbare netns "$bare"
ip -n "$bare" addr add 192.168.77.220/24 dev mvbare
ip -n "$bare" link set mvbare up
ip netns exec "$bare" /usr/bin/iperf3 -s -B 192.168.77.220 -p 5201 >/dev/null 2>&1 &
bg+=($!)
gbps() {
    timeout $((secs + 15)) ip netns exec "$mach" /usr/bin/iperf3 -c "$1" -p 5201 -t "$secs" -J \
        | python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
wait_port() {
    for _ in $(seq 100); do
        ip netns exec "$mach" python3 -c "import socket; socket.create_connection(('$1', 5201), 0.2)" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "iperf3 server at $1 not reachable" >&2; return 1
}
wait_port 192.168.77.210; wait_port 192.168.77.2; wait_port 192.168.77.220
ctr=(); host=(); raw=()
for _ in $(seq "$rounds"); do
    ctr+=("$(gbps 192.168.77.210)")
    host+=("$(gbps 192.168.77.2)")
    raw+=("$(gbps 192.168.77.220)")
done
mc=$(printf '%s\n' "${ctr[@]}" | median); mh=$(printf '%s\n' "${host[@]}" | median)
mr=$(printf '%s\n' "${raw[@]}" | median)
printf '| what (load %s) | median Gbit/s | runs |\n|---|---|---|\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| LAN machine -> macvlan container (berth) | %s | %s |\n' "$mc" "${ctr[*]}"
printf '| LAN machine -> host (lan0) | %s | %s |\n' "$mh" "${host[*]}"
printf '| LAN machine -> bare macvlan namespace (no berth) | %s | %s |\n' "$mr" "${raw[*]}"
echo "container / host = $(echo "scale=1; 100 * $mc / $mh" | bc) % (goal >= 95 %)"
echo "container / bare macvlan = $(echo "scale=1; 100 * $mc / $mr" | bc) %"
