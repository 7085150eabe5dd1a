//! `cargo xtask test`: every suite, then a check that nothing was left
//! behind in the machine's own namespace.

use std::{collections::BTreeSet, path::Path, process::Command};

use anyhow::bail;

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
    // Only what appears during this run counts: a machine may carry
    // leftovers of an earlier, interrupted run (those are reported, not
    // blamed on these suites).
    reap_stale();
    let before = leftovers();
    if !before.is_empty() {
        eprintln!(
            "note: already present before the suites (not removed): {}",
            before.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let result = run_cmd(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["test", "--workspace", "--exclude", "dnet-ebpf", "--"])
            .args(&args.rest)
            .env("DNET_BIN", bin.join("dnet"))
            .env("CONNTEST_BIN", bin.join("conntest")),
    );
    let leaks: Vec<String> = leftovers().difference(&before).cloned().collect();
    if !leaks.is_empty() {
        bail!("the suites left things behind: {}", leaks.join(", "));
    }
    result
}

/// Sandbox namespaces and bpffs folders (the suites' names start with
/// `dnt`) present in the machine's own view.
fn leftovers() -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        v.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with("dnt"))
                .map(|n| format!("namespace {n}")),
        );
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
        v.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("dnt"))
                .map(|n| format!("bpffs folder {n}")),
        );
    }
    v
}
