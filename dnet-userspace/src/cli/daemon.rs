//! `dnet daemon`: the control plane, in the foreground.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use tracing_subscriber::EnvFilter;

use crate::{
    api::server,
    engine::{Config, Engine},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The uplink interface (default: the interface of the default route).
    #[arg(long)]
    uplink: Option<String>,
    /// Where the state (and the containers' namespaces and logs) live.
    #[arg(long, default_value = "/var/lib/dnet")]
    state_dir: PathBuf,
    /// The daemon's bpffs folder: maps and links are pinned there.
    #[arg(long, default_value = "/sys/fs/bpf/dnet")]
    bpffs: PathBuf,
    /// Log filter when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: String,
}

pub fn run(args: &Args, socket: &Path) -> ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = Config {
        uplink: args.uplink.clone(),
        state_dir: args.state_dir.clone(),
        bpffs: args.bpffs.clone(),
    };
    let r = rt.block_on(async {
        let engine = Engine::start(cfg).await.map_err(anyhow::Error::from)?;
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("stopping (containers and forwarding stay)");
        };
        server::serve(engine, socket, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("API socket {}: {e}", socket.display()))?;
        let _ = std::fs::remove_file(socket);
        anyhow::Ok(())
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = super::describe(&e);
            tracing::error!("{msg}");
            eprintln!("Error: {msg}");
            ExitCode::FAILURE
        }
    }
}
