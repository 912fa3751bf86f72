//! `switchyard-bench`, run as `switchyard bench`: compare plugins on a scenario (docs/bench.md).

fn main() -> std::process::ExitCode {
    switchyard_benches::bench::main()
}
