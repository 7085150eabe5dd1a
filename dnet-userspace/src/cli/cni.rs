//! `dnet cni install`: puts `dnet-cni` and a conflist for one dnet network
//! where CNI runtimes look.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;

use crate::api::{
    NetworkView,
    client::{Client, segment},
};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install the dnet-cni plugin and a conflist (`10-dnet-NETWORK.conflist`)
    /// that attaches containers to a dnet network.
    Install(InstallArgs),
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Where runtimes look for plugins.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// Where runtimes look for network configurations.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// The CNI network's name (what `podman run --network` takes); default
    /// the dnet network's name.
    #[arg(long)]
    pub name: Option<String>,
    /// The dnet network containers attach to.
    pub network: String,
}

pub async fn run(cmd: &Command, client: &Client, socket: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Install(a) => install(a, client, socket).await,
    }
}

/// The conflist for `network`: spec 1.0.0 (libcni 1.1.2, in podman 4.3 and
/// containerd 1.6, parses no later version) with the capabilities dnet-cni
/// takes.
pub fn conflist(name: &str, network: &str, socket: &Path) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "dnet-cni",
            "network": network,
            "socket": socket,
            "capabilities": {"portMappings": true, "ips": true, "mac": true},
        }],
    })
}

async fn install(a: &InstallArgs, client: &Client, socket: &Path) -> anyhow::Result<ExitCode> {
    // Everything is checked before anything is written.
    let net: NetworkView = client
        .get(&format!("/v1/networks/{}", segment(&a.network)))
        .await?;
    let name = a.name.clone().unwrap_or_else(|| net.name.clone());
    crate::spec::validate_name("CNI network", &name)?;
    let plugin = std::env::current_exe()
        .context("finding dnet's own binary")?
        .with_file_name("dnet-cni");
    if !plugin.is_file() {
        bail!(
            "{} is missing: dnet-cni is built beside dnet (cargo xtask build)",
            plugin.display()
        );
    }
    let socket = std::path::absolute(socket).context("the socket path")?;
    let list = serde_json::to_vec_pretty(&conflist(&name, &net.name, &socket))?;
    for d in [&a.bin_dir, &a.conf_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let bin = a.bin_dir.join("dnet-cni");
    let plugin_bytes =
        std::fs::read(&plugin).with_context(|| format!("reading {}", plugin.display()))?;
    write_atomic(&bin, &plugin_bytes, 0o755)?;
    let conf = a.conf_dir.join(format!("10-dnet-{}.conflist", net.name));
    write_atomic(&conf, &list, 0o644)?;
    println!("installed {}", bin.display());
    println!(
        "installed {} (CNI network {name:?} on dnet network {:?})",
        conf.display(),
        net.name
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `path` through a temporary file in the same folder and a rename,
/// so a runtime never runs or reads a half-written file.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let made = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made.with_context(|| format!("writing {}", path.display()))
}
