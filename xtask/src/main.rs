//! `cargo xtask setup | build | run | test`: what a fresh machine needs,
//! and the project's main jobs. See README.md.

mod bench;
mod run;
mod setup;
mod test;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks: rust-src, bpf-linker (built on the
    /// toolchain's own LLVM, into .tools/), and the Debian packages the tests use.
    Setup,
    /// Set up, then build dnet, dnet-cni and conntest.
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run the daemon in a sandbox (or, with --host, on this
    /// machine's real network) in the foreground. Ctrl-C removes the sandbox.
    Run(run::Args),
    /// Set up, build, and run every suite: unit tests, eBPF programs on
    /// hand-made packets, and the namespace scenarios.
    Test(test::Args),
    /// Benchmark dnet side by side with real docker0 and the physical
    /// limit, in sandbox namespaces (as root; installs what it needs).
    /// Writes a table to stdout and JSON and SVG under target/bench/.
    Bench(bench::Args),
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Task::Setup => setup::run(&root),
        Task::Build { release } => {
            setup::run(&root)?;
            build(&root, release).map(|_| ())
        }
        Task::Run(args) => run::run(&root, &args),
        Task::Test(args) => test::run(&root, &args),
        Task::Bench(args) => bench::run(&root, &args),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Removes what sandboxes of killed runs left behind (their `Drop` never
/// ran), before a run makes its own.
pub fn reap_stale() {
    for r in dnet_sandbox::reap_stale() {
        eprintln!("xtask: removed what a killed run left: {r}");
    }
}

/// Runs a command to completion; fails with its name if it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Builds the `dnet`, `dnet-cni` (beside `dnet`) and `conntest` binaries;
/// returns the folder they are in.
pub fn build(root: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root).args([
        "build",
        "--package",
        "dnet-userspace",
        "--package",
        "dnet-tests",
        "--bins",
    ]);
    if release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    Ok(root
        .join("target")
        .join(if release { "release" } else { "debug" }))
}
