//! What the three sides have in common: where each measurement's client
//! runs and which address it talks to, the servers, and the operations of
//! the published-port and control-plane measurements.

use std::{
    net::Ipv4Addr,
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
            cpu,
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
/// conntest echo that tells which source address arrived (NAT or not).
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
    wait_listening(world, PROBE_PORT)
}

/// Does a container reach the world through source NAT? `Ok` when the
/// world saw the uplink's address.
pub fn probe_nat(
    client: &Path,
    tools: &Tools,
    world_ip: Ipv4Addr,
    uplink: Ipv4Addr,
) -> Outcome<()> {
    let target = format!("{world_ip}:{PROBE_PORT}");
    let o = in_netns(
        client,
        None,
        tools.conntest(),
        &["tcp", &target, "--timeout", "2"],
    )
    .output()
    .context("conntest")?;
    let seen = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    if !o.status.success() {
        return Err(Miss::Na(
            "n/a (not built yet): a container gets no answer from the world (no outbound NAT)"
                .into(),
        ));
    }
    if !seen.starts_with(&format!("{uplink}:")) {
        return Err(Miss::Na(format!(
            "n/a (not built yet): the world saw {seen}, not the uplink address (no NAT)"
        )));
    }
    Ok(())
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
