//! The names table: who may ask, and what each name means to them. Built
//! from the state at every commit, so answers follow the state at once.
//!
//! Names live in user-defined bridge networks (Docker's rule: the default
//! `bridge` network has no name service). A container is named in each such
//! network it is attached to by its name, its short id, its aliases there,
//! and each of those qualified with the network's name (`web.backend`).
//! Containers that Docker attached use Docker's own resolver and are left
//! out. A client is told apart by its source address (the datapath drops
//! spoofed sources) and learns only names of the networks it is on.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::model::{Container, Network, State};

/// Who may ask: a container with an endpoint in a user-defined bridge network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Ids of the user-defined bridge networks whose names it sees.
    pub networks: Vec<String>,
    /// Other names are forwarded (false: attached only to internal networks).
    pub forward: bool,
    /// Its own upstreams (`dnet run --dns`); empty: the daemon's.
    pub upstreams: std::sync::Arc<[SocketAddr]>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct NetNames {
    name: String,
    subnet: Option<ipnetwork::Ipv4Network>,
    /// Lower-case name → addresses, IPv4 and (dual-stack) IPv6 (several
    /// containers may share an alias).
    by_name: HashMap<String, Vec<IpAddr>>,
    /// Address → the container's name (PTR answers `name.network`).
    by_addr: HashMap<Ipv4Addr, String>,
}

/// What a name means to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A name of the client's networks, with its addresses of both
    /// families (possibly none of the one asked for).
    Known(Vec<IpAddr>),
    /// Not a name dnet knows.
    Unknown,
}

/// What an address means to a client (PTR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reverse {
    /// The container's name, qualified with the network's (`web.backend`).
    Named(String),
    /// In one of the client's subnets, but no container has it.
    Unused,
    /// Not an address of the client's networks.
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Names {
    nets: HashMap<String, NetNames>,
    clients: HashMap<Ipv4Addr, Client>,
    /// A dual-stack client's IPv6 address, to the IPv4 address its
    /// [`Client`] is keyed by (the same endpoint).
    clients6: HashMap<Ipv6Addr, Ipv4Addr>,
    /// IPv4 and IPv6 gateways the resolver listens on.
    gateways: BTreeSet<IpAddr>,
}

/// A network whose containers are named: a bridge network made by a user
/// (not by Docker, whose containers ask Docker's own resolver).
pub fn has_names(n: &Network) -> bool {
    crate::driver::caps(n.driver).host_gateway
        && !n.predefined
        && n.ipam.is_some()
        && n.runtime.as_ref().is_none_or(|r| r.runtime != "docker")
}

/// A container's name in DNS: a CNI pod recorded as `NAMESPACE/POD` is
/// named by its pod name (`K8S_POD_NAME`).
fn dns_name(c: &Container) -> String {
    c.name
        .rsplit('/')
        .next()
        .unwrap_or(&c.name)
        .to_ascii_lowercase()
}

/// Whether a container's names are dnet's to answer.
fn named(c: &Container) -> bool {
    c.runtime.as_ref().is_none_or(|r| r.runtime != "docker")
}

/// Whether `c` has a part in the table of `state` (names in a network
/// that has them, or a client of one): a change of a container that has
/// none before nor after it leaves [`Names::build`]'s table as it was.
pub fn contributes(state: &State, c: &Container) -> bool {
    named(c)
        && c.endpoints
            .iter()
            .any(|e| e.ip.is_some() && state.networks.get(&e.network_id).is_some_and(has_names))
}

/// The resolver's address in a network, if it has one.
pub fn resolver_of(n: &Network) -> Option<Ipv4Addr> {
    has_names(n).then(|| n.ipam.map(|i| i.gateway)).flatten()
}

/// The resolver's IPv6 address in a dual-stack network that has one: its
/// IPv6 gateway.
pub fn resolver6_of(n: &Network) -> Option<Ipv6Addr> {
    resolver_of(n).and(n.ipam6.as_ref().map(|i| i.gateway))
}

impl Names {
    /// The table for `state`; `upstreams_of` gives a container's own upstreams.
    pub fn build(state: &State, upstreams_of: impl Fn(&Container) -> Vec<SocketAddr>) -> Names {
        let mut t = Names::default();
        for n in state.networks.values().filter(|n| has_names(n)) {
            t.gateways.extend(resolver_of(n).map(IpAddr::V4));
            t.gateways.extend(resolver6_of(n).map(IpAddr::V6));
            t.nets.insert(
                n.id.clone(),
                NetNames {
                    name: n.name.to_ascii_lowercase(),
                    subnet: n.ipam.map(|i| i.subnet),
                    ..Default::default()
                },
            );
        }
        for c in state.containers.values().filter(|c| named(c)) {
            let mut client = Client {
                networks: Vec::new(),
                forward: false,
                upstreams: upstreams_of(c).into(),
            };
            for e in &c.endpoints {
                let Some(n) = state.networks.get(&e.network_id) else {
                    continue;
                };
                client.forward |= !n.internal;
                let (Some(nn), Some(ip)) = (t.nets.get_mut(&n.id), e.ip) else {
                    continue;
                };
                client.networks.push(n.id.clone());
                let short = c.id.get(..12).unwrap_or(&c.id);
                let cname = dns_name(c);
                let names = [cname.as_str(), short]
                    .into_iter()
                    .chain(e.aliases.iter().map(String::as_str));
                for name in names {
                    let name = name.to_ascii_lowercase();
                    for key in [format!("{name}.{}", nn.name), name] {
                        let v = nn.by_name.entry(key).or_default();
                        for a in [Some(IpAddr::V4(ip)), e.ip6.map(IpAddr::V6)]
                            .into_iter()
                            .flatten()
                        {
                            if !v.contains(&a) {
                                v.push(a);
                            }
                        }
                    }
                }
                nn.by_addr.insert(ip, format!("{cname}.{}", nn.name));
            }
            if client.networks.is_empty() {
                continue;
            }
            for e in &c.endpoints {
                if let Some(ip) = e.ip {
                    t.clients.insert(ip, client.clone());
                    if let Some(ip6) = e.ip6 {
                        t.clients6.insert(ip6, ip);
                    }
                }
            }
        }
        t
    }

    /// The gateway addresses the resolver listens on.
    pub fn gateways(&self) -> &BTreeSet<IpAddr> {
        &self.gateways
    }

    /// The address a client is known by: its IPv4 address, also when it
    /// asks from its IPv6 one (the client of a dual-stack endpoint is the
    /// same over both; the source is trustworthy under the datapath's
    /// anti-spoofing).
    pub fn client_addr(&self, src: IpAddr) -> Option<Ipv4Addr> {
        match src {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => Some(a),
                None => self.clients6.get(&a).copied(),
            },
        }
    }

    /// The client with this source address, if it may ask.
    pub fn client(&self, src: Ipv4Addr) -> Option<&Client> {
        self.clients.get(&src)
    }

    /// What `name` (any case, with or without the final dot) means to `client`.
    pub fn lookup(&self, client: &Client, name: &str) -> Lookup {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let mut found: Option<Vec<IpAddr>> = None;
        for nn in client.networks.iter().filter_map(|id| self.nets.get(id)) {
            if let Some(v) = nn.by_name.get(&name) {
                let all = found.get_or_insert_with(Vec::new);
                for ip in v {
                    if !all.contains(ip) {
                        all.push(*ip);
                    }
                }
            }
        }
        match found {
            Some(v) => Lookup::Known(v),
            None => Lookup::Unknown,
        }
    }

    /// What `ip` means to `client` (PTR).
    pub fn reverse(&self, client: &Client, ip: Ipv4Addr) -> Reverse {
        let mut in_subnet = false;
        for nn in client.networks.iter().filter_map(|id| self.nets.get(id)) {
            if let Some(n) = nn.by_addr.get(&ip) {
                return Reverse::Named(n.clone());
            }
            in_subnet |= nn.subnet.is_some_and(|s| s.contains(ip));
        }
        if in_subnet {
            Reverse::Unused
        } else {
            Reverse::Unknown
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::DriverKind;
    use crate::model::{Endpoint, Ipam, Netns, RuntimeRef};

    pub fn net(id: &str, name: &str, subnet: &str, internal: bool, predefined: bool) -> Network {
        let subnet: ipnetwork::Ipv4Network = subnet.parse().unwrap();
        Network {
            id: id.into(),
            name: name.into(),
            driver: DriverKind::Bridge,
            created: 0,
            predefined,
            internal,
            ipam: Some(Ipam {
                subnet,
                gateway: subnet.nth(1).unwrap(),
                ip_range: None,
            }),
            ipam6: None,
            options: BTreeMap::new(),
            dp_id: 1,
            host_address: None,
            host_address6: None,
            runtime: None,
            runtime_ipam: false,
        }
    }

    pub fn ctr(id: &str, name: &str, eps: &[(&str, &str, &[&str])]) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            created: 0,
            netns: Netns::Host,
            endpoints: eps
                .iter()
                .map(|(n, ip, aliases)| Endpoint {
                    network_id: (*n).into(),
                    ifname: None,
                    host_ifname: None,
                    ip: Some(ip.parse().unwrap()),
                    ip6: None,
                    mac: None,
                    slot: None,
                    aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
                })
                .collect(),
            ports: vec![],
            process: None,
            owner: None,
            runtime: None,
            dns: vec![],
            hostname: None,
        }
    }

    /// bridge (default), front, back, and an internal one; containers:
    /// web (front+back, alias "www" in front), api and api2 (back, both
    /// alias "svc"), old (default bridge only), vault (internal only).
    pub fn sample() -> State {
        let mut s = State::default();
        for n in [
            net("nb", "bridge", "172.17.0.0/16", false, true),
            net("nf", "front", "10.1.0.0/24", false, false),
            net("nk", "back", "10.2.0.0/24", false, false),
            net("ni", "secret", "10.3.0.0/24", true, false),
        ] {
            s.networks.insert(n.id.clone(), n);
        }
        for c in [
            ctr(
                "aaaaaaaaaaaaaaaa",
                "web",
                &[("nf", "10.1.0.2", &["www"]), ("nk", "10.2.0.2", &[])],
            ),
            ctr("bbbbbbbbbbbbbbbb", "api", &[("nk", "10.2.0.3", &["svc"])]),
            ctr("cccccccccccccccc", "api2", &[("nk", "10.2.0.4", &["svc"])]),
            ctr("dddddddddddddddd", "old", &[("nb", "172.17.0.2", &[])]),
            ctr("eeeeeeeeeeeeeeee", "vault", &[("ni", "10.3.0.2", &[])]),
        ] {
            s.containers.insert(c.id.clone(), c);
        }
        s
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_container_that_does_not_contribute_leaves_the_table_as_it_was() {
        let s = sample();
        let table = |s: &State| Names::build(s, |_| Vec::new());
        let without = |id: &str| {
            let mut t = s.clone();
            t.containers.remove(id);
            t
        };
        // old: the default bridge only (no names there).
        let old = &s.containers["dddddddddddddddd"];
        assert!(!contributes(&s, old));
        assert_eq!(table(&without(&old.id)), table(&s));
        // web, api and vault (an internal network's names) all do.
        for id in ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "eeeeeeeeeeeeeeee"] {
            assert!(contributes(&s, &s.containers[id]), "{id}");
            assert_ne!(table(&without(id)), table(&s), "{id}");
        }
        // A Docker container, or one without an address, has no part.
        let mut docker = ctr("ffffffffffffffff", "d", &[("nf", "10.1.0.9", &[])]);
        docker.runtime = Some(RuntimeRef {
            runtime: "docker".into(),
            id: "x".into(),
        });
        let mut bare = ctr("9999999999999999", "bare", &[("nf", "10.1.0.8", &[])]);
        bare.endpoints[0].ip = None;
        for c in [docker, bare] {
            assert!(!contributes(&s, &c));
            let mut with = s.clone();
            with.containers.insert(c.id.clone(), c);
            assert_eq!(table(&with), table(&s));
        }
    }

    fn ipa(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_aliases_and_qualified_names_resolve_within_shared_networks() {
        let t = Names::build(&sample(), |_| vec![]);
        let web = t.client(ip("10.1.0.2")).unwrap().clone();
        assert_eq!(
            t.client(ip("10.2.0.2")),
            Some(&web),
            "one client, both addresses"
        );
        assert_eq!(t.lookup(&web, "api"), Lookup::Known(vec![ipa("10.2.0.3")]));
        assert_eq!(t.lookup(&web, "API."), Lookup::Known(vec![ipa("10.2.0.3")]));
        assert_eq!(
            t.lookup(&web, "api.back"),
            Lookup::Known(vec![ipa("10.2.0.3")])
        );
        assert_eq!(t.lookup(&web, "api.front"), Lookup::Unknown);
        assert_eq!(
            t.lookup(&web, "bbbbbbbbbbbb"),
            Lookup::Known(vec![ipa("10.2.0.3")]),
            "short id"
        );
        // One alias on two containers: both addresses.
        let Lookup::Known(mut v) = t.lookup(&web, "svc") else {
            panic!("svc unknown")
        };
        v.sort();
        assert_eq!(v, vec![ipa("10.2.0.3"), ipa("10.2.0.4")]);
        // Its own name, in both networks.
        let Lookup::Known(mut v) = t.lookup(&web, "web") else {
            panic!("web unknown")
        };
        v.sort();
        assert_eq!(v, vec![ipa("10.1.0.2"), ipa("10.2.0.2")]);
    }

    #[test]
    fn a_client_sees_only_its_own_networks() {
        let t = Names::build(&sample(), |_| vec![]);
        let api = t.client(ip("10.2.0.3")).unwrap();
        // "www" is web's alias in front only; api is not on front.
        assert_eq!(t.lookup(api, "www"), Lookup::Unknown);
        assert_eq!(t.lookup(api, "www.front"), Lookup::Unknown);
        assert_eq!(t.lookup(api, "web"), Lookup::Known(vec![ipa("10.2.0.2")]));
        let vault = t.client(ip("10.3.0.2")).unwrap();
        assert_eq!(t.lookup(vault, "web"), Lookup::Unknown);
        assert!(!vault.forward, "internal only: no forwarding");
        assert!(api.forward);
        // The default bridge has no names and its containers are no clients.
        assert_eq!(t.client(ip("172.17.0.2")), None);
        assert_eq!(t.lookup(api, "old"), Lookup::Unknown);
        assert_eq!(t.client(ip("10.2.0.9")), None, "unknown source");
    }

    #[test]
    fn reverse_lookups_are_scoped_too() {
        let t = Names::build(&sample(), |_| vec![]);
        let api = t.client(ip("10.2.0.3")).unwrap();
        assert_eq!(
            t.reverse(api, ip("10.2.0.4")),
            Reverse::Named("api2.back".into())
        );
        assert_eq!(t.reverse(api, ip("10.2.0.99")), Reverse::Unused);
        assert_eq!(t.reverse(api, ip("10.1.0.2")), Reverse::Unknown);
        assert_eq!(t.reverse(api, ip("8.8.8.8")), Reverse::Unknown);
    }

    #[test]
    fn listens_on_user_defined_bridge_gateways_only() {
        let t = Names::build(&sample(), |_| vec![]);
        let g: Vec<_> = t.gateways().iter().copied().collect();
        assert_eq!(g, vec![ipa("10.1.0.1"), ipa("10.2.0.1"), ipa("10.3.0.1")]);
    }

    #[test]
    fn docker_containers_are_left_to_docker() {
        let mut s = sample();
        let mut c = ctr("ffffffffffffffff", "dock", &[("nk", "10.2.0.9", &[])]);
        c.runtime = Some(RuntimeRef {
            runtime: "docker".into(),
            id: "x".into(),
        });
        s.containers.insert(c.id.clone(), c);
        let mut c = ctr(
            "9999999999999999",
            "default/pod",
            &[("nk", "10.2.0.10", &[])],
        );
        c.runtime = Some(RuntimeRef {
            runtime: "cni".into(),
            id: "y".into(),
        });
        s.containers.insert(c.id.clone(), c);
        let t = Names::build(&s, |_| vec![]);
        let api = t.client(ip("10.2.0.3")).unwrap();
        assert_eq!(t.lookup(api, "dock"), Lookup::Unknown);
        assert_eq!(t.lookup(api, "pod"), Lookup::Known(vec![ipa("10.2.0.10")]));
        assert_eq!(t.client(ip("10.2.0.9")), None);
    }
}
