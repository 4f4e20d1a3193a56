#!/usr/bin/env bash
# Installs what berthd needs if it is missing (nftables, iproute2, protobuf-compiler, libc6-dev:
# Debian packages), builds berth, and starts berthd in the foreground with the arguments given (e.g. --log-level debug).
#   ./run.sh [BERTHD ARGS…]      (as root; re-runs itself with sudo when not)
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" -ne 0 ]; then
    # berthd manages network namespaces, links and nftables: it needs root.
    if command -v sudo >/dev/null 2>&1; then exec sudo -E "$0" "$@"; fi
    echo "run.sh: berthd manages network namespaces, links and nftables: run as root" >&2
    exit 2
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The etcd client (cluster store) is generated from etcd's .proto files at build time.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# The static CLI (below) links glibc's libc.a.
[ -e "$(cc -print-file-name=libc.a 2>/dev/null)" ] || missing+=(libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "run.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "run.sh: cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 2
fi
cargo build --release -p berthd
# The CLI pair (crates/front/install.sh): berth-cli linked statically and not
# position-independent (without the dynamic loader every command starts ~1 ms sooner; it needs
# glibc's libc.a, libc6-dev), and the front, target/release/berth, which answers `network
# connect` / `disconnect` without a C library (~1 ms sooner again) and runs berth-cli for the rest.
crates/front/install.sh release
# The container init (berth-init, beside berthd, which spawns it for every container start) the
# same way: no dynamic loader and no relocations before a container's first line.
cargo rustc --release -p berthd --bin berth-init -- -C target-feature=+crt-static -C relocation-model=static
exec target/release/berthd "$@"
