#!/usr/bin/env bash
# The kernel's part of one bridge endpoint, done bare: what any tool that connects a running
# container to a bridge network asks of the kernel, with no daemon, no store and no thread of
# its own around it. Per endpoint, the same requests berthd's connect makes (crates/kernel/src/
# link.rs, `HostVeth` and `ContainerSide`):
#   host:      RTM_NEWLINK veth, master = the bridge, peer created in the container namespace
#              with its name, MTU and MAC        (`ip link add … master br type veth peer …`)
#              RTM_NEWLINK bridge-port flags      (`ip link set … type bridge_slave hairpin on`)
#              net.ipv6.conf.HOST_SIDE.disable_ipv6 = 1 (a write to /proc/sys, from a shell builtin)
#              RTM_NEWNEIGH static FDB entry      (`bridge fdb add MAC dev … master static`)
#   container: net.ipv6.conf.IF.disable_ipv6 = 1  (a write to /proc/sys, from a shell builtin)
#              RTM_NEWADDR, RTM_NEWLINK IFF_UP    (`ip addr add`, `ip link set … up`)
#   host:      RTM_NEWLINK IFF_UP of the host side (`ip link set … up`)
# Left out (so this is a lower bound of a connect's kernel work): the firewall elements'
# nf_tables transaction, the lookup of the bridge, the DNS table and /etc files.
#
# Each phase runs as one `ip -batch` / `bridge -batch` of N lines (one process for N
# endpoints), minus the same tool running a one-line batch that asks for nothing, divided by
# N: the process start-up is taken out, the kernel's work is left. Each endpoint's peer goes
# into a container namespace of its own (N namespaces), as a connect's does. R rounds, each
# in fresh namespaces; prints every round and the medians in µs.
#
# Usage (root): bench/cli/endpoint_floor.sh [N] [R]      (defaults 100, 5)
# Everything happens in namespaces this script creates (bef<pid>…) and removes; the machine's
# own network is never touched.
set -euo pipefail
n="${1:-100}"
rounds="${2:-5}"
p="bef$$"
dir="$(mktemp -d /tmp/bef.XXXXXX)"
nss=()
cleanup() {
    for ns in "${nss[@]:-}"; do [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
mkns() { ip netns add "$1"; nss+=("$1"); }
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : int((v[NR/2]+v[NR/2+1])/2))}'; }
mac() { printf '02:42:0a:4e:%02x:%02x' $(($1 / 256)) $(($1 % 256)); }

# In the host namespace: $1 = batch file, $2 = tool; prints (batch - one-line batch) / n in µs.
if [ "${1:-}" = "__time" ]; then
    "$3" -batch "$4" >/dev/null
    a=${EPOCHREALTIME/./}; "$3" -batch "$4" >/dev/null; b=${EPOCHREALTIME/./}
    "$3" -batch "$2" >/dev/null; c=${EPOCHREALTIME/./}
    echo $(( ((c - b) - (b - a)) / $5 ))
    exit 0
fi
# In container namespace i: the sysctl write and, by `ip -batch` from the same shell, the
# address and the link up. $2 = ifname, $3 = address, $4 = nop batch; prints µs (sysctl,
# addr+up minus a one-line batch).
# In the host namespace: the host sides' disable_ipv6 writes, $2 = N; prints µs per write.
if [ "${1:-}" = "__hostv6" ]; then
    a=${EPOCHREALTIME/./}
    for i in $(seq "$2"); do echo 1 >"/proc/sys/net/ipv6/conf/bev$i/disable_ipv6"; done
    b=${EPOCHREALTIME/./}
    echo $(( (b - a) / $2 ))
    exit 0
fi
if [ "${1:-}" = "__container" ]; then
    printf 'addr add %s dev %s\nlink set %s up\n' "$3" "$2" "$2" >"$4.c.$$"
    a=${EPOCHREALTIME/./}; echo 1 >"/proc/sys/net/ipv6/conf/$2/disable_ipv6"; s=${EPOCHREALTIME/./}
    # The one-line batch twice, the second timed: a first `ip` in a namespace runs cold.
    ip -batch "$4" >/dev/null; b=${EPOCHREALTIME/./}
    ip -batch "$4" >/dev/null; c=${EPOCHREALTIME/./}; ip -batch "$4.c.$$" >/dev/null; e=${EPOCHREALTIME/./}
    rm -f "$4.c.$$"
    echo "$((s - a)) $(( (e - c) - (c - b) ))"
    exit 0
fi

self="$(readlink -f "$0")"
printf 'link show lo\n' >"$dir/nop"
printf 'fdb show dev lo\n' >"$dir/nopb"
declare -a H V F S C U T
echo "endpoint floor: $n endpoints per round, $rounds rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | host: veth + port flags | host: disable_ipv6 | FDB entry | container: disable_ipv6 | container: address + up | host side up | sum µs |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
    h="${p}r${r}h"
    mkns "$h"
    ip -n "$h" link set lo up
    ip -n "$h" link add befbr type bridge
    ip -n "$h" link set befbr up
    : >"$dir/host"; : >"$dir/fdb"; : >"$dir/up"
    for i in $(seq "$n"); do
        c="${p}r${r}c$i"
        mkns "$c"
        printf 'link add bev%d mtu 1500 master befbr type veth peer name eth1 netns %s address %s mtu 1500\n' "$i" "$c" "$(mac "$i")" >>"$dir/host"
        printf 'link set bev%d type bridge_slave hairpin on\n' "$i" >>"$dir/host"
        printf 'fdb add %s dev bev%d master static\n' "$(mac "$i")" "$i" >>"$dir/fdb"
        printf 'link set bev%d up\n' "$i" >>"$dir/up"
    done
    # `ip link add` and the flags' request: two lines per endpoint, one endpoint's worth each.
    hs=$(ip netns exec "$h" "$self" __time "$dir/host" ip "$dir/nop" "$n")
    v6=$(ip netns exec "$h" "$self" __hostv6 "$n")
    fd=$(ip netns exec "$h" "$self" __time "$dir/fdb" bridge "$dir/nopb" "$n")
    : >"$dir/cont"
    for i in $(seq "$n"); do
        ip netns exec "${p}r${r}c$i" "$self" __container eth1 "10.78.$((i / 256)).$((i % 256 + 2))/16" "$dir/nop" >>"$dir/cont"
    done
    sy=$(awk '{print $1}' "$dir/cont" | median)
    ct=$(awk '{print $2}' "$dir/cont" | median)
    hu=$(ip netns exec "$h" "$self" __time "$dir/up" ip "$dir/nop" "$n")
    sum=$((hs + v6 + fd + sy + ct + hu))
    H+=("$hs"); V+=("$v6"); F+=("$fd"); S+=("$sy"); C+=("$ct"); U+=("$hu"); T+=("$sum")
    echo "| $r | $hs | $v6 | $fd | $sy | $ct | $hu | $sum |"
    for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    nss=()
done
m() { printf '%s\n' "$@" | median; }
echo "| median | $(m "${H[@]}") | $(m "${V[@]}") | $(m "${F[@]}") | $(m "${S[@]}") | $(m "${C[@]}") | $(m "${U[@]}") | $(m "${T[@]}") |"
echo
echo "endpoint floor (the kernel's part of one connect, bare, median of rounds): $(m "${T[@]}") us"
