//! Test helper for `tests/container_*.rs`: a binary that only knows the container stages, like
//! berthd's `main()` does before anything else.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = berth_kernel::container::dispatch(&args) {
        std::process::exit(code);
    }
    eprintln!("berth-init-test: not a container stage: {args:?}");
    std::process::exit(2);
}
