//! Published ports: checking a request against the host and the other
//! containers, and keeping the datapath's service map equal to the state.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd as _,
};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, setsockopt, socket, sockopt,
};

use dnet_common::{Service, Service6, ServiceKey, ServiceKey6, addr::ipv4_be};

use super::{Engine, Inner};
use crate::{
    conflict,
    error::{Error, Result},
    invalid,
    model::{Container, Endpoint, Network, RuntimeRef, State},
    not_found,
    spec::{PortMapping, Proto},
};

/// The published ports of a container one family answers, each as (host
/// address, host port, container port, protocol): a mapping without an
/// address is in both families, one with an address in that address's.
fn ports_of<'a, const V6: bool>(
    c: &'a Container,
) -> impl Iterator<Item = (Option<IpAddr>, u16, u16, u8)> + 'a {
    c.ports
        .iter()
        .filter(|m| m.host_ip.is_none_or(|ip| ip.is_ipv6() == V6))
        .flat_map(|m| {
            (0..m.count).map(move |i| {
                (
                    m.host_ip,
                    m.host_port + i,
                    m.container_port + i,
                    m.proto.number(),
                )
            })
        })
}

/// The keys of a container's published ports, one per port.
fn service_keys(c: &Container) -> impl Iterator<Item = (ServiceKey, u16)> + '_ {
    ports_of::<false>(c).map(|(ip, host_port, port, proto)| {
        let addr_be = match ip {
            Some(IpAddr::V4(a)) => ipv4_be(a),
            _ => 0,
        };
        (
            ServiceKey {
                addr_be,
                port_be: host_port.to_be(),
                proto,
                _pad: 0,
            },
            port,
        )
    })
}

/// The keys of a container's ports published over IPv6, one per port.
fn service_keys6(c: &Container) -> impl Iterator<Item = (ServiceKey6, u16)> + '_ {
    ports_of::<true>(c).map(|(ip, host_port, port, proto)| {
        let addr = match ip {
            Some(IpAddr::V6(a)) => a.octets(),
            _ => [0; 16],
        };
        (
            ServiceKey6 {
                addr,
                port_be: host_port.to_be(),
                proto,
                _pad: 0,
            },
            port,
        )
    })
}

/// The endpoint a container's published ports lead to: its first on a
/// bridge network that is not internal. With none, they lead nowhere (a
/// port never moves onto an internal network, where nothing from outside
/// may reach) until the container joins such a network again.
fn backend_of<'a>(st: &State, c: &'a Container) -> Option<&'a Endpoint> {
    c.endpoints
        .iter()
        .find(|e| publishable(st, e).is_some() && e.ip.is_some())
}

/// The network of `e` when published ports may lead there: a bridge
/// network that is not internal, `e` plugged in on the host side.
fn publishable<'a>(st: &'a State, e: &Endpoint) -> Option<&'a crate::model::Network> {
    st.networks.get(&e.network_id).filter(|net| {
        crate::driver::caps(net.driver).ports && !net.internal && e.host_ifname.is_some()
    })
}

/// The service entries a container's published ports need: to its address
/// on the endpoint [`backend_of`] picks.
pub fn services_of(st: &State, c: &Container) -> Vec<(ServiceKey, Service)> {
    let Some(ip) = backend_of(st, c).and_then(|e| e.ip) else {
        return Vec::new();
    };
    service_keys(c)
        .map(|(k, port)| {
            (
                k,
                Service {
                    backend_be: ipv4_be(ip),
                    backend_port_be: port.to_be(),
                    _pad: 0,
                },
            )
        })
        .collect()
}

/// The IPv6 service entries: to the IPv6 address of the same endpoint,
/// when it is dual-stack. An IPv4-only container has none, and the host's
/// IPv6 connections to its ports are refused by the kernel (dnet has no
/// proxy to carry them over IPv4).
///
/// On a routed IPv6 network (`gateway_mode_ipv6=routed`), each port is
/// also published at the container's own address and port, as Docker's
/// routed mode opens it: the datapath lets the world in there on published
/// ports only (`routed6`). That holds on each routed network the container
/// is on, whichever of its networks the host ports lead to (a container on
/// a NAT66 network and a routed one has its ports at its routed address
/// too).
pub fn services6_of(st: &State, c: &Container) -> Vec<(ServiceKey6, Service6)> {
    let mut v: Vec<(ServiceKey6, Service6)> = Vec::new();
    if let Some(ip6) = backend_of(st, c).and_then(|e| e.ip6) {
        v.extend(service_keys6(c).map(|(k, port)| {
            (
                k,
                Service6 {
                    backend: ip6.octets(),
                    backend_port_be: port.to_be(),
                    _pad: 0,
                },
            )
        }));
    }
    let routed = c.endpoints.iter().filter_map(|e| {
        publishable(st, e)
            .filter(|n| n.gateway_mode6() == crate::model::GatewayMode6::Routed)
            .and(e.ip6)
    });
    for ip6 in routed {
        v.extend(routed_keys6(c, ip6).map(|k| {
            (
                k,
                Service6 {
                    backend: k.addr,
                    backend_port_be: k.port_be,
                    _pad: 0,
                },
            )
        }));
    }
    v
}

/// The keys under which a routed network's container `c`, at `ip6`, has
/// its ports published at its own address (see [`services6_of`]).
fn routed_keys6(c: &Container, ip6: Ipv6Addr) -> impl Iterator<Item = ServiceKey6> + '_ {
    ports_of::<true>(c).map(move |(_, _, port, proto)| ServiceKey6 {
        addr: ip6.octets(),
        port_be: port.to_be(),
        proto,
        _pad: 0,
    })
}

/// Every service entry the state asks for.
///
/// Containers that publish nothing (most of them) are passed over before
/// their backend is looked for: that look-up, for each container at every
/// attach, grew with their number.
pub fn services_of_state(st: &State) -> BTreeMap<(u32, u16, u8), Service> {
    st.containers
        .values()
        .filter(|c| !c.ports.is_empty())
        .flat_map(|c| services_of(st, c))
        .map(|(k, s)| ((k.addr_be, k.port_be, k.proto), s))
        .collect()
}

/// Every IPv6 service entry the state asks for.
/// (Containers that publish nothing are passed over, as above.)
pub fn services6_of_state(st: &State) -> HashMap<ServiceKey6, Service6> {
    st.containers
        .values()
        .filter(|c| !c.ports.is_empty())
        .flat_map(|c| services6_of(st, c))
        .collect()
}

/// Binds (without listening) a socket of `proto` to `addr` and closes it:
/// an IPv6 one with `IPV6_V6ONLY`, so that it judges IPv6 alone.
fn probe_bind(addr: SocketAddr, proto: Proto) -> std::io::Result<()> {
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None)?;
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?
        }
    }
    Ok(())
}

/// Can the host give this port away? A process listening on it (or an
/// address the host does not have) says no, as `docker-proxy`'s bind
/// would. A mapping without an address is checked on `0.0.0.0`, and also
/// on `[::]` when the container is `dual_stack` (its port is then
/// published over IPv6 too, so a host listener on `[::1]:P` or on the
/// uplink's IPv6 would lose its clients to the container).
fn host_port_free(ip: Option<IpAddr>, port: u16, proto: Proto, dual_stack: bool) -> Result<()> {
    let addrs: Vec<IpAddr> = match ip {
        Some(ip) => vec![ip],
        None if dual_stack => vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ],
        None => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
    };
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        match probe_bind(addr, proto) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(conflict!(
                    "host port {port}/{} is in use on this host{}",
                    proto.as_str(),
                    if ip.is_ipv6() { " (over IPv6)" } else { "" }
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(invalid!("{} is not an address of this host", addr.ip()));
            }
            Err(e) => return Err(Error::io(format!("checking host port {addr}"))(e)),
        }
    }
    Ok(())
}

/// An IPv6 host address needs a container with an IPv6 address to lead
/// to: on a network without IPv6 it would publish nothing.
fn check_family(p: &PortMapping, net: &Network) -> Result<()> {
    match p.host_ip {
        Some(IpAddr::V6(ip)) if net.ipam6.is_none() => Err(invalid!(
            "network {} is IPv4-only: its containers cannot publish ports on [{ip}] (publish on an IPv4 address, or use a network made with --ipv6)",
            net.name
        )),
        _ => Ok(()),
    }
}

/// A port to publish, as a runtime asks for it: one container port, a host
/// port, a range to pick one free host port from, or none (dnet picks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRequest {
    pub proto: Proto,
    pub container_port: u16,
    /// `None`: every address of the host (both families on a dual-stack
    /// network); an address publishes in its own family only.
    pub host_ip: Option<IpAddr>,
    /// 0: dnet picks a free port.
    pub host_port: u16,
    /// The end of a range to pick from (0 or equal to `host_port`: exactly
    /// `host_port`).
    pub host_port_end: u16,
}

impl PortRequest {
    /// Does an existing mapping answer this request?
    fn met_by(&self, m: &PortMapping) -> bool {
        m.count == 1
            && m.proto == self.proto
            && m.container_port == self.container_port
            && m.host_ip == self.host_ip
            && match self.host_port {
                0 => true,
                p => (p..=self.host_port_end.max(p)).contains(&m.host_port),
            }
    }
}

impl Engine {
    /// Publishes `ports` for the container `rt` attached, in place of the
    /// ports it published before; requests that its current mappings meet
    /// keep them (a repeat changes nothing). Returns the mappings. Bad
    /// input changes nothing.
    pub async fn set_runtime_ports(
        &self,
        rt: &RuntimeRef,
        ports: &[PortRequest],
    ) -> Result<Vec<PortMapping>> {
        self.inner.lock().await.set_runtime_ports(rt, ports)
    }
}

impl Inner {
    /// Parses `-p` specs and checks them against the network, the ports
    /// already published and the host's own sockets.
    pub(super) fn check_ports(&self, specs: &[String], net: &Network) -> Result<Vec<PortMapping>> {
        let ports: Vec<PortMapping> = specs
            .iter()
            .map(|s| s.parse::<PortMapping>())
            .collect::<std::result::Result<_, _>>()?;
        self.check_mappings(&ports, net, None)?;
        Ok(ports)
    }

    /// Checks mappings against the network, each other, the ports other
    /// containers than `except` publish, and the host's own sockets.
    pub(super) fn check_mappings(
        &self,
        ports: &[PortMapping],
        net: &Network,
        except: Option<&str>,
    ) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        if !crate::driver::caps(net.driver).ports {
            return Err(invalid!(
                "ports can only be published on a bridge network ({} uses the {} driver)",
                net.name,
                net.driver
            ));
        }
        if net.internal {
            return Err(invalid!(
                "network {} is internal: it cannot publish ports",
                net.name
            ));
        }
        for (i, p) in ports.iter().enumerate() {
            check_family(p, net)?;
            if let Some(q) = ports[..i].iter().find(|q| q.clashes_with(p)) {
                return Err(conflict!("published ports {q} and {p} overlap"));
            }
            for c in self.state.containers.values() {
                if Some(c.id.as_str()) == except {
                    continue;
                }
                if let Some(q) = c.ports.iter().find(|q| q.clashes_with(p)) {
                    return Err(conflict!(
                        "port {p} is already published by container {} ({q})",
                        c.name
                    ));
                }
            }
        }
        // The datapath answers on the uplink's address and the host's
        // sockets on loopback: a port on any other address would never be
        // reached.
        let cfg = self.ctx.dp.config().ok().filter(|c| c.uplink_ifindex != 0);
        let uplink = cfg.map(|c| dnet_common::addr::ipv4_from_be(c.uplink_addr_be));
        let uplink6 = cfg
            .map(|c| Ipv6Addr::from(c.uplink_addr6))
            .filter(|a| !a.is_unspecified());
        for p in ports {
            match p.host_ip {
                Some(IpAddr::V4(ip)) if !ip.is_loopback() && Some(ip) != uplink => {
                    return Err(match uplink {
                        Some(u) => invalid!(
                            "ports can be published on the uplink's address ({u}), on a loopback address or on all addresses, not on {ip}"
                        ),
                        None => invalid!(
                            "without an uplink, ports can be published on a loopback address only, not on {ip}"
                        ),
                    });
                }
                Some(IpAddr::V6(ip))
                    if !ip.is_loopback() && !ip.is_unspecified() && Some(ip) != uplink6 =>
                {
                    return Err(match uplink6 {
                        Some(u) => invalid!(
                            "ports can be published on the uplink's IPv6 address ({u}), on ::1 or on all IPv6 addresses (::), not on {ip}"
                        ),
                        None => invalid!(
                            "the uplink has no global IPv6 address: ports can be published on ::1 only, not on {ip}"
                        ),
                    });
                }
                _ => {}
            }
            for port in p.host_ports() {
                host_port_free(p.host_ip, port, p.proto, net.ipam6.is_some())?;
            }
        }
        Ok(())
    }

    /// Publishes a container's ports in the datapath.
    pub(super) fn publish(&mut self, c: &Container) -> Result<()> {
        for (k, s) in services_of(&self.state, c) {
            self.ctx.dp.set_service(&k, &s)?;
        }
        for (k, s) in services6_of(&self.state, c) {
            self.ctx.dp.set_service6(&k, &s)?;
        }
        Ok(())
    }

    /// Removes a container's ports from the datapath.
    pub(super) fn unpublish(&mut self, c: &Container) {
        for (k, _) in service_keys(c) {
            if let Err(e) = self.ctx.dp.clear_service(&k) {
                tracing::warn!(container = %c.name, "unpublishing: {e}");
            }
        }
        let routed = c
            .endpoints
            .iter()
            .filter_map(|e| e.ip6)
            .flat_map(|ip6| routed_keys6(c, ip6));
        for k in service_keys6(c).map(|(k, _)| k).chain(routed) {
            if let Err(e) = self.ctx.dp.clear_service6(&k) {
                tracing::warn!(container = %c.name, "unpublishing over IPv6: {e}");
            }
        }
    }

    /// Makes the service map equal to the state's ports.
    pub(super) fn sync_services(&mut self) -> Result<()> {
        let want = services_of_state(&self.state);
        for (k, s) in self.ctx.dp.services()? {
            if want.get(&(k.addr_be, k.port_be, k.proto)) != Some(&s) {
                self.ctx.dp.clear_service(&k)?;
            }
        }
        let have: BTreeMap<(u32, u16, u8), Service> = self
            .ctx
            .dp
            .services()?
            .into_iter()
            .map(|(k, s)| ((k.addr_be, k.port_be, k.proto), s))
            .collect();
        for ((addr_be, port_be, proto), s) in want {
            if have.get(&(addr_be, port_be, proto)) != Some(&s) {
                let k = ServiceKey {
                    addr_be,
                    port_be,
                    proto,
                    _pad: 0,
                };
                self.ctx.dp.set_service(&k, &s)?;
            }
        }
        let want6 = services6_of_state(&self.state);
        let have6: HashMap<ServiceKey6, Service6> = self.ctx.dp.services6()?.into_iter().collect();
        for (k, s) in &have6 {
            if want6.get(k) != Some(s) {
                self.ctx.dp.clear_service6(k)?;
            }
        }
        for (k, s) in &want6 {
            if have6.get(k) != Some(s) {
                self.ctx.dp.set_service6(k, s)?;
            }
        }
        Ok(())
    }

    pub(super) fn set_runtime_ports(
        &mut self,
        rt: &RuntimeRef,
        reqs: &[PortRequest],
    ) -> Result<Vec<PortMapping>> {
        let c = self
            .runtime_container(rt)
            .ok_or_else(|| not_found!("no container attached by {} {}", rt.runtime, rt.id))?
            .clone();
        let net = c
            .endpoints
            .first()
            .and_then(|e| self.state.networks.get(&e.network_id))
            .ok_or_else(|| not_found!("container {} has no network", c.name))?
            .clone();
        // A network that cannot publish (not a bridge, internal) is refused
        // by `check_mappings` at the first request.
        let mut chosen: Vec<PortMapping> = Vec::new();
        for r in reqs {
            if let Some(m) = c.ports.iter().find(|m| r.met_by(m) && !chosen.contains(m)) {
                chosen.push(*m);
                continue;
            }
            let candidates: Vec<u16> = match r.host_port {
                0 => self.free_port_candidates(),
                p => (p..=r.host_port_end.max(p)).collect(),
            };
            let mut last_err = None;
            let mut found = None;
            for port in candidates {
                let m = PortMapping {
                    host_ip: r.host_ip,
                    host_port: port,
                    container_port: r.container_port,
                    count: 1,
                    proto: r.proto,
                };
                let mut all = chosen.clone();
                all.push(m);
                match self.check_mappings(&all, &net, Some(&c.id)) {
                    Ok(()) => {
                        found = Some(m);
                        break;
                    }
                    // A bad address is bad for every port.
                    Err(e @ crate::error::Error::Invalid(_)) => return Err(e),
                    Err(e) => last_err = Some(e),
                }
            }
            match (found, last_err) {
                (Some(m), _) => chosen.push(m),
                (None, Some(e)) if r.host_port != 0 && r.host_port_end <= r.host_port => {
                    return Err(e);
                }
                (None, _) => {
                    return Err(conflict!(
                        "no free host port for {}/{} in the range asked for",
                        r.container_port,
                        r.proto.as_str()
                    ));
                }
            }
        }
        if chosen == c.ports {
            return Ok(chosen);
        }
        let old = self.state.clone();
        let mut st = self.state.clone();
        st.containers
            .get_mut(&c.id)
            .expect("present")
            .ports
            .clone_from(&chosen);
        self.commit(st)?;
        if let Err(e) = self.sync_services() {
            // Back to what was published.
            if let Err(e) = self.commit(old) {
                tracing::warn!(container = %c.name, "restoring its ports: {e}");
            }
            if let Err(e) = self.sync_services() {
                tracing::warn!(container = %c.name, "restoring its ports: {e}");
            }
            return Err(e);
        }
        tracing::info!(container = %c.name, ports = chosen.len(), "ports published");
        Ok(chosen)
    }

    /// Host ports to pick from: the host's ephemeral range without the
    /// NAT's ports (a published port there would meet translated flows).
    pub(super) fn free_port_candidates(&self) -> Vec<u16> {
        let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().map(str::parse::<u16>);
                Some((it.next()?.ok()?, it.next()?.ok()?))
            })
            .unwrap_or((32768, 60999));
        let (nlo, nhi) = self.cfg.nat.ports;
        (lo..=hi).filter(|p| !(nlo..=nhi).contains(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriverKind;
    use crate::model::{Endpoint, Netns};

    fn network(id: &str, driver: DriverKind, internal: bool) -> Network {
        Network {
            id: id.into(),
            name: id.into(),
            driver,
            created: 0,
            predefined: false,
            internal,
            ipam: None,
            ipam6: None,
            options: Default::default(),
            dp_id: 1,
            host_address: None,
            host_address6: None,
            runtime: None,
            runtime_ipam: false,
        }
    }

    fn endpoint(net: &str, ip: &str) -> Endpoint {
        Endpoint {
            network_id: net.into(),
            ifname: Some("eth0".into()),
            host_ifname: Some(format!("veth-{net}")),
            ip: Some(ip.parse().unwrap()),
            ip6: None,
            mac: None,
            slot: Some(1),
            aliases: Vec::new(),
        }
    }

    fn container(endpoints: Vec<Endpoint>) -> Container {
        Container {
            id: "c".into(),
            name: "c".into(),
            created: 0,
            netns: Netns::Host,
            endpoints,
            ports: vec![
                "8000-8002:9000-9002".parse().unwrap(),
                "127.0.0.1:53:5353/udp".parse().unwrap(),
            ],
            process: None,
            owner: None,
            runtime: None,
            dns: vec![],
            hostname: None,
        }
    }

    fn state() -> State {
        let mut st = State::default();
        for n in [
            network("n", DriverKind::Bridge, false),
            network("closed", DriverKind::Bridge, true),
            network("other", DriverKind::Bridge, false),
        ] {
            st.networks.insert(n.id.clone(), n);
        }
        st
    }

    #[test]
    fn a_range_becomes_one_service_per_port() {
        let c = container(vec![endpoint("n", "172.17.0.2")]);
        let s = services_of(&state(), &c);
        assert_eq!(s.len(), 4);
        assert_eq!(u16::from_be(s[2].0.port_be), 8002);
        assert_eq!(u16::from_be(s[2].1.backend_port_be), 9002);
        assert_eq!(s[2].0.addr_be, 0);
        assert_eq!(s[3].0.addr_be, ipv4_be("127.0.0.1".parse().unwrap()));
        assert_eq!(s[3].0.proto, 17);
        assert_eq!(s[3].1.backend_be, ipv4_be("172.17.0.2".parse().unwrap()));
    }

    #[test]
    fn published_ports_never_lead_into_an_internal_network() {
        let st = state();
        // Connected to an internal network first, then to a bridge one.
        let c = container(vec![
            endpoint("closed", "10.23.0.2"),
            endpoint("other", "10.24.0.2"),
        ]);
        let s = services_of(&st, &c);
        assert_eq!(s.len(), 4);
        assert!(
            s.iter()
                .all(|(_, v)| v.backend_be == ipv4_be("10.24.0.2".parse().unwrap()))
        );
        // On internal networks only: the ports lead nowhere.
        let c = container(vec![endpoint("closed", "10.23.0.2")]);
        assert!(services_of(&st, &c).is_empty());
        assert_eq!(service_keys(&c).count(), 4, "their keys stay known");
    }

    #[test]
    fn a_dual_stack_container_publishes_over_ipv6_in_the_families_asked() {
        let mut e = endpoint("n", "172.17.0.2");
        let mut c = container(vec![e.clone()]);
        assert!(services6_of(&state(), &c).is_empty(), "IPv4-only: none");
        e.ip6 = Some("fd00::2".parse().unwrap());
        c.endpoints = vec![e];
        c.ports = vec![
            "8080:80".parse().unwrap(),
            "127.0.0.1:8081:81".parse().unwrap(),
            "[::1]:8082:82/udp".parse().unwrap(),
            "[::]:8083:83".parse().unwrap(),
        ];
        let v4: Vec<u16> = services_of(&state(), &c)
            .iter()
            .map(|(k, _)| u16::from_be(k.port_be))
            .collect();
        assert_eq!(v4, [8080, 8081]);
        let v6 = services6_of(&state(), &c);
        let got: Vec<(u16, [u8; 16], u16)> = v6
            .iter()
            .map(|(k, s)| {
                (
                    u16::from_be(k.port_be),
                    k.addr,
                    u16::from_be(s.backend_port_be),
                )
            })
            .collect();
        let lo: std::net::Ipv6Addr = "::1".parse().unwrap();
        assert_eq!(
            got,
            [
                (8080, [0; 16], 80),
                (8082, lo.octets(), 82),
                (8083, [0; 16], 83)
            ]
        );
        let ip6: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        assert!(v6.iter().all(|(_, s)| s.backend == ip6.octets()));
    }

    #[test]
    fn a_routed_network_publishes_at_the_containers_own_address_too() {
        let mut st = state();
        st.networks
            .get_mut("n")
            .unwrap()
            .options
            .insert("gateway_mode_ipv6".into(), "routed".into());
        let mut e = endpoint("n", "172.17.0.2");
        e.ip6 = Some("fd00::2".parse().unwrap());
        let mut c = container(vec![e]);
        c.ports = vec![
            "8080:80".parse().unwrap(),
            "[::1]:5353:53/udp".parse().unwrap(),
        ];
        let ip6: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        let got: Vec<([u8; 16], u16, u8, u16)> = services6_of(&st, &c)
            .iter()
            .map(|(k, s)| {
                assert_eq!(s.backend, ip6.octets());
                (
                    k.addr,
                    u16::from_be(k.port_be),
                    k.proto,
                    u16::from_be(s.backend_port_be),
                )
            })
            .collect();
        let lo: std::net::Ipv6Addr = "::1".parse().unwrap();
        assert_eq!(
            got,
            [
                ([0; 16], 8080, 6, 80),
                (lo.octets(), 5353, 17, 53),
                (ip6.octets(), 80, 6, 80),
                (ip6.octets(), 53, 17, 53),
            ]
        );
    }

    #[test]
    fn each_routed_network_of_a_container_gets_its_ports_at_its_own_address() {
        let mut st = state();
        // "n" NAT66, "other" routed; the container on both, NAT66 first
        // (the host ports lead there), and on the internal one too.
        st.networks
            .get_mut("other")
            .unwrap()
            .options
            .insert("gateway_mode_ipv6".into(), "routed".into());
        let mut closed = st.networks["closed"].clone();
        closed
            .options
            .insert("gateway_mode_ipv6".into(), "routed".into());
        st.networks.insert("closed".into(), closed);
        let with6 = |net, ip, ip6: &str| Endpoint {
            ip6: Some(ip6.parse().unwrap()),
            ..endpoint(net, ip)
        };
        let nat6: std::net::Ipv6Addr = "fd00:1::2".parse().unwrap();
        let routed6: std::net::Ipv6Addr = "fd00:2::2".parse().unwrap();
        let mut c = container(vec![
            with6("n", "172.17.0.2", "fd00:1::2"),
            with6("other", "10.24.0.2", "fd00:2::2"),
            with6("closed", "10.23.0.2", "fd00:3::2"),
        ]);
        c.ports = vec!["8080:80".parse().unwrap()];
        let got: Vec<([u8; 16], u16, [u8; 16], u16)> = services6_of(&st, &c)
            .iter()
            .map(|(k, s)| {
                (
                    k.addr,
                    u16::from_be(k.port_be),
                    s.backend,
                    u16::from_be(s.backend_port_be),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ([0; 16], 8080, nat6.octets(), 80),
                (routed6.octets(), 80, routed6.octets(), 80),
            ],
            "the host port to the first network, [routed]:80 on the routed one, \
             nothing on the internal one"
        );
        // The routed network first: its address gets both.
        c.endpoints.swap(0, 1);
        let got: Vec<([u8; 16], u16)> = services6_of(&st, &c)
            .iter()
            .map(|(k, _)| (k.addr, u16::from_be(k.port_be)))
            .collect();
        assert_eq!(got, [([0; 16], 8080), (routed6.octets(), 80)]);
        assert!(
            services6_of(&st, &c)
                .iter()
                .all(|(_, s)| s.backend == routed6.octets())
        );
    }

    #[test]
    fn an_ipv6_host_address_needs_a_dual_stack_network() {
        let mut net = network("n", DriverKind::Bridge, false);
        let lo6: PortMapping = "[::1]:8080:80".parse().unwrap();
        let all6: PortMapping = "[::]:8080:80".parse().unwrap();
        for p in [lo6, all6] {
            let e = check_family(&p, &net).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{e}");
            assert!(e.to_string().contains("IPv4-only"), "{e}");
        }
        assert!(check_family(&"127.0.0.1:8080:80".parse().unwrap(), &net).is_ok());
        assert!(check_family(&"8080:80".parse().unwrap(), &net).is_ok());
        net.ipam6 = Some(crate::model::Ipam6 {
            subnet: "fd00:1::/64".parse().unwrap(),
            gateway: "fd00:1::1".parse().unwrap(),
            ip_range: None,
        });
        assert!(check_family(&lo6, &net).is_ok());
    }

    #[test]
    fn a_dual_stack_publish_sees_host_listeners_on_ipv6_only() {
        for proto in [Proto::Tcp, Proto::Udp] {
            // A host service on [::1] only (IPV6_V6ONLY), on a port the
            // kernel chose, which 0.0.0.0 does not see.
            let fd = socket(
                AddressFamily::Inet6,
                match proto {
                    Proto::Tcp => SockType::Stream,
                    Proto::Udp => SockType::Datagram,
                },
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).unwrap();
            let lo = std::net::SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0);
            bind(fd.as_raw_fd(), &SockaddrIn6::from(lo)).unwrap();
            if proto == Proto::Tcp {
                nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(1).unwrap()).unwrap();
            }
            let port = nix::sys::socket::getsockname::<SockaddrIn6>(fd.as_raw_fd())
                .unwrap()
                .port();
            host_port_free(None, port, proto, false).expect("IPv4 alone does not see it");
            let e = host_port_free(None, port, proto, true).unwrap_err();
            assert!(matches!(e, Error::Conflict(_)), "{e}");
            assert!(e.to_string().contains("over IPv6"), "{e}");
            let e = host_port_free(Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), port, proto, true);
            assert!(matches!(e, Err(Error::Conflict(_))));
        }
    }

    #[test]
    fn a_request_is_met_by_a_matching_mapping_only() {
        let m: PortMapping = "8080:80".parse().unwrap();
        let r = PortRequest {
            proto: Proto::Tcp,
            container_port: 80,
            host_ip: None,
            host_port: 8080,
            host_port_end: 8080,
        };
        assert!(r.met_by(&m));
        assert!(PortRequest { host_port: 0, ..r }.met_by(&m));
        assert!(
            PortRequest {
                host_port: 8000,
                host_port_end: 8090,
                ..r
            }
            .met_by(&m)
        );
        assert!(
            !PortRequest {
                host_port: 8081,
                ..r
            }
            .met_by(&m)
        );
        assert!(
            !PortRequest {
                proto: Proto::Udp,
                ..r
            }
            .met_by(&m)
        );
        assert!(
            !PortRequest {
                host_ip: Some(Ipv4Addr::LOCALHOST.into()),
                ..r
            }
            .met_by(&m)
        );
    }
}
