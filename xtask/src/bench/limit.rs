//! The limit: what the kernel does with nothing in the way.
//!
//! - East-west: two namespaces joined by one direct veth pair.
//! - North-south and published ports: a container namespace, a router
//!   namespace (forwarding on, no netfilter rules, no NAT) and a world
//!   namespace, each joined by a veth pair; the world routes the container
//!   subnet to the router, so published-port clients reach the container's
//!   own address without DNAT.
//! - IPv6 (when an IPv6 group is measured): the same namespaces with IPv6
//!   addresses too, the router forwarding IPv6 (no NAT66: the world routes
//!   the container's subnet back to the router).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use super::{
    env::{self, CpFigures, Env, Miss, Outcome, PP_PORT, Tools, UPLINK_IP6, WORLD_IP6},
    sys::{self, Netns, Procs, in_netns},
};

const A: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const WORLD: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// IPv6 in [`env::BRIDGE_CIDR6`]: the two ends of the pair (and the
/// north-south container, `A6`) and the router's side of the container
/// subnet.
const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xd6e7, 0, 0, 0, 0, 0, 2);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xd6e7, 0, 0, 0, 0, 0, 3);
const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xd6e7, 0, 0, 0, 0, 0, 1);

pub struct LimitEnv {
    procs: Procs,
    ew_a: Netns,
    // Held for their Drop.
    _ew_b: Netns,
    c: Netns,
    router: Netns,
    world: Netns,
    ipv6: bool,
}

impl LimitEnv {
    pub fn new(tools: &Tools, pin: bool, ipv6: bool) -> anyhow::Result<LimitEnv> {
        let mut e = LimitEnv {
            procs: Procs::default(),
            ew_a: Netns::new("la")?,
            _ew_b: Netns::new("lb")?,
            c: Netns::new("lc")?,
            router: Netns::new("lr")?,
            world: Netns::new("lw")?,
            ipv6,
        };
        let (a, b) = (&e.ew_a, &e._ew_b);
        a.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name,
        ])?;
        for (ns, ip) in [(a, A), (b, B)] {
            ns.ip(&["addr", "add", &format!("{ip}/16"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        let (c, r, w) = (&e.c, &e.router, &e.world);
        c.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "vc", "netns", &r.name,
        ])?;
        r.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &w.name,
        ])?;
        c.ip(&["addr", "add", "172.17.0.2/16", "dev", "eth0"])?;
        r.ip(&["addr", "add", "172.17.0.1/16", "dev", "vc"])?;
        r.ip(&["addr", "add", "198.18.0.2/24", "dev", "eth0"])?;
        w.ip(&["addr", "add", "198.18.0.1/24", "dev", "eth0"])?;
        c.ip(&["link", "set", "eth0", "up"])?;
        r.ip(&["link", "set", "vc", "up"])?;
        r.ip(&["link", "set", "eth0", "up"])?;
        w.ip(&["link", "set", "eth0", "up"])?;
        c.ip(&["route", "add", "default", "via", "172.17.0.1"])?;
        w.ip(&["route", "add", "172.17.0.0/16", "via", "198.18.0.2"])?;
        sys::sysctl_in(&r.path(), &["net.ipv4.ip_forward=1"])?;
        if ipv6 {
            // Addresses usable at once (no DAD), as dnet's and Docker's.
            let v6 = |ns: &Netns, ip: Ipv6Addr, dev: &str| {
                ns.ip(&["addr", "add", &format!("{ip}/64"), "dev", dev, "nodad"])
            };
            v6(a, A6, "eth0")?;
            v6(b, B6, "eth0")?;
            v6(c, A6, "eth0")?;
            v6(r, GW6, "vc")?;
            v6(r, UPLINK_IP6, "eth0")?;
            v6(w, WORLD_IP6, "eth0")?;
            c.ip(&["-6", "route", "add", "default", "via", &GW6.to_string()])?;
            w.ip(&[
                "-6",
                "route",
                "add",
                env::BRIDGE_CIDR6,
                "via",
                &UPLINK_IP6.to_string(),
            ])?;
            sys::sysctl_in(&r.path(), &["net.ipv6.conf.all.forwarding=1"])?;
        }
        let (bp, wp, cp) = (b.path(), w.path(), c.path());
        env::start_servers(&mut e.procs, &bp, tools, pin, true)?;
        env::start_world_servers(&mut e.procs, &wp, tools, pin)?;
        e.procs.spawn(in_netns(
            &cp,
            env::server_cpu(pin),
            tools.connrate(),
            &["serve", &PP_PORT.to_string()],
        ))?;
        env::wait_listening(&cp, PP_PORT)?;
        for ns in [&e.ew_a.path(), &e.c.path(), &e.world.path()] {
            sys::client_sysctls(ns)?;
        }
        Ok(e)
    }
}

impl LimitEnv {
    fn v6(&self) -> Outcome<()> {
        if self.ipv6 {
            Ok(())
        } else {
            Err(Miss::Na("n/a: set up without IPv6".into()))
        }
    }
}

impl Env for LimitEnv {
    fn label(&self) -> String {
        "limit".into()
    }
    fn describe(&self) -> String {
        "the limit: east-west one direct veth pair; north-south and published ports a plain routed path (veth, router namespace, veth), no NAT, no netfilter rules; the same over IPv6 (no NAT66)".into()
    }
    fn conntrack_netns(&self) -> Vec<PathBuf> {
        vec![self.router.path()]
    }
    fn east_west(&self) -> (PathBuf, Ipv4Addr) {
        (self.ew_a.path(), B)
    }
    fn north_south(&self) -> Outcome<(PathBuf, Ipv4Addr)> {
        Ok((self.c.path(), WORLD))
    }
    fn east_west6(&self) -> Outcome<(PathBuf, Ipv6Addr)> {
        self.v6()?;
        Ok((self.ew_a.path(), B6))
    }
    fn north_south6(&self) -> Outcome<(PathBuf, Ipv6Addr)> {
        self.v6()?;
        Ok((self.c.path(), WORLD_IP6))
    }
    fn world(&self) -> PathBuf {
        self.world.path()
    }
    fn pp_setup(&mut self, _: u32) -> Outcome<(Ipv4Addr, u16)> {
        // No ports to publish: the world reaches the container directly.
        Ok((A, PP_PORT))
    }
    fn pp_teardown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    fn control_plane(&mut self, _: usize, _: u32) -> Outcome<CpFigures> {
        Err(Miss::Na("— (no control plane)".into()))
    }
}
