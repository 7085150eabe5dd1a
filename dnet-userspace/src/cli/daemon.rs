//! `dnet daemon`: the control plane, in the foreground.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use tracing_subscriber::EnvFilter;

use crate::{
    api::server,
    engine::{Config, Engine, NatOptions, conntrack::Timeouts},
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
    /// Source ports for translated flows (reserved from the host's own
    /// ephemeral ports).
    #[arg(long, default_value = "49152-60999", value_parser = parse_range)]
    nat_ports: (u16, u16),
    /// Size of the conntrack map, in entries (a flow takes two).
    #[arg(long, default_value_t = dnet_common::maps::CT_ENTRIES)]
    ct_entries: u32,
    /// Idle timeout of a TCP flow before its answer, in seconds.
    #[arg(long, default_value_t = 60)]
    ct_timeout_tcp_syn: u64,
    /// Idle timeout of an established TCP flow, in seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    ct_timeout_tcp_established: u64,
    /// Idle timeout of a closing TCP flow (FIN both ways, or RST), in seconds.
    #[arg(long, default_value_t = 30)]
    ct_timeout_tcp_closing: u64,
    /// Idle timeout of a UDP flow, in seconds.
    #[arg(long, default_value_t = 60)]
    ct_timeout_udp: u64,
    /// Idle timeout of an ICMP echo flow, in seconds.
    #[arg(long, default_value_t = 30)]
    ct_timeout_icmp: u64,
    /// How often expired flows are collected, in seconds.
    #[arg(long, default_value_t = 5)]
    ct_gc_interval: u64,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected LOW-HIGH"))?;
    let a: u16 = a.parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?}: expected 1 <= LOW <= HIGH"));
    }
    Ok((a, b))
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
    let secs = Duration::from_secs;
    let cfg = Config {
        uplink: args.uplink.clone(),
        state_dir: args.state_dir.clone(),
        bpffs: args.bpffs.clone(),
        nat: NatOptions {
            ports: args.nat_ports,
            ct_entries: args.ct_entries,
            timeouts: Timeouts {
                tcp_syn: secs(args.ct_timeout_tcp_syn),
                tcp_established: secs(args.ct_timeout_tcp_established),
                tcp_closing: secs(args.ct_timeout_tcp_closing),
                udp: secs(args.ct_timeout_udp),
                icmp: secs(args.ct_timeout_icmp),
            },
            gc_interval: secs(args.ct_gc_interval.max(1)),
        },
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
