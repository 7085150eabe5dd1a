//! `cargo xtask bench`: dnet side by side with real docker0 and with the
//! physical limit, in namespaces the benchmark makes and removes (issue #6).
//!
//! Three sides, set up once: dnet (its daemon in a sandbox), docker0 (Debian's
//! Docker daemon in a sandbox of its own, or a model of it when the daemon
//! cannot run) and the limit (a direct veth pair; a routed path without NAT).
//! Measurements run in interleaved rounds — each measurement on dnet, then
//! docker0, then the limit, before the next one — after a warm-up round, and
//! every figure is also given as ratios to docker0 and to the limit, taken
//! round by round. The published-port series has a phase per port count
//! (1, 100, 1,000, 10,000), with its own warm-up and rounds.
//!
//! Then the Docker + dnet side ([`dockernet`], `--skip dd` leaves it out):
//! real Docker containers on a dnet network against the same containers on
//! docker0 of the same dockerd, in a table of its own; and the control
//! plane's latency, dnet alone ([`latency`], `--skip lat`).
//!
//! Output: a markdown table on stdout and `target/bench/bench-<date>.{md,json,svg}`
//! (plus `latest.*`).

mod dnet;
mod docker;
mod dockernet;
mod env;
mod latency;
mod limit;
mod measure;
mod model;
mod parse;
mod report;
mod results;
mod rules;
mod stats;
mod sys;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use self::{
    env::{CONNRATE6_PORT, DNS_FORWARDED, DNS_UPSTREAM_ANSWER, Env, Miss, Tools},
    measure::Ctx,
    results::{Results, metric_defs, pp_p99, pp_rps},
};
use crate::{build, setup};

#[derive(clap::Args)]
pub struct Args {
    /// A smoke run: 2 rounds of 1 s, no warm-up, 20 endpoints, 100 ports
    /// for the publish test; under three minutes.
    #[arg(long)]
    quick: bool,
    /// Measured rounds (default 5; 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per throughput, latency and connection-rate run (default 5;
    /// 1 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Pin load clients to CPU 0 and servers to CPU 1.
    #[arg(long)]
    pin: bool,
    /// docker0 side: the real daemon when it runs, else the model (auto);
    /// or force one.
    #[arg(long, value_enum, default_value = "auto")]
    docker: DockerMode,
    /// Port counts of the published-port series.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000")]
    ports: Vec<u32>,
    /// Endpoints attached and detached per control-plane round (default
    /// 100; 20 with --quick).
    #[arg(long)]
    endpoints: Option<usize>,
    /// Ports published by one container in the control-plane test (default
    /// 1000; 100 with --quick).
    #[arg(long)]
    publish: Option<u32>,
    /// Members of the network the broadcast test floods (default 100; 20
    /// with --quick; dnet only).
    #[arg(long)]
    members: Option<usize>,
    /// `docker run`s per column of the Docker + dnet side (default 30; 10
    /// with --quick).
    #[arg(long)]
    docker_runs: Option<usize>,
    /// Samples of each control-plane latency (connect, disconnect, CNI ADD
    /// and DEL; default 100; 20 with --quick).
    #[arg(long)]
    lat_samples: Option<usize>,
    /// Endpoints attached to one host for the scale figures (default
    /// 1,000; none with --quick; 0 skips them).
    #[arg(long)]
    lat_scale: Option<usize>,
    /// Skip groups (ew, ns, ew6 and ns6: their IPv6 counterparts, pp, cp,
    /// dns, bc: broadcast, lat: control-plane latency, dd: Docker + dnet)
    /// or single metrics (ew_tcp, ns_cps, ...), comma separated.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DockerMode {
    Auto,
    Real,
    Model,
}

/// What the bench needs on the machine: (command, Debian package).
const PACKAGES: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("sockperf", "sockperf"),
    ("conntrack", "conntrack"),
    ("iptables", "iptables"),
    ("taskset", "util-linux"),
    ("ss", "iproute2"),
    ("busybox", "busybox-static"),
    ("dnsperf", "dnsperf"),
];

/// One measurement, run on each side in turn.
#[derive(Clone, Copy, Debug)]
enum Task {
    EwTcp,
    EwUdp,
    EwRr,
    EwCps,
    NsTcp,
    NsUdp,
    NsCps,
    Ew6Tcp,
    Ew6Udp,
    Ns6Cps,
    Cp,
    DnsName,
    DnsFwd,
    Bcast,
}

impl Task {
    fn metrics(self) -> &'static [&'static str] {
        match self {
            Task::EwTcp => &["ew_tcp", "ew_tcp_cpu"],
            Task::EwUdp => &["ew_udp"],
            Task::EwRr => &["ew_rr_p50", "ew_rr_p99"],
            Task::EwCps => &["ew_cps"],
            Task::NsTcp => &["ns_tcp", "ns_tcp_cpu"],
            Task::NsUdp => &["ns_udp"],
            Task::NsCps => &["ns_cps"],
            Task::Ew6Tcp => &["ew6_tcp", "ew6_tcp_cpu"],
            Task::Ew6Udp => &["ew6_udp"],
            Task::Ns6Cps => &["ns6_cps"],
            Task::Cp => &[
                "cp_attach",
                "cp_detach",
                "cp_connect",
                "cp_disconnect",
                "cp_publish",
                "cp_unpublish",
            ],
            Task::DnsName => &["dns_name_qps", "dns_name_p99"],
            Task::DnsFwd => &["dns_fwd_qps", "dns_fwd_p99"],
            Task::Bcast => &["bc_copy", "bc_rate"],
        }
    }

    fn group(self) -> &'static str {
        match self {
            Task::EwTcp | Task::EwUdp | Task::EwRr | Task::EwCps => "ew",
            Task::NsTcp | Task::NsUdp | Task::NsCps => "ns",
            Task::Ew6Tcp | Task::Ew6Udp => "ew6",
            Task::Ns6Cps => "ns6",
            Task::Cp => "cp",
            Task::DnsName | Task::DnsFwd => "dns",
            Task::Bcast => "bc",
        }
    }
}

struct Plan {
    rounds: usize,
    warmup: usize,
    endpoints: usize,
    publish: u32,
    members: usize,
}

type Figures = Result<Vec<(String, f64)>, Miss>;

fn run_task(task: Task, ctx: &Ctx, env: &mut dyn Env, plan: &Plan) -> Figures {
    let (ew_client, ew_server) = env.east_west();
    let v: Vec<(&str, f64)> = match task {
        Task::EwTcp => {
            let (g, c) = measure::tcp_stream(ctx, &ew_client, ew_server)?;
            vec![("ew_tcp", g), ("ew_tcp_cpu", c)]
        }
        Task::EwUdp => vec![("ew_udp", measure::udp_pps(ctx, &ew_client, ew_server)?)],
        Task::EwRr => {
            let l = measure::rr_latency(ctx, &ew_client, ew_server)?;
            vec![("ew_rr_p50", l.p50_us), ("ew_rr_p99", l.p99_us)]
        }
        Task::EwCps => {
            let c = measure::conn_rate(ctx, &ew_client, ew_server, measure::CPS_PORT)?;
            vec![("ew_cps", c.rate)]
        }
        Task::NsTcp => {
            let (client, server) = env.north_south()?;
            let (g, c) = measure::tcp_stream(ctx, &client, server)?;
            vec![("ns_tcp", g), ("ns_tcp_cpu", c)]
        }
        Task::NsUdp => {
            let (client, server) = env.north_south()?;
            vec![("ns_udp", measure::udp_pps(ctx, &client, server)?)]
        }
        Task::NsCps => {
            let (client, server) = env.north_south()?;
            vec![(
                "ns_cps",
                measure::conn_rate(ctx, &client, server, measure::CPS_PORT)?.rate,
            )]
        }
        Task::Ew6Tcp => {
            let (client, server) = env.east_west6()?;
            let (g, c) = measure::tcp_stream(ctx, &client, server)?;
            vec![("ew6_tcp", g), ("ew6_tcp_cpu", c)]
        }
        Task::Ew6Udp => {
            let (client, server) = env.east_west6()?;
            vec![("ew6_udp", measure::udp_pps(ctx, &client, server)?)]
        }
        Task::Ns6Cps => {
            let (client, server) = env.north_south6()?;
            vec![(
                "ns6_cps",
                measure::conn_rate(ctx, &client, server, CONNRATE6_PORT)?.rate,
            )]
        }
        Task::Cp => env.control_plane(plan.endpoints, plan.publish)?,
        Task::DnsName => {
            let t = env.dns()?;
            let r = measure::dns_rate(ctx, &t, &t.name, t.name_ip)?;
            vec![("dns_name_qps", r.qps), ("dns_name_p99", r.p99_us)]
        }
        Task::DnsFwd => {
            let t = env.dns()?;
            let r = measure::dns_rate(ctx, &t, DNS_FORWARDED, DNS_UPSTREAM_ANSWER)?;
            vec![("dns_fwd_qps", r.qps), ("dns_fwd_p99", r.p99_us)]
        }
        Task::Bcast => env.broadcast(ctx, plan.members)?,
    };
    Ok(v.into_iter().map(|(k, x)| (k.to_owned(), x)).collect())
}

fn flush(env: &dyn Env) {
    for ns in env.conntrack_netns() {
        sys::conntrack_flush(&ns);
    }
}

fn record(
    r: &mut Results,
    side: usize,
    label: &str,
    round: Option<usize>,
    metrics: &[&str],
    out: Figures,
) {
    let tag = round.map_or("warm-up".to_owned(), |r| format!("round {}", r + 1));
    match out {
        Ok(vals) => {
            let shown: Vec<String> = vals
                .iter()
                .map(|(k, v)| format!("{k}={}", report::fmt_value(*v)))
                .collect();
            eprintln!("bench: {tag} {label}: {}", shown.join(" "));
            if let Some(round) = round {
                for (k, v) in vals {
                    r.record(&k, side, round, v);
                }
            }
        }
        Err(Miss::Na(why)) => {
            eprintln!("bench: {tag} {label}: {why}");
            for m in metrics {
                r.set_na(m, side, &why);
            }
        }
        Err(Miss::Failed(e)) => {
            eprintln!("bench: {tag} {label} {metrics:?}: FAILED: {e:#}");
            if let Some(round) = round {
                for m in metrics {
                    r.fail(m, side, format!("round {}: {e:#}", round + 1));
                }
            }
        }
    }
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench makes network namespaces and runs Docker: run as root");
    }
    sys::catch_signals();
    crate::reap_stale();
    setup::run(root)?;
    setup::packages(PACKAGES)?;
    let want_docker = args.docker != DockerMode::Model;
    if want_docker && docker::which("dockerd").is_none() {
        setup::runtimes()?;
    }
    let bin = build(root, true)?;
    let tools = Tools {
        dnet: bin.join("dnet"),
        conntest: bin.join("conntest"),
        connrate: bin.join("connrate"),
    };
    // SAFETY: set before any thread of ours reads the environment.
    unsafe {
        std::env::set_var("DNET_BIN", &tools.dnet);
        std::env::set_var("CONNTEST_BIN", &tools.conntest);
    }
    let plan = Plan {
        rounds: args.rounds.unwrap_or(if args.quick { 2 } else { 5 }).max(1),
        warmup: if args.quick { 0 } else { 1 },
        endpoints: args.endpoints.unwrap_or(if args.quick { 20 } else { 100 }),
        publish: args
            .publish
            .unwrap_or(if args.quick { 100 } else { 1000 })
            .clamp(1, 20000),
        members: args
            .members
            .unwrap_or(if args.quick { 20 } else { 100 })
            .clamp(2, 4000),
    };
    let secs = args
        .seconds
        .unwrap_or(if args.quick { 1.0 } else { 5.0 })
        .clamp(0.5, 120.0);
    let ctx = Ctx {
        tools: tools.clone(),
        secs,
        pin: args.pin,
        max_conns: (secs * 60_000.0) as u64,
    };
    let mut ports = args.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    ports.retain(|p| (1..=30000).contains(p));
    anyhow::ensure!(
        !ports.is_empty(),
        "--ports needs counts between 1 and 30,000"
    );

    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    let mut notes = vec![
        "UDP: iperf3 -u -l 64 -b 0 (64-byte payload, sent as fast as iperf3 can), datagrams the receiver got per second.".to_owned(),
        "Latency: sockperf ping-pong over TCP, 64-byte messages, full round trip; client and server on one CPU (with --pin: client on CPU 0, server on CPU 1).".to_owned(),
        format!("Names: dnsperf in a container of a user-defined network, A queries for one name, {} clients, at most {} in flight; queries/s counts NOERROR answers; p99 over every query sent (a lost or failed one counts at dnsperf's 2 s timeout). dnet: the network's resolver on its gateway; Docker: its embedded resolver 127.0.0.11. Forwarded names go to a fake upstream (conntest dns serve) in the world namespace: dnet's --dns-upstream, Docker's container --dns.", measure::DNSPERF_CLIENTS, measure::DNSPERF_IN_FLIGHT),
        "Connections and published-port requests: connrate (this repo), 2 closed loops, each request a new TCP connection (connect, 1 byte each way, close).".to_owned(),
        "Host CPU per GB: all CPUs' busy time (/proc/stat) during the TCP run over the bytes received; on a busy machine it includes others' load.".to_owned(),
        format!(
            "Published ports: the measured port is published last, after N−1 ports of other containers, so its DNAT rule is the last one docker0 tries. With real Docker the N−1 rules are loaded in Docker's own form with one iptables-restore (dockerd adds them one iptables call at a time: ~25 s for 1,000 ports, hours for 10,000)."
        ),
    ];
    let skip = |g: &str| args.skip.iter().any(|s| s == g);
    // The three main sides only when one of their groups is measured.
    let main = ["ew", "ns", "ew6", "ns6", "pp", "cp", "dns", "bc"]
        .iter()
        .any(|g| !skip(g));
    // IPv6 on the default bridge networks (and the worlds) only when an
    // IPv6 group is measured.
    let ipv6 = !skip("ew6") || !skip("ns6");
    if ipv6 && main {
        notes.push(format!(
            "IPv6 (ew6, ns6): dnet's default bridge network and docker0 are dual-stack ({}) for every group of this run, so their containers have IPv6 addresses in the IPv4 groups too; the uplink and the world have {} and {}.",
            env::BRIDGE_CIDR6,
            env::UPLINK_IP6,
            env::WORLD_IP6
        ));
    }
    let mut envs: Vec<Box<dyn Env>> = Vec::new();
    if main {
        eprintln!("bench: setting up the three sides");
        envs.push(Box::new(
            dnet::DnetEnv::new(&tools, args.pin, ipv6).context("dnet's side")?,
        ));
        let docker_env: Box<dyn Env> = match args.docker {
            DockerMode::Model => Box::new(model::ModelEnv::new(
                &tools,
                args.pin,
                "--docker model".into(),
            )?),
            mode => match docker::DockerEnv::start(&tools, args.pin, ipv6) {
                Ok(d) => Box::new(d),
                Err(e) if mode == DockerMode::Auto => {
                    eprintln!(
                        "bench: the Docker daemon cannot run here ({e:#}); using the docker0 model"
                    );
                    notes.push(format!(
                        "docker0 is a MODEL: the Docker daemon could not run ({e:#})."
                    ));
                    Box::new(model::ModelEnv::new(&tools, args.pin, format!("{e:#}"))?)
                }
                Err(e) => return Err(e.context("docker0's side")),
            },
        };
        envs.push(docker_env);
        envs.push(Box::new(
            limit::LimitEnv::new(&tools, args.pin, ipv6).context("the limit's side")?,
        ));
    }
    let (labels, sides): ([String; 3], [String; 3]) = if main {
        (
            [envs[0].label(), envs[1].label(), envs[2].label()],
            [envs[0].describe(), envs[1].describe(), envs[2].describe()],
        )
    } else {
        let not = "not set up: every group of it skipped (--skip)".to_owned();
        (
            ["dnet".into(), "docker0".into(), "limit".into()],
            [not.clone(), not.clone(), not],
        )
    };

    let mut defs = metric_defs(&ports, plan.endpoints, plan.publish);
    defs.extend(results::broadcast_defs(plan.members));
    let mut r = Results::new(defs, plan.rounds);
    // Skipped groups and metrics: every side says so.
    let skipped: Vec<String> = r
        .defs
        .iter()
        .map(|d| d.id.clone())
        .filter(|id| skip(id) || skip(group_of(id)))
        .collect();
    for id in skipped {
        for side in 0..3 {
            r.set_na(&id, side, "skipped (--skip)");
        }
    }

    // Rounds of every measurement but the published ports.
    let tasks: Vec<Task> = [
        Task::EwTcp,
        Task::EwUdp,
        Task::EwRr,
        Task::EwCps,
        Task::NsTcp,
        Task::NsUdp,
        Task::NsCps,
        Task::Ew6Tcp,
        Task::Ew6Udp,
        Task::Ns6Cps,
        Task::Cp,
        Task::DnsName,
        Task::DnsFwd,
        Task::Bcast,
    ]
    .into_iter()
    .filter(|t| !skip(t.group()))
    .collect();
    for round in 0..plan.warmup + plan.rounds {
        let measured = round.checked_sub(plan.warmup);
        for &task in &tasks {
            if measured.is_none() && matches!(task, Task::Cp) {
                continue; // the control plane needs no warming
            }
            for (side, env) in envs.iter_mut().enumerate() {
                sys::check_stop()?;
                if task.metrics().iter().all(|m| r.is_na(m, side)) {
                    continue;
                }
                flush(env.as_ref());
                let out = run_task(task, &ctx, env.as_mut(), &plan);
                record(&mut r, side, &labels[side], measured, task.metrics(), out);
            }
        }
    }

    // Published ports: one phase per count.
    if !skip("pp") {
        for &n in &ports {
            sys::check_stop()?;
            eprintln!("bench: published ports: {n}");
            let metrics = [pp_rps(n), pp_p99(n)];
            let metrics: Vec<&str> = metrics.iter().map(String::as_str).collect();
            let mut targets = Vec::new();
            for (side, env) in envs.iter_mut().enumerate() {
                match env.pp_setup(n - 1) {
                    Ok(t) => targets.push(Some(t)),
                    Err(e) => {
                        record(&mut r, side, &labels[side], Some(0), &metrics, Err(e));
                        targets.push(None);
                    }
                }
            }
            let result = (|| -> anyhow::Result<()> {
                for round in 0..plan.warmup + plan.rounds {
                    let measured = round.checked_sub(plan.warmup);
                    for (side, env) in envs.iter_mut().enumerate() {
                        sys::check_stop()?;
                        let Some((ip, port)) = targets[side] else {
                            continue;
                        };
                        flush(env.as_ref());
                        let out = measure::conn_rate(&ctx, &env.world(), ip, port)
                            .map(|c| {
                                vec![
                                    (metrics[0].to_owned(), c.rate),
                                    (metrics[1].to_owned(), c.p99_us),
                                ]
                            })
                            .map_err(Miss::Failed);
                        record(&mut r, side, &labels[side], measured, &metrics, out);
                    }
                }
                Ok(())
            })();
            for env in envs.iter_mut() {
                if let Err(e) = env.pp_teardown() {
                    eprintln!(
                        "bench: {}: removing the published ports: {e:#}",
                        env.label()
                    );
                }
            }
            result?;
        }
    }
    drop(envs);

    // Docker + dnet: after the main sides (one dockerd at a time).
    let dd = if skip("dd") {
        report::DockerDnet::Skipped("skipped (--skip dd)".into())
    } else if args.docker == DockerMode::Model {
        report::DockerDnet::Skipped("n/a: --docker model (this side needs the real dockerd)".into())
    } else {
        let runs = args
            .docker_runs
            .unwrap_or(if args.quick { 10 } else { 30 })
            .max(1);
        eprintln!("bench: Docker + dnet: setting up");
        match dockernet::bench(&ctx, &tools, args.pin, plan.rounds, plan.warmup, runs) {
            Ok((r, describe)) => report::DockerDnet::Done { r, describe },
            Err(e) if args.docker == DockerMode::Real => return Err(e),
            Err(e) => {
                eprintln!("bench: Docker + dnet: {e:#}");
                report::DockerDnet::Skipped(format!("n/a: {e:#}"))
            }
        }
    };
    let lat = if skip("lat") {
        latency::Latency::Skipped("skipped (--skip lat)".into())
    } else {
        let samples = args
            .lat_samples
            .unwrap_or(if args.quick { 20 } else { 100 })
            .max(1);
        eprintln!("bench: control-plane latency: {samples} samples");
        match latency::bench(&bin.join("dnet-cni"), samples) {
            Ok(mut l) => {
                let n = args.lat_scale.unwrap_or(if args.quick { 0 } else { 1000 });
                if n > 0
                    && let latency::Latency::Done { scale, .. } = &mut l
                {
                    eprintln!("bench: control-plane latency: {n} endpoints on one host");
                    *scale = Some(latency::scale(n).map_err(|e| format!("{e:#}")));
                }
                l
            }
            Err(e) => {
                eprintln!("bench: control-plane latency: {e:#}");
                latency::Latency::Skipped(format!("n/a: {e:#}"))
            }
        }
    };
    eprintln!("bench: everything removed");

    let mut goals = results::goals(&r, &ports);
    goals.push(dd.goal());
    goals.extend(lat.goals());
    let quick_flag = if args.quick { " --quick" } else { "" };
    let mut command = format!("cargo xtask bench{quick_flag}");
    for a in std::env::args().skip(2) {
        if a != "--quick" {
            command.push(' ');
            command.push_str(&a);
        }
    }
    let meta = report::Meta {
        date: date.clone(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        cpu: cpu_model(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        dnet_rev: first_line(
            Command::new("git")
                .current_dir(root)
                .args(["describe", "--always", "--dirty"]),
        ),
        command,
        quick: args.quick,
        rounds: plan.rounds,
        warmup: plan.warmup,
        secs,
        pin: args.pin,
        sides,
        labels,
        notes,
        dd,
        lat,
    };
    let md = report::markdown(&meta, &r, &goals);
    println!("{md}");
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let stem = format!("bench-{}", date.replace(':', ""));
    let json = serde_json::to_string_pretty(&report::json(&meta, &r, &goals))?;
    write_both(&out, &stem, "md", &md)?;
    write_both(&out, &stem, "json", &json)?;
    let svg_path = out.join(format!("{stem}.svg"));
    report::svg(&svg_path, &meta, &r, &ports)?;
    std::fs::copy(&svg_path, out.join("latest.svg"))?;
    eprintln!(
        "bench: wrote {}/{stem}.{{md,json,svg}} (and latest.*)",
        out.display()
    );
    Ok(())
}

/// The group (`--skip` name) of a metric id: what comes before the first
/// `_`, with the published-port series' counts dropped (`pp1000_rps` is
/// in `pp`; `ew6_tcp` in `ew6`, not `ew`).
fn group_of(id: &str) -> &str {
    let g = id.split('_').next().unwrap_or("");
    match g.strip_prefix("pp") {
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => "pp",
        _ => g,
    }
}

fn write_both(dir: &Path, stem: &str, ext: &str, text: &str) -> anyhow::Result<()> {
    let p: PathBuf = dir.join(format!("{stem}.{ext}"));
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    std::fs::write(dir.join(format!("latest.{ext}")), text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_ids_fall_in_their_skip_groups() {
        assert_eq!(group_of("ew_tcp"), "ew");
        assert_eq!(group_of("ew6_tcp_cpu"), "ew6");
        assert_eq!(group_of("ns6_cps"), "ns6");
        assert_eq!(group_of("pp1_rps"), "pp");
        assert_eq!(group_of("pp10000_p99"), "pp");
        assert_eq!(group_of("dns_fwd_qps"), "dns");
        // Every task's metrics are in its group.
        for t in [
            Task::EwTcp,
            Task::Ew6Tcp,
            Task::Ew6Udp,
            Task::Ns6Cps,
            Task::Bcast,
        ] {
            for m in t.metrics() {
                assert_eq!(group_of(m), t.group(), "{m}");
            }
        }
    }
}
