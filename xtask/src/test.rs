//! `cargo xtask test`: every suite, then a check that nothing was left
//! behind in the machine's own namespace.

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::{build, run_cmd, setup};

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
    let result = run_cmd(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["test", "--workspace", "--exclude", "dnet-ebpf", "--"])
            .args(&args.rest)
            .env("DNET_BIN", bin.join("dnet"))
            .env("CONNTEST_BIN", bin.join("conntest")),
    );
    let leaks = leftovers();
    if !leaks.is_empty() {
        bail!("the suites left things behind: {}", leaks.join("; "));
    }
    result
}

/// Sandbox namespaces and pins that outlived the suites.
fn leftovers() -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        let ns: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("dnt"))
            .map(str::to_owned)
            .collect();
        if !ns.is_empty() {
            v.push(format!("namespaces {}", ns.join(" ")));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
        let pins: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("dnt"))
            .collect();
        if !pins.is_empty() {
            v.push(format!("bpffs folders {}", pins.join(" ")));
        }
    }
    v
}
