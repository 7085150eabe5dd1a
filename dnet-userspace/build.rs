//! Builds the eBPF object (`dnet-ebpf`) with aya-build; `src/datapath` embeds it.
//!
//! The BPF target has no prebuilt `core`, so the inner build needs
//! `-Z build-std=core`, which stable cargo accepts with `RUSTC_BOOTSTRAP=1`.
//! It is set here, for the inner build only, rather than for the whole
//! workspace. `bpf-linker` comes from the project's tools folder, where
//! `cargo xtask setup` builds it against the toolchain's own LLVM.
//!
//! aya-build relays every line of the inner build (`Compiling ...`) as a
//! `cargo:warning`, which cargo shows on every build. So this script runs
//! itself as a child that calls aya-build, reads what the child tells
//! cargo, and passes on its warnings only when the eBPF build fails, or
//! when the compiler warned about the eBPF code itself.

use std::{
    env,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow};

/// Set for the child, which does the build.
const CHILD: &str = "DNET_EBPF_BUILD_CHILD";

fn main() -> anyhow::Result<()> {
    if env::var_os(CHILD).is_some() {
        return build_ebpf();
    }
    let out = Command::new(env::current_exe().context("the build script's own path")?)
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the eBPF build")?;
    let said = String::from_utf8_lossy(&out.stdout);
    let (warnings, rest): (Vec<&str>, Vec<&str>) =
        said.lines().partition(|l| l.starts_with("cargo:warning="));
    for l in rest {
        println!("{l}");
    }
    let compiler_warned = warnings
        .iter()
        .any(|l| l.starts_with("cargo:warning=warning: ") && !l.contains("generated"));
    if !out.status.success() || compiler_warned {
        for l in warnings {
            println!("{l}");
        }
    }
    if !out.status.success() {
        return Err(anyhow!(
            "the eBPF build failed ({}): its output is above, as warnings",
            out.status
        ));
    }
    Ok(())
}

/// The build itself (in the child): aya-build, with `bpf-linker` on `PATH`.
fn build_ebpf() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .to_owned();
    let tools_bin = root.join(".tools").join("bin");
    println!(
        "cargo:rerun-if-changed={}",
        tools_bin.join("bpf-linker").display()
    );

    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools_bin.clone()];
    paths.extend(env::split_paths(&path));
    let path = env::join_paths(paths).context("PATH")?;
    if which_in("bpf-linker", &path).is_none() {
        return Err(anyhow!(
            "bpf-linker not found (looked in {} and PATH): run `cargo xtask setup`",
            tools_bin.display()
        ));
    }
    // SAFETY: build scripts are single-threaded until aya-build spawns cargo,
    // which inherits these variables.
    unsafe {
        env::set_var("PATH", &path);
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }

    let ebpf_dir = root.join("dnet-ebpf");
    let ebpf = aya_build::Package {
        name: "dnet-ebpf",
        root_dir: ebpf_dir.to_str().context("non-UTF-8 path")?,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom("stable"))
}

fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
