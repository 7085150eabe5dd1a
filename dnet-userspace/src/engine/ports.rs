//! Published ports: checking a request against the host and the other
//! containers, and keeping the datapath's service map equal to the state.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
};

use dnet_common::{Service, ServiceKey, addr::ipv4_be};

use super::Inner;
use crate::{
    conflict,
    error::{Error, Result},
    invalid,
    model::{Container, Network, State},
    spec::{PortMapping, Proto},
};

/// The keys of a container's published ports, one per port.
fn service_keys(c: &Container) -> impl Iterator<Item = (ServiceKey, u16)> + '_ {
    c.ports.iter().flat_map(|m| {
        (0..m.count).map(move |i| {
            (
                ServiceKey {
                    addr_be: m.host_ip.map(ipv4_be).unwrap_or(0),
                    port_be: (m.host_port + i).to_be(),
                    proto: m.proto.number(),
                    _pad: 0,
                },
                m.container_port + i,
            )
        })
    })
}

/// The service entries a container's published ports need: to its address
/// on its first bridge network that is not internal. With none, they lead
/// nowhere (a port never moves onto an internal network, where nothing
/// from outside may reach) until the container joins such a network again.
pub fn services_of(st: &State, c: &Container) -> Vec<(ServiceKey, Service)> {
    let Some(ip) = c.endpoints.iter().find_map(|e| {
        let net = st.networks.get(&e.network_id)?;
        (crate::driver::caps(net.driver).ports && !net.internal)
            .then_some(e.host_ifname.as_ref().and(e.ip))
            .flatten()
    }) else {
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

/// Every service entry the state asks for.
pub fn services_of_state(st: &State) -> BTreeMap<(u32, u16, u8), Service> {
    st.containers
        .values()
        .flat_map(|c| services_of(st, c))
        .map(|(k, s)| ((k.addr_be, k.port_be, k.proto), s))
        .collect()
}

/// Can the host give this port away? A process listening on it (or an
/// address the host does not have) says no, as `docker-proxy`'s bind
/// would.
fn host_port_free(ip: Option<Ipv4Addr>, port: u16, proto: Proto) -> Result<()> {
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    let r = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(drop),
        Proto::Udp => UdpSocket::bind(addr).map(drop),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(conflict!(
            "host port {port}/{} is in use on this host",
            proto.as_str()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            Err(invalid!("{} is not an address of this host", addr.ip()))
        }
        Err(e) => Err(Error::io(format!("checking host port {addr}"))(e)),
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
        let uplink = self
            .ctx
            .dp
            .config()
            .ok()
            .filter(|c| c.uplink_ifindex != 0)
            .map(|c| dnet_common::addr::ipv4_from_be(c.uplink_addr_be));
        for p in ports {
            if let Some(ip) = p.host_ip
                && !ip.is_loopback()
                && Some(ip) != uplink
            {
                return Err(match uplink {
                    Some(u) => invalid!(
                        "ports can be published on the uplink's address ({u}), on a loopback address or on all addresses, not on {ip}"
                    ),
                    None => invalid!(
                        "without an uplink, ports can be published on a loopback address only, not on {ip}"
                    ),
                });
            }
            for port in p.host_ports() {
                host_port_free(p.host_ip, port, p.proto)?;
            }
        }
        Ok(())
    }

    /// Publishes a container's ports in the datapath.
    pub(super) fn publish(&mut self, c: &Container) -> Result<()> {
        for (k, s) in services_of(&self.state, c) {
            self.ctx.dp.set_service(&k, &s)?;
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
        Ok(())
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
            runtime: None,
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
}
