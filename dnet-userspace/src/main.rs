//! The `dnet` binary: daemon and CLI in one.

fn main() -> std::process::ExitCode {
    dnet::cli::main()
}
