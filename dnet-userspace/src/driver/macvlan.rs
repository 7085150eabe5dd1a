//! The macvlan driver: containers as hosts of the parent's LAN, each with a
//! MAC address of its own.
//!
//! Per endpoint: a macvlan child of the parent, born in the container's
//! namespace under its final name (`eth0`), with the Docker MAC (`02:42` +
//! IPv4), an address of the LAN's subnet (on-link, as any host of the LAN)
//! and a default route via the LAN's router (the network's gateway). On a
//! dual-stack network (`--ipv6`, the LAN's IPv6 subnet given) the same for
//! IPv6, set up as on a dual-stack bridge network's container (no DAD, no
//! router advertisements or solicitations, `::1` on `lo`) except that the
//! subnet is on the link. The
//! child carries the alias `dnet:mv:NETWORK-ID`, so that what a crash leaves
//! in a container can be told from what the user made there.
//!
//! No eBPF: the kernel's macvlan driver switches frames between the parent
//! and its children by destination MAC, and (in `bridge` mode) between the
//! children themselves. There is no dnet policy to enforce between hosts of
//! a LAN, so nothing of the datapath is in the way.
//!
//! The kernel never hands a frame the parent sends to a child of the same
//! parent, nor the other way round: the host cannot reach its own macvlan
//! containers through the parent. `-o host_access=true` gives the host a
//! macvlan interface of its own on the parent (`mvhost-XXXXXXXX`, alias
//! `dnet:net:NETWORK-ID`) with an address of the network, and a /32 route per
//! container through it; on a dual-stack network an IPv6 address of the
//! network too, and a /128 route per container. Only per-container routes:
//! the subnets stay routed on the parent, so the host's own traffic to the
//! LAN (its router included) does not move.
//!
//! Per network there is nothing else to make: the parent and the subnet
//! belong to the LAN.
//!
//! Another runtime's endpoint (`Netns::Runtime`, Docker's `-o
//! driver=macvlan`): the child is made in the daemon's namespace under a
//! temporary name ([`runtime_link_name`]), down and without an address, as
//! Docker's own macvlan driver makes it; the runtime moves it into the
//! container, renames it and configures it. Once moved it is the runtime's:
//! dnet deletes it only where it finds it again, in the daemon's namespace
//! (the runtime moves it back before it deletes the endpoint).

use std::{
    collections::BTreeSet,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use dnet_common::addr::docker_mac;
use rtnetlink::packet_route::link::MacVlanMode;

use super::{
    Attachment, Caps, Counters, Ctx, Driver, Reserved, Subnet6Route, check_mtu, check_options,
    configure_container_ipv6, container_ipv6_switch, keep,
};
use crate::{
    conflict,
    error::{Error, Result},
    invalid,
    ipam::{Pool, Pool6},
    model::{Container, DriverKind, Endpoint, Ipam, Netns, Network, State},
    netlink::{Family, Link, Netlink, RouteSpec, markers},
    netns, spec,
};

pub struct Macvlan;

const OPTIONS: &[&str] = &["parent", "macvlan_mode", "host_access", "mtu"];

/// How the kernel switches between the children of one parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Children reach each other inside the kernel.
    Bridge,
    /// Children never reach each other.
    Private,
    /// Everything goes out to the LAN's switch, which must send frames for
    /// another child back (hairpin).
    Vepa,
    /// One child takes the parent over.
    Passthru,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode> {
        match s {
            "bridge" => Ok(Mode::Bridge),
            "private" => Ok(Mode::Private),
            "vepa" => Ok(Mode::Vepa),
            "passthru" => Ok(Mode::Passthru),
            _ => Err(invalid!(
                "invalid macvlan_mode {s:?}: use bridge, private, vepa or passthru"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Private => "private",
            Mode::Vepa => "vepa",
            Mode::Passthru => "passthru",
        }
    }

    fn kernel(self) -> MacVlanMode {
        match self {
            Mode::Bridge => MacVlanMode::Bridge,
            Mode::Private => MacVlanMode::Private,
            Mode::Vepa => MacVlanMode::Vepa,
            Mode::Passthru => MacVlanMode::Passthrough,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A macvlan network's settings, read from its options (which `validate`
/// completed and checked when the network was made).
struct Settings<'a> {
    parent: &'a str,
    mode: Mode,
    host_access: bool,
    mtu: Option<u32>,
}

fn settings(net: &Network) -> Result<Settings<'_>> {
    let parent = net
        .options
        .get("parent")
        .ok_or_else(|| invalid!("macvlan network {} has no parent", net.name))?;
    let mode = Mode::parse(
        net.options
            .get("macvlan_mode")
            .map(String::as_str)
            .unwrap_or("bridge"),
    )?;
    let host_access = match net.options.get("host_access") {
        Some(v) => spec::parse_bool("host_access", v).map_err(Error::Invalid)?,
        None => false,
    };
    let mtu = net.options.get("mtu").and_then(|m| m.parse().ok());
    Ok(Settings {
        parent,
        mode,
        host_access,
        mtu,
    })
}

fn ipam(net: &Network) -> Result<Ipam> {
    net.ipam
        .ok_or_else(|| invalid!("network {} has no addresses", net.name))
}

/// The host's own interface on the parent (`host_access`).
fn host_link_name(net: &Network) -> String {
    format!("mvhost-{}", &net.id[..8])
}

fn host_link_alias(net: &Network) -> String {
    markers::network_alias(&net.id)
}

fn child_alias(net: &Network) -> String {
    markers::child_alias(&net.id)
}

/// Hex digits of a runtime child's name after its `dnmv` (15 characters in
/// all, the kernel's limit): 44 random bits.
const RUNTIME_NAME_DIGITS: usize = 11;

/// The temporary name, in the daemon's namespace, of the child that another
/// runtime moves into its container: derived from the container's and the
/// network's ids (so that it is never stored apart), digit by digit, the
/// sum of the two ids' first 11 hex digits. Both ids are random, so the name
/// carries 44 random bits: two of a million endpoints meet with a chance of
/// about 3e-8 (6+5 digits of the two ids, as before, gave 24 bits per
/// network: ~3% at 1,000). A name taken all the same is refused at attach
/// ([`attach`]), and a child is only deleted when it carries its endpoint's
/// MAC ([`is_runtime_child_of`]), so one endpoint never removes another's.
fn runtime_link_name(container_id: &str, network_id: &str) -> String {
    let digit = |s: &str, i: usize| {
        s.as_bytes()
            .get(i)
            .and_then(|b| (*b as char).to_digit(16))
            .unwrap_or(0)
    };
    let mix: String = (0..RUNTIME_NAME_DIGITS)
        .map(|i| {
            let d = (digit(container_id, i) + digit(network_id, i)) % 16;
            char::from_digit(d, 16).expect("a hex digit")
        })
        .collect();
    format!("dnmv{mix}")
}

/// Is `l`, found under an endpoint's runtime name in the daemon's
/// namespace, that endpoint's child? A child of the network with the
/// endpoint's MAC (the MAC is the endpoint's own: `02:42` + its address, or
/// the one the runtime gave, unique on the LAN).
fn is_runtime_child_of(l: &Link, a: &Attachment<'_>, parent: Option<u32>) -> bool {
    is_child(l, a.network, parent) && a.endpoint.mac.is_some_and(|m| l.mac == Some(m.0))
}

/// Is the endpoint another runtime's (its child is moved by the runtime)?
fn for_runtime(a: &Attachment<'_>) -> bool {
    matches!(a.container.netns, Netns::Runtime)
}

/// The parent, which must exist.
async fn parent(ctx: &Ctx, net: &Network, name: &str) -> Result<Link> {
    ctx.nl.link(name).await?.ok_or_else(|| {
        conflict!(
            "parent interface {name:?} of network {} does not exist",
            net.name
        )
    })
}

/// IPv4 addresses configured on a link.
async fn addresses_of(nl: &Netlink, index: u32) -> Result<BTreeSet<Ipv4Addr>> {
    Ok(nl
        .addresses(Some(index))
        .await?
        .into_iter()
        .map(|a| a.ip)
        .collect())
}

/// IPv6 addresses configured on a link.
async fn addresses6_of(nl: &Netlink, index: u32) -> Result<BTreeSet<Ipv6Addr>> {
    Ok(nl
        .addresses6(Some(index))
        .await?
        .into_iter()
        .map(|a| a.ip)
        .collect())
}

/// The route from the host to one container through its host interface,
/// of either family: the container's address alone, spoken to from the
/// host's address on the network.
fn host_route<A: Family>(ip: A, host_link: u32, host_address: A) -> RouteSpec<A> {
    let mut r = RouteSpec::device(ip, A::HOST_PREFIX, host_link);
    r.pref_src = Some(host_address);
    r
}

/// The child of an endpoint, if the link called `ifname` in the container
/// is one: it carries the network's alias, or (an attach that failed before
/// the alias was set) it is a macvlan on the network's parent.
fn is_child(l: &Link, net: &Network, parent: Option<u32>) -> bool {
    l.alias.as_deref() == Some(child_alias(net).as_str())
        || (l.kind.as_deref() == Some("macvlan") && parent.is_some() && l.parent == parent)
}

#[async_trait]
impl Driver for Macvlan {
    fn caps(&self) -> Caps {
        Caps {
            addresses: true,
            lan_subnet: true,
            ipv6: true,
            ..Caps::default()
        }
    }

    async fn validate(&self, ctx: &Ctx, state: &State, net: &mut Network) -> Result<()> {
        check_options(net, OPTIONS)?;
        check_mtu(net)?;
        if net.internal {
            return Err(invalid!(
                "a macvlan network cannot be --internal: its containers are hosts of the parent's LAN"
            ));
        }
        // Defaults are written into the options, so the network keeps the
        // parent it was made on even if the uplink changes.
        if !net.options.contains_key("parent") {
            let Some(uplink) = &ctx.uplink else {
                return Err(invalid!(
                    "a macvlan network needs -o parent=IFACE: the daemon has no uplink to default to"
                ));
            };
            net.options.insert("parent".into(), uplink.name.clone());
        }
        let mode = Mode::parse(
            net.options
                .get("macvlan_mode")
                .map(String::as_str)
                .unwrap_or("bridge"),
        )?;
        net.options
            .insert("macvlan_mode".into(), mode.as_str().into());
        if let Some(v) = net.options.get("host_access") {
            spec::parse_bool("host_access", v).map_err(Error::Invalid)?;
        }
        let s = settings(net)?;
        let parent_name = s.parent.to_owned();
        if parent_name.is_empty() {
            return Err(invalid!("-o parent= needs an interface name"));
        }
        let Some(parent) = ctx.nl.link(&parent_name).await? else {
            return Err(invalid!("parent interface {parent_name:?} does not exist"));
        };
        if parent.loopback {
            return Err(invalid!(
                "parent {parent_name} is a loopback interface: a macvlan needs an Ethernet parent"
            ));
        }
        if parent.mac.is_none() {
            return Err(invalid!(
                "parent {parent_name} is not an Ethernet interface"
            ));
        }
        if parent.alias.as_deref().is_some_and(markers::is_dnet_alias) {
            return Err(invalid!(
                "parent {parent_name} is an interface dnet made, not a LAN's"
            ));
        }
        if !parent.up {
            return Err(conflict!(
                "parent {parent_name} is down: bring it up first (ip link set {parent_name} up)"
            ));
        }
        if let Some(mtu) = s.mtu
            && mtu > parent.mtu
        {
            return Err(invalid!(
                "mtu {mtu} is larger than the MTU of parent {parent_name} ({})",
                parent.mtu
            ));
        }
        let ipam = ipam(net)?;
        let others: Vec<(&Network, Settings<'_>)> = state
            .networks
            .values()
            .filter(|o| o.driver == DriverKind::Macvlan && o.id != net.id)
            .filter_map(|o| settings(o).ok().map(|s| (o, s)))
            .collect();
        for (other, o) in &others {
            // Each family's subnet against the other network's.
            let v4 = other
                .ipam
                .filter(|oi| oi.subnet.overlaps(ipam.subnet))
                .map(|oi| ("", ipam.subnet.to_string(), oi.subnet.to_string()));
            let v6 = net
                .ipam6
                .zip(other.ipam6)
                .filter(|(i6, oi)| oi.subnet.overlaps(i6.subnet))
                .map(|(i6, oi)| ("IPv6 ", i6.subnet.to_string(), oi.subnet.to_string()));
            if let Some((family, mine, theirs)) = v4.or(v6) {
                return Err(if o.parent == parent_name {
                    conflict!(
                        "{family}subnet {mine} overlaps {theirs} of macvlan network {:?} on the same parent {parent_name}",
                        other.name
                    )
                } else {
                    conflict!(
                        "{family}subnet {mine} overlaps {theirs} of network {:?}",
                        other.name
                    )
                });
            }
        }
        for (other, o) in &others {
            if o.parent == parent_name && (mode == Mode::Passthru || o.mode == Mode::Passthru) {
                return Err(conflict!(
                    "parent {parent_name} is used by macvlan network {:?}: a passthru network needs its parent to itself",
                    other.name
                ));
            }
        }
        if s.host_access {
            if mode != Mode::Bridge {
                return Err(invalid!(
                    "host_access=true needs macvlan_mode=bridge: in {mode} mode the host's own macvlan interface could not reach the containers either"
                ));
            }
            if let Some(rt) = net.runtime.as_ref().filter(|_| !net.runtime_ipam) {
                return Err(invalid!(
                    "host_access=true on a {} network needs dnet's IPAM (--ipam-driver set to dnet's driver): {}'s own IPAM does not know the host's address on the network and could hand it to a container",
                    rt.runtime,
                    rt.runtime
                ));
            }
            let name = host_link_name(net);
            if ctx.nl.link(&name).await?.is_some() {
                return Err(conflict!("an interface named {name} already exists"));
            }
            let pool = Pool::new(ipam.subnet, Some(ipam.gateway), ipam.ip_range)?;
            let used = addresses_of(&ctx.nl, parent.index).await?;
            net.host_address = Some(pool.allocate(&used, None)?);
            if let Some(i6) = net.ipam6 {
                let pool = Pool6::new(i6.subnet, Some(i6.gateway), i6.ip_range)?;
                let used = addresses6_of(&ctx.nl, parent.index).await?;
                net.host_address6 = Some(pool.allocate(&used, None)?);
            }
        }
        Ok(())
    }

    /// The parent's addresses (of either family) and the host's own.
    async fn reserved(&self, ctx: &Ctx, net: &Network) -> Result<Reserved> {
        let s = settings(net)?;
        let parent = parent(ctx, net, s.parent).await?;
        let mut r = Reserved {
            v4: addresses_of(&ctx.nl, parent.index).await?,
            ..Reserved::default()
        };
        r.v4.extend(net.host_address);
        if net.ipam6.is_some() {
            r.v6 = addresses6_of(&ctx.nl, parent.index).await?;
            r.v6.extend(net.host_address6);
        }
        Ok(r)
    }

    /// One container per network in passthru mode.
    async fn prepare(
        &self,
        ctx: &Ctx,
        state: &State,
        net: &Network,
        _container: &Container,
        _ep: &mut Endpoint,
    ) -> Result<Reserved> {
        let s = settings(net)?;
        if s.mode == Mode::Passthru
            && let Some((c, _)) = state.endpoints_of(&net.id).next()
        {
            return Err(conflict!(
                "network {} uses macvlan_mode=passthru: its parent {} carries one container, and {} has it",
                net.name,
                s.parent,
                c.name
            ));
        }
        self.reserved(ctx, net).await
    }

    async fn create_network(&self, ctx: &mut Ctx, net: &Network) -> Result<()> {
        let s = settings(net)?;
        if !s.host_access {
            return Ok(());
        }
        let addr = net
            .host_address
            .ok_or_else(|| invalid!("network {} has host access but no host address", net.name))?;
        let parent = parent(ctx, net, s.parent).await?;
        let name = host_link_name(net);
        let mac = docker_mac(addr);
        match ctx.nl.link(&name).await? {
            Some(l) if l.alias.as_deref() == Some(host_link_alias(net).as_str()) => {
                if l.parent != Some(parent.index) || l.mac != Some(mac) {
                    ctx.nl.del_link(l.index).await?;
                    make_host_link(ctx, net, &name, &parent, mac, s.mtu).await?;
                }
            }
            Some(_) => {
                return Err(conflict!(
                    "an interface named {name} already exists and is not dnet's"
                ));
            }
            None => make_host_link(ctx, net, &name, &parent, mac, s.mtu).await?,
        }
        let l = ctx
            .nl
            .link(&name)
            .await?
            .ok_or_else(|| conflict!("{name} vanished"))?;
        // Answer ARP for its own address only, and ask from it: otherwise it
        // would answer for every host address on the LAN next to the parent,
        // and the LAN could learn its MAC for the host's uplink address.
        // (Neighbour discovery answers for the link's own addresses only.)
        for (key, value) in [
            (format!("net/ipv4/conf/{name}/arp_ignore"), "1"),
            (format!("net/ipv4/conf/{name}/arp_announce"), "2"),
        ] {
            netns::sysctl(&key, value)?;
        }
        match net.host_address6 {
            // IPv6 as on a container's interface: its address usable at
            // once, and nothing taken from the LAN's routers (no RA, no
            // autoconfiguration, no redirects) nor asked of them.
            Some(addr6) => {
                for key in netns::QUIET_IPV6 {
                    netns::sysctl6(&name, key, "0")?;
                }
                netns::sysctl6(&name, "disable_ipv6", "0")?;
                ctx.nl.add_address6(l.index, addr6, 128, false).await?;
            }
            None => netns::disable_ipv6(&name)?,
        }
        ctx.nl.add_address(l.index, addr, 32, None, false).await?;
        ctx.nl.set_up(l.index).await?;
        Ok(())
    }

    async fn delete_network(&self, ctx: &mut Ctx, net: &Network) -> Vec<Error> {
        let mut errors = Vec::new();
        // Deleting the host's interface deletes its routes too.
        match ctx.nl.link(&host_link_name(net)).await {
            Ok(Some(l)) if l.alias.as_deref() == Some(host_link_alias(net).as_str()) => {
                keep(&mut errors, ctx.nl.del_link(l.index).await);
            }
            Ok(_) => {}
            Err(e) => errors.push(e.into()),
        }
        errors
    }

    async fn network_ok(&self, ctx: &Ctx, net: &Network) -> bool {
        let Ok(s) = settings(net) else { return false };
        if !s.host_access {
            return true;
        }
        let (Some(addr), Ok(Some(parent)), Ok(Some(l))) = (
            net.host_address,
            ctx.nl.link(s.parent).await,
            ctx.nl.link(&host_link_name(net)).await,
        ) else {
            return false;
        };
        l.alias.as_deref() == Some(host_link_alias(net).as_str())
            && l.parent == Some(parent.index)
            && l.mac == Some(docker_mac(addr))
            && l.up
            && addresses_of(&ctx.nl, l.index)
                .await
                .is_ok_and(|a| a.contains(&addr))
            && match net.host_address6 {
                Some(addr6) => addresses6_of(&ctx.nl, l.index)
                    .await
                    .is_ok_and(|a| a.contains(&addr6)),
                None => true,
            }
    }

    async fn attach(&self, ctx: &mut Ctx, a: &Attachment<'_>) -> Result<()> {
        let r = attach(ctx, a).await;
        if r.is_err() {
            for e in self.detach(ctx, a).await {
                tracing::warn!("cleaning up a failed attach: {e}");
            }
        }
        r
    }

    async fn detach(&self, ctx: &mut Ctx, a: &Attachment<'_>) -> Vec<Error> {
        let mut errors = Vec::new();
        let ep = a.endpoint;
        let s = match settings(a.network) {
            Ok(s) => s,
            Err(e) => return vec![e],
        };
        if let (true, Some(ip), Some(host)) = (s.host_access, ep.ip, a.network.host_address) {
            match ctx.nl.link(&host_link_name(a.network)).await {
                Ok(Some(l)) => {
                    keep(
                        &mut errors,
                        ctx.nl.del_route(host_route(ip, l.index, host)).await,
                    );
                    if let (Some(ip6), Some(host6)) = (ep.ip6, a.network.host_address6) {
                        keep(
                            &mut errors,
                            ctx.nl.del_route(host_route(ip6, l.index, host6)).await,
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e.into()),
            }
        }
        let parent = ctx.nl.link(s.parent).await.ok().flatten().map(|l| l.index);
        if for_runtime(a) {
            // Where the runtime left it (never moved, or moved back): here.
            let name = runtime_link_name(&a.container.id, &a.network.id);
            match ctx.nl.link(&name).await {
                Ok(Some(l)) if is_runtime_child_of(&l, a, parent) => {
                    keep(&mut errors, ctx.nl.del_link(l.index).await)
                }
                Ok(_) => {}
                Err(e) => errors.push(e.into()),
            }
            return errors;
        }
        // The child goes with a namespace that ends, but a namespace ends
        // only when nothing holds it any more: delete it now.
        let Some(ifname) = ep.ifname.as_deref() else {
            return errors;
        };
        if !netns::is_netns(a.netns) {
            return errors;
        }
        match Netlink::open_in(a.netns).await {
            Ok(cnl) => match cnl.link(ifname).await {
                Ok(Some(l)) if is_child(&l, a.network, parent) => {
                    keep(&mut errors, cnl.del_link(l.index).await)
                }
                Ok(_) => {}
                Err(e) => errors.push(e.into()),
            },
            Err(e) => errors.push(e.into()),
        }
        errors
    }

    async fn endpoint_ok(&self, ctx: &Ctx, a: &Attachment<'_>) -> bool {
        match endpoint_problem(ctx, a).await {
            None => true,
            Some(what) => {
                tracing::debug!(
                    container = %a.container.name,
                    network = %a.network.name,
                    "endpoint not whole: {what}"
                );
                false
            }
        }
    }

    /// Another runtime's endpoint: the host's routes to it with host
    /// access (an older build made none; one lost meanwhile comes back).
    /// Its child is the runtime's, and `endpoint_ok` cannot judge it.
    async fn refresh(&self, ctx: &mut Ctx, a: &Attachment<'_>) -> Result<()> {
        let (true, Ok(s), Some(ip)) = (for_runtime(a), settings(a.network), a.endpoint.ip) else {
            return Ok(());
        };
        add_host_routes(ctx, a, &s, ip, a.v6().map(|(_, ip6)| ip6)).await
    }

    /// Read from the kernel's own counters of the child, over netlink in the
    /// container's namespace, rather than from a counting TC program on it.
    /// The macvlan driver already counts, per CPU, every frame the child
    /// sends and receives, those it hands straight to another child in
    /// bridge mode included (they never cross the parent, so no program on
    /// the parent would see them), and every frame it drops. A TC program
    /// would count the same frames again, cost each of them a program run,
    /// and need its own attachment and pins in every container's namespace;
    /// the datapath counts bridge endpoints itself only because there it
    /// also decides their drops. Nothing of dnet drops a macvlan frame, so
    /// the drops are the kernel's, named by direction.
    async fn stats(&self, _ctx: &Ctx, a: &Attachment<'_>) -> Result<Option<Counters>> {
        let Some(ifname) = a.endpoint.ifname.as_deref() else {
            return Ok(None);
        };
        let link = match Netlink::open_in(a.netns).await {
            Ok(cnl) => cnl.link(ifname).await,
            Err(e) => Err(e),
        };
        let st = match link {
            Ok(Some(l)) if l.alias.as_deref() == Some(child_alias(a.network).as_str()) => {
                l.stats.unwrap_or_default()
            }
            Ok(_) => {
                tracing::warn!(container = %a.container.name, network = %a.network.name, "stats: the endpoint's {ifname} is missing");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(container = %a.container.name, network = %a.network.name, "stats: {e}");
                return Ok(None);
            }
        };
        // The link counts from the container's side; `dnet stats` counts
        // from the network's port: what the child sent is the port's rx.
        let drops = [
            ("send-dropped", st.tx_dropped),
            ("send-errors", st.tx_errors),
            ("receive-dropped", st.rx_dropped),
            ("receive-errors", st.rx_errors),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        Ok(Some(Counters {
            rx_packets: st.tx_packets,
            rx_bytes: st.tx_bytes,
            tx_packets: st.rx_packets,
            tx_bytes: st.rx_bytes,
            translated: 0,
            drops,
        }))
    }

    async fn collect_garbage(
        &self,
        ctx: &mut Ctx,
        state: &State,
        containers: &[(Container, PathBuf)],
    ) -> Result<()> {
        collect_garbage(ctx, state, containers).await
    }

    fn runtime_link(&self, c: &Container, net: &Network, _ep: &Endpoint) -> Option<String> {
        Some(runtime_link_name(&c.id, &net.id))
    }

    fn notes(&self, net: &Network) -> Vec<String> {
        let Ok(s) = settings(net) else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        match (s.host_access, net.host_address) {
            (true, Some(addr)) => notes.push(format!(
                "the host reaches this network's containers through {}, its own macvlan interface on {}, at {addr}{}; the containers reach the host there",
                host_link_name(net),
                s.parent,
                match (net.ipam6, net.host_address6) {
                    (Some(_), Some(addr6)) => format!(" and {addr6}"),
                    // Made before the host had an IPv6 address there.
                    (Some(_), None) => " (over IPv4 only)".into(),
                    (None, _) => String::new(),
                }
            )),
            _ => notes.push(format!(
                "the host cannot reach this network's containers, nor they the host, through the parent {}: the kernel never passes frames between a parent and its macvlan interfaces. -o host_access=true gives the host a macvlan interface of its own on {} so that it can",
                s.parent, s.parent
            )),
        }
        match s.mode {
            Mode::Bridge => {}
            Mode::Private => notes.push(
                "macvlan_mode=private: the containers of this network cannot reach each other"
                    .into(),
            ),
            Mode::Vepa => notes.push(format!(
                "macvlan_mode=vepa: traffic between the containers goes out through {} and reaches the other container only if the LAN's switch sends it back (hairpin)",
                s.parent
            )),
            Mode::Passthru => notes.push(format!(
                "macvlan_mode=passthru: one container takes {} over (promiscuous, the container's MAC set on the parent and restored by the kernel when it goes); the host cannot use {} meanwhile",
                s.parent, s.parent
            )),
        }
        notes
    }
}

async fn make_host_link(
    ctx: &Ctx,
    net: &Network,
    name: &str,
    parent: &Link,
    mac: [u8; 6],
    mtu: Option<u32>,
) -> Result<()> {
    ctx.nl
        .add_macvlan(
            name,
            parent.index,
            MacVlanMode::Bridge,
            mac,
            mtu.unwrap_or(parent.mtu),
            None,
        )
        .await?;
    let l = ctx
        .nl
        .link(name)
        .await?
        .ok_or_else(|| conflict!("{name} vanished"))?;
    // The kernel ignores IFLA_IFALIAS when it creates a link.
    ctx.nl.set_alias(l.index, &host_link_alias(net)).await?;
    Ok(())
}

async fn attach(ctx: &mut Ctx, a: &Attachment<'_>) -> Result<()> {
    let s = settings(a.network)?;
    let ipam = ipam(a.network)?;
    let ep = a.endpoint;
    let (Some(ip), Some(mac), Some(ifname)) = (ep.ip, ep.mac, ep.ifname.as_deref()) else {
        return Err(invalid!("macvlan endpoint is incomplete"));
    };
    let parent = parent(ctx, a.network, s.parent).await?;
    // Another runtime's: made here, under a temporary name, for it to move.
    let runtime_name = for_runtime(a).then(|| runtime_link_name(&a.container.id, &a.network.id));
    let (ifname, ns) = match &runtime_name {
        Some(n) => (n.as_str(), None),
        None => (ifname, Some(netns::open(a.netns)?)),
    };
    let v6 = a.v6();
    if let (Some(ns), Some(_)) = (&ns, v6) {
        // Before the child is born there: it takes its IPv6 settings from
        // `default` when it is made (no RA, no DAD, no solicitations).
        netns::run_in_fd(std::os::fd::AsFd::as_fd(ns), netns::container_ipv6_defaults)??;
    }
    let made = ctx
        .nl
        .add_macvlan(
            ifname,
            parent.index,
            s.mode.kernel(),
            mac.0,
            s.mtu.unwrap_or(parent.mtu),
            ns.as_ref(),
        )
        .await;
    if let Err(e) = made {
        if runtime_name.is_some() && e.errno() == Some(libc::EEXIST) {
            // Another endpoint's child (its MAC is not this one's: the
            // cleanup of this failed attach leaves it alone).
            return Err(conflict!(
                "cannot make the macvlan interface {ifname} for container {}: the name is taken by another interface",
                a.container.name
            ));
        }
        // The kernel refuses a macvlan next to a passthru one, and a
        // passthru one next to any other, with EINVAL.
        return Err(if e.errno() == Some(libc::EINVAL) {
            conflict!(
                "cannot make a {} macvlan on {}: a passthru macvlan takes its parent alone, and {} has another macvlan interface or a passthru one ({e})",
                s.mode,
                s.parent,
                s.parent
            )
        } else {
            e.into()
        });
    }
    let cnl = match &ns {
        // One entry into the namespace. A namespace dnet did not make may
        // have IPv6 on by default: off before the link is up for an
        // IPv4-only endpoint, so that it says nothing on the LAN.
        Some(ns) => {
            Netlink::open_in_fd(std::os::fd::AsFd::as_fd(ns), || {
                container_ipv6_switch(ifname, v6.is_some())
            })
            .await?
        }
        None => ctx.nl.clone(),
    };
    let link = cnl
        .link(ifname)
        .await?
        .ok_or_else(|| conflict!("{ifname} is missing in the container"))?;
    let named = async {
        cnl.set_alias(link.index, &child_alias(a.network)).await?;
        if link.mac != Some(mac.0) {
            // Passthru: the kernel gives the child the parent's MAC, and
            // setting the child's sets the parent's (the kernel puts the
            // parent's back when the child goes).
            cnl.set_mac(link.index, mac.0).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if runtime_name.is_some() {
        // This call made the child: a failure deletes it here, by its
        // index (the cleanup by name would not know it without its MAC).
        if let Err(e) = named {
            if let Err(d) = cnl.del_link(link.index).await {
                tracing::warn!(link = ifname, "removing a half-made child: {d}");
            }
            return Err(e);
        }
        // The runtime sets the address, the link state and the routes in
        // the container; the host's routes to it are dnet's.
        return add_host_routes(ctx, a, &s, ip, a.v6().map(|(_, ip6)| ip6)).await;
    }
    named?;
    cnl.add_address(link.index, ip, ipam.subnet.prefix(), None, false)
        .await?;
    cnl.set_up(link.index).await?;
    if a.primary {
        super::add_default_route(&cnl, ipam.gateway, link.index).await?;
    }
    if let Some((i6, ip6)) = v6 {
        // The LAN's IPv6 subnet is on the link, as its IPv4 one.
        configure_container_ipv6(&cnl, link.index, i6, ip6, a.primary, Subnet6Route::OnLink)
            .await?;
    }
    add_host_routes(ctx, a, &s, ip, v6.map(|(_, ip6)| ip6)).await
}

/// With host access, the host's routes to the endpoint's addresses
/// (`ip`, and `ip6` on a dual-stack network) through its own interface.
async fn add_host_routes(
    ctx: &Ctx,
    a: &Attachment<'_>,
    s: &Settings<'_>,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
) -> Result<()> {
    if !s.host_access {
        return Ok(());
    }
    let host = a
        .network
        .host_address
        .ok_or_else(|| invalid!("network {} has no host address", a.network.name))?;
    let l = ctx
        .nl
        .link(&host_link_name(a.network))
        .await?
        .ok_or_else(|| {
            conflict!(
                "the host's interface on {} for network {} is missing",
                s.parent,
                a.network.name
            )
        })?;
    ctx.nl.add_route(host_route(ip, l.index, host)).await?;
    if let (Some(ip6), Some(host6)) = (ip6, a.network.host_address6) {
        ctx.nl.add_route(host_route(ip6, l.index, host6)).await?;
    }
    Ok(())
}

/// What is wrong with an endpoint, if anything: the child in the container
/// with its name, alias, parent, mode, MAC and address, up, the default
/// route of the primary endpoint, and the host's route with host access.
async fn endpoint_problem(ctx: &Ctx, a: &Attachment<'_>) -> Option<&'static str> {
    let Ok(s) = settings(a.network) else {
        return Some("settings");
    };
    if for_runtime(a) {
        // The child is in the runtime's container, which dnet cannot see
        // (and a problem here would make the engine forget the endpoint).
        return None;
    }
    let ep = a.endpoint;
    let (Some(ip), Some(mac), Some(ifname), Ok(ipam)) =
        (ep.ip, ep.mac, ep.ifname.as_deref(), ipam(a.network))
    else {
        return Some("incomplete record");
    };
    let Ok(Some(parent)) = ctx.nl.link(s.parent).await else {
        return Some("parent missing");
    };
    let Ok(cnl) = Netlink::open_in(a.netns).await else {
        return Some("namespace");
    };
    let Ok(Some(l)) = cnl.link(ifname).await else {
        return Some("child missing");
    };
    let checks = [
        (
            "alias",
            l.alias.as_deref() == Some(child_alias(a.network).as_str()),
        ),
        ("kind", l.kind.as_deref() == Some("macvlan")),
        ("parent", l.parent == Some(parent.index)),
        ("mode", l.macvlan_mode == Some(s.mode.kernel())),
        ("mac", l.mac == Some(mac.0)),
        ("up", l.up),
    ];
    if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Some(what);
    }
    let has_addr = cnl.addresses(Some(l.index)).await.is_ok_and(|v| {
        v.iter()
            .any(|x| x.ip == ip && x.prefix == ipam.subnet.prefix())
    });
    if !has_addr {
        return Some("address");
    }
    if a.primary
        && !cnl
            .routes()
            .await
            .is_ok_and(|rs| rs.iter().any(|r| r.prefix == 0 && r.oif == Some(l.index)))
    {
        return Some("default route");
    }
    if let Some((i6, ip6)) = a.v6() {
        let has_addr6 = cnl.addresses6(Some(l.index)).await.is_ok_and(|v| {
            v.iter()
                .any(|x| x.ip == ip6 && x.prefix == i6.subnet.prefix())
        });
        if !has_addr6 {
            return Some("IPv6 address");
        }
        if a.primary
            && !cnl
                .routes6()
                .await
                .is_ok_and(|rs| rs.iter().any(|r| r.prefix == 0 && r.oif == Some(l.index)))
        {
            return Some("IPv6 default route");
        }
    }
    host_routes_problem(ctx, a, &s, ip).await
}

/// With host access: the host's interface, and its routes to the
/// endpoint's addresses (`ip`, and its IPv6 one where the host has one).
async fn host_routes_problem(
    ctx: &Ctx,
    a: &Attachment<'_>,
    s: &Settings<'_>,
    ip: Ipv4Addr,
) -> Option<&'static str> {
    if !s.host_access {
        return None;
    }
    let Ok(Some(h)) = ctx.nl.link(&host_link_name(a.network)).await else {
        return Some("host interface");
    };
    let routed = ctx.nl.routes().await.is_ok_and(|rs| {
        rs.iter()
            .any(|r| r.dst == ip && r.prefix == 32 && r.oif == Some(h.index))
    });
    if !routed {
        return Some("host route");
    }
    if let (Some(ip6), Some(_)) = (a.endpoint.ip6, a.network.host_address6) {
        let routed = ctx.nl.routes6().await.is_ok_and(|rs| {
            rs.iter()
                .any(|r| r.dst == ip6 && r.prefix == 128 && r.oif == Some(h.index))
        });
        if !routed {
            return Some("IPv6 host route");
        }
    }
    None
}

/// Removes what the macvlan driver made and the state no longer explains:
/// host interfaces of networks that are gone or have no host access, their
/// routes to containers that are gone, and children in the containers'
/// namespaces that no endpoint explains (a crash between making one and
/// the commit). `containers` pairs each container with its namespace.
async fn collect_garbage(
    ctx: &Ctx,
    state: &State,
    containers: &[(Container, PathBuf)],
) -> Result<()> {
    let host_links: Vec<(&Network, Ipv4Addr)> = state
        .networks
        .values()
        .filter(|n| n.driver == DriverKind::Macvlan)
        .filter(|n| settings(n).is_ok_and(|s| s.host_access))
        .filter_map(|n| n.host_address.map(|a| (n, a)))
        .collect();
    let links = ctx.nl.links().await?;
    for l in &links {
        let Some(id) = l.alias.as_deref().and_then(markers::network_of_alias) else {
            continue;
        };
        if !host_links
            .iter()
            .any(|(n, _)| n.id == id && host_link_name(n) == l.name)
        {
            tracing::info!(link = %l.name, "removing a host interface dnet no longer uses");
            ctx.nl.del_link(l.index).await?;
        }
    }
    let routes = ctx.nl.routes().await?;
    let routes6 = ctx.nl.routes6().await?;
    for (net, host) in &host_links {
        let Some(h) = links.iter().find(|l| l.name == host_link_name(net)) else {
            continue;
        };
        stale_host_routes(ctx, &routes, h.index, *host, &state.used_addresses(&net.id)).await?;
        if let Some(host6) = net.host_address6 {
            let ips = state.used_addresses6(&net.id);
            stale_host_routes(ctx, &routes6, h.index, host6, &ips).await?;
        }
    }
    // Children made for another runtime that no endpoint explains (a crash
    // between making one and the commit) are still here, in the daemon's
    // namespace.
    for l in &links {
        let Some(net_id) = l.alias.as_deref().and_then(markers::network_of_child_alias) else {
            continue;
        };
        let explained = containers.iter().any(|(c, _)| {
            matches!(c.netns, Netns::Runtime)
                && c.endpoints
                    .iter()
                    .any(|e| e.network_id == net_id && runtime_link_name(&c.id, net_id) == l.name)
        });
        if !explained {
            tracing::info!(link = %l.name, "removing a macvlan interface dnet no longer uses");
            ctx.nl.del_link(l.index).await?;
        }
    }
    for (c, path) in containers {
        // Another runtime's children are in its containers (or above).
        if matches!(c.netns, Netns::Runtime) || !netns::is_netns(path) {
            continue;
        }
        // One namespace that cannot be read does not stop the daemon.
        if let Err(e) = collect_children(c, path).await {
            tracing::warn!(container = %c.name, "looking for macvlan interfaces dnet no longer uses: {e}");
        }
    }
    Ok(())
}

/// Deletes the host routes of one family through the host interface
/// `link` whose container (an address of `ips`) is gone.
async fn stale_host_routes<A: Family + Ord + fmt::Display>(
    ctx: &Ctx,
    routes: &[crate::netlink::Route<A>],
    link: u32,
    host: A,
    ips: &BTreeSet<A>,
) -> Result<()> {
    for r in routes {
        if r.oif == Some(link)
            && r.prefix == A::HOST_PREFIX
            && markers::is_dnet_route(r.protocol)
            && !ips.contains(&r.dst)
        {
            tracing::info!(route = %r.dst, "removing a host route dnet no longer uses");
            ctx.nl.del_route(host_route(r.dst, link, host)).await?;
        }
    }
    Ok(())
}

async fn collect_children(c: &Container, path: &Path) -> Result<()> {
    let cnl = Netlink::open_in(path).await?;
    for l in cnl.links().await? {
        let Some(net_id) = l.alias.as_deref().and_then(markers::network_of_child_alias) else {
            continue;
        };
        let explained = c
            .endpoints
            .iter()
            .any(|e| e.network_id == net_id && e.ifname.as_deref() == Some(l.name.as_str()));
        if !explained {
            tracing::info!(container = %c.name, link = %l.name, "removing a macvlan interface dnet no longer uses");
            cnl.del_link(l.index).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_link_names_mix_both_ids() {
        let c = "0123456789abcdef0123";
        let n = "00000000000000000000";
        assert_eq!(runtime_link_name(c, n), "dnmv0123456789a");
        let n2 = "10000000000000000000";
        assert_eq!(runtime_link_name(c, n2), "dnmv1123456789a");
        assert_eq!(runtime_link_name("f", "1"), "dnmv00000000000");
        // Random ids: 1,000 endpoints on one network, no two names alike
        // (a clash has a chance of ~3e-8 here; 6+5 digits gave ~3%).
        let net = crate::model::new_id();
        let names: BTreeSet<String> = (0..1000)
            .map(|_| runtime_link_name(&crate::model::new_id(), &net))
            .collect();
        assert_eq!(names.len(), 1000);
        assert!(names.iter().all(|n| n.len() == 15));
    }

    #[test]
    fn modes_parse_and_print() {
        for m in ["bridge", "private", "vepa", "passthru"] {
            assert_eq!(Mode::parse(m).unwrap().as_str(), m);
        }
        assert_eq!(
            Mode::parse("source").unwrap_err().to_string(),
            "invalid macvlan_mode \"source\": use bridge, private, vepa or passthru"
        );
        assert_eq!(Mode::Passthru.kernel(), MacVlanMode::Passthrough);
    }
}
