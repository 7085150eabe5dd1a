//! The docker0 model: what stands in when the Docker daemon cannot run
//! here. Built the way Docker builds its default network: a Linux bridge
//! `docker0` (172.17.0.1/16) in the host namespace, `br_netfilter` on
//! (`bridge-nf-call-iptables`), IP forwarding, Docker's iptables chains
//! ([`rules::base`]), MASQUERADE for the subnet, and per published port the
//! DNAT, hairpin MASQUERADE and filter ACCEPT rules ([`rules::port`]).
//! Containers are namespaces with a veth on the bridge (hairpin on, as
//! Docker sets it without the userland proxy). It has no control plane, so
//! the control-plane rows have no figure for it. The output labels it
//! `docker0 (model)`.

use std::{net::Ipv4Addr, path::PathBuf};

use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP};

use super::{
    docker::iptables_restore,
    env::{self, CpFigures, Env, FILLER_FIRST, Miss, Outcome, PP_PORT, Tools},
    rules::{self, Published},
    sys::{self, Netns, Procs, in_netns},
};

const BRIDGE: &str = "docker0";
const PP_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 10);

pub struct ModelEnv {
    procs: Procs,
    pp_procs: Procs,
    containers: Vec<Netns>,
    pp: Option<Netns>,
    tools: Tools,
    pin: bool,
    ew_client: PathBuf,
    ew_server: Ipv4Addr,
    filler: u32,
    n_veth: u32,
    /// Why the real daemon could not run.
    pub why: String,
    sb: Sandbox,
}

impl ModelEnv {
    pub fn new(tools: &Tools, pin: bool, why: String) -> anyhow::Result<ModelEnv> {
        let sb = std::panic::catch_unwind(Sandbox::without_daemon)
            .map_err(|_| anyhow::anyhow!("cannot make the sandbox"))?;
        let mut e = ModelEnv {
            procs: Procs::default(),
            pp_procs: Procs::default(),
            containers: Vec::new(),
            pp: None,
            tools: tools.clone(),
            pin,
            ew_client: PathBuf::new(),
            ew_server: Ipv4Addr::UNSPECIFIED,
            filler: 0,
            n_veth: 0,
            why,
            sb,
        };
        let h = e.sb.host_ns.clone();
        let ip =
            |args: &[&str]| sys::ok(std::process::Command::new("ip").args(["-n", &h]).args(args));
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", "172.17.0.1/16", "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        sys::sysctl_in(
            &e.sb.host_netns_path(),
            &[
                "net.ipv4.ip_forward=1",
                "net.bridge.bridge-nf-call-iptables=1",
            ],
        )?;
        iptables_restore(
            &e.sb.host_netns_path(),
            &rules::base(BRIDGE, "172.17.0.0/16").restore_doc(),
        )?;
        let srv = e.container(Ipv4Addr::new(172, 17, 0, 2))?;
        let cli = e.container(Ipv4Addr::new(172, 17, 0, 3))?;
        e.ew_server = Ipv4Addr::new(172, 17, 0, 2);
        e.ew_client = cli.path();
        env::start_servers(&mut e.procs, &srv.path(), tools, pin, true)?;
        e.containers.extend([srv, cli]);
        env::start_world_servers(&mut e.procs, &e.sb.world_netns_path(), tools, pin)?;
        sys::client_sysctls(&e.ew_client)?;
        sys::client_sysctls(&e.sb.world_netns_path())?;
        Ok(e)
    }

    /// A namespace with `eth0` on docker0, Docker's MAC for its address.
    fn container(&mut self, addr: Ipv4Addr) -> anyhow::Result<Netns> {
        let c = Netns::new("m")?;
        self.n_veth += 1;
        let veth = format!("veth{:07}", self.n_veth);
        let h = self.sb.host_ns.clone();
        let ip =
            |args: &[&str]| sys::ok(std::process::Command::new("ip").args(["-n", &h]).args(args));
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &c.name,
        ])?;
        ip(&["link", "set", &veth, "master", BRIDGE])?;
        ip(&[
            "link",
            "set",
            &veth,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ])?;
        ip(&["link", "set", &veth, "up"])?;
        let o = addr.octets();
        let mac = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        c.ip(&["link", "set", "eth0", "address", &mac])?;
        c.ip(&["addr", "add", &format!("{addr}/16"), "dev", "eth0"])?;
        c.ip(&["link", "set", "eth0", "up"])?;
        c.ip(&["route", "add", "default", "via", "172.17.0.1"])?;
        Ok(c)
    }

    fn pp_rules(&self, op: &str) -> String {
        let mut r = rules::filler(BRIDGE, UPLINK_IP, FILLER_FIRST, self.filler, op);
        r.extend(rules::port(
            BRIDGE,
            &Published {
                host_ip: UPLINK_IP,
                host_port: PP_PORT,
                container_ip: PP_IP,
                container_port: PP_PORT,
            },
            op,
        ));
        r.restore_doc()
    }
}

impl Drop for ModelEnv {
    fn drop(&mut self) {
        self.procs.kill_all();
        self.pp_procs.kill_all();
    }
}

impl Env for ModelEnv {
    fn label(&self) -> String {
        "docker0 (model)".into()
    }
    fn describe(&self) -> String {
        format!(
            "docker0 MODEL (the Docker daemon could not run: {}): a Linux bridge with br_netfilter and Docker's iptables rules ({})",
            self.why,
            super::docker::iptables_backend()
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
    fn world(&self) -> PathBuf {
        self.sb.world_netns_path()
    }

    fn pp_setup(&mut self, others: u32) -> Outcome<(Ipv4Addr, u16)> {
        self.filler = others;
        let c = self.container(PP_IP)?;
        let cpu = env::server_cpu(self.pin);
        self.pp_procs.spawn(in_netns(
            &c.path(),
            cpu,
            self.tools.connrate(),
            &["serve", &PP_PORT.to_string()],
        ))?;
        env::wait_listening(&c.path(), PP_PORT)?;
        self.pp = Some(c);
        iptables_restore(&self.sb.host_netns_path(), &self.pp_rules("-A"))?;
        if !env::probe_published(&self.world(), &self.tools, UPLINK_IP, PP_PORT) {
            return Err(Miss::Failed(anyhow::anyhow!(
                "the model's published port does not answer"
            )));
        }
        Ok((UPLINK_IP, PP_PORT))
    }

    fn pp_teardown(&mut self) -> anyhow::Result<()> {
        self.pp_procs.kill_all();
        if self.pp.take().is_some() {
            iptables_restore(&self.sb.host_netns_path(), &self.pp_rules("-D"))?;
        }
        self.filler = 0;
        Ok(())
    }

    fn control_plane(&mut self, _: usize, _: u32) -> Outcome<CpFigures> {
        Err(Miss::Na("n/a (the model has no control plane)".into()))
    }
}
