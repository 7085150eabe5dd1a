//! The "Docker + dnet" side: real Docker containers on a dnet network
//! (`docker network create -d <driver>`, the driver served by a sandbox's
//! dnet daemon) against the same containers on docker0 of the same dockerd,
//! in the same run. Two columns, measured in interleaved rounds: east-west
//! (TCP throughput, 64-byte UDP, TCP request/response latency), one
//! published port from the world (requests/s, p99), and `docker run` to the
//! container's first packet (median and p99 over every run).
//!
//! `docker run` is also timed on a third column, a user-defined network of
//! Docker's own bridge driver: Docker gives every user-defined network (a
//! remote driver's as well as its own) the embedded DNS server, set up in
//! each new container's namespace before its process starts (a re-exec of
//! dockerd and eleven `iptables` commands), which docker0 has not. That
//! column tells Docker's own cost of a user-defined network from dnet's.
//!
//! One dnet daemon and one dockerd share the sandbox's host namespace, as on
//! a host that adopted dnet next to docker0; dnet starts first (the order
//! the README gives). It runs after the three main sides are gone: one
//! dockerd at a time in a process.

use std::{
    net::{Ipv4Addr, TcpListener},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dnet_sandbox::{
    Sandbox, UPLINK_IP, WORLD_IP,
    docker::{Dockerd, Turn},
};

use super::{
    env::{self, Miss, PP_PORT, Tools},
    measure::{self, Ctx},
    results::{Group, MetricDef, Results},
    sys::{self, Procs, in_netns},
};

const IMAGE: &str = "dnbench-busybox:latest";
/// Docker's network on dnet, and docker0's subnet (fixed, so that neither
/// depends on which of them claimed 172.17/16 first).
const DNET_SUBNET: &str = "10.88.0.0/16";
const DOCKER0_BIP: &str = "172.18.0.1/16";
/// The user-defined bridge network of the third column.
const BRIDGE_NET: &str = "dnb-bridge";
const BRIDGE_SUBNET: &str = "10.87.0.0/16";
/// The world's listener for `docker run` to first packet.
const FIRST_PORT: u16 = 7200;
/// The column names, in column order. The third is timed for `docker run`
/// only (its datapath is docker0's: the same bridge driver).
pub const COLUMNS: [&str; 3] = [
    "Docker on dnet",
    "Docker on docker0",
    "Docker on a user-defined bridge",
];

/// The metrics of this side, in table order.
pub fn metric_defs(runs: usize) -> Vec<MetricDef> {
    use Group::*;
    vec![
        MetricDef::new("dd_ew_tcp", EastWest, "TCP throughput", "Gbit/s", true),
        MetricDef::new(
            "dd_ew_udp",
            EastWest,
            "UDP 64-byte datagrams delivered",
            "kpps",
            true,
        ),
        MetricDef::new(
            "dd_ew_rr_p50",
            EastWest,
            "TCP request/response latency p50",
            "µs",
            false,
        ),
        MetricDef::new(
            "dd_ew_rr_p99",
            EastWest,
            "TCP request/response latency p99",
            "µs",
            false,
        ),
        MetricDef::new(
            "dd_pp_rps",
            Published,
            "1 port published (`docker run -p`): requests/s",
            "req/s",
            true,
        ),
        MetricDef::new(
            "dd_pp_p99",
            Published,
            "1 port published (`docker run -p`): request p99",
            "µs",
            false,
        ),
        MetricDef::new(
            "dd_run_p50",
            ControlPlane,
            format!("`docker run` to first packet in the world, median of {runs} runs"),
            "ms",
            false,
        ),
        MetricDef::new(
            "dd_run_p99",
            ControlPlane,
            format!("`docker run` to first packet in the world, p99 of {runs} runs"),
            "ms",
            false,
        ),
    ]
}

/// One column's containers: the east-west client's namespace, the server's
/// address, and the published port the world reaches.
struct Column {
    network: &'static str,
    ew_client: PathBuf,
    ew_server: Ipv4Addr,
    pp_port: u16,
}

pub struct DockerDnetEnv {
    procs: Procs,
    listener: FirstPacket,
    cols: [Column; 2],
    runs: usize,
    /// The daemon goes before the sandbox (its containers need the driver).
    dockerd: Dockerd,
    sb: Sandbox,
}

impl DockerDnetEnv {
    /// A sandbox whose dnet daemon serves the Docker driver, dockerd in its
    /// host namespace with docker0, and the containers of both columns.
    pub fn start(tools: &Tools, pin: bool) -> anyhow::Result<DockerDnetEnv> {
        let turn = Turn::take();
        let mut sb = std::panic::catch_unwind(Sandbox::without_daemon)
            .map_err(|_| anyhow::anyhow!("cannot make the sandbox"))?;
        let driver = sb.name.clone();
        let sock = format!("--docker-plugin-socket=/run/docker/plugins/{driver}.sock");
        let api = format!(
            "--docker-api-socket={}",
            sb.dir.join("docker/docker.sock").display()
        );
        sb.set_daemon_args(&[&sock, &api]);
        let sb = std::panic::catch_unwind(move || {
            sb.start_daemon();
            sb
        })
        .map_err(|_| anyhow::anyhow!("the dnet daemon did not start (see above)"))?;
        let dockerd = turn.start(
            &sb.host_netns_path(),
            &sb.dir,
            &sb.name,
            &["--userland-proxy=false", "--bip", DOCKER0_BIP],
        )?;
        dockerd.import_busybox(IMAGE)?;
        dockerd.cmd(&[
            "network",
            "create",
            "-d",
            &driver,
            "--subnet",
            DNET_SUBNET,
            "dnb-dnet",
        ])?;
        dockerd.cmd(&[
            "network",
            "create",
            "-d",
            "bridge",
            "--subnet",
            BRIDGE_SUBNET,
            BRIDGE_NET,
        ])?;
        let listener = FirstPacket::start(&sb.world_netns_path())?;
        let blank = |network| Column {
            network,
            ew_client: PathBuf::new(),
            ew_server: Ipv4Addr::UNSPECIFIED,
            pp_port: 0,
        };
        let mut e = DockerDnetEnv {
            procs: Procs::default(),
            listener,
            cols: [blank("dnb-dnet"), blank("bridge")],
            runs: 0,
            dockerd,
            sb,
        };
        for (i, port) in [(0, PP_PORT), (1, PP_PORT + 1)] {
            let net = e.cols[i].network;
            let srv = format!("dnb-srv{i}");
            let cli = format!("dnb-cli{i}");
            let pp = format!("dnb-pp{i}");
            e.run(&srv, net, &[])?;
            e.run(&cli, net, &[])?;
            let spec = format!("{UPLINK_IP}:{port}:{port}");
            e.run(&pp, net, &["-p", &spec])?;
            let (srv_ns, srv_ip) = e.inspect(&srv, net)?;
            let (cli_ns, _) = e.inspect(&cli, net)?;
            let (pp_ns, _) = e.inspect(&pp, net)?;
            env::start_servers(&mut e.procs, &srv_ns, tools, pin, true)?;
            e.procs.spawn(in_netns(
                &pp_ns,
                env::server_cpu(pin),
                tools.connrate(),
                &["serve", &port.to_string()],
            ))?;
            env::wait_listening(&pp_ns, port)?;
            sys::client_sysctls(&cli_ns)?;
            if !env::probe_published(&e.sb.world_netns_path(), tools, UPLINK_IP, port) {
                bail!("{}: the published port {port} does not answer", COLUMNS[i]);
            }
            e.cols[i].ew_client = cli_ns;
            e.cols[i].ew_server = srv_ip;
            e.cols[i].pp_port = port;
        }
        sys::client_sysctls(&e.sb.world_netns_path())?;
        Ok(e)
    }

    /// `docker run -d --name NAME --network NET ARGS IMAGE sleep 1000000`.
    fn run(&self, name: &str, net: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut a = vec!["run", "-d", "--name", name, "--network", net];
        a.extend(args);
        a.extend([IMAGE, "sleep", "1000000"]);
        self.dockerd.cmd(&a)?;
        Ok(())
    }

    /// A running container's namespace (`/proc/PID/ns/net`) and its address
    /// on `net`.
    fn inspect(&self, name: &str, net: &str) -> anyhow::Result<(PathBuf, Ipv4Addr)> {
        let f = format!(
            "{{{{.State.Pid}}}} {{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"
        );
        let out = self.dockerd.cmd(&["inspect", "-f", &f, name])?;
        let mut w = out.split_whitespace();
        let pid: u32 = w.next().and_then(|p| p.parse().ok()).context("no pid")?;
        let ip = w
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("{name} has no address on {net}: {out}"))?;
        Ok((PathBuf::from(format!("/proc/{pid}/ns/net")), ip))
    }

    pub fn describe(&self) -> String {
        format!(
            "one real Docker {} (Debian docker.io, --userland-proxy=false) and one dnet daemon (serving Docker's remote driver) in a sandbox host namespace; \
             \"{}\": containers on `docker network create -d <dnet> --subnet {DNET_SUBNET}`; \"{}\": the same containers on docker0 ({DOCKER0_BIP}, iptables {}), whose packets through the uplink (published port, NAT) pass dnet's uplink programs too; \
             \"{}\" (`docker run` only): `docker network create -d bridge --subnet {BRIDGE_SUBNET}`, which like every user-defined network (dnet's too) has Docker's embedded DNS set up in each new container, as docker0 has not",
            self.dockerd.version,
            COLUMNS[0],
            COLUMNS[1],
            super::docker::iptables_backend(),
            COLUMNS[2]
        )
    }

    pub fn conntrack_netns(&self) -> PathBuf {
        self.sb.host_netns_path()
    }

    /// One round of the datapath measurements for column `col`: figures by
    /// metric id.
    pub fn datapath(&self, ctx: &Ctx, col: usize) -> Vec<(&'static str, Result<f64, Miss>)> {
        let c = &self.cols[col];
        let mut v = Vec::new();
        let tcp = measure::tcp_stream(ctx, &c.ew_client, c.ew_server).map(|(g, _)| g);
        v.push(("dd_ew_tcp", tcp.map_err(Miss::Failed)));
        let udp = measure::udp_pps(ctx, &c.ew_client, c.ew_server);
        v.push(("dd_ew_udp", udp.map_err(Miss::Failed)));
        match measure::rr_latency(ctx, &c.ew_client, c.ew_server) {
            Ok(l) => v.extend([
                ("dd_ew_rr_p50", Ok(l.p50_us)),
                ("dd_ew_rr_p99", Ok(l.p99_us)),
            ]),
            Err(e) => v.extend([
                ("dd_ew_rr_p50", Err(Miss::Failed(anyhow::anyhow!("{e:#}")))),
                ("dd_ew_rr_p99", Err(Miss::Failed(e))),
            ]),
        }
        let world = self.sb.world_netns_path();
        match measure::conn_rate(ctx, &world, UPLINK_IP, c.pp_port) {
            Ok(r) => v.extend([("dd_pp_rps", Ok(r.rate)), ("dd_pp_p99", Ok(r.p99_us))]),
            Err(e) => v.extend([
                ("dd_pp_rps", Err(Miss::Failed(anyhow::anyhow!("{e:#}")))),
                ("dd_pp_p99", Err(Miss::Failed(e))),
            ]),
        }
        v
    }

    /// Milliseconds from starting `docker run -d` of a container on column
    /// `col`'s network (the third column's: [`BRIDGE_NET`]) to its first packet (a TCP SYN through the column's
    /// NAT) reaching the world's listener. The container is removed after.
    pub fn run_to_first_packet(&mut self, col: usize) -> anyhow::Result<f64> {
        self.runs += 1;
        let name = format!("dnb-run{}", self.runs);
        self.listener.drain();
        let target = format!("echo r | nc {WORLD_IP} {FIRST_PORT}");
        let start = Instant::now();
        let ran = self.dockerd.cmd(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            self.cols.get(col).map_or(BRIDGE_NET, |c| c.network),
            IMAGE,
            "sh",
            "-c",
            &target,
        ]);
        let first = ran.and_then(|_| self.listener.next(start + Duration::from_secs(20)));
        let _ = self.dockerd.cmd(&["rm", "-f", &name]);
        let at = first.with_context(|| format!("{}: docker run {name}", COLUMNS[col]))?;
        Ok(at.duration_since(start).as_secs_f64() * 1000.0)
    }
}

impl Drop for DockerDnetEnv {
    fn drop(&mut self) {
        // The servers first; the daemon, its containers and the sandbox go
        // after, in field order.
        self.procs.kill_all();
        self.listener.stop();
    }
}

/// A TCP listener in a namespace that stamps each connection's arrival
/// (a thread that entered the namespace; `setns` acts on the calling thread
/// only). Polls a non-blocking socket every 200 µs.
struct FirstPacket {
    arrivals: mpsc::Receiver<Instant>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FirstPacket {
    fn start(netns: &Path) -> anyhow::Result<FirstPacket> {
        let ns =
            std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        let (tx, arrivals) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel::<anyhow::Result<()>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let bound = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .context("setns")
                .and_then(|_| {
                    let l =
                        TcpListener::bind((Ipv4Addr::UNSPECIFIED, FIRST_PORT)).context("bind")?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                });
            let l = match bound {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    // Dropping the stream closes it: the client's nc ends.
                    Ok(_) => {
                        if tx.send(Instant::now()).is_err() {
                            return;
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .context("the first-packet listener did not start")??;
        Ok(FirstPacket {
            arrivals,
            stop,
            thread: Some(thread),
        })
    }

    /// Forgets arrivals of earlier runs.
    fn drain(&self) {
        while self.arrivals.try_recv().is_ok() {}
    }

    /// The next arrival, waiting until `deadline`.
    fn next(&self, deadline: Instant) -> anyhow::Result<Instant> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.arrivals
            .recv_timeout(left)
            .context("no packet reached the world's listener within 20 s")
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Nearest-rank percentile `p` (0–100) of the values.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

/// Runs the side: `rounds` measured rounds (after `warmup`) of the datapath
/// figures, each column in turn, then `runs` `docker run`s per column,
/// interleaved. The `docker run` figures are over all runs (in round 1's
/// slot: one figure each).
pub fn bench(
    ctx: &Ctx,
    tools: &Tools,
    pin: bool,
    rounds: usize,
    warmup: usize,
    runs: usize,
) -> anyhow::Result<(Results, String)> {
    let mut r = Results::new(metric_defs(runs), rounds);
    for d in metric_defs(runs) {
        if !d.id.starts_with("dd_run") {
            r.set_na(
                &d.id,
                2,
                "n/a: docker0's bridge driver (timed for `docker run` only)",
            );
        }
    }
    let mut e = DockerDnetEnv::start(tools, pin).context("the Docker + dnet side")?;
    let describe = e.describe();
    for round in 0..warmup + rounds {
        let measured = round.checked_sub(warmup);
        let tag = measured.map_or("warm-up".to_owned(), |r| format!("round {}", r + 1));
        for (col, label) in COLUMNS.iter().enumerate().take(2) {
            sys::check_stop()?;
            sys::conntrack_flush(&e.conntrack_netns());
            for (id, out) in e.datapath(ctx, col) {
                match out {
                    Ok(v) => {
                        eprintln!("bench: {tag} {label}: {id}={}", super::report::fmt_value(v));
                        if let Some(m) = measured {
                            r.record(id, col, m, v);
                        }
                    }
                    Err(e) => {
                        let e = match e {
                            Miss::Na(w) => anyhow::anyhow!(w),
                            Miss::Failed(e) => e,
                        };
                        eprintln!("bench: {tag} {label} {id}: FAILED: {e:#}");
                        if let Some(m) = measured {
                            r.fail(id, col, format!("round {}: {e:#}", m + 1));
                        }
                    }
                }
            }
        }
    }
    let mut times: [Vec<f64>; 3] = Default::default();
    for i in 0..runs {
        for (col, t) in times.iter_mut().enumerate() {
            sys::check_stop()?;
            match e.run_to_first_packet(col) {
                Ok(ms) => {
                    eprintln!("bench: docker run {} {}: {ms:.0} ms", i + 1, COLUMNS[col]);
                    t.push(ms);
                }
                Err(err) => {
                    eprintln!(
                        "bench: docker run {} {}: FAILED: {err:#}",
                        i + 1,
                        COLUMNS[col]
                    );
                    r.fail("dd_run_p50", col, format!("run {}: {err:#}", i + 1));
                }
            }
        }
    }
    for (col, t) in times.iter().enumerate() {
        if let Some(p50) = super::stats::median(t) {
            r.record("dd_run_p50", col, 0, p50);
        }
        if let Some(p99) = percentile(t, 99.0) {
            r.record("dd_run_p99", col, 0, p99);
        }
    }
    drop(e);
    Ok((r, describe))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(10.0));
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 10.0), Some(1.0));
        assert_eq!(percentile(&[], 99.0), None);
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(198.0));
    }
}
