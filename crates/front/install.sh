#!/usr/bin/env bash
# Builds the berth CLI pair into $CARGO_TARGET_DIR/PROFILE/ (target/ by default): what run.sh,
# .ci/run and the e2e harness call.
# - berth-cli: every command; linked statically and not position-independent (no dynamic
#   loader, no relocations: ~1 ms sooner per command), which needs glibc's libc.a (libc6-dev);
# - berth: the front (crates/front), which answers `network connect` / `disconnect` without a
#   C library and hands every other command line to the berth-cli beside it.
#   crates/front/install.sh [release|debug]        (default release)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${1:-release}"
case "$profile" in
    release) flags=(--release) ;;
    debug) flags=() ;;
    *) echo "install.sh: profile must be release or debug, not $profile" >&2; exit 2 ;;
esac
cargo="${CARGO:-cargo}"
target="${CARGO_TARGET_DIR:-target}"
# `cargo rustc` gives the flags to the final crate only: dependencies build as usual.
"$cargo" rustc "${flags[@]}" -p berth --bin berth-cli -- -C target-feature=+crt-static -C relocation-model=static
# The front's own profile (panic = "abort": a program without std cannot unwind).
"$cargo" build --profile front -p berth-front --features bin
# A copy beside berth-cli, where the front looks for it, renamed into place: a `berth` started
# meanwhile runs the old file or the new one, never a half-written one.
install -m 0755 "$target/front/berth" "$target/$profile/.berth-front.tmp"
mv -f "$target/$profile/.berth-front.tmp" "$target/$profile/berth"
