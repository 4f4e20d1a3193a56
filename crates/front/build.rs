//! Links the front (`berth`) as a program without a C library: its own `_start`
//! (`src/sys.rs`), no crt objects, no libc, static, not position-independent (nothing to
//! relocate at start: the kernel maps it and jumps to `_start`).
fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo::rustc-link-arg-bin=berth={arg}");
    }
}
