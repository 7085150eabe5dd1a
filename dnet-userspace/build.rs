//! Builds the eBPF object (`dnet-ebpf`) with aya-build; `src/datapath` embeds it.
//!
//! The BPF target has no prebuilt `core`, so the inner build needs
//! `-Z build-std=core`, which stable cargo accepts with `RUSTC_BOOTSTRAP=1`.
//! It is set here, for the inner build only, rather than for the whole
//! workspace. `bpf-linker` comes from the project's tools folder, where
//! `cargo xtask setup` builds it against the toolchain's own LLVM.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
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
