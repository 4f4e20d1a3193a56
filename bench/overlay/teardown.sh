# Teardown helpers shared by the overlay benches (sourced, not run). Both end only processes
# the bench itself started: the PIDs it recorded, and processes living in its own namespaces.

# stop_recorded DIR: SIGTERM to every PID recorded in DIR/*.pid, then waits (bounded, 10 s for
# all of them together) and SIGKILLs whatever is left; the .pid files are removed.
stop_recorded() {
    local dir=$1 f p pids=()
    for f in "$dir"/*.pid; do
        [ -f "$f" ] || continue
        p=$(cat "$f"); rm -f "$f"
        [ -n "$p" ] || continue
        kill "$p" 2>/dev/null && pids+=("$p")
    done
    for _ in $(seq 1 40); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 1 ] || break
        sleep 0.25
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    return 0
}

# kill_in_netns NS…: SIGKILL to every process whose network namespace is one of the named
# namespaces (containers, shims and servers the daemons left behind).
kill_in_netns() {
    local n ino p
    for n in "$@"; do
        [ -e "/run/netns/$n" ] || continue
        ino=$(ip netns exec "$n" readlink /proc/self/ns/net)
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$ino" ] && kill -9 "${p#/proc/}" 2>/dev/null
        done
    done
    return 0
}
