//! The daemon's state: what it persists and what the API returns.
//!
//! IPAM allocations are not stored apart: they are the endpoints' addresses,
//! so an address is taken exactly while an endpoint holds it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::PortMapping;

/// The whole persisted state. Replaced atomically on every change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Containers by id.
    pub containers: BTreeMap<String, Container>,
    /// The unique local /48 that IPv6 subnets nobody gave come from:
    /// chosen at random when the first one is needed, then kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ula48: Option<Ipv6Network>,
    /// Containers whose default route a disconnect re-elects (it left the
    /// network that gave it), committed with that disconnect: a start
    /// checks these namespaces only, for one a daemon killed before the
    /// re-election left without a default route. An id goes from the
    /// state in memory once its route is elected, and from the file with
    /// the next commit.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub default_route_due: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Bridge,
    Host,
    Macvlan,
    None,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Bridge => "bridge",
            DriverKind::Host => "host",
            DriverKind::Macvlan => "macvlan",
            DriverKind::None => "none",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bridge" => Ok(DriverKind::Bridge),
            "host" => Ok(DriverKind::Host),
            "macvlan" => Ok(DriverKind::Macvlan),
            "none" | "null" => Ok(DriverKind::None),
            _ => Err(format!(
                "unknown driver {s:?} (known: bridge, macvlan, host, none)"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Network>,
}

/// The IPv6 side of a dual-stack network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam6 {
    pub subnet: Ipv6Network,
    pub gateway: Ipv6Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv6Network>,
}

/// What a dual-stack network does with its IPv6 traffic to the world
/// (`-o gateway_mode_ipv6=`, as Docker's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayMode6 {
    /// Source NAT to the uplink's global IPv6 address (the default).
    Nat,
    /// No translation: the world routes the subnet to the host.
    Routed,
}

/// The option key of [`GatewayMode6`].
pub const GATEWAY_MODE_IPV6: &str = "gateway_mode_ipv6";

impl FromStr for GatewayMode6 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nat" => Ok(GatewayMode6::Nat),
            "routed" => Ok(GatewayMode6::Routed),
            _ => Err(format!(
                "option {GATEWAY_MODE_IPV6}: {s:?} is not nat or routed"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: DriverKind,
    /// Unix seconds.
    pub created: u64,
    /// `bridge`, `host` and `none`: made by the daemon, never removed.
    pub predefined: bool,
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// The IPv6 side: `Some` for a dual-stack network (`--ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam6: Option<Ipam6>,
    /// Driver options as given (`-o KEY=VALUE`), validated by the driver.
    pub options: BTreeMap<String, String>,
    /// Index of the network in the datapath's maps (bridge), 0 for none.
    pub dp_id: u32,
    /// The host's own address in the network (macvlan with `host_access`:
    /// the address of the host's interface on the parent). IPAM never hands
    /// it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<Ipv4Addr>,
    /// Its IPv6 side on a dual-stack network (an address of `ipam6`'s
    /// subnet on the same interface). `None` on a network made before
    /// dnet gave the host one: the host reaches it over IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address6: Option<Ipv6Addr>,
    /// The runtime that made this network through its own front end
    /// (Docker's network id): it is known by that key, since the runtime
    /// never replays its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRef>,
    /// The runtime's network hands out dnet's addresses (Docker's
    /// `--ipam-driver` set to dnet's driver): dnet's own containers may
    /// join it. Kept so that a restart knows it before the runtime answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime_ipam: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Netns {
    /// A namespace the daemon made, bind-mounted at `path`.
    Owned { path: PathBuf },
    /// A namespace someone else made (`network connect --netns`), identified
    /// by its inode so that a reused path is not mistaken for it.
    External { path: PathBuf, dev: u64, ino: u64 },
    /// The daemon's own namespace (the host driver).
    Host,
    /// A namespace only another runtime knows: the container end of each
    /// veth pair was left in the daemon's namespace for that runtime to
    /// move and rename (`POST /v1/attach` with the `host_side` target).
    Runtime,
}

/// Who attached a container from another runtime; persisted on the Container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRef {
    /// "docker" or "cni".
    pub runtime: String,
    /// The runtime's key for this container: Docker's endpoint id, CNI's CNI_CONTAINERID.
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    /// Interface name inside the container (`eth0`, `eth1`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Host-side veth (bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Stats slot in the datapath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// Extra names of the container in this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22), so a
    /// reused pid is not mistaken for the process.
    pub start_time: u64,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub log: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub created: u64,
    pub netns: Netns,
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// A detached container's process, started by the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// A foreground `dnet run`: the CLI process that owns the container; the
    /// daemon removes the container when that process is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Process>,
    /// The runtime that attached this container, if another one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRef>,
    /// Its own upstream resolvers (`dnet run --dns`); empty: the daemon's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Its host name (`dnet run --hostname`); `None`: its short id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl Network {
    /// The network's IPv6 gateway mode (dual-stack networks).
    pub fn gateway_mode6(&self) -> GatewayMode6 {
        self.options
            .get(GATEWAY_MODE_IPV6)
            .and_then(|v| v.parse().ok())
            .unwrap_or(GatewayMode6::Nat)
    }
}

impl State {
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.name == name)
    }

    /// A network by name, full id or unique id prefix (as Docker resolves it).
    pub fn find_network(&self, key: &str) -> Option<&Network> {
        self.network_by_name(key)
            .or_else(|| self.networks.get(key))
            .or_else(|| unique_prefix(self.networks.values().map(|n| (&n.id, n)), key))
    }

    /// A container by name, full id or unique id prefix.
    pub fn find_container(&self, key: &str) -> Option<&Container> {
        self.containers
            .values()
            .find(|c| c.name == key)
            .or_else(|| self.containers.get(key))
            .or_else(|| unique_prefix(self.containers.values().map(|c| (&c.id, c)), key))
    }

    /// Every endpoint of a network, with its container.
    pub fn endpoints_of<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = (&'a Container, &'a Endpoint)> + 'a {
        self.containers.values().flat_map(move |c| {
            c.endpoints
                .iter()
                .filter(move |e| e.network_id == network_id)
                .map(move |e| (c, e))
        })
    }

    /// Addresses in use in a network.
    pub fn used_addresses(&self, network_id: &str) -> BTreeSet<Ipv4Addr> {
        self.endpoints_of(network_id)
            .filter_map(|(_, e)| e.ip)
            .collect()
    }

    /// IPv6 addresses in use in a network.
    pub fn used_addresses6(&self, network_id: &str) -> BTreeSet<Ipv6Addr> {
        self.endpoints_of(network_id)
            .filter_map(|(_, e)| e.ip6)
            .collect()
    }

    /// Stats slots in use, by any endpoint.
    pub fn used_slots(&self) -> BTreeSet<u32> {
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter().filter_map(|e| e.slot))
            .collect()
    }

    /// The lowest datapath network id not in use.
    pub fn free_dp_id(&self, max: u32) -> Option<u32> {
        let used: BTreeSet<u32> = self.networks.values().map(|n| n.dp_id).collect();
        (1..max).find(|i| !used.contains(i))
    }
}

fn unique_prefix<'a, T>(
    items: impl Iterator<Item = (&'a String, &'a T)>,
    prefix: &str,
) -> Option<&'a T> {
    if prefix.len() < 3 {
        return None;
    }
    let mut found = items.filter(|(id, _)| id.starts_with(prefix));
    match (found.next(), found.next()) {
        (Some((_, t)), None) => Some(t),
        _ => None,
    }
}

/// An Ethernet address, written `02:42:ac:11:00:02`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut m {
            let p = parts.next().ok_or_else(|| format!("invalid MAC {s:?}"))?;
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC {s:?}"));
        }
        Ok(MacAddr(m))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A new random 64-hex-digit id, as Docker's.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(m.0, [2, 0x42, 0xac, 0x11, 0, 2]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<MacAddr>().is_err());
        assert!("zz:42:ac:11:00:02".parse::<MacAddr>().is_err());
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = State::default();
        s.networks.insert(
            "n1".into(),
            Network {
                id: "n1".into(),
                name: "bridge".into(),
                driver: DriverKind::Bridge,
                created: 1,
                predefined: true,
                internal: false,
                ipam: Some(Ipam {
                    subnet: "172.17.0.0/16".parse().unwrap(),
                    gateway: "172.17.0.1".parse().unwrap(),
                    ip_range: None,
                }),
                ipam6: Some(Ipam6 {
                    subnet: "fd00:1::/64".parse().unwrap(),
                    gateway: "fd00:1::1".parse().unwrap(),
                    ip_range: None,
                }),
                options: BTreeMap::new(),
                dp_id: 1,
                host_address: None,
                host_address6: None,
                runtime: Some(RuntimeRef {
                    runtime: "docker".into(),
                    id: "d1".into(),
                }),
                runtime_ipam: true,
            },
        );
        s.containers.insert(
            "c1".into(),
            Container {
                id: "c1".into(),
                name: "web".into(),
                created: 2,
                netns: Netns::Owned {
                    path: "/x/c1".into(),
                },
                endpoints: vec![Endpoint {
                    network_id: "n1".into(),
                    ifname: Some("eth0".into()),
                    host_ifname: Some("veth1234567".into()),
                    ip: Some("172.17.0.2".parse().unwrap()),
                    ip6: Some("fd00:1::2".parse().unwrap()),
                    mac: Some(MacAddr([2, 0x42, 0xac, 0x11, 0, 2])),
                    slot: Some(1),
                    aliases: vec!["db".into()],
                }],
                ports: vec!["8080:80".parse().unwrap()],
                process: None,
                owner: None,
                runtime: Some(RuntimeRef {
                    runtime: "cni".into(),
                    id: "abc".into(),
                }),
                dns: vec!["192.0.2.53".parse().unwrap()],
                hostname: Some("web.local".into()),
            },
        );
        s.ula48 = Some("fd12:3456:789a::/48".parse().unwrap());
        let json = serde_json::to_string(&s).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.used_addresses("n1"),
            BTreeSet::from(["172.17.0.2".parse().unwrap()])
        );
        assert_eq!(
            back.used_addresses6("n1"),
            BTreeSet::from(["fd00:1::2".parse().unwrap()])
        );
        assert_eq!(back.find_network("bridge").unwrap().id, "n1");
        assert_eq!(back.find_container("web").unwrap().id, "c1");
        assert_eq!(back.free_dp_id(1024), Some(2));
    }
}
