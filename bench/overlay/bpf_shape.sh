#!/bin/bash
# Is a VXLAN overlay quicker without its bridges and netfilter hops? And what is the most any
# VXLAN overlay can carry here? (issue 11's ≥ 85 % of the underlay / ≥ 1.15× Docker row)
# Measured before anything is built, by hand with ip(8), tc(8) and nft(8), no berthd:
#
#   bench/overlay/bpf_shape.sh                     # ~2 min on 2 cores; ROUNDS=6 IPERF_T=3
#   NSPFX=bx ROUNDS=8 IPERF_T=3 bench/overlay/bpf_shape.sh
#
# The world is shapes.sh's (a LAN bridge, host namespaces a and b with berth's real static
# rules and br_netfilter on). iperf3 TCP from host b's side to host a's, rounds alternated:
#   under   the underlay: host b → host a.
#   docker  Docker 20.10's classic overlay as the kernel sees it: a bridge and its VXLAN port
#           (UDP 4789) in a namespace of their own, br_netfilter on there; container veths on
#           that bridge.
#   bpf     Cilium's shape: the container's veth's host side in the host namespace, a tc BPF
#           program on its ingress setting the tunnel key and redirecting to an `external`
#           (collect_md) VXLAN device (UDP 4791), whose ingress program redirects to the
#           container's side with bpf_redirect_peer: no bridge, no br_netfilter, no routing.
#           Source: bpf_shape.c, compiled here (needs clang and libbpf-dev; the script installs
#           them if missing).
#   floor   a bare VXLAN device (UDP 4793) with an address in each host namespace, static FDB
#           and neighbour entries, host b → host a through it: no container, veth or bridge at
#           all: the encapsulation's own cost, the floor of any kernel VXLAN overlay here.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
P=${NSPFX:-bx}; GOLD=$REPO/crates/plan/tests/golden/base.nft
ROUNDS=${ROUNDS:-6}; IPERF_T=${IPERF_T:-3}
[ "$(id -u)" = 0 ] || { echo "bpf_shape.sh: needs root (namespaces, tc BPF)" >&2; exit 2; }
need=()
for t in /usr/bin/clang:clang /usr/include/bpf/bpf_helpers.h:libbpf-dev /usr/bin/iperf3:iperf3 \
         /usr/sbin/nft:nftables /usr/sbin/tc:iproute2; do
    [ -e "${t%%:*}" ] || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    policy=/usr/sbin/policy-rc.d; had=1
    [ -e $policy ] || { had=0; printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
    [ $had = 1 ] || rm -f $policy
fi
x() { local n=$1; shift; ip netns exec "$n" "$@"; }
NSS=(); PIDS=(); OBJ=$(mktemp -d)
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.2
    for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$OBJ"
}
trap cleanup EXIT
# shellcheck source=shapes.sh
. "$HERE/shapes.sh"
lan_and_hosts 10.243.0
i=1
for h in a b; do
    H=$P-$h; L=10.243.0.$i; oi=$((3 - i))
    # docker: bridge + VXLAN port in their own namespace, subnet 10.71.0.0/24
    o=$P-$h-d; ns $o
    x $o sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.ip_forward=1
    ip -n $o link add ob mtu 1450 type bridge
    ip -n $o addr add 10.71.0.1/24 dev ob
    ip -n $o link set ob up
    ip -n $H link add vxd mtu 1450 type vxlan id 7100 local $L dstport 4789 nolearning proxy
    ip -n $H link set vxd netns $o
    ip -n $o link set vxd master ob up
    ns $P-$h-cd
    ip -n $o link add v mtu 1450 type veth peer name eth0 netns $P-$h-cd
    ip -n $o link set v master ob up
    ip -n $P-$h-cd link set eth0 address "$(mac 71 $i)" mtu 1450 up
    ip -n $P-$h-cd addr add 10.71.0.$((10 + i))/24 dev eth0
    x $o bridge fdb append "$(mac 71 $oi)" dev vxd dst 10.243.0.$oi self permanent
    ip -n $o neigh add 10.71.0.$((10 + oi)) lladdr "$(mac 71 $oi)" dev vxd nud permanent
    # bpf: external VXLAN device and the container veth's host side in the host namespace,
    # subnet 10.73.0.0/24
    ip -n $H link add vxe type vxlan external dstport 4791
    ip -n $H link set vxe up
    ns $P-$h-cb
    ip -n $H link add ve mtu 1450 type veth peer name eth0 netns $P-$h-cb
    ip -n $H link set ve up
    ip -n $P-$h-cb link set eth0 address "$(mac 73 $i)" mtu 1450 up
    ip -n $P-$h-cb addr add 10.73.0.$((10 + i))/24 dev eth0
    ip -n $P-$h-cb neigh add 10.73.0.$((10 + oi)) lladdr "$(mac 73 $oi)" dev eth0 nud permanent
    vxe=$(ip -n $H -o link show vxe | cut -d: -f1); ve=$(ip -n $H -o link show ve | cut -d: -f1)
    # REMOTE_VTEP in host byte order: bpf_tunnel_key.remote_ipv4 is (the helper converts)
    for d in OUT IN; do
        clang -O2 -g -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -D$d \
            -DREMOTE_VTEP="$(printf '0x%02x%02x%02x%02x' 10 243 0 $oi)" -DVNI=7300 \
            -DVXE_IFINDEX="$vxe" -DVE_IFINDEX="$ve" -c "$HERE/bpf_shape.c" -o "$OBJ/$h-$d.o"
    done
    x $H tc qdisc add dev ve clsact
    x $H tc filter add dev ve ingress bpf da obj "$OBJ/$h-OUT.o" sec tc
    x $H tc qdisc add dev vxe clsact
    x $H tc filter add dev vxe ingress bpf da obj "$OBJ/$h-IN.o" sec tc
    # floor: a bare VXLAN device in the host namespace, subnet 10.74.0.0/24 (shapes.sh)
    vxlan_floor $H $L 10.243.0.$oi $i $oi
    i=$((i + 1))
done
x $P-b-cd ping -c1 -W2 -q 10.71.0.11 >/dev/null || { echo "docker shape: no path" >&2; exit 1; }
x $P-b-cb ping -c1 -W2 -q 10.73.0.11 >/dev/null || { echo "bpf shape: no path" >&2; exit 1; }
x $P-b ping -c1 -W2 -q 10.74.0.1 >/dev/null || { echo "floor: no path" >&2; exit 1; }
srv() { ip netns exec "$1" iperf3 -s -B "$2" -p "$3" >/dev/null 2>&1 & PIDS+=($!); }
srv $P-a 10.243.0.1 5500; srv $P-a-cd 10.71.0.11 5501; srv $P-a-cb 10.73.0.11 5503; srv $P-a 10.74.0.1 5504
sleep 1
SCEN=("under|$P-b|10.243.0.1|5500" "docker|$P-b-cd|10.71.0.11|5501" "bpf|$P-b-cb|10.73.0.11|5503" "floor|$P-b|10.74.0.1|5504")
RES=$OBJ/res; mkdir -p "$RES"
for r in $(seq 1 "$ROUNDS"); do
    order=("${SCEN[@]}")
    if [ $((r % 2)) = 0 ]; then order=(); for ((k = ${#SCEN[@]} - 1; k >= 0; k--)); do order+=("${SCEN[k]}"); done; fi
    line=""
    for s in "${order[@]}"; do
        IFS='|' read -r name n ip port <<< "$s"
        g=$(x "$n" timeout $((IPERF_T + 15)) iperf3 -c "$ip" -p "$port" -t "$IPERF_T" -J 2>/dev/null |
            python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null || echo nan)
        echo "$g" >> "$RES/$name"
        line+=" $name=$g"
    done
    echo "round $r (load $(cut -d' ' -f1 /proc/loadavg)):$line"
done
python3 - "$RES" <<'PY'
import statistics, sys, os
d = sys.argv[1]
v = {n: [float(x) for x in open(os.path.join(d, n)) if x.strip() and x.strip() != "nan"] for n in ("under", "docker", "bpf", "floor")}
if any(len(v[n]) != len(v["under"]) for n in v) or not v["under"]:
    print("some rounds failed:", {n: len(x) for n, x in v.items()}); sys.exit(1)
med = {n: statistics.median(x) for n, x in v.items()}
print("medians Gbit/s: " + ", ".join("%s %.2f" % (n, med[n]) for n in v))
def rr(a, b):
    xs = sorted(x / y for x, y in zip(v[a], v[b]))
    return "%.2f (%.2f–%.2f)" % (statistics.median(xs), xs[0], xs[-1])
print("per-round ratios, median (min–max):")
for a, b in (("docker", "under"), ("bpf", "under"), ("floor", "under"), ("bpf", "docker"), ("floor", "docker")):
    print("  %s / %s: %s" % (a, b, rr(a, b)))
PY
