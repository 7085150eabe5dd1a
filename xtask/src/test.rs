//! `cargo xtask test`: clippy on every crate, then every suite (all of
//! them, even after one fails), then a check that the run left nothing
//! behind (see `dnet_sandbox::leaks`).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dnet_sandbox::leaks::{self, Foreign, MachineView, RUN_DIR_ENV, Run, Watch};

use crate::{build, reap_stale, run_cmd, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Passed to `cargo test` after `--` (a test name filter, say).
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the suites make network namespaces and load eBPF programs: run as root");
    }
    setup::run(root)?;
    let bin = build(root, false)?;
    clippy(root)?;
    // What killed runs left is removed first; what this run leaves is
    // told apart by the pids its test processes record in `run_dir`.
    reap_stale();
    let run_dir = std::env::temp_dir().join(format!("dnet-run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let run = Run {
        dir: run_dir.clone(),
        bins: vec![bin.join("dnet"), bin.join("dnet-cni"), bin.join("conntest")],
    };
    let watch = Watch::default();
    let baseline = Baseline {
        machine: leaks::machine_view(&watch).context("looking at the machine's namespace")?,
        // Before the run, every sandbox is another run's.
        foreign: leaks::foreign(&Default::default()),
        processes: run.processes(&leaks::processes()?, &Default::default()),
    };
    let result = suites(root, args, &bin, &run_dir);
    let check = leak_check(&run, &watch, &baseline);
    let _ = std::fs::remove_dir_all(&run_dir);
    let ran = result?;
    // Every verdict, not only the first.
    let mut failed = Vec::new();
    if ran.failed > 0 || !ran.success {
        failed.push(format!(
            "the suites failed: {} passed, {} failed (see above)",
            ran.passed, ran.failed
        ));
    }
    if ran.tests == 0 && !ran.listing {
        failed.push(format!(
            "no test ran: the filter {:?} matches none",
            args.rest.join(" ")
        ));
    }
    if let Err(e) = check {
        failed.push(format!("{e:#}"));
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// Clippy, warnings as errors: the workspace for the host, and the eBPF
/// crate for its own target (it builds `core` from source, as its real
/// build does).
fn clippy(root: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: rustfmt --check");
    run_cmd(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["fmt", "--all", "--check"]),
    )?;
    eprintln!("xtask: clippy");
    run_cmd(Command::new(env!("CARGO")).current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_cmd(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args([
                "clippy",
                "--package",
                "dnet-ebpf",
                "--lib",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--bins",
                "--",
                "-D",
                "warnings",
            ])
            .env("RUSTC_BOOTSTRAP", "1"),
    )
}

/// What the suites did.
#[derive(Default)]
struct Ran {
    passed: u64,
    failed: u64,
    /// Tests that ran (passed, failed).
    tests: u64,
    /// `--list`: tests were listed, not run.
    listing: bool,
    success: bool,
}

/// `cargo test` on every suite, with `--no-fail-fast` so that one failing
/// suite hides none of the later ones; its output is passed through and
/// its "test result" lines counted.
fn suites(root: &Path, args: &Args, bin: &Path, run_dir: &Path) -> anyhow::Result<Ran> {
    let mut child = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "test",
            "--workspace",
            "--exclude",
            "dnet-ebpf",
            "--no-fail-fast",
            "--",
        ])
        .args(&args.rest)
        .env("DNET_BIN", bin.join("dnet"))
        .env("CONNTEST_BIN", bin.join("conntest"))
        .env(RUN_DIR_ENV, run_dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut ran = Ran {
        listing: args.rest.iter().any(|a| a == "--list"),
        ..Ran::default()
    };
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        // Passed on; a closed stdout (a pipe whose reader is gone) must
        // not stop the run before its leak check.
        let _ = writeln!(out, "{line}");
        if let Some((p, f)) = test_result(&line) {
            ran.passed += p;
            ran.failed += f;
            ran.tests += p + f;
        }
    }
    ran.success = child.wait()?.success();
    let _ = writeln!(out, "xtask: {} passed, {} failed", ran.passed, ran.failed);
    Ok(ran)
}

/// `test result: ok. 3 passed; 0 failed; ...` → (3, 0).
fn test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |what: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| part.trim().split_once(&format!(" {what}")))
            .and_then(|(n, _)| n.rsplit(' ').next()?.parse().ok())
    };
    Some((count("passed")?, count("failed")?))
}

/// Waits (bounded) for what the run made to go, then names what it left:
/// entries and mounts named after its pids, its processes, and any change
/// of the machine's own namespace.
fn leak_check(run: &Run, watch: &Watch, baseline: &Baseline) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let ours = leaks::recorded_pids(&run.dir)?;
        let foreign_after = leaks::foreign(&ours);
        let after = leaks::machine_view(watch).context("looking at the machine's namespace")?;
        let mut found = run
            .leftovers(watch, &baseline.processes)
            .context("looking for what the run left")?;
        found.extend(leaks::machine_changes(
            &baseline.machine,
            &after,
            &baseline.foreign,
            &foreign_after,
        ));
        if found.is_empty() {
            return Ok(());
        }
        // Links of a daemon that just stopped are released from a kernel
        // work queue; a test's last process may still be exiting.
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the suites left things behind:\n  {}", found.join("\n  "));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The machine's namespace, the other runs' sandboxes and this run's
/// binaries' processes (a demo, say) before the suites.
struct Baseline {
    machine: MachineView,
    foreign: Foreign,
    processes: Vec<leaks::Proc>,
}

#[cfg(test)]
mod tests {
    use super::test_result;

    #[test]
    fn test_result_lines_are_counted() {
        assert_eq!(
            test_result(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 1.2s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            test_result(
                "test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((4, 2))
        );
        assert_eq!(test_result("running 3 tests"), None);
    }
}
