//! docker0's side: Debian's Docker daemon inside a sandbox host namespace
//! (entered with `nsenter --net`, never `ip netns exec`, which would hide
//! bpffs and the cgroup mounts), with its own data root, exec root, pid
//! file, socket and cgroup parent, so its docker0, veths and iptables rules
//! live in that namespace only. Containers come from a `docker import`ed
//! busybox rootfs; measurements run the host's tools inside their
//! namespaces (`/proc/PID/ns/net`, as `nsenter -t PID -n`).
//!
//! The daemon runs with `--userland-proxy=false` (no docker-proxy process
//! per published port: 10,000 of them would measure process count, not the
//! datapath) and the `vfs` storage driver (fewest mounts; storage does not
//! touch the network).
//!
//! IPv6 (when an IPv6 group is measured): docker0 is dual-stack (`--ipv6
//! --fixed-cidr-v6`) with Docker's experimental `--ip6tables`, which
//! masquerades the subnet's IPv6 to the world as IPv4 is; the uplink and
//! the world get IPv6 addresses before the daemon starts.
//!
//! Names: two containers of a user-defined network ask Docker's embedded
//! resolver (127.0.0.11 in their namespace); the asking one has `--dns` the
//! world's fake upstream, where Docker forwards other names.

use std::{
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP, docker::Dockerd};

use super::{
    env::{
        self, CpFigures, DnsTarget, Env, FILLER_FIRST, Miss, Outcome, PP_PORT, PUBLISH_FIRST,
        Tools, WORLD_IP6,
    },
    parse, rules,
    sys::{self, Procs, in_netns},
};

const IMAGE: &str = "dnbench-busybox:latest";
/// Docker's embedded resolver, as a container of a user-defined network sees it.
const EMBEDDED_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// Feeds `doc` to `iptables-restore --noflush` inside a namespace.
pub fn iptables_restore(netns: &Path, doc: &str) -> anyhow::Result<()> {
    if doc.is_empty() {
        return Ok(());
    }
    let mut c = in_netns(netns, None, "iptables-restore", &["--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("iptables-restore")?;
    c.stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .context("iptables-restore stdin")?;
    let o = c.wait_with_output()?;
    if !o.status.success() {
        bail!(
            "iptables-restore failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

pub struct DockerEnv {
    procs: Procs,
    pp_procs: Procs,
    tools: Tools,
    pin: bool,
    ew_client: PathBuf,
    ew_server: Ipv4Addr,
    /// The server's IPv6 address, or why there is none.
    ew6_server: Result<Ipv6Addr, String>,
    /// Why a container does not reach the world through NAT66.
    nat6: Option<String>,
    filler: u32,
    cp_ready: usize,
    dns: Option<DnsTarget>,
    /// The daemon (the shared harness of the scenario tests); it goes
    /// before the sandbox.
    dockerd: Dockerd,
    // Last: namespaces, mounts and folders go after the daemon.
    sb: Sandbox,
}

impl DockerEnv {
    /// Starts dockerd in a fresh sandbox; fails when it cannot run here.
    pub fn start(tools: &Tools, pin: bool, ipv6: bool) -> anyhow::Result<DockerEnv> {
        let sb = std::panic::catch_unwind(Sandbox::without_daemon)
            .map_err(|_| anyhow::anyhow!("cannot make the sandbox"))?;
        let mut flags = vec!["--userland-proxy=false"];
        if ipv6 {
            env::world6(&sb.host_netns_path(), &sb.world_netns_path())?;
            flags.extend([
                "--ipv6",
                "--fixed-cidr-v6",
                env::BRIDGE_CIDR6,
                "--experimental",
                "--ip6tables",
            ]);
        }
        let dockerd = Dockerd::start(&sb.host_netns_path(), &sb.dir, &sb.name, &flags)?;
        dockerd.import_busybox(IMAGE)?;
        let mut e = DockerEnv {
            procs: Procs::default(),
            pp_procs: Procs::default(),
            tools: tools.clone(),
            pin,
            ew_client: PathBuf::new(),
            ew_server: Ipv4Addr::UNSPECIFIED,
            ew6_server: Err("n/a: set up without IPv6".into()),
            nat6: None,
            filler: 0,
            cp_ready: 0,
            dns: None,
            dockerd,
            sb,
        };
        e.cmd(&["run", "-d", "--name", "dnb-srv", IMAGE, "sleep", "1000000"])?;
        e.cmd(&["run", "-d", "--name", "dnb-cli", IMAGE, "sleep", "1000000"])?;
        let (srv_ns, srv_ip) = e.inspect("dnb-srv")?;
        let (cli_ns, _) = e.inspect("dnb-cli")?;
        e.ew_server = srv_ip;
        e.ew_client = cli_ns;
        env::start_servers(&mut e.procs, &srv_ns, tools, pin, true)?;
        env::start_world_servers(&mut e.procs, &e.sb.world_netns_path(), tools, pin)?;
        sys::client_sysctls(&e.ew_client)?;
        sys::client_sysctls(&e.sb.world_netns_path())?;
        if ipv6 {
            let ip6 = e.cmd(&[
                "inspect",
                "-f",
                "{{.NetworkSettings.GlobalIPv6Address}}",
                "dnb-srv",
            ])?;
            e.ew6_server = ip6
                .trim()
                .parse()
                .map_err(|_| format!("dnb-srv has no IPv6 address ({ip6:?})"));
            // Docker's NAT66 is expected to work: silence is a failure.
            if let Err(m) = env::probe_nat6(&e.ew_client, tools, || {
                Miss::Na(format!(
                    "n/a: a container of docker0 gets no answer from the world over IPv6 ({WORLD_IP6})"
                ))
            }) {
                e.nat6 = Some(match m {
                    Miss::Na(why) => why,
                    Miss::Failed(err) => format!("{err:#}"),
                });
            }
        }
        Ok(e)
    }

    /// `docker -H unix://SOCK ARGS`: stdout, or the error.
    fn cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        self.dockerd.cmd(args)
    }

    /// A running container's namespace (`/proc/PID/ns/net`) and address.
    fn inspect(&self, name: &str) -> anyhow::Result<(PathBuf, Ipv4Addr)> {
        let out = self.cmd(&[
            "inspect",
            "-f",
            "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
            name,
        ])?;
        let mut w = out.split_whitespace();
        let pid: u32 = w.next().and_then(|p| p.parse().ok()).context("no pid")?;
        let ip = w
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        Ok((PathBuf::from(format!("/proc/{pid}/ns/net")), ip))
    }

    fn timed(&self, names: &[String], args: &[&str]) -> anyhow::Result<f64> {
        let start = Instant::now();
        for n in names {
            let mut a = args.to_vec();
            a.push(n);
            self.cmd(&a)?;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    fn filler_rules(&self, op: &str) -> String {
        rules::filler("docker0", UPLINK_IP, FILLER_FIRST, self.filler, op).restore_doc()
    }
}

pub use dnet_sandbox::docker::which;

impl Drop for DockerEnv {
    fn drop(&mut self) {
        // The servers first; the daemon, its containers and the sandbox
        // go after, in field order.
        self.procs.kill_all();
        self.pp_procs.kill_all();
    }
}

impl Env for DockerEnv {
    fn label(&self) -> String {
        "docker0".into()
    }
    fn describe(&self) -> String {
        format!(
            "real Docker {} (Debian docker.io) in a sandbox host namespace: docker0, iptables ({}), --userland-proxy=false{}",
            self.dockerd.version,
            iptables_backend(),
            if self.ew6_server.is_ok() {
                "; IPv6: --ipv6 --fixed-cidr-v6, --experimental --ip6tables (NAT66 by masquerade)"
            } else {
                ""
            }
        )
    }
    fn conntrack_netns(&self) -> Vec<PathBuf> {
        vec![self.sb.host_netns_path()]
    }
    fn east_west(&self) -> (PathBuf, Ipv4Addr) {
        (self.ew_client.clone(), self.ew_server)
    }
    fn north_south(&self) -> Outcome<(PathBuf, Ipv4Addr)> {
        Ok((self.ew_client.clone(), WORLD_IP))
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
            Some(why) => Err(Miss::Failed(anyhow::anyhow!("{why}"))),
        }
    }
    fn world(&self) -> PathBuf {
        self.sb.world_netns_path()
    }

    fn pp_setup(&mut self, others: u32) -> Outcome<(Ipv4Addr, u16)> {
        // Ports published before the measured one, in Docker's own rules.
        self.filler = others;
        iptables_restore(&self.sb.host_netns_path(), &self.filler_rules("-A"))?;
        let spec = format!("{UPLINK_IP}:{PP_PORT}:{PP_PORT}");
        self.cmd(&[
            "run", "-d", "--name", "dnb-pp", "-p", &spec, IMAGE, "sleep", "1000000",
        ])?;
        let (ns, _) = self.inspect("dnb-pp")?;
        let cpu = env::server_cpu(self.pin);
        self.pp_procs.spawn(in_netns(
            &ns,
            cpu,
            self.tools.connrate(),
            &["serve", &PP_PORT.to_string()],
        ))?;
        env::wait_listening(&ns, PP_PORT)?;
        // The measured port's DNAT must come last: the worst case, every
        // other port's rule is tried first.
        let chain = sys::output(&mut in_netns(
            &self.sb.host_netns_path(),
            None,
            "iptables",
            &["-t", "nat", "-S", "DOCKER"],
        ))?;
        let ports = parse::dnat_ports(&chain);
        if ports.last() != Some(&PP_PORT) || ports.len() != others as usize + 1 {
            return Err(Miss::Failed(anyhow::anyhow!(
                "docker0's DOCKER chain has {} DNAT rules, the measured one at {:?}; expected {} with it last",
                ports.len(),
                ports.iter().position(|p| *p == PP_PORT),
                others + 1
            )));
        }
        if !env::probe_published(&self.world(), &self.tools, UPLINK_IP, PP_PORT) {
            return Err(Miss::Failed(anyhow::anyhow!(
                "docker0's published port does not answer"
            )));
        }
        Ok((UPLINK_IP, PP_PORT))
    }

    fn pp_teardown(&mut self) -> anyhow::Result<()> {
        self.pp_procs.kill_all();
        let _ = self.cmd(&["rm", "-f", "dnb-pp"]);
        iptables_restore(&self.sb.host_netns_path(), &self.filler_rules("-D"))?;
        self.filler = 0;
        Ok(())
    }

    fn dns(&mut self) -> Outcome<DnsTarget> {
        if let Some(t) = &self.dns {
            return Ok(t.clone());
        }
        let world = self.world();
        env::start_dns_upstream(&mut self.procs, &world, WORLD_IP, &self.tools)?;
        self.cmd(&["network", "create", "dnb-dns"])?;
        let world_ip = WORLD_IP.to_string();
        self.cmd(&[
            "run",
            "-d",
            "--name",
            "dnb-dnsweb",
            "--network",
            "dnb-dns",
            IMAGE,
            "sleep",
            "1000000",
        ])?;
        self.cmd(&[
            "run",
            "-d",
            "--name",
            "dnb-dnscli",
            "--network",
            "dnb-dns",
            "--dns",
            &world_ip,
            IMAGE,
            "sleep",
            "1000000",
        ])?;
        // On a user-defined network the address is under Networks.
        let out = self.cmd(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "dnb-dnsweb",
        ])?;
        let web_ip: Ipv4Addr = out
            .trim()
            .parse()
            .with_context(|| format!("dnb-dnsweb's address: {out:?}"))?;
        let (cli_ns, _) = self.inspect("dnb-dnscli")?;
        sys::client_sysctls(&cli_ns)?;
        let t = DnsTarget {
            client: cli_ns,
            server: EMBEDDED_DNS,
            name: "dnb-dnsweb".into(),
            name_ip: web_ip,
            dir: self.sb.dir.clone(),
        };
        self.dns = Some(t.clone());
        Ok(t)
    }

    fn control_plane(&mut self, n: usize, ports: u32) -> Outcome<CpFigures> {
        let names: Vec<String> = (0..n).map(|i| format!("dnb-cp{i}")).collect();
        while self.cp_ready < n {
            let name = &names[self.cp_ready];
            self.cmd(&["run", "-d", "--name", name, IMAGE, "sleep", "1000000"])?;
            self.cmd(&["network", "disconnect", "bridge", name])?;
            self.cp_ready += 1;
        }
        let t_conn = self.timed(&names, &["network", "connect", "bridge"])?;
        let t_disc = self.timed(&names, &["network", "disconnect", "bridge"])?;
        let spec = format!(
            "{UPLINK_IP}:{PUBLISH_FIRST}-{last}:{PUBLISH_FIRST}-{last}",
            last = PUBLISH_FIRST as u32 + ports - 1
        );
        let start = Instant::now();
        self.cmd(&[
            "run", "-d", "--name", "dnb-pub", "-p", &spec, IMAGE, "sleep", "1000000",
        ])?;
        let t_pub = start.elapsed().as_secs_f64();
        let start = Instant::now();
        self.cmd(&["rm", "-f", "dnb-pub"])?;
        let t_unpub = start.elapsed().as_secs_f64();
        Ok(vec![
            ("cp_attach", t_conn),
            ("cp_detach", t_disc),
            ("cp_connect", t_conn),
            ("cp_disconnect", t_disc),
            ("cp_publish", t_pub),
            ("cp_unpublish", t_unpub),
        ])
    }
}

/// `nf_tables` or `legacy`, as `iptables --version` says.
pub fn iptables_backend() -> String {
    Command::new("iptables")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let (_, b) = s.split_once('(')?;
            Some(b.trim_end().trim_end_matches(')').to_owned())
        })
        .unwrap_or_else(|| "iptables".into())
}
