//! Network drivers behind one trait, and the factory that picks one by name.
//!
//! The engine owns the state and the order of operations (validate, make
//! the kernel objects, commit); a driver only makes and removes its kernel
//! objects, in netavark's shape: `validate` a network, `prepare` then
//! `attach` an endpoint, `detach` it, and `collect_garbage` for what it
//! made and the state no longer holds. `detach` and `delete_network` keep
//! going after a failure and return every error they met, so a half-made
//! endpoint is always removed whole.
//!
//! Outside this module no driver is named: the engine asks a network's
//! driver ([`driver`]) what it can do ([`Caps`]) and to do it. This file's
//! [`driver`] and [`PREDEFINED`] are the only places that list them.

mod bridge;
mod host;
mod macvlan;
mod none;
mod reaper;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use dnet_common::DropReason;

use crate::{
    conflict,
    datapath::Datapath,
    error::{Error, Result},
    model::{Container, DriverKind, Endpoint, Ipam6, Network, State},
    netlink::{Link, Netlink, RouteSpec6},
    netns,
};

pub use reaper::{NsId, Reaper};

/// What a driver's networks are and can do: the questions the engine asks
/// of a network instead of naming its driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// Its networks hand out IPv4 addresses (`--subnet`, `--gateway`,
    /// `--ip-range`), and another runtime may attach to them host-side.
    pub addresses: bool,
    /// Only its predefined network exists: a container is on it from the
    /// start, alone, and never joins another network nor leaves it.
    pub exclusive: bool,
    /// Its containers share the daemon's network namespace.
    pub host_netns: bool,
    /// The gateway is an address of the host, the subnet is routed to each
    /// endpoint through it (and the resolver answers on it); a subnet dnet
    /// picks or is given must not overlap a route where the daemon runs.
    pub host_gateway: bool,
    /// The subnet is an outside LAN's: given, never picked, routed where
    /// the daemon runs already; the driver checks it against its own other
    /// networks (it knows their parents).
    pub lan_subnet: bool,
    /// Endpoints are the eBPF datapath's: the network has a datapath id
    /// and each endpoint a slot.
    pub datapath: bool,
    /// Containers may publish ports on it.
    pub ports: bool,
    /// Its networks may be dual-stack (`--ipv6`); with `lan_subnet`, the
    /// IPv6 subnet is the LAN's too (given, never picked).
    pub ipv6: bool,
}

/// What drivers work with: the daemon namespace's netlink handle, the
/// datapath, the uplink, and the reaper that finishes link removals in the
/// background.
pub struct Ctx {
    pub nl: Netlink,
    pub dp: Datapath,
    pub uplink: Option<Link>,
    pub reaper: Reaper,
}

impl Ctx {
    /// The MTU a network's interfaces get: `-o mtu=N`, else the uplink's.
    pub fn mtu(&self, net: &Network) -> u32 {
        net.options
            .get("mtu")
            .and_then(|m| m.parse().ok())
            .or(self.uplink.as_ref().map(|u| u.mtu))
            .unwrap_or(1500)
    }
}

/// The container's default route through `gateway`, unless its namespace
/// has one already (another runtime's or the host's own): that one stays.
pub async fn add_default_route(cnl: &Netlink, gateway: Ipv4Addr, index: u32) -> Result<()> {
    let route = crate::netlink::RouteSpec::via(Ipv4Addr::UNSPECIFIED, 0, gateway, index);
    if !cnl.add_route_if_absent(route).await? {
        tracing::info!(%gateway, "the namespace has a default route already: it stays");
    }
    Ok(())
}

/// IPv6 on a container's interface `ifname` and its `lo`, from inside its
/// namespace (one dnet did not make may have IPv6 on by default): off on
/// the interface of an IPv4-only endpoint; on, with `lo`, for a
/// dual-stack one.
pub fn container_ipv6_switch(
    ifname: &str,
    dual: bool,
) -> std::result::Result<(), netns::NetnsError> {
    if !dual {
        return netns::disable_ipv6(ifname);
    }
    netns::sysctl6(ifname, "disable_ipv6", "0")?;
    netns::sysctl6("lo", "disable_ipv6", "0")
}

/// How a dual-stack container reaches the rest of its IPv6 subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subnet6Route {
    /// Through the gateway, itself a /128 on the link (the host's address:
    /// the bridge driver's datapath answers for it and every peer).
    ViaGateway,
    /// On the link, as any host of the LAN (the macvlan driver's).
    OnLink,
}

/// The IPv6 side of a dual-stack container's interface `index`: its
/// address, usable at once (no DAD) and without the kernel's prefix route;
/// the subnet routed as `subnet` says; the default route through the
/// gateway for the primary endpoint, as for IPv4; `::1` on `lo`. Routes
/// already in the namespace are its owner's and stay.
pub async fn configure_container_ipv6(
    cnl: &Netlink,
    index: u32,
    i6: Ipam6,
    ip6: Ipv6Addr,
    primary: bool,
    subnet: Subnet6Route,
) -> Result<()> {
    cnl.add_address6(index, ip6, i6.subnet.prefix(), false)
        .await?;
    let lo = loopback(cnl).await?;
    cnl.add_address6(lo, Ipv6Addr::LOCALHOST, 128, false)
        .await?;
    let gw = i6.gateway;
    let (net, prefix) = (i6.subnet.network(), i6.subnet.prefix());
    let mut routes = match subnet {
        Subnet6Route::ViaGateway => vec![
            RouteSpec6::device(gw, 128, index),
            RouteSpec6::via(net, prefix, gw, index),
        ],
        Subnet6Route::OnLink => vec![RouteSpec6::device(net, prefix, index)],
    };
    if primary {
        routes.push(RouteSpec6::via(Ipv6Addr::UNSPECIFIED, 0, gw, index));
    }
    for mut r in routes {
        // Routes already in the namespace are its owner's.
        r.dnet = false;
        if !cnl.add_route_if_absent(r).await? {
            tracing::info!(dst = %r.dst, prefix = r.prefix, "the namespace has this IPv6 route already: it stays");
        }
    }
    Ok(())
}

/// The loopback's ifindex (1 in every namespace, but asked, not assumed).
pub async fn loopback(nl: &Netlink) -> Result<u32> {
    nl.links()
        .await?
        .into_iter()
        .find(|l| l.loopback)
        .map(|l| l.index)
        .ok_or_else(|| conflict!("no loopback interface"))
}

/// Addresses IPAM must never hand out in a network (the parent's own on a
/// LAN, say), of both families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub v4: BTreeSet<Ipv4Addr>,
    pub v6: BTreeSet<Ipv6Addr>,
}

impl Extend<IpAddr> for Reserved {
    fn extend<T: IntoIterator<Item = IpAddr>>(&mut self, iter: T) {
        for a in iter {
            match a {
                IpAddr::V4(a) => self.v4.insert(a),
                IpAddr::V6(a) => self.v6.insert(a),
            };
        }
    }
}

/// One endpoint being attached or detached, with what it belongs to.
pub struct Attachment<'a> {
    pub container: &'a Container,
    pub endpoint: &'a Endpoint,
    pub network: &'a Network,
    /// The container's namespace.
    pub netns: &'a Path,
    /// The container's first endpoint on a network that is not internal:
    /// its gateway is the default route (an internal network gives none).
    pub primary: bool,
}

impl Attachment<'_> {
    /// The endpoint's IPv6 side, when it and its network are dual-stack.
    pub fn v6(&self) -> Option<(Ipam6, Ipv6Addr)> {
        self.network.ipam6.zip(self.endpoint.ip6)
    }
}

/// One endpoint's counters as `dnet stats` shows them, from the point of
/// view of the network's port the container plugs into (as a switch counts):
/// `rx` is what the container sent, `tx` what was delivered to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets NAT rewrote (bridge endpoints; 0 where there is no NAT).
    pub translated: u64,
    /// Drops by reason; reasons with no drops are left out.
    pub drops: BTreeMap<String, u64>,
}

#[async_trait]
pub trait Driver: Send + Sync {
    /// Checks a new network's options and what it needs of the kernel (a
    /// parent link, say), and fills in what the driver derives for it (the
    /// options' defaults, say). Changes nothing in the kernel.
    async fn validate(&self, ctx: &Ctx, state: &State, net: &mut Network) -> Result<()>;

    /// What this driver's networks are and can do.
    fn caps(&self) -> Caps;

    /// The addresses IPAM must never hand out in `net` (a LAN's parent's
    /// own, the host's), of both families: `prepare` returns them for an
    /// endpoint dnet addresses, and dnet's IPAM leaves them out of what it
    /// hands a runtime (Docker's `--ipam-driver`).
    async fn reserved(&self, _ctx: &Ctx, _net: &Network) -> Result<Reserved> {
        Ok(Reserved::default())
    }

    /// Checks that `container` may get the new endpoint `ep` in `net`,
    /// before anything is made for it, and fills in what the driver owns
    /// of it (a datapath slot, a host-side name). Returns the addresses
    /// IPAM must never hand out in `net`. Changes nothing in the kernel.
    async fn prepare(
        &self,
        _ctx: &Ctx,
        _state: &State,
        _net: &Network,
        _container: &Container,
        _ep: &mut Endpoint,
    ) -> Result<Reserved> {
        Ok(Reserved::default())
    }

    // The defaults of the kernel-object methods below are those of a
    // driver that makes nothing (host, none).

    /// Makes the network's kernel objects (idempotent).
    async fn create_network(&self, _ctx: &mut Ctx, _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Removes the network's kernel objects; missing ones are fine.
    async fn delete_network(&self, _ctx: &mut Ctx, _net: &Network) -> Vec<Error> {
        Vec::new()
    }

    /// The network's kernel objects are all there.
    async fn network_ok(&self, _ctx: &Ctx, _net: &Network) -> bool {
        true
    }

    /// Makes the endpoint's interface in the container and everything the
    /// host needs for it. Leaves nothing behind on failure.
    async fn attach(&self, _ctx: &mut Ctx, _a: &Attachment<'_>) -> Result<()> {
        Ok(())
    }

    /// Removes what `attach` made; missing pieces are fine.
    async fn detach(&self, _ctx: &mut Ctx, _a: &Attachment<'_>) -> Vec<Error> {
        Vec::new()
    }

    /// Removes an endpoint the state no longer holds, as `detach` does,
    /// except that what the kernel takes long to remove may finish in the
    /// background (`ctx.reaper`), once the endpoint is out of the datapath.
    async fn remove(&self, ctx: &mut Ctx, a: &Attachment<'_>) -> Vec<Error> {
        self.detach(ctx, a).await
    }

    /// The endpoint's kernel objects are all there and current.
    async fn endpoint_ok(&self, _ctx: &Ctx, _a: &Attachment<'_>) -> bool {
        true
    }

    /// Brings what can change in place up to this build, without touching
    /// the endpoint's links (a daemon upgrade swaps the datapath programs
    /// of live endpoints here). Missing pieces are left to `endpoint_ok`.
    async fn refresh(&self, _ctx: &mut Ctx, _a: &Attachment<'_>) -> Result<()> {
        Ok(())
    }

    /// The endpoint's counters; `None` for an endpoint without any. By
    /// default, the datapath's per-endpoint slot.
    async fn stats(&self, ctx: &Ctx, a: &Attachment<'_>) -> Result<Option<Counters>> {
        let Some(slot) = a.endpoint.slot else {
            return Ok(None);
        };
        let s = ctx.dp.stats(slot)?;
        Ok(Some(Counters {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            translated: s.translated,
            drops: drops_by_reason(&s.drops),
        }))
    }

    /// Removes what this driver made and `state` no longer holds (a crash
    /// between making and committing, a network removed while no daemon
    /// ran). `containers` pairs each container that has a namespace of its
    /// own with it. Runs at each start, before the engine's own collection.
    async fn collect_garbage(
        &self,
        _ctx: &mut Ctx,
        _state: &State,
        _containers: &[(Container, PathBuf)],
    ) -> Result<()> {
        Ok(())
    }

    /// The name of the endpoint's container end as left in the daemon's
    /// namespace for another runtime to move (`Netns::Runtime`).
    fn runtime_link(&self, _c: &Container, _net: &Network, _ep: &Endpoint) -> Option<String> {
        None
    }

    /// The label of the host's gateway addresses (`network inspect`), for
    /// a driver whose gateway is an address of the host.
    fn gateway_link(&self) -> Option<&'static str> {
        None
    }

    /// Driver-specific lines for `network inspect`.
    fn notes(&self, _net: &Network) -> Vec<String> {
        Vec::new()
    }
}

/// The driver for a kind: the factory, and the one `match` on drivers.
pub fn driver(kind: DriverKind) -> &'static dyn Driver {
    match kind {
        DriverKind::Bridge => &bridge::Bridge,
        DriverKind::Macvlan => &macvlan::Macvlan,
        DriverKind::Host => &host::Host,
        DriverKind::None => &none::NoneDriver,
    }
}

/// What a kind's networks are and can do.
pub fn caps(kind: DriverKind) -> Caps {
    driver(kind).caps()
}

/// Every driver, for what concerns them all (garbage collection).
pub fn all() -> [&'static dyn Driver; 4] {
    [
        &bridge::Bridge,
        &macvlan::Macvlan,
        &host::Host,
        &none::NoneDriver,
    ]
}

/// The predefined networks, as Docker has them.
pub const PREDEFINED: [(&str, DriverKind); 3] = [
    ("bridge", DriverKind::Bridge),
    ("host", DriverKind::Host),
    ("none", DriverKind::None),
];

/// The datapath's drop counters by reason name, the zero ones left out.
pub fn drops_by_reason(drops: &[u64]) -> BTreeMap<String, u64> {
    drops
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| {
            let name = DropReason::from_code(i as u32)
                .map(|r| r.name().to_owned())
                .unwrap_or_else(|| format!("reason-{i}"));
            (name, *n)
        })
        .collect()
}

/// Options a driver accepts; anything else is an error that names them.
pub fn check_options(net: &Network, known: &[&str]) -> Result<()> {
    for k in net.options.keys() {
        if !known.contains(&k.as_str()) {
            return Err(Error::Invalid(if known.is_empty() {
                format!(
                    "unknown option {k:?}: the {} driver takes no options",
                    net.driver
                )
            } else {
                format!(
                    "unknown option {k:?} for the {} driver (known: {})",
                    net.driver,
                    known.join(", ")
                )
            }));
        }
    }
    Ok(())
}

/// The `mtu` option, if set, is a number the kernel accepts on Ethernet.
pub fn check_mtu(net: &Network) -> Result<()> {
    if let Some(m) = net.options.get("mtu") {
        match m.parse::<u32>() {
            Ok(n) if (68..=65535).contains(&n) => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "invalid mtu {m:?}: use a number from 68 to 65535"
                )));
            }
        }
    }
    Ok(())
}

/// Collects the error of a teardown step and keeps going.
pub(crate) fn keep<T>(errors: &mut Vec<Error>, r: std::result::Result<T, impl Into<Error>>) {
    if let Err(e) = r {
        errors.push(e.into());
    }
}
