//! `cargo xtask setup`: idempotent, so every other task runs it first.
//!
//! - `rust-src`, for `-Z build-std=core` on the BPF target, and `rustfmt`,
//!   for the suite's format check;
//! - bpf-linker 0.13, built against the LLVM that ships with rustc (the two
//!   must share a major version, and no Debian package has LLVM 22): into
//!   `.tools/bin`, linked through `.tools/llvm/lib`;
//! - the Debian packages the tests and the demo call, and the container
//!   runtimes the scenarios drive (docker.io), with their services kept off.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::run_cmd;

const BPF_LINKER_VERSION: &str = "0.13.0";

/// (command, Debian package) the suites and the demo need.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
    ("arping", "iputils-arping"),
    ("conntrack", "conntrack"),
    // A static busybox for the root folder of the runtimes' containers.
    ("busybox", "busybox-static"),
];

/// Container runtimes the scenarios drive, installed with their services
/// kept from starting (they run in sandboxes only).
/// The Docker suite drives dockerd, the CNI suite podman 4 (its CNI
/// backend) and containerd's `ctr`.
/// Commands are looked up on `PATH`, a path as it is.
const RUNTIMES: &[(&str, &str)] = &[
    ("ctr", "containerd"),
    // Podman's network stack: the CNI plugins (not netavark).
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    ("podman", "podman"),
    ("dockerd", "docker.io"),
];

pub fn run(root: &Path) -> anyhow::Result<()> {
    rust_src()?;
    rustfmt()?;
    bpf_linker(root)?;
    packages(PACKAGES)?;
    runtimes()?;
    Ok(())
}

/// Installs the missing [`RUNTIMES`] with no service started: a daemon
/// started by its package would change the machine's own network
/// (docker0, iptables). A `policy-rc.d` that refuses every start is in
/// place while apt runs.
pub fn runtimes() -> anyhow::Result<()> {
    if RUNTIMES.iter().all(|(cmd, _)| on_path(cmd)) {
        return Ok(());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask setup: no service starts while it installs runtimes\nexit 101\n",
        )?;
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(policy, fs::Permissions::from_mode(0o755))?;
    }
    let r = packages(RUNTIMES);
    if ours {
        let _ = fs::remove_file(policy);
    }
    r
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8(o.stdout)?)
}

fn sysroot() -> anyhow::Result<String> {
    Ok(output(Command::new("rustc").args(["--print", "sysroot"]))?
        .trim()
        .to_owned())
}

fn rust_src() -> anyhow::Result<()> {
    let lib = Path::new(&sysroot()?).join("lib/rustlib/src/rust/library/core");
    if lib.is_dir() {
        return Ok(());
    }
    eprintln!("xtask: installing the rust-src component");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn rustfmt() -> anyhow::Result<()> {
    let here = Command::new(env!("CARGO"))
        .args(["fmt", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if here {
        return Ok(());
    }
    eprintln!("xtask: installing the rustfmt component");
    run_cmd(Command::new("rustup").args(["component", "add", "rustfmt"]))
}

fn bpf_linker(root: &Path) -> anyhow::Result<()> {
    let tools = root.join(".tools");
    let bin = tools.join("bin/bpf-linker");
    if bin.is_file()
        && Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    // The LLVM major version and the shared library rustc ships.
    let vv = output(Command::new("rustc").arg("-vV"))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV names no LLVM version")?;
    let major = llvm.split('.').next().context("LLVM version")?;
    let sysroot_lib = Path::new(&sysroot()?).join("lib");
    let libllvm = fs::read_dir(&sysroot_lib)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        // The real library, not the small linker script beside it.
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .context("no libLLVM in the toolchain")?;
    let prefix = tools.join("llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so".into(), libllvm.file_name().unwrap().to_owned()] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} (a few minutes)"
    );
    run_cmd(
        Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .arg("--root")
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix),
    )
}

fn on_path(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return Path::new(cmd).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Installs the Debian packages whose commands are missing.
pub fn packages(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
