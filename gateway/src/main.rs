//! The `switchyard` binary; all logic lives in the library.

// glibc's arena locks showed up under load (perf: __lll_lock_wait_private).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
