# Sourced by the bench/cli scripts: `start_private_berthd PREFIX BERTHD BERTH` runs BERTHD in
# a network namespace of its own (PREFIX<pid>h, lo up) with its state and socket in a fresh
# directory under /tmp, and sets $ns, $dir, $sock and $pid; at the script's exit the BERTH CLI
# removes every container (a stopped berthd leaves them running), then the daemon, the
# namespace and the directory go. The machine's own network is never touched. BERTHD_LOG sets
# berthd's log level (default warn); its log is $dir/berthd.log.
start_private_berthd() {
    ns="$1$$h"
    private_cli="$3"
    dir="$(mktemp -d "/tmp/$1.XXXXXX")"
    sock="$dir/berthd.sock"
    pid=""
    trap stop_private_berthd EXIT
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" "$2" --state-dir "$dir/state" --socket "$sock" --log-level "${BERTHD_LOG:-warn}" \
        >"$dir/berthd.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
}

stop_private_berthd() {
    local ids
    ids="$("$private_cli" -H "unix://$sock" ps -aq 2>/dev/null || true)"
    # shellcheck disable=SC2086 # one id per word
    [ -n "$ids" ] && "$private_cli" -H "unix://$sock" rm -f $ids >/dev/null 2>&1 || true
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$dir"
}
