//! dnet's side: its daemon in a sandbox (host and world namespaces), two
//! containers on the default `bridge` network for east-west, and the
//! world's servers for north-south; for names, two containers of a
//! user-defined network and a fake upstream resolver in the world (the
//! daemon's `--dns-upstream`). With an IPv6 group measured the default
//! bridge is dual-stack (`--ipv6 --fixed-cidr-v6`) and the uplink and the
//! world have IPv6 addresses: the same two containers talk IPv6 too.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, bail};
use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP};
use serde_json::Value;

use super::{
    env::{
        self, CpFigures, DnsTarget, Env, FILLER_FIRST, Miss, Outcome, PP_PORT, PUBLISH_FIRST,
        Tools, WORLD_IP6,
    },
    measure::Ctx,
    sys::{self, Procs, in_netns},
};

/// The broadcast test's network, apart from every other subnet of the bench.
const BC_SUBNET: &str = "10.250.0.0/16";
/// Its broadcast address, and a port nobody listens on.
const BC_BROADCAST: &str = "10.250.255.255:9";

pub struct DnetEnv {
    // Fields drop in order: servers first, the sandbox (daemon, namespaces) last.
    procs: Procs,
    pp_procs: Procs,
    sb: Sandbox,
    tools: Tools,
    pin: bool,
    ew_client: PathBuf,
    ew_server: Ipv4Addr,
    nat: Option<String>,
    /// The server's IPv6 address, or why there is none.
    ew6_server: Result<Ipv6Addr, String>,
    /// Why a container does not reach the world through NAT66: `Na` (not
    /// built) or a failure.
    nat6: Option<(bool, String)>,
    published: Option<String>,
    cp_ready: usize,
    dns: Option<DnsTarget>,
}

/// A container's namespace path and address, from `dnet ps --format json`.
fn find(ps: &Value, name: &str) -> anyhow::Result<(PathBuf, Option<Ipv4Addr>)> {
    let c = ps
        .as_array()
        .context("dnet ps: not a list")?
        .iter()
        .find(|c| c["name"] == name)
        .with_context(|| format!("dnet ps has no {name}"))?;
    let ns = c["netns_path"]
        .as_str()
        .map(PathBuf::from)
        .or_else(|| {
            c["pid"]
                .as_u64()
                .map(|p| PathBuf::from(format!("/proc/{p}/ns/net")))
        })
        .with_context(|| format!("{name} has no namespace"))?;
    let ip = c["networks"][0]["ip"].as_str().and_then(|s| s.parse().ok());
    Ok((ns, ip))
}

/// A container's IPv6 address on its first network, from `dnet ps`.
fn find6(ps: &Value, name: &str) -> Option<Ipv6Addr> {
    ps.as_array()?.iter().find(|c| c["name"] == name)?["networks"][0]["ip6"]
        .as_str()?
        .parse()
        .ok()
}

impl DnetEnv {
    pub fn new(tools: &Tools, pin: bool, ipv6: bool) -> anyhow::Result<DnetEnv> {
        // Sandbox reads the binaries from DNET_BIN / CONNTEST_BIN (set by
        // the caller to the release builds).
        // Forwarded names go to the world's fake upstream (never to the
        // machine's own resolvers).
        let upstream = format!("{WORLD_IP}:53");
        let mut daemon_args = vec!["--dns-upstream", &upstream];
        if ipv6 {
            daemon_args.extend(["--ipv6", "--fixed-cidr-v6", env::BRIDGE_CIDR6]);
        }
        let sb = std::panic::catch_unwind(|| {
            let mut sb = Sandbox::without_daemon();
            // The uplink's IPv6 address is there before the daemon starts.
            if ipv6 {
                env::world6(&sb.host_netns_path(), &sb.world_netns_path())
                    .expect("IPv6 for the sandbox's uplink and world");
            }
            sb.set_daemon_args(&daemon_args);
            sb.start_daemon();
            sb
        })
        .map_err(|_| anyhow::anyhow!("the dnet sandbox did not start (see above)"))?;
        let mut e = DnetEnv {
            procs: Procs::default(),
            pp_procs: Procs::default(),
            sb,
            tools: tools.clone(),
            pin,
            ew_client: PathBuf::new(),
            ew_server: Ipv4Addr::UNSPECIFIED,
            nat: None,
            ew6_server: Err("n/a: set up without IPv6".into()),
            nat6: None,
            published: None,
            cp_ready: 0,
            dns: None,
        };
        e.dnet(&["run", "-d", "--name", "srv", "--", "sleep", "1000000"])?;
        e.dnet(&["run", "-d", "--name", "cli", "--", "sleep", "1000000"])?;
        let ps = e.ps()?;
        let (srv_ns, srv_ip) = find(&ps, "srv")?;
        let (cli_ns, _) = find(&ps, "cli")?;
        e.ew_server = srv_ip.context("srv has no address")?;
        e.ew_client = cli_ns;
        env::start_servers(&mut e.procs, &srv_ns, tools, pin, true)?;
        env::start_world_servers(&mut e.procs, &e.sb.world_netns_path(), tools, pin)?;
        sys::client_sysctls(&e.ew_client)?;
        sys::client_sysctls(&e.sb.world_netns_path())?;
        if let Err(Miss::Na(why)) = env::probe_nat(&e.ew_client, tools, WORLD_IP, UPLINK_IP) {
            e.nat = Some(why);
        }
        if ipv6 {
            e.ew6_server = find6(&ps, "srv").ok_or_else(|| "srv has no IPv6 address".to_owned());
            // NAT66 is in dnet's datapath: silence is a failure.
            let silence = || {
                Miss::Failed(anyhow::anyhow!(
                    "a container gets no answer from the world over IPv6 ({WORLD_IP6})"
                ))
            };
            e.nat6 = match env::probe_nat6(&e.ew_client, tools, silence) {
                Ok(()) => None,
                Err(Miss::Na(why)) => Some((true, why)),
                Err(Miss::Failed(err)) => Some((false, format!("{err:#}"))),
            };
        }
        Ok(e)
    }

    fn dnet(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = self.sb.dnet(args);
        if !o.status.success() {
            bail!(
                "dnet {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn ps(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(
            &self.dnet(&["ps", "--format", "json"])?,
        )?)
    }

    /// Seconds to run `dnet ARGS` for each name in turn.
    fn timed(&self, names: &[String], args: impl Fn(&str) -> Vec<String>) -> anyhow::Result<f64> {
        let start = Instant::now();
        for n in names {
            let a = args(n);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            self.dnet(&a)?;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// `members` containers on `bcnet` (the first sends), then the flood.
    fn broadcast_on(&self, ctx: &Ctx, names: &[String]) -> anyhow::Result<CpFigures> {
        for n in names {
            self.dnet(&[
                "run",
                "-d",
                "--name",
                n,
                "--network",
                "bcnet",
                "--",
                "sleep",
                "1000000",
            ])?;
        }
        let members = names.len();
        // Copies delivered: the host-side veths' transmit counters (a copy
        // the container's queue refuses is counted as dropped instead).
        // `network inspect` answers a list, as Docker's does.
        let net: Value = serde_json::from_str(&self.dnet(&["network", "inspect", "bcnet"])?)?;
        let veths: Vec<String> = net[0]["containers"]
            .as_array()
            .context("network inspect: no containers")?
            .iter()
            .filter(|c| c["container"] != "bc0")
            .filter_map(|c| c["host_ifname"].as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(
            veths.len() + 1 == members,
            "bcnet has {} members",
            veths.len() + 1
        );
        let copies = || -> anyhow::Result<u64> {
            let links = self.sb.host_ip_json(&["-s", "link", "show"]);
            let links = links.as_array().context("ip -j link: not a list")?;
            veths
                .iter()
                .map(|v| {
                    links
                        .iter()
                        .find(|l| l["ifname"] == v.as_str())
                        .and_then(|l| l["stats64"]["tx"]["packets"].as_u64())
                        .with_context(|| format!("no counters for {v}"))
                })
                .sum()
        };
        let (sender, _) = find(&self.ps()?, "bc0")?;
        let before = copies()?;
        let secs = format!("{}", ctx.secs);
        let o = sys::run_bounded(
            in_netns(
                &sender,
                env::client_cpu(self.pin),
                self.tools.conntest(),
                &["udp-flood", BC_BROADCAST, "--broadcast", "--seconds", &secs],
            ),
            std::time::Duration::from_secs_f64(ctx.secs + 10.0),
        )?;
        anyhow::ensure!(
            o.status.success(),
            "conntest udp-flood: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        let delivered = copies()?.saturating_sub(before);
        let out = String::from_utf8_lossy(&o.stdout);
        let took: f64 = out
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("conntest udp-flood said {out:?}"))?;
        anyhow::ensure!(delivered > 0, "no broadcast copy delivered");
        Ok(vec![
            ("bc_copy", took * 1e9 / delivered as f64),
            ("bc_rate", delivered as f64 / took / 1e3),
        ])
    }
}

impl Env for DnetEnv {
    fn label(&self) -> String {
        "dnet".into()
    }
    fn describe(&self) -> String {
        "dnet (release build): its daemon in a sandbox host namespace, containers on the default bridge network (dual-stack when IPv6 is measured; a user-defined one for names)".into()
    }
    fn conntrack_netns(&self) -> Vec<PathBuf> {
        vec![self.sb.host_netns_path()]
    }
    fn east_west(&self) -> (PathBuf, Ipv4Addr) {
        (self.ew_client.clone(), self.ew_server)
    }
    fn north_south(&self) -> Outcome<(PathBuf, Ipv4Addr)> {
        match &self.nat {
            Some(why) => Err(Miss::Na(why.clone())),
            None => Ok((self.ew_client.clone(), WORLD_IP)),
        }
    }
    fn east_west6(&self) -> Outcome<(PathBuf, Ipv6Addr)> {
        match &self.ew6_server {
            Ok(ip) => Ok((self.ew_client.clone(), *ip)),
            Err(why) => Err(Miss::Na(why.clone())),
        }
    }
    fn north_south6(&self) -> Outcome<(PathBuf, Ipv6Addr)> {
        match &self.nat6 {
            None => Ok((self.ew_client.clone(), WORLD_IP6)),
            Some((true, why)) => Err(Miss::Na(why.clone())),
            Some((false, why)) => Err(Miss::Failed(anyhow::anyhow!("{why}"))),
        }
    }
    fn world(&self) -> PathBuf {
        self.sb.world_netns_path()
    }

    fn pp_setup(&mut self, others: u32) -> Outcome<(Ipv4Addr, u16)> {
        if let Some(why) = &self.published {
            return Err(Miss::Na(why.clone()));
        }
        if others > 0 {
            let spec = format!(
                "{UPLINK_IP}:{FILLER_FIRST}-{last}:{FILLER_FIRST}-{last}",
                last = FILLER_FIRST as u32 + others - 1
            );
            self.dnet(&[
                "run", "-d", "--name", "ppfill", "-p", &spec, "--", "sleep", "1000000",
            ])?;
        }
        let spec = format!("{UPLINK_IP}:{PP_PORT}:{PP_PORT}");
        self.dnet(&[
            "run", "-d", "--name", "pp", "-p", &spec, "--", "sleep", "1000000",
        ])?;
        let (ns, _) = find(&self.ps()?, "pp")?;
        let cpu = env::server_cpu(self.pin);
        self.pp_procs.spawn(in_netns(
            &ns,
            cpu,
            self.tools.connrate(),
            &["serve", &PP_PORT.to_string()],
        ))?;
        env::wait_listening(&ns, PP_PORT)?;
        if !env::probe_published(&self.world(), &self.tools, UPLINK_IP, PP_PORT) {
            let why = "n/a (not built yet): the world cannot reach a published port".to_owned();
            self.published = Some(why.clone());
            return Err(Miss::Na(why));
        }
        Ok((UPLINK_IP, PP_PORT))
    }

    fn pp_teardown(&mut self) -> anyhow::Result<()> {
        self.pp_procs.kill_all();
        let ps = self.ps()?;
        for n in ["pp", "ppfill"] {
            if find(&ps, n).is_ok() {
                self.dnet(&["rm", "-f", n])?;
            }
        }
        Ok(())
    }

    fn dns(&mut self) -> Outcome<DnsTarget> {
        if let Some(t) = &self.dns {
            return Ok(t.clone());
        }
        let world = self.world();
        env::start_dns_upstream(&mut self.procs, &world, WORLD_IP, &self.tools)?;
        self.dnet(&["network", "create", "dnsnet"])?;
        for n in ["dnsweb", "dnscli"] {
            self.dnet(&[
                "run",
                "-d",
                "--name",
                n,
                "--network",
                "dnsnet",
                "--",
                "sleep",
                "1000000",
            ])?;
        }
        let ps = self.ps()?;
        let (_, web_ip) = find(&ps, "dnsweb")?;
        let (cli_ns, _) = find(&ps, "dnscli")?;
        let cli = ps
            .as_array()
            .and_then(|v| v.iter().find(|c| c["name"] == "dnscli"))
            .context("dnet ps has no dnscli")?;
        let gateway = cli["networks"][0]["gateway"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .context("dnscli has no gateway")?;
        sys::client_sysctls(&cli_ns)?;
        let t = DnsTarget {
            client: cli_ns,
            server: gateway,
            name: "dnsweb".into(),
            name_ip: web_ip.context("dnsweb has no address")?,
            dir: self.sb.dir.clone(),
        };
        self.dns = Some(t.clone());
        Ok(t)
    }

    fn broadcast(&mut self, ctx: &Ctx, members: usize) -> Outcome<CpFigures> {
        // Made for each run and removed after it, so that the other
        // measurements never meet these endpoints.
        let names: Vec<String> = (0..members).map(|i| format!("bc{i}")).collect();
        self.dnet(&["network", "create", "--subnet", BC_SUBNET, "bcnet"])?;
        let out = self.broadcast_on(ctx, &names).map_err(Miss::Failed);
        let mut gone = Ok(());
        for n in &names {
            if let Err(e) = self.dnet(&["rm", "-f", n])
                && find(&self.ps()?, n).is_ok()
            {
                gone = Err(e);
            }
        }
        gone.and_then(|()| self.dnet(&["network", "rm", "bcnet"]).map(|_| ()))?;
        out
    }

    fn control_plane(&mut self, n: usize, ports: u32) -> Outcome<CpFigures> {
        // Containers for connect/disconnect: made once, then detached.
        let conn: Vec<String> = (0..n).map(|i| format!("cn{i}")).collect();
        while self.cp_ready < n {
            let name = &conn[self.cp_ready];
            self.dnet(&["run", "-d", "--name", name, "--", "sleep", "1000000"])?;
            self.dnet(&["network", "disconnect", "bridge", name])?;
            self.cp_ready += 1;
        }
        let run: Vec<String> = (0..n).map(|i| format!("cp{i}")).collect();
        let t_run = self.timed(&run, |c| {
            ["run", "-d", "--name", c, "--", "sleep", "1000000"]
                .map(String::from)
                .to_vec()
        })?;
        let t_rm = self.timed(&run, |c| ["rm", "-f", c].map(String::from).to_vec())?;
        let t_conn = self.timed(&conn, |c| {
            ["network", "connect", "bridge", c]
                .map(String::from)
                .to_vec()
        })?;
        let t_disc = self.timed(&conn, |c| {
            ["network", "disconnect", "bridge", c]
                .map(String::from)
                .to_vec()
        })?;
        let spec = format!(
            "{UPLINK_IP}:{PUBLISH_FIRST}-{last}:{PUBLISH_FIRST}-{last}",
            last = PUBLISH_FIRST as u32 + ports - 1
        );
        let start = Instant::now();
        self.dnet(&[
            "run", "-d", "--name", "pub", "-p", &spec, "--", "sleep", "1000000",
        ])?;
        let t_pub = start.elapsed().as_secs_f64();
        let start = Instant::now();
        self.dnet(&["rm", "-f", "pub"])?;
        let t_unpub = start.elapsed().as_secs_f64();
        Ok(vec![
            ("cp_attach", t_run),
            ("cp_detach", t_rm),
            ("cp_connect", t_conn),
            ("cp_disconnect", t_disc),
            ("cp_publish", t_pub),
            ("cp_unpublish", t_unpub),
        ])
    }
}
