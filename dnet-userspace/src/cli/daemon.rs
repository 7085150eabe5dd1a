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
    /// Only these sources (IPv4 or IPv6 CIDR, repeatable) open flows to
    /// published ports from the world; others are dropped
    /// (`source-not-allowed`), IPv6 sources too when only IPv4 prefixes
    /// are listed. Default: any. The host and containers are not concerned.
    #[arg(long = "publish-from")]
    publish_from: Vec<ipnetwork::IpNetwork>,
    /// Size of the conntrack map, in entries (a flow takes two): 256 to
    /// 16777216. Checked before anything is loaded: a pinned table of
    /// another size is made anew only once the value is known good.
    #[arg(long, default_value_t = dnet_common::maps::CT_ENTRIES,
          value_parser = clap::value_parser!(u32).range(256..=16_777_216))]
    ct_entries: u32,
    /// Idle timeout of a half-open TCP flow (before the handshake completes
    /// with the opener's ACK), in seconds.
    #[arg(long, default_value_t = 60)]
    ct_timeout_tcp_syn: u64,
    /// Idle timeout of an established TCP flow, in seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    ct_timeout_tcp_established: u64,
    /// Idle timeout of a closing TCP flow (FIN both ways, or RST), in seconds.
    #[arg(long, default_value_t = 30)]
    ct_timeout_tcp_closing: u64,
    /// Idle timeout of a UDP flow answered at least once, in seconds.
    #[arg(long, default_value_t = 60)]
    ct_timeout_udp: u64,
    /// Idle timeout of a UDP flow seen one way only, in seconds.
    #[arg(long, default_value_t = 30)]
    ct_timeout_udp_unreplied: u64,
    /// Idle timeout of an ICMP echo flow, in seconds.
    #[arg(long, default_value_t = 30)]
    ct_timeout_icmp: u64,
    /// How often expired flows are collected, in seconds.
    #[arg(long, default_value_t = 5)]
    ct_gc_interval: u64,
    /// Most live flows one container may have opened (to the world, or to
    /// a published port of the host); beyond it new ones are dropped
    /// (`conntrack-endpoint-limit`). Default: three quarters of the
    /// table's flows (--ct-entries / 2); 0: no limit.
    #[arg(long)]
    ct_flows_per_endpoint: Option<u32>,
    /// Most NAT ports one container may hold towards one destination
    /// (address, port, protocol); beyond it new flows there are dropped
    /// (`nat-destination-limit`). Default: three quarters of --nat-ports;
    /// 0: no limit.
    #[arg(long)]
    nat_ports_per_destination: Option<u32>,
    /// Where to serve Docker's remote network driver; the file name is the
    /// driver's name (`docker network create -d dnet`). Empty: not served.
    // Text, not a path: clap refuses an empty path.
    #[arg(long, default_value = crate::docker::DEFAULT_SOCKET)]
    docker_plugin_socket: String,
    /// dockerd's own API socket, where the driver learns the names of
    /// Docker's networks and whose IPAM they use (Docker does not send
    /// them); asked outside the driver's calls. Empty: not asked.
    #[arg(long, default_value = crate::docker::DEFAULT_API_SOCKET)]
    docker_api_socket: String,
    /// Where the resolver forwards names that are not containers'
    /// (IP[:PORT], repeatable; default: the first three nameservers of
    /// --resolv-conf, followed as it changes), queried from the daemon's
    /// namespace.
    #[arg(long = "dns-upstream", value_parser = crate::dns::parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// The host's resolv.conf: the resolver's default upstreams and the
    /// `search` and `options` containers get, followed as it changes
    /// (for example /run/systemd/resolve/resolv.conf, the upstreams of
    /// systemd-resolved rather than its stub).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// How long an attach into a namespace waits for the removal of an
    /// earlier interface there (whose name it may take) before it fails,
    /// in seconds. The daemon answers other requests meanwhile.
    #[arg(long, default_value_t = 10)]
    removal_wait: u64,
    /// The default `bridge` network is dual-stack (when it is made, with a
    /// new state).
    #[arg(long)]
    ipv6: bool,
    /// The IPv6 subnet of the default `bridge` network (with --ipv6; /48 to
    /// /64; default: a /64 of the daemon's ULA /48).
    #[arg(long)]
    fixed_cidr_v6: Option<ipnetwork::Ipv6Network>,
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

/// Longest accepted conntrack timeout and --removal-wait (a week), and GC
/// interval (an hour).
const MAX_TIMEOUT: u64 = 7 * 24 * 3600;
const MAX_GC_INTERVAL: u64 = 3600;

/// The per-container limits: the options (0: no limit), else their
/// defaults. Each given one is bounded by what it limits: the table's
/// flows, the NAT port range.
fn limits(args: &Args) -> anyhow::Result<(u32, u32)> {
    let flows = args.ct_entries / 2;
    let ports = (args.nat_ports.1 as u32).saturating_sub(args.nat_ports.0 as u32) + 1;
    let per_ep = args
        .ct_flows_per_endpoint
        .unwrap_or_else(|| NatOptions::default_flows_per_endpoint(args.ct_entries));
    if per_ep > flows {
        anyhow::bail!(
            "--ct-flows-per-endpoint {per_ep}: expected 0 (no limit) to {flows} (the table's flows, --ct-entries / 2)"
        );
    }
    let per_dest = args
        .nat_ports_per_destination
        .unwrap_or_else(|| NatOptions::default_ports_per_destination(args.nat_ports));
    if per_dest > ports {
        anyhow::bail!(
            "--nat-ports-per-destination {per_dest}: expected 0 (no limit) to {ports} (the ports of --nat-ports)"
        );
    }
    Ok((per_ep, per_dest))
}

/// The abstract Unix socket a daemon holds while it runs. Abstract names
/// belong to a network namespace, so it keeps a second daemon out of the
/// namespace (their objects would clash) and goes away with the process,
/// even after a SIGKILL.
const INSTANCE_LOCK: &[u8] = b"dnet-daemon";

/// Checks the options and takes the namespace's daemon lock. Changes nothing
/// on the host.
fn preflight(args: &Args) -> anyhow::Result<std::os::unix::net::UnixListener> {
    for (name, v) in [
        ("--ct-timeout-tcp-syn", args.ct_timeout_tcp_syn),
        (
            "--ct-timeout-tcp-established",
            args.ct_timeout_tcp_established,
        ),
        ("--ct-timeout-tcp-closing", args.ct_timeout_tcp_closing),
        ("--ct-timeout-udp", args.ct_timeout_udp),
        ("--ct-timeout-udp-unreplied", args.ct_timeout_udp_unreplied),
        ("--ct-timeout-icmp", args.ct_timeout_icmp),
        ("--removal-wait", args.removal_wait),
    ] {
        if v == 0 || v > MAX_TIMEOUT {
            anyhow::bail!("{name} {v}: expected 1 to {MAX_TIMEOUT} seconds");
        }
    }
    if args.ct_gc_interval == 0 || args.ct_gc_interval > MAX_GC_INTERVAL {
        anyhow::bail!(
            "--ct-gc-interval {}: expected 1 to {MAX_GC_INTERVAL} seconds",
            args.ct_gc_interval
        );
    }
    limits(args)?;
    if let Some(c) = args.fixed_cidr_v6 {
        if !args.ipv6 {
            anyhow::bail!("--fixed-cidr-v6 {c} needs --ipv6");
        }
        crate::ipam::check_default_subnet6(c)
            .map_err(|e| anyhow::anyhow!("--fixed-cidr-v6: {e}"))?;
    }
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map_err(|e| anyhow::anyhow!("read /proc/sys/net/ipv4/ip_local_port_range: {e}"))?;
    check_nat_ports(args.nat_ports, &range)?;
    crate::datapath::check_bpffs(&args.bpffs).map_err(|e| anyhow::anyhow!("--bpffs: {e}"))?;
    take_instance_lock()
}

/// The NAT ports are reserved out of the host's ephemeral range
/// (`ip_local_port_range`): they must leave the host enough of it for its
/// own outgoing connections (at least half of it, or 4096 ports).
fn check_nat_ports((lo, hi): (u16, u16), range: &str) -> anyhow::Result<()> {
    let mut it = range.split_whitespace().map(str::parse::<u32>);
    let (Some(Ok(elo)), Some(Ok(ehi))) = (it.next(), it.next()) else {
        anyhow::bail!("cannot read ip_local_port_range {range:?}");
    };
    let (lo, hi) = (u32::from(lo), u32::from(hi));
    let total = ehi.saturating_sub(elo) + 1;
    let (a, b) = (lo.max(elo), hi.min(ehi));
    let overlap = if a <= b { b - a + 1 } else { 0 };
    let left = total - overlap.min(total);
    let need = (total / 2).min(4096);
    if left < need {
        anyhow::bail!(
            "--nat-ports {lo}-{hi} takes {overlap} of the host's {total} ephemeral ports \
             ({elo}-{ehi}, net.ipv4.ip_local_port_range) and leaves it {left}: \
             the host needs at least {need} for its own connections; \
             choose a smaller range or widen ip_local_port_range"
        );
    }
    Ok(())
}

fn take_instance_lock() -> anyhow::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt as _;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(INSTANCE_LOCK)?;
    std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "another dnet daemon runs in this network namespace \
                 (it holds the abstract socket @dnet-daemon); one daemon per namespace"
            )
        } else {
            anyhow::anyhow!("bind the abstract socket @dnet-daemon: {e}")
        }
    })
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
    // Everything a start can be refused for is checked before anything is
    // made: a refused start leaves no state folder, socket or pin.
    let lock = match preflight(args) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("Error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let secs = Duration::from_secs;
    // Checked by `preflight`.
    let (per_ep, per_dest) = limits(args).unwrap_or_default();
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
                udp_unreplied: secs(args.ct_timeout_udp_unreplied),
                icmp: secs(args.ct_timeout_icmp),
                ..Timeouts::default()
            },
            gc_interval: secs(args.ct_gc_interval),
            publish_from: args.publish_from.clone(),
            flows_per_endpoint: per_ep,
            ports_per_destination: per_dest,
        },
        dns: crate::dns::Options {
            upstreams: args.dns_upstream.clone(),
        },
        resolv_conf: args.resolv_conf.clone(),
        removal_wait: secs(args.removal_wait),
        ipv6: args.ipv6,
        fixed_cidr_v6: args.fixed_cidr_v6,
    };
    let r = rt.block_on(async {
        let engine = Engine::start(cfg).await.map_err(anyhow::Error::from)?;
        // One signal stops every server.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stop = std::sync::Arc::new(stop);
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let on_signal = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("stopping (containers and forwarding stay)");
            let _ = on_signal.send(true);
        });
        // The engine answers now: Docker may find the driver.
        let plugin = if args.docker_plugin_socket.is_empty() {
            None
        } else {
            let path = PathBuf::from(&args.docker_plugin_socket);
            let listener = crate::docker::bind(&path).map_err(|e| {
                anyhow::anyhow!(
                    "Docker plugin socket {}: {e} (--docker-plugin-socket '' turns the driver off)",
                    path.display()
                )
            })?;
            if !args.docker_api_socket.is_empty() {
                let driver = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                crate::docker::spawn_learner(
                    &engine,
                    PathBuf::from(&args.docker_api_socket),
                    driver,
                );
            }
            let engine = engine.clone();
            let stopped = until_stopped(stopped.clone());
            Some(tokio::spawn(async move {
                crate::docker::serve(engine, listener, &path, stopped)
                    .await
                    .map_err(|e| anyhow::anyhow!("Docker plugin socket {}: {e}", path.display()))
            }))
        };
        let api = server::serve(engine.clone(), socket, until_stopped(stopped))
            .await
            .map_err(|e| anyhow::anyhow!("API socket {}: {e}", socket.display()));
        let _ = std::fs::remove_file(socket);
        // Removals still finishing in the background end here (a few tens
        // of milliseconds each); what a bound cuts short, the next start
        // removes.
        if tokio::time::timeout(std::time::Duration::from_secs(5), engine.settle())
            .await
            .is_err()
        {
            tracing::warn!("link removals still under way: the next start finishes them");
        }
        // The API is gone (stopped, or it failed): so is the driver.
        let _ = stop.send(true);
        if let Some(p) = plugin {
            match p.await {
                Ok(r) => r?,
                Err(e) => anyhow::bail!("the Docker plugin server failed: {e}"),
            }
        }
        api?;
        anyhow::Ok(())
    });
    drop(lock);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_ports_leave_the_host_its_ephemeral_ports() {
        let linux = "32768\t60999\n";
        // The default takes 11848 of 28232: fine.
        check_nat_ports((49152, 60999), linux).unwrap();
        // Outside the range entirely: fine.
        check_nat_ports((20000, 29999), linux).unwrap();
        // The whole range, or nearly: refused.
        assert!(check_nat_ports((32768, 60999), linux).is_err());
        assert!(check_nat_ports((1024, 65535), linux).is_err());
        assert!(check_nat_ports((33000, 60999), linux).is_err());
        // A small host range the default swallows.
        assert!(check_nat_ports((49152, 60999), "50000 60000").is_err());
        assert!(check_nat_ports((49152, 60999), "garbage").is_err());
    }
}
