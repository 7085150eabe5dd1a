//! What the three sides have in common: where each measurement's client
//! runs and which address it talks to, the servers, and the operations of
//! the published-port and control-plane measurements.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use super::{
    measure::Ctx,
    sys::{self, Procs, in_netns},
};

pub const IPERF_PORT: u16 = 5201;
pub const SOCKPERF_PORT: u16 = 11111;
pub const CONNRATE_PORT: u16 = 7000;
pub const PROBE_PORT: u16 = 7100;
/// The IPv6 servers of the world (connrate, the NAT probe), on `[::]`:
/// the IPv4 ones hold `0.0.0.0` of their own ports.
pub const CONNRATE6_PORT: u16 = 7001;
pub const PROBE6_PORT: u16 = 7101;
/// The IPv6 uplink and world addresses every side with an IPv6 world gets
/// (`2001:2::/48`, IPv6's benchmarking range, RFC 5180).
pub const WORLD_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub const UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// The IPv6 subnet of the default bridge network on dnet's and docker0's
/// sides (`--fixed-cidr-v6`), and of the limit's namespaces.
pub const BRIDGE_CIDR6: &str = "fd00:d6e7::/64";
/// The measured published port (host port = container port).
pub const PP_PORT: u16 = 20000;
/// Ports published by others before the measured one: from here up.
pub const FILLER_FIRST: u16 = 30000;
/// The control plane's "publish P ports" test: from here up.
pub const PUBLISH_FIRST: u16 = 42000;

/// What the fake upstream resolver in the world answers for names under
/// `example.` (`conntest dns serve`), on port 53 of the world's address.
pub const DNS_UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
/// The name every side forwards to that upstream.
pub const DNS_FORWARDED: &str = "host.example";

/// A resolver to measure: dnsperf runs in `client` (a container) and asks
/// `server`; `name` is another container's name there, with address
/// `name_ip`; query files go to `dir`.
#[derive(Clone)]
pub struct DnsTarget {
    pub client: PathBuf,
    pub server: Ipv4Addr,
    pub name: String,
    pub name_ip: Ipv4Addr,
    pub dir: PathBuf,
}

/// The binaries the benchmark runs.
#[derive(Clone)]
pub struct Tools {
    pub dnet: PathBuf,
    pub conntest: PathBuf,
    pub connrate: PathBuf,
}

impl Tools {
    pub fn connrate(&self) -> &str {
        self.connrate.to_str().expect("utf-8 path")
    }
    pub fn conntest(&self) -> &str {
        self.conntest.to_str().expect("utf-8 path")
    }
}

/// Why a side has no figure for a measurement.
#[derive(Debug)]
pub enum Miss {
    /// It does not apply or is not built: the same every round.
    Na(String),
    /// This round failed.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Miss {
    fn from(e: anyhow::Error) -> Self {
        Miss::Failed(e)
    }
}

pub type Outcome<T> = Result<T, Miss>;

/// Control-plane figures, in seconds, keyed by metric id.
pub type CpFigures = Vec<(&'static str, f64)>;

/// One side of the table (dnet, docker0, limit, in that order).
pub trait Env {
    /// The column's name: `dnet`, `docker0`, `docker0 (model)`, `limit`.
    fn label(&self) -> String;
    /// What this side is, for the report.
    fn describe(&self) -> String;
    /// Namespaces whose conntrack table is emptied before each measurement.
    fn conntrack_netns(&self) -> Vec<PathBuf>;
    /// East-west: the client's namespace and the server's address (iperf3,
    /// sockperf and connrate listen there).
    fn east_west(&self) -> (PathBuf, Ipv4Addr);
    /// North-south: the client's namespace (a container) and the world
    /// server's address; `Na` when this side cannot reach the world
    /// through NAT.
    fn north_south(&self) -> Outcome<(PathBuf, Ipv4Addr)>;
    /// East-west over IPv6, between the two dual-stack containers of
    /// `east_west`: the client's namespace and the server's IPv6 address;
    /// `Na` for a side without IPv6.
    fn east_west6(&self) -> Outcome<(PathBuf, Ipv6Addr)> {
        Err(Miss::Na(format!("n/a: {} has no IPv6", self.label())))
    }
    /// North-south over IPv6: the client's namespace (a dual-stack
    /// container) and the world server's IPv6 address; `Na` when this side
    /// cannot reach the world through NAT66.
    fn north_south6(&self) -> Outcome<(PathBuf, Ipv6Addr)> {
        Err(Miss::Na(format!("n/a: {} has no IPv6", self.label())))
    }
    /// The world namespace, where published-port clients run.
    fn world(&self) -> PathBuf;
    /// Publishes [`PP_PORT`] on a fresh container, after `others` ports
    /// that other containers published first, and starts connrate behind
    /// it. Returns the address the world connects to.
    fn pp_setup(&mut self, others: u32) -> Outcome<(Ipv4Addr, u16)>;
    /// Undoes `pp_setup`.
    fn pp_teardown(&mut self) -> anyhow::Result<()>;
    /// Attach and detach `n` endpoints, publish `ports` ports on one
    /// container and remove it; seconds per operation batch.
    fn control_plane(&mut self, n: usize, ports: u32) -> Outcome<CpFigures>;
    /// The resolver containers of a user-defined network are given (made
    /// at the first call); `Na` for a side without one.
    fn dns(&mut self) -> Outcome<DnsTarget> {
        Err(Miss::Na(format!("n/a: {} has no resolver", self.label())))
    }
    /// A flood of 64-byte broadcasts from one member of a network of
    /// `members` (made at the first call): the time per copy delivered
    /// (`bc_copy`, ns) and copies delivered per second (`bc_rate`, kpps).
    fn broadcast(&mut self, _ctx: &Ctx, _members: usize) -> Outcome<CpFigures> {
        Err(Miss::Na("n/a (measured on dnet only)".into()))
    }
}

/// The fake upstream resolver (`conntest dns serve`) on port 53 of the
/// world's address, for forwarded names.
pub fn start_dns_upstream(
    procs: &mut Procs,
    world: &Path,
    world_ip: Ipv4Addr,
    tools: &Tools,
) -> anyhow::Result<()> {
    procs.spawn(in_netns(
        world,
        None,
        tools.conntest(),
        &[
            "dns",
            "serve",
            &format!("{world_ip}:53"),
            &DNS_UPSTREAM_ANSWER.to_string(),
        ],
    ))?;
    let up = sys::wait_for(Duration::from_secs(10), || {
        in_netns(world, None, "ss", &["-Hlun", "sport = :53"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    anyhow::ensure!(up, "the fake upstream resolver does not listen");
    Ok(())
}

/// CPU of the servers and of the clients when pinning (`--pin`).
pub fn server_cpu(pin: bool) -> Option<usize> {
    pin.then_some(1)
}
pub fn client_cpu(pin: bool) -> Option<usize> {
    pin.then_some(0)
}

/// CPUs of the request/response latency run: (client, server). With
/// `--pin` the client's and the servers' CPUs, as for every other run.
/// Without it both ends share one CPU. Left to the scheduler, a run lands
/// either with both ends on one CPU (each round trip a local wake-up,
/// ~5 µs here) or on two (each wake-up an IPI to a CPU that is busy with
/// others' work on a shared machine: p50 ~45 µs, p99 several ms), a coin
/// toss per run that outweighs any datapath's cost and made one side look
/// 5x slower than another. One CPU for both ends measures the path itself.
pub fn rr_cpus(pin: bool) -> (usize, usize) {
    match (client_cpu(pin), server_cpu(pin)) {
        (Some(c), Some(s)) => (c, s),
        _ => (RR_CPU, RR_CPU),
    }
}

/// The one CPU of an unpinned latency run (CPU 0 exists everywhere).
const RR_CPU: usize = 0;

/// Waits until something listens on TCP `port` in the namespace.
pub fn wait_listening(netns: &Path, port: u16) -> anyhow::Result<()> {
    let filter = format!("sport = :{port}");
    let up = sys::wait_for(Duration::from_secs(10), || {
        in_netns(netns, None, "ss", &["-Hltn", &filter])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    anyhow::ensure!(up, "nothing listens on port {port} in {}", netns.display());
    Ok(())
}

/// The east-west servers: iperf3, sockperf, connrate.
pub fn start_servers(
    procs: &mut Procs,
    netns: &Path,
    tools: &Tools,
    pin: bool,
    sockperf: bool,
) -> anyhow::Result<()> {
    let cpu = server_cpu(pin);
    procs.spawn(in_netns(
        netns,
        cpu,
        "iperf3",
        &["-s", "-p", &IPERF_PORT.to_string()],
    ))?;
    procs.spawn(in_netns(
        netns,
        cpu,
        tools.connrate(),
        &["serve", &CONNRATE_PORT.to_string()],
    ))?;
    if sockperf {
        procs.spawn(in_netns(
            netns,
            Some(rr_cpus(pin).1),
            "sockperf",
            &[
                "sr",
                "--tcp",
                "-i",
                "0.0.0.0",
                "-p",
                &SOCKPERF_PORT.to_string(),
            ],
        ))?;
    }
    wait_listening(netns, IPERF_PORT)?;
    wait_listening(netns, CONNRATE_PORT)?;
    if sockperf {
        wait_listening(netns, SOCKPERF_PORT)?;
    }
    Ok(())
}

/// The world's servers: iperf3 and connrate for the measurements, and a
/// conntest echo that tells which source address arrived (NAT or not);
/// connrate and the echo also on IPv6 ports of their own.
pub fn start_world_servers(
    procs: &mut Procs,
    world: &Path,
    tools: &Tools,
    pin: bool,
) -> anyhow::Result<()> {
    start_servers(procs, world, tools, pin, false)?;
    procs.spawn(in_netns(
        world,
        None,
        tools.conntest(),
        &["serve", "tcp", &PROBE_PORT.to_string()],
    ))?;
    procs.spawn(in_netns(
        world,
        server_cpu(pin),
        tools.connrate(),
        &["serve", &format!("[::]:{CONNRATE6_PORT}")],
    ))?;
    procs.spawn(in_netns(
        world,
        None,
        tools.conntest(),
        &["serve", "tcp", &format!("[::]:{PROBE6_PORT}")],
    ))?;
    for port in [PROBE_PORT, CONNRATE6_PORT, PROBE6_PORT] {
        wait_listening(world, port)?;
    }
    Ok(())
}

/// `ip ARGS` inside a namespace.
pub fn ip_in(netns: &Path, args: &[&str]) -> anyhow::Result<()> {
    sys::ok(&mut in_netns(netns, None, "ip", args))
}

/// Gives a sandbox's uplink (`eth0` of `host`) and world (`eth0` of
/// `world`) their IPv6 addresses, usable at once, and the host a default
/// IPv6 route through the world, as IPv4 has.
pub fn world6(host: &Path, world: &Path) -> anyhow::Result<()> {
    for (ns, ip) in [(host, UPLINK_IP6), (world, WORLD_IP6)] {
        sys::sysctl_in(ns, &["net.ipv6.conf.eth0.disable_ipv6=0"])?;
        ip_in(
            ns,
            &[
                "addr",
                "replace",
                &format!("{ip}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
    }
    ip_in(
        host,
        &[
            "-6",
            "route",
            "replace",
            "default",
            "via",
            &WORLD_IP6.to_string(),
        ],
    )
}

/// One TCP connection from `client` to the world's probe server at
/// `target`: the client address the world saw, `None` without an answer.
fn seen_by_world(client: &Path, tools: &Tools, target: &str) -> anyhow::Result<Option<String>> {
    let o = in_netns(
        client,
        None,
        tools.conntest(),
        &["tcp", target, "--timeout", "2"],
    )
    .output()
    .context("conntest")?;
    Ok(o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned()))
}

/// Does a container reach the world through source NAT? `Ok` when the
/// world saw the uplink's address.
pub fn probe_nat(
    client: &Path,
    tools: &Tools,
    world_ip: Ipv4Addr,
    uplink: Ipv4Addr,
) -> Outcome<()> {
    let Some(seen) = seen_by_world(client, tools, &format!("{world_ip}:{PROBE_PORT}"))? else {
        return Err(Miss::Na(
            "n/a (not built yet): a container gets no answer from the world (no outbound NAT)"
                .into(),
        ));
    };
    if !seen.starts_with(&format!("{uplink}:")) {
        return Err(Miss::Na(format!(
            "n/a (not built yet): the world saw {seen}, not the uplink address (no NAT)"
        )));
    }
    Ok(())
}

/// Does a container reach the world through NAT66? `Ok` when the world
/// saw the uplink's IPv6 address; else why not, with `no_answer` saying
/// why when the world got nothing.
pub fn probe_nat6(client: &Path, tools: &Tools, no_answer: impl FnOnce() -> Miss) -> Outcome<()> {
    let target = SocketAddr::new(WORLD_IP6.into(), PROBE6_PORT).to_string();
    let Some(seen) = seen_by_world(client, tools, &target)? else {
        return Err(no_answer());
    };
    match seen.parse::<SocketAddr>() {
        Ok(a) if a.ip() == IpAddr::V6(UPLINK_IP6) => Ok(()),
        _ => Err(Miss::Na(format!(
            "n/a: the world saw {seen}, not the uplink's IPv6 address (no NAT66)"
        ))),
    }
}

/// Can the world open connections to a published port? Three tries.
pub fn probe_published(world: &Path, tools: &Tools, ip: Ipv4Addr, port: u16) -> bool {
    let target = format!("{ip}:{port}");
    in_netns(
        world,
        None,
        tools.connrate(),
        &[
            "run",
            &target,
            "--seconds",
            "3",
            "--max",
            "3",
            "--workers",
            "1",
            "--timeout",
            "1",
        ],
    )
    .output()
    .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpinned_latency_run_has_both_ends_on_one_cpu() {
        let (client, server) = rr_cpus(false);
        assert_eq!(client, server);
    }

    #[test]
    fn a_pinned_latency_run_keeps_the_pinned_cpus() {
        assert_eq!(
            rr_cpus(true),
            (client_cpu(true).unwrap(), server_cpu(true).unwrap())
        );
    }
}
