//! Links, addresses, routes and neighbours through rtnetlink, in one
//! namespace per [`Netlink`] handle.
//!
//! A handle for another namespace is made by opening its netlink socket on a
//! thread inside that namespace ([`Netlink::open_in`]); afterwards the socket
//! stays bound to it and the work goes on from the daemon's own threads.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::Path,
};

use futures::TryStreamExt as _;
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressProtocol},
    link::{
        AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoMacVlan, InfoVeth,
        LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
    },
    neighbour::{NeighbourFlags, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::{
    Handle, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::link::MacVlanMode,
};

use crate::netns::{self, NetnsError};

pub mod markers;
mod v6;
pub use v6::{Address6, Route6};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink {op}: {source}")]
    Request {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl NetlinkError {
    /// The kernel answered with this errno.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

fn req(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request { op, source }
}

/// The index of the link called `name` in the calling thread's namespace,
/// if there is one. An ioctl that reads the kernel's name table under RCU:
/// unlike a netlink request it never waits for the rtnl lock, which a link
/// removal under way holds for tens of milliseconds.
pub fn index_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// What dnet needs to know of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub alias: Option<String>,
    pub kind: Option<String>,
    pub up: bool,
    /// Operationally up (`IFLA_OPERSTATE`): the kernel's link watcher has
    /// seen its carrier, and its transmit queue is open.
    pub oper_up: bool,
    pub loopback: bool,
    /// The link it is stacked on (`IFLA_LINK`: a macvlan's parent, a veth's
    /// peer), as an ifindex of the namespace the parent lives in.
    pub parent: Option<u32>,
    /// A macvlan's mode.
    pub macvlan_mode: Option<MacVlanMode>,
    /// The kernel's counters of the link.
    pub stats: Option<LinkStats>,
}

/// A link's counters (`ip -s link`), from the link's own point of view:
/// `rx` is what it received, `tx` what it sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub tx_errors: u64,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            alias: None,
            kind: None,
            up: m.header.flags.contains(LinkFlags::Up),
            oper_up: false,
            loopback: m.header.flags.contains(LinkFlags::Loopback),
            parent: None,
            macvlan_mode: None,
            stats: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    l.mac = Some(a.as_slice().try_into().expect("six bytes"))
                }
                LinkAttribute::Mtu(m) => l.mtu = *m,
                LinkAttribute::OperState(st) => l.oper_up = *st == State::Up,
                LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
                LinkAttribute::Link(p) => l.parent = Some(*p),
                LinkAttribute::Stats64(s) => {
                    l.stats = Some(LinkStats {
                        rx_packets: s.rx_packets,
                        rx_bytes: s.rx_bytes,
                        rx_dropped: s.rx_dropped,
                        rx_errors: s.rx_errors,
                        tx_packets: s.tx_packets,
                        tx_bytes: s.tx_bytes,
                        tx_dropped: s.tx_dropped,
                        tx_errors: s.tx_errors,
                    })
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::MacVlan(d)) => {
                                l.macvlan_mode = d.iter().find_map(|a| match a {
                                    InfoMacVlan::Mode(m) => Some(*m),
                                    _ => None,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// An IPv4 address of a link.
/// An address family, for the requests both families share: `Ipv4Addr`
/// or `Ipv6Addr`.
pub trait Family: Copy + Into<IpAddr> + sealed::Sealed {
    const FAMILY: AddressFamily;
    const UNSPECIFIED: Self;
    /// The link's own address in an address message: `IFA_LOCAL` for IPv4
    /// (on a point-to-point link `IFA_ADDRESS` is the peer's), `IFA_ADDRESS`
    /// for IPv6 (which has `IFA_LOCAL` only there).
    fn local(a: &AddressAttribute) -> Option<Self>;
    fn of_route(a: &RouteAddress) -> Option<Self>;
    /// A dump request for every route of the family.
    fn route_filter() -> RouteMessage {
        Self::route_builder().build()
    }
    /// A route message of the family, to fill in.
    fn route_builder() -> RouteMessageBuilder<Self>;
    /// The address as a route's attribute holds it.
    fn route_address(self) -> RouteAddress;
    /// Whether a route's gateway is given as on-link: an IPv4 one is
    /// (inside containers the gateway is the next hop even for the
    /// container's own subnet); an IPv6 one has a /128 device route of its
    /// own first.
    const GATEWAY_ONLINK: bool;
    /// The prefix length of one address: 32 or 128.
    const HOST_PREFIX: u8;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::Ipv4Addr {}
    impl Sealed for std::net::Ipv6Addr {}
}

impl Family for Ipv4Addr {
    const FAMILY: AddressFamily = AddressFamily::Inet;
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;
    fn local(a: &AddressAttribute) -> Option<Self> {
        match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        }
    }
    fn of_route(a: &RouteAddress) -> Option<Self> {
        match a {
            RouteAddress::Inet(ip) => Some(*ip),
            _ => None,
        }
    }
    fn route_builder() -> RouteMessageBuilder<Self> {
        RouteMessageBuilder::<Ipv4Addr>::new()
    }
    fn route_address(self) -> RouteAddress {
        RouteAddress::Inet(self)
    }
    const GATEWAY_ONLINK: bool = true;
    const HOST_PREFIX: u8 = 32;
}

impl Family for Ipv6Addr {
    const FAMILY: AddressFamily = AddressFamily::Inet6;
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;
    fn local(a: &AddressAttribute) -> Option<Self> {
        match a {
            AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
            _ => None,
        }
    }
    fn of_route(a: &RouteAddress) -> Option<Self> {
        match a {
            RouteAddress::Inet6(ip) => Some(*ip),
            _ => None,
        }
    }
    fn route_builder() -> RouteMessageBuilder<Self> {
        RouteMessageBuilder::<Ipv6Addr>::new()
    }
    fn route_address(self) -> RouteAddress {
        RouteAddress::Inet6(self)
    }
    const GATEWAY_ONLINK: bool = false;
    const HOST_PREFIX: u8 = 128;
}

/// An address of a link (IPv4 unless said otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address<A = Ipv4Addr> {
    pub index: u32,
    pub ip: A,
    pub prefix: u8,
    /// Its label (`lo:dnet`; IPv6 addresses have none).
    pub label: Option<String>,
    /// Marked as dnet's (`IFA_PROTO` 213).
    pub dnet: bool,
    /// Neither temporary (privacy, it rotates), deprecated, tentative nor
    /// failed duplicate address detection: an address to translate to.
    pub stable: bool,
}

/// A route as dnet sees it (IPv4 unless said otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<A = Ipv4Addr> {
    pub dst: A,
    pub prefix: u8,
    pub oif: Option<u32>,
    pub gateway: Option<A>,
    pub kind: RouteType,
    pub protocol: RouteProtocol,
    pub table: u32,
}

/// The peer end of a new veth pair, made directly in another namespace.
pub struct VethPeer<'a> {
    pub name: &'a str,
    pub netns: &'a OwnedFd,
    pub mac: [u8; 6],
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A handle in the calling thread's namespace. Needs a tokio runtime.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A handle in the namespace at `path`.
    pub async fn open_in(path: &Path) -> Result<Netlink, NetlinkError> {
        Netlink::open_in_fd(netns::open(path)?.as_fd(), || Ok(())).await
    }

    /// A handle in the namespace `fd` (from `netns::open`), after `first`
    /// ran there: one entry into the namespace for both.
    pub async fn open_in_fd(
        fd: BorrowedFd<'_>,
        first: impl FnOnce() -> Result<(), NetnsError> + Send,
    ) -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle) = netns::run_in_fd(fd, move || {
            first()?;
            let _guard = rt.enter();
            rtnetlink::new_connection()
                .map(|(c, h, _)| (c, h))
                .map_err(NetlinkError::Socket)
        })??;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("list links"))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let r: Result<Vec<LinkMessage>, _> = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_collect()
            .await;
        match r {
            Ok(msgs) => Ok(msgs.first().map(Link::from_message)),
            Err(e) => {
                let e = req(format!("get link {name}"))(e);
                if e.errno() == Some(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Makes a veth pair whose peer is born in another namespace (so no
    /// rename or move is needed), both ends with the given MACs and MTU,
    /// the host end marked with `alias` and forwarding IPv4 (the
    /// datapath's route lookups, `bpf_fib_lookup`, want forwarding on the
    /// interface a packet arrived on; the kernel forwards nothing itself:
    /// every packet it sees from there is local or already steered by the
    /// datapath); returns the host end.
    pub async fn add_veth(
        &self,
        name: &str,
        mac: [u8; 6],
        mtu: u32,
        alias: &str,
        peer: VethPeer<'_>,
    ) -> Result<Link, NetlinkError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.name.to_owned())
            .address(peer.mac.to_vec())
            .mtu(mtu)
            .setns_by_fd(peer.netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(name, peer.name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .address(mac.to_vec())
            .mtu(mtu)
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(req(format!("add veth {name}")))?;
        crate::engine::crash::point("veth:created");
        // The kernel ignores IFLA_IFALIAS (and IFLA_AF_SPEC) when it
        // creates a link: both are set at once afterwards. Forwarding goes
        // over netlink rather than `/proc/sys/net/ipv4/conf/NAME/`, whose
        // lookup grows with the number of interfaces.
        let mut link = self.link(name).await?.ok_or_else(|| {
            NetlinkError::Socket(std::io::Error::other(format!("veth {name} vanished")))
        })?;
        let mut conf = InetDevConf::default();
        conf.forwarding = 1;
        let mut msg = LinkUnspec::new_with_index(link.index).alias(alias).build();
        msg.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req(format!("set alias and forwarding of {name}")))?;
        link.alias = Some(alias.to_owned());
        Ok(link)
    }

    /// Sets a link's alias (`ip link set ... alias`): dnet marks its links so.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req(format!("set alias of link {index}")))
    }

    /// Sets a link's MAC address.
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req(format!("set the MAC of link {index}")))
    }

    /// Makes a macvlan child of `parent` directly in another namespace.
    pub async fn add_macvlan(
        &self,
        name: &str,
        parent: u32,
        mode: MacVlanMode,
        mac: [u8; 6],
        mtu: u32,
        netns: Option<&OwnedFd>,
    ) -> Result<(), NetlinkError> {
        let mut b = LinkMacVlan::new(name, parent, mode)
            .address(mac.to_vec())
            .mtu(mtu);
        if let Some(ns) = netns {
            b = b.setns_by_fd(ns.as_raw_fd());
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(req(format!("add macvlan {name}")))
    }

    pub async fn del_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(req(format!("delete link {index}")))
    }

    /// Deletes the link called `name`; a missing link is not an error.
    pub async fn del_link_named(&self, name: &str) -> Result<(), NetlinkError> {
        match self.link(name).await? {
            Some(l) => match self.del_link(l.index).await {
                Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
                r => r,
            },
            None => Ok(()),
        }
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req(format!("set link {index} up")))
    }

    /// Adds `ip/prefix` (with its broadcast address) to a link, with an
    /// optional label (`lo:dnet`), and without the subnet's connected route
    /// when `noprefixroute`.
    pub async fn add_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
        label: Option<&str>,
        noprefixroute: bool,
    ) -> Result<(), NetlinkError> {
        let mut r = self
            .handle
            .address()
            .add(index, ip.into(), prefix)
            .replace();
        if let Some(l) = label {
            r.message_mut()
                .attributes
                .push(AddressAttribute::Label(l.to_owned()));
        }
        if noprefixroute {
            r.message_mut().attributes.push(AddressAttribute::Flags(
                netlink_packet_route::address::AddressFlags::Noprefixroute,
            ));
        }
        r.execute()
            .await
            .map_err(req(format!("add address {ip}/{prefix}")))
    }

    /// Removes an address; a missing one is not an error.
    pub async fn del_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.attributes.push(AddressAttribute::Local(ip.into()));
        self.address_del(msg, index, ip, prefix).await
    }

    /// Deletes the address `msg` (with the attributes the family needs)
    /// names once `ip/prefix` on link `index` is added; a missing one is not
    /// an error; either family.
    async fn address_del<A: Family + std::fmt::Display>(
        &self,
        mut msg: AddressMessage,
        index: u32,
        ip: A,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        msg.header.family = A::FAMILY;
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.attributes.push(AddressAttribute::Address(ip.into()));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = req(format!("delete address {ip}/{prefix}"))(e);
                if e.errno() == Some(libc::EADDRNOTAVAIL) || e.errno() == Some(libc::ENOENT) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// IPv4 addresses of a link (or of every link).
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<Address>, NetlinkError> {
        self.addresses_of(index).await
    }

    /// The addresses of family `A` of a link (or of every link).
    pub async fn addresses_of<A: Family>(
        &self,
        index: Option<u32>,
    ) -> Result<Vec<Address<A>>, NetlinkError> {
        let mut r = self.handle.address().get();
        if let Some(i) = index {
            r = r.set_link_index_filter(i);
        }
        let msgs: Vec<_> = r
            .execute()
            .try_collect()
            .await
            .map_err(req("list addresses"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.family == A::FAMILY)
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(A::local)?;
                let label = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Label(l) => Some(l.clone()),
                    _ => None,
                });
                let dnet = m.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Protocol(AddressProtocol::Other(p)) if *p == markers::RTPROT_DNET)
                });
                // IFA_FLAGS (32 bits) when present, else the header's 8.
                let flags = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::Flags(f) => Some(f.bits()),
                        _ => None,
                    })
                    .unwrap_or(u32::from(m.header.flags.bits()));
                Some(Address {
                    index: m.header.index,
                    ip,
                    prefix: m.header.prefix_len,
                    label,
                    dnet,
                    stable: v6::stable6(flags),
                })
            })
            .collect())
    }

    /// Adds (or replaces) a route, of either family.
    pub async fn add_route<A: Family>(&self, route: RouteSpec<A>) -> Result<(), NetlinkError> {
        self.route_add(route.name(), route.message()).await
    }

    /// Adds a route only where none to its destination is: in a container's
    /// namespace an existing route is its owner's, never replaced.
    /// `Ok(false)` when one is already there (nothing changed).
    pub async fn add_route_if_absent<A: Family>(
        &self,
        route: RouteSpec<A>,
    ) -> Result<bool, NetlinkError> {
        self.route_add_if_absent(route.name(), route.message())
            .await
    }

    /// Deletes a route; a missing route is not an error.
    pub async fn del_route<A: Family>(&self, route: RouteSpec<A>) -> Result<(), NetlinkError> {
        self.route_del(route.name(), route.message()).await
    }

    /// Adds (or replaces) the route `msg` describes (`dst` names it in
    /// errors); either family.
    async fn route_add(&self, dst: String, msg: RouteMessage) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(req(format!("add route {dst}")))
    }

    /// Adds the route `msg` describes unless one to its destination is
    /// there (`Ok(false)`, nothing changed); either family.
    async fn route_add_if_absent(
        &self,
        dst: String,
        msg: RouteMessage,
    ) -> Result<bool, NetlinkError> {
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = req(format!("add route {dst}"))(e);
                if e.errno() == Some(libc::EEXIST) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes the route `msg` describes; a missing one is not an error;
    /// either family.
    async fn route_del(&self, dst: String, msg: RouteMessage) -> Result<(), NetlinkError> {
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = req(format!("delete route {dst}"))(e);
                if e.errno() == Some(libc::ESRCH) || e.errno() == Some(libc::ENOENT) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// IPv4 routes (each with its table).
    pub async fn routes(&self) -> Result<Vec<Route>, NetlinkError> {
        self.routes_of().await
    }

    /// The routes of family `A` the kernel lists, each with its table.
    pub async fn routes_of<A: Family>(&self) -> Result<Vec<Route<A>>, NetlinkError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(A::route_filter())
            .execute()
            .try_collect()
            .await
            .map_err(req("list routes"))?;
        Ok(msgs
            .iter()
            .map(|m| {
                let mut r = Route {
                    dst: A::UNSPECIFIED,
                    prefix: m.header.destination_prefix_length,
                    oif: None,
                    gateway: None,
                    kind: m.header.kind,
                    protocol: m.header.protocol,
                    table: m.header.table as u32,
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(d) => r.dst = A::of_route(d).unwrap_or(r.dst),
                        RouteAttribute::Gateway(g) => r.gateway = A::of_route(g).or(r.gateway),
                        RouteAttribute::Oif(o) => r.oif = Some(*o),
                        RouteAttribute::Table(t) => r.table = *t,
                        _ => {}
                    }
                }
                r
            })
            .collect())
    }

    /// A permanent neighbour entry (IPv4 or IPv6): the host never ARPs
    /// for, or solicits, a container.
    pub async fn add_neighbour(
        &self,
        index: u32,
        ip: impl Into<IpAddr>,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let ip = ip.into();
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .flags(NeighbourFlags::empty())
            .replace()
            .execute()
            .await
            .map_err(req(format!("add neighbour {ip}")))
    }
}

/// A change a netlink notification announces, as far as the uplink is
/// concerned (see [`monitor`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A link appeared, changed (renamed, up, down, MTU) or went.
    Link { index: u32, name: Option<String> },
    /// An IPv4 address of link `index` came or went.
    Address { index: u32 },
    /// The main table's IPv4 default route came, changed or went.
    DefaultRoute,
}

impl Change {
    fn of(m: RouteNetlinkMessage) -> Option<Change> {
        match m {
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
                let l = Link::from_message(&l);
                Some(Change::Link {
                    index: l.index,
                    name: (!l.name.is_empty()).then_some(l.name),
                })
            }
            // IPv6 too: NAT66 translates to the uplink's IPv6 address.
            RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a)
                if matches!(a.header.family, AddressFamily::Inet | AddressFamily::Inet6) =>
            {
                Some(Change::Address {
                    index: a.header.index,
                })
            }
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r)
                if r.header.destination_prefix_length == 0
                    && r.header.table == RouteHeader::RT_TABLE_MAIN =>
            {
                Some(Change::DefaultRoute)
            }
            _ => None,
        }
    }
}

/// Link, address and IPv4 route notifications of the calling thread's
/// namespace (the `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`,
/// `RTNLGRP_IPV6_IFADDR` and `RTNLGRP_IPV4_ROUTE` groups), as [`Change`]s, from the moment this
/// returns. Needs a tokio runtime. The kernel drops notifications when the
/// socket's buffer is full, so a caller that must not miss one also looks
/// again now and then.
pub fn monitor() -> Result<impl futures::Stream<Item = Change> + Unpin, NetlinkError> {
    use futures::StreamExt as _;
    use rtnetlink::MulticastGroup;
    let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
    ])
    .map_err(NetlinkError::Socket)?;
    tokio::spawn(async move {
        // The connection lives as long as its handle or its listener.
        let _handle = handle;
        conn.await
    });
    Ok(messages.filter_map(|(m, _)| {
        futures::future::ready(match m.payload {
            NetlinkPayload::InnerMessage(m) => Change::of(m),
            _ => None,
        })
    }))
}

/// A route to add or delete, of either family (IPv4 unless said
/// otherwise).
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec<A = Ipv4Addr> {
    pub dst: A,
    pub prefix: u8,
    pub kind: RouteType,
    pub oif: Option<u32>,
    pub gateway: Option<A>,
    pub pref_src: Option<A>,
    /// Mark the route as dnet's (`proto 213`, see [`markers`]).
    pub dnet: bool,
}

/// An IPv6 route to add or delete.
pub type RouteSpec6 = RouteSpec<Ipv6Addr>;

impl<A: Family> RouteSpec<A> {
    /// `dst/prefix dev oif` (scope link), dnet's.
    pub fn device(dst: A, prefix: u8, oif: u32) -> RouteSpec<A> {
        RouteSpec {
            dst,
            prefix,
            kind: RouteType::Unicast,
            oif: Some(oif),
            gateway: None,
            pref_src: None,
            dnet: true,
        }
    }

    /// `dst/prefix via gw dev oif` (inside containers; IPv4 adds `onlink`,
    /// see [`Family::GATEWAY_ONLINK`]).
    pub fn via(dst: A, prefix: u8, gateway: A, oif: u32) -> RouteSpec<A> {
        RouteSpec {
            dst,
            prefix,
            kind: RouteType::Unicast,
            oif: Some(oif),
            gateway: Some(gateway),
            pref_src: None,
            dnet: false,
        }
    }

    /// `unreachable dst/prefix`, dnet's.
    pub fn unreachable(dst: A, prefix: u8) -> RouteSpec<A> {
        RouteSpec {
            dst,
            prefix,
            kind: RouteType::Unreachable,
            oif: None,
            gateway: None,
            pref_src: None,
            dnet: true,
        }
    }

    /// `dst/prefix`, as errors name the route.
    fn name(&self) -> String {
        let dst: IpAddr = self.dst.into();
        format!("{dst}/{}", self.prefix)
    }

    fn message(&self) -> RouteMessage {
        let mut b = A::route_builder().kind(self.kind).protocol(if self.dnet {
            markers::route_protocol()
        } else {
            RouteProtocol::Boot
        });
        // What the builder's family-own setters do (`destination_prefix`,
        // `gateway`, `pref_source`).
        let m = b.get_mut();
        m.header.destination_prefix_length = self.prefix;
        m.attributes
            .push(RouteAttribute::Destination(self.dst.route_address()));
        if let Some(g) = self.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(g.route_address()));
        }
        if let Some(s) = self.pref_src {
            m.attributes
                .push(RouteAttribute::PrefSource(s.route_address()));
        }
        if let Some(o) = self.oif {
            b = b.output_interface(o);
        }
        if self.gateway.is_some() && A::GATEWAY_ONLINK {
            b = b.onlink();
        }
        if self.oif.is_some() && self.gateway.is_none() {
            b = b.scope(RouteScope::Link);
        }
        if self.kind != RouteType::Unicast {
            b = b.scope(RouteScope::Universe);
        }
        b.build()
    }
}

/// `InfoKind` by name, for callers that only need to compare kinds.
pub fn kind_name(kind: &InfoKind) -> String {
    kind.to_string()
}

/// A cls_bpf filter at a clsact hook of a link (`tc filter show dev X
/// ingress`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfFilter {
    pub priority: u16,
    pub handle: u32,
    /// The name it was attached under (`TCA_BPF_NAME`).
    pub name: Option<String>,
    /// Its program's tag (`TCA_BPF_TAG`), a hash of the instructions.
    pub tag: Option<[u8; 8]>,
    /// Its program's id (`TCA_BPF_ID`).
    pub id: Option<u32>,
}

/// The clsact qdisc's ingress hook (`TC_H_CLSACT:TC_H_MIN_INGRESS`).
pub const CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
/// The clsact qdisc's egress hook (`TC_H_CLSACT:TC_H_MIN_EGRESS`).
pub const CLSACT_EGRESS: u32 = 0xFFFF_FFF3;

/// The cls_bpf filters at clsact hook `parent` of link `ifindex` in the
/// calling thread's namespace (none without a clsact qdisc): one dump on a
/// socket of its own, answered before it returns, for the datapath, whose
/// callers are not all async.
pub fn bpf_filters(ifindex: u32, parent: u32) -> std::io::Result<Vec<BpfFilter>> {
    use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcMessage, TcOption};
    use rtnetlink::{
        packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage},
        sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
    };
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = parent.into();
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetTrafficFilter(m)),
    );
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let mut found = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full()?;
        if data.is_empty() {
            return Err(std::io::Error::other("netlink: the dump ended early"));
        }
        let mut off = 0;
        while off < data.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                .map_err(std::io::Error::other)?;
            // Messages of a dump are 4-byte aligned.
            off += (msg.header.length as usize + 3) & !3;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                        None => Ok(found),
                    };
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(f)) => {
                    let mut bpf = false;
                    let mut filter = BpfFilter {
                        priority: (f.header.info >> 16) as u16,
                        handle: f.header.handle.into(),
                        name: None,
                        tag: None,
                        id: None,
                    };
                    for a in &f.attributes {
                        match a {
                            TcAttribute::Kind(k) => bpf = k == "bpf",
                            TcAttribute::Options(opts) => {
                                for o in opts {
                                    match o {
                                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => {
                                            filter.name = Some(n.clone())
                                        }
                                        TcOption::Bpf(TcFilterBpfOption::ProgTag(t)) => {
                                            filter.tag = Some(*t)
                                        }
                                        TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => {
                                            filter.id = Some(*i)
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    // The first message of a priority is its classifier,
                    // with no handle: not a filter.
                    if bpf && filter.handle != 0 {
                        found.push(filter);
                    }
                }
                _ => {}
            }
        }
    }
}
