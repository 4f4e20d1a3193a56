//! `berth-init`: the container init stages (and the `exec` entry) alone, without the daemon.
//!
//! berthd spawns one per container start. Its own executable would do (it dispatches the same
//! arguments first thing), but an `execve` of berthd maps a large position-independent binary
//! and resolves its ~26,000 relocations and three libraries before the init's first line; this
//! one links only the init's code. berthd uses it when it lies beside berthd's own executable
//! (`berth_kernel::container::init_executable`), else re-executes itself.

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match berth_kernel::container::dispatch(&argv) {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!("berth-init: started by berthd only (a container's init stages)");
            std::process::exit(berth_kernel::container::EXIT_SETUP_FAILED);
        }
    }
}
