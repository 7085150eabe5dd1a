//! The bridge driver, without a bridge: Docker's default network model with
//! the kernel bridge and iptables replaced by the eBPF datapath.
//!
//! Per network: the gateway address as a /32 on `lo` (label `lo:dnet`), so
//! host services can listen on it without a link of its own; an
//! `unreachable` route for the subnet, so host traffic to an unused address
//! never leaves through the uplink; and the network's entries in the
//! datapath maps.
//!
//! Per endpoint: a veth pair whose container end is born in the container's
//! namespace as `eth0` (address, Docker MAC, default route via the gateway
//! if it is the container's first endpoint on a network that is not
//! internal: an internal network gives none, as in Docker) and whose host
//! end `vethXXXXXXX` carries the gateway MAC (so frames to the gateway reach
//! the host stack), the container programs (cls_bpf filters of a clsact
//! qdisc, put there while the link is still down: see
//! `Datapath::attach_endpoint`), a /32 route and a permanent neighbour
//! entry (the host never ARPs for a container).

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, BorrowedFd},
    path::PathBuf,
};

use async_trait::async_trait;
use dnet_common::{
    Endpoint as DpEndpoint, Network as DpNetwork,
    addr::{docker_mac, ipv4_be},
    ipv6::{NET6_F_NAT, Network6},
    maps as m,
    network::{NET_F_INTERNAL, NET_F_NO_ICC},
};
use netlink_packet_route::route::RouteType;

use super::{Attachment, Caps, Ctx, Driver, Reserved, check_mtu, check_options, keep, loopback};
use crate::{
    conflict,
    datapath::Datapath,
    error::{Error, Result},
    model::{Container, DriverKind, Endpoint, Ipam, Ipam6, Netns, Network, State},
    netlink::{
        Family, Netlink, RouteSpec, RouteSpec6, VethPeer,
        markers::{self, GATEWAY_LABEL},
    },
    netns, spec,
};

pub struct Bridge;

const OPTIONS: &[&str] = &["mtu", "icc", crate::model::GATEWAY_MODE_IPV6];

/// A new host-side veth name, as Docker makes them.
fn veth_name() -> String {
    format!("veth{:07x}", rand::random::<u32>() & 0x0fff_ffff)
}

/// The temporary name of a pair's container end left in the daemon's
/// namespace for another runtime to move (`Netns::Runtime`): derived from
/// the host end's, so that it is never stored apart and never clashes.
fn container_side_name(host_ifname: &str) -> String {
    format!("dntmp{}", host_ifname.trim_start_matches("veth"))
}

/// Removes dnet's unreachable routes of family `A` to a subnet no bridge
/// network has (`subnets`: theirs, as network address and prefix).
async fn collect_unreachable<A: Family + PartialEq>(
    nl: &Netlink,
    subnets: &[(A, u8)],
) -> Result<()> {
    for r in nl.routes_of::<A>().await? {
        if markers::is_dnet_route(r.protocol)
            && r.kind == RouteType::Unreachable
            && !subnets.contains(&(r.dst, r.prefix))
        {
            let dst: std::net::IpAddr = r.dst.into();
            tracing::info!(route = %format!("{dst}/{}", r.prefix), "removing a route dnet no longer uses");
            nl.del_route(RouteSpec::unreachable(r.dst, r.prefix))
                .await?;
        }
    }
    Ok(())
}

fn ipam(net: &Network) -> Result<Ipam> {
    net.ipam
        .ok_or_else(|| Error::Invalid(format!("network {} has no addresses", net.name)))
}

fn icc(net: &Network) -> bool {
    net.options
        .get("icc")
        .and_then(|v| spec::parse_bool("icc", v).ok())
        .unwrap_or(true)
}

/// The network as the datapath sees it.
fn dp_network(net: &Network) -> Result<DpNetwork> {
    let ipam = ipam(net)?;
    let mut flags = 0;
    if !icc(net) {
        flags |= NET_F_NO_ICC;
    }
    if net.internal {
        flags |= NET_F_INTERNAL;
    }
    Ok(DpNetwork {
        subnet_be: ipv4_be(ipam.subnet.network()),
        mask_be: ipv4_be(ipam.subnet.mask()),
        gateway_be: ipv4_be(ipam.gateway),
        flags,
        gateway_mac: docker_mac(ipam.gateway),
        active: 1,
        _pad: 0,
    })
}

/// The IPv6 side of a dual-stack network as the datapath sees it (its
/// gateway MAC is the IPv4 entry's).
pub fn dp_network6(net: &Network) -> Option<(ipnetwork::Ipv6Network, Network6)> {
    let i6 = net.ipam6?;
    let flags = match net.gateway_mode6() {
        crate::model::GatewayMode6::Nat => NET6_F_NAT,
        crate::model::GatewayMode6::Routed => 0,
    };
    Some((
        i6.subnet,
        Network6 {
            subnet: i6.subnet.network().octets(),
            gateway: i6.gateway.octets(),
            flags,
            prefix_len: i6.subnet.prefix(),
            active: 1,
            _pad: [0; 2],
        },
    ))
}

/// IPv6 on the host end of a pair: off for an IPv4-only endpoint; for a
/// dual-stack one on, without a link-local address (`addr_gen_mode=1`, set
/// before IPv6 comes on), deaf to router advertisements, and forwarding on
/// this interface only (`bpf_fib_lookup` for IPv6 wants it; never
/// `all.forwarding`, which makes the uplink ignore advertisements).
fn host_side_ipv6(ifname: &str, dual: bool) -> Result<()> {
    if !dual {
        return Ok(netns::disable_ipv6(ifname)?);
    }
    for (key, value) in [
        ("addr_gen_mode", "1"),
        ("accept_ra", "0"),
        ("forwarding", "1"),
        ("disable_ipv6", "0"),
    ] {
        netns::sysctl6(ifname, key, value)?;
    }
    Ok(())
}

/// Brings a network's broadcast members in line with the endpoint map
/// (only what changed is written; both are known without a read of the
/// maps: see `datapath/mirror.rs`).
pub fn refresh_members(dp: &mut Datapath, dp_id: u32) -> Result<()> {
    let members = dp.network_ifindexes(dp_id)?;
    Ok(dp.set_members(dp_id, &members)?)
}

/// The endpoint's entry, as it should be in both endpoint maps.
fn dp_endpoint(a: &Attachment<'_>, ifindex: u32) -> Result<DpEndpoint> {
    let ep = a.endpoint;
    let (Some(ip), Some(mac), Some(slot)) = (ep.ip, ep.mac, ep.slot) else {
        return Err(Error::Invalid(
            "bridge endpoint without address, MAC or slot".into(),
        ));
    };
    Ok(DpEndpoint {
        ifindex,
        addr_be: ipv4_be(ip),
        net_id: a.network.dp_id,
        slot,
        mac: mac.0,
        _pad: [0; 2],
    })
}

#[async_trait]
impl Driver for Bridge {
    fn caps(&self) -> Caps {
        Caps {
            addresses: true,
            host_gateway: true,
            datapath: true,
            ports: true,
            ipv6: true,
            ..Caps::default()
        }
    }

    /// A slot in the datapath's per-CPU counters and a free host-side
    /// veth name.
    async fn prepare(
        &self,
        _ctx: &Ctx,
        state: &State,
        _net: &Network,
        _container: &Container,
        ep: &mut Endpoint,
    ) -> Result<Reserved> {
        let used_slots = state.used_slots();
        ep.slot = Some(
            (1..=dnet_common::maps::MAX_ENDPOINTS)
                .find(|s| !used_slots.contains(s))
                .ok_or_else(|| conflict!("too many endpoints"))?,
        );
        // One lookup per candidate rather than a list of every link: the
        // cost stays the same however many endpoints there are.
        let taken = |n: &str| {
            crate::netlink::index_of(n).is_some()
                || state.containers.values().any(|c| {
                    c.endpoints
                        .iter()
                        .any(|e| e.host_ifname.as_deref() == Some(n))
                })
        };
        let name = std::iter::repeat_with(veth_name)
            .take(100)
            .find(|n| !taken(n))
            .ok_or_else(|| conflict!("no free veth name"))?;
        ep.host_ifname = Some(name);
        Ok(Reserved::default())
    }

    /// The host ends, gateway addresses, unreachable routes and datapath
    /// entries (IPv4 and IPv6) of endpoints and networks the state no
    /// longer holds; then each network's broadcast members.
    async fn collect_garbage(
        &self,
        ctx: &mut Ctx,
        state: &State,
        _containers: &[(Container, PathBuf)],
    ) -> Result<()> {
        let veths: HashSet<String> = state
            .containers
            .values()
            .flat_map(|c| c.endpoints.iter().filter_map(|e| e.host_ifname.clone()))
            .collect();
        let bridges: Vec<_> = state
            .networks
            .values()
            .filter(|n| n.driver == DriverKind::Bridge)
            .cloned()
            .collect();
        // A veth cut short between its creation and its alias (a crash
        // between the two netlink calls) has no alias yet; its host end
        // already carries a bridge network's gateway MAC, which only dnet's
        // host ends do.
        let gateway_macs: Vec<[u8; 6]> = bridges
            .iter()
            .filter_map(|n| n.ipam.map(|i| dnet_common::addr::docker_mac(i.gateway)))
            .collect();
        for l in ctx.nl.links().await? {
            let ours = match l.alias.as_deref() {
                Some(alias) => markers::is_endpoint_alias(alias),
                None => {
                    l.kind.as_deref() == Some("veth")
                        && l.mac.is_some_and(|m| gateway_macs.contains(&m))
                }
            };
            if ours && !veths.contains(&l.name) {
                tracing::info!(link = %l.name, "removing a link dnet no longer uses");
                ctx.nl.del_link(l.index).await?;
            }
        }

        let lo = loopback(&ctx.nl).await?;
        for a in ctx.nl.addresses(Some(lo)).await? {
            if a.label.as_deref() == Some(GATEWAY_LABEL)
                && !bridges
                    .iter()
                    .any(|n| n.ipam.is_some_and(|i| i.gateway == a.ip))
            {
                tracing::info!(address = %a.ip, "removing a gateway address dnet no longer uses");
                ctx.nl.del_address(lo, a.ip, a.prefix).await?;
            }
        }

        let subnets: Vec<(Ipv4Addr, u8)> = bridges
            .iter()
            .filter_map(|n| n.ipam.map(|i| (i.subnet.network(), i.subnet.prefix())))
            .collect();
        collect_unreachable(&ctx.nl, &subnets).await?;

        // Datapath entries.
        let ips: HashSet<u32> = state
            .containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.host_ifname.is_some())
            .filter_map(|e| e.ip.map(ipv4_be))
            .collect();
        let live_ifindexes: HashSet<u32> = ctx
            .nl
            .links()
            .await?
            .into_iter()
            .filter(|l| veths.contains(&l.name))
            .map(|l| l.index)
            .collect();
        for (addr, _) in ctx.dp.endpoints(m::ENDPOINTS_BY_IP)? {
            if !ips.contains(&addr) {
                ctx.dp
                    .clear_endpoint(Some(dnet_common::addr::ipv4_from_be(addr)), None)?;
            }
        }
        for (ifindex, _) in ctx.dp.endpoints(m::ENDPOINTS_BY_IF)? {
            if !live_ifindexes.contains(&ifindex) {
                ctx.dp.clear_endpoint(None, Some(ifindex))?;
            }
        }
        for (subnet, id) in ctx.dp.subnets()? {
            if bridges
                .iter()
                .any(|n| n.dp_id == id && n.ipam.is_some_and(|i| i.subnet == subnet))
            {
                continue;
            }
            if bridges.iter().any(|n| n.dp_id == id) {
                // The id is another network's now: only the subnet goes.
                ctx.dp.clear_subnet(subnet)?;
            } else {
                ctx.dp.clear_network(id, Some(subnet))?;
            }
        }
        for id in 1..m::MAX_NETWORKS {
            if ctx.dp.network(id).is_ok_and(|n| n.active != 0)
                && !bridges.iter().any(|n| n.dp_id == id)
            {
                ctx.dp.clear_network(id, None)?;
            }
        }
        // IPv6 entries, as the IPv4 ones above.
        let ips6: HashSet<std::net::Ipv6Addr> = state
            .containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.host_ifname.is_some())
            .filter_map(|e| e.ip6)
            .collect();
        for (addr, _) in ctx.dp.endpoints6()? {
            if !ips6.contains(&addr) {
                ctx.dp.clear_endpoint6(Some(addr), None)?;
            }
        }
        for (ifindex, addr) in ctx.dp.endpoint6_addrs()? {
            if !live_ifindexes.contains(&ifindex) || !ips6.contains(&addr) {
                ctx.dp.clear_endpoint6(None, Some(ifindex))?;
            }
        }
        for (subnet, id) in ctx.dp.subnets6()? {
            if !bridges
                .iter()
                .any(|n| n.dp_id == id && n.ipam6.is_some_and(|i| i.subnet == subnet))
            {
                ctx.dp.clear_subnet6(subnet)?;
            }
        }
        for id in 1..m::MAX_NETWORKS {
            if ctx.dp.network6(id).is_ok_and(|n| n.active != 0)
                && !bridges.iter().any(|n| n.dp_id == id && n.ipam6.is_some())
            {
                ctx.dp.clear_network6(id, None)?;
            }
        }
        for a in ctx.nl.addresses6(Some(lo)).await? {
            if a.dnet
                && !bridges
                    .iter()
                    .any(|n| n.ipam6.is_some_and(|i| i.gateway == a.ip))
            {
                tracing::info!(address = %a.ip, "removing an IPv6 gateway address dnet no longer uses");
                ctx.nl.del_address6(lo, a.ip, a.prefix).await?;
            }
        }
        let subnets6: Vec<(Ipv6Addr, u8)> = bridges
            .iter()
            .filter_map(|n| n.ipam6.map(|i| (i.subnet.network(), i.subnet.prefix())))
            .collect();
        collect_unreachable(&ctx.nl, &subnets6).await?;
        for ifname in ctx.dp.pinned_interfaces()? {
            if !veths.contains(&ifname) {
                ctx.dp.detach_endpoint(&ifname)?;
            }
        }
        for n in &bridges {
            refresh_members(&mut ctx.dp, n.dp_id)?;
        }
        Ok(())
    }

    fn runtime_link(&self, _c: &Container, _net: &Network, ep: &Endpoint) -> Option<String> {
        ep.host_ifname.as_deref().map(container_side_name)
    }

    fn gateway_link(&self) -> Option<&'static str> {
        Some(GATEWAY_LABEL)
    }

    async fn validate(&self, ctx: &Ctx, _state: &State, net: &mut Network) -> Result<()> {
        check_options(net, OPTIONS)?;
        check_mtu(net)?;
        // The datapath forwards to the world through the uplink, and cannot
        // fragment: a container's packet must fit it. (An internal network
        // never reaches the uplink.)
        if let (Some(mtu), Some(up)) = (
            net.options.get("mtu").and_then(|m| m.parse::<u32>().ok()),
            &ctx.uplink,
        ) && mtu > up.mtu
            && !net.internal
        {
            return Err(Error::Invalid(format!(
                "mtu {mtu} is larger than the MTU of the uplink {} ({})",
                up.name, up.mtu
            )));
        }
        if let Some(v) = net.options.get("icc") {
            spec::parse_bool("icc", v).map_err(Error::Invalid)?;
        }
        if let Some(v) = net.options.get(crate::model::GATEWAY_MODE_IPV6) {
            v.parse::<crate::model::GatewayMode6>()
                .map_err(Error::Invalid)?;
        }
        // The gateway becomes an address dnet owns (and removes with the
        // network): one the host already has would be taken from it.
        let gw = ipam(net)?.gateway;
        if let Some(a) = ctx.nl.addresses(None).await?.iter().find(|a| a.ip == gw) {
            return Err(Error::Invalid(format!(
                "gateway {gw} is already an address of this host (interface index {})",
                a.index
            )));
        }
        Ok(())
    }

    async fn create_network(&self, ctx: &mut Ctx, net: &Network) -> Result<()> {
        let ipam = ipam(net)?;
        let lo = loopback(&ctx.nl).await?;
        ctx.nl
            .add_address(lo, ipam.gateway, 32, Some(GATEWAY_LABEL), false)
            .await?;
        ctx.nl
            .add_route(RouteSpec::unreachable(
                ipam.subnet.network(),
                ipam.subnet.prefix(),
            ))
            .await?;
        if let Some(i6) = net.ipam6 {
            ctx.nl.add_address6(lo, i6.gateway, 128, true).await?;
            ctx.nl
                .add_route(RouteSpec6::unreachable(
                    i6.subnet.network(),
                    i6.subnet.prefix(),
                ))
                .await?;
        }
        ctx.dp
            .set_network(net.dp_id, ipam.subnet, &dp_network(net)?)?;
        match dp_network6(net) {
            Some((subnet, n6)) => ctx.dp.set_network6(net.dp_id, subnet, &n6)?,
            // An id another network had may still have its IPv6 entry.
            None => ctx.dp.clear_network6(net.dp_id, None)?,
        }
        refresh_members(&mut ctx.dp, net.dp_id)?;
        Ok(())
    }

    async fn delete_network(&self, ctx: &mut Ctx, net: &Network) -> Vec<Error> {
        let mut errors = Vec::new();
        if let Some(i6) = net.ipam6 {
            match loopback(&ctx.nl).await {
                Ok(lo) => keep(&mut errors, ctx.nl.del_address6(lo, i6.gateway, 128).await),
                Err(e) => errors.push(e),
            }
            keep(
                &mut errors,
                ctx.nl
                    .del_route(RouteSpec6::unreachable(
                        i6.subnet.network(),
                        i6.subnet.prefix(),
                    ))
                    .await,
            );
        }
        if let Some(ipam) = net.ipam {
            match loopback(&ctx.nl).await {
                Ok(lo) => keep(&mut errors, ctx.nl.del_address(lo, ipam.gateway, 32).await),
                Err(e) => errors.push(e),
            }
            keep(
                &mut errors,
                ctx.nl
                    .del_route(RouteSpec::unreachable(
                        ipam.subnet.network(),
                        ipam.subnet.prefix(),
                    ))
                    .await,
            );
        }
        keep(
            &mut errors,
            ctx.dp
                .clear_network6(net.dp_id, net.ipam6.map(|i| i.subnet)),
        );
        keep(
            &mut errors,
            ctx.dp.clear_network(net.dp_id, net.ipam.map(|i| i.subnet)),
        );
        errors
    }

    async fn network_ok(&self, ctx: &Ctx, net: &Network) -> bool {
        let (Ok(ipam), Ok(want)) = (ipam(net), dp_network(net)) else {
            return false;
        };
        let Ok(lo) = loopback(&ctx.nl).await else {
            return false;
        };
        let has_gw = ctx.nl.addresses(Some(lo)).await.is_ok_and(|a| {
            a.iter().any(|a| {
                a.ip == ipam.gateway && a.prefix == 32 && a.label.as_deref() == Some(GATEWAY_LABEL)
            })
        });
        let has_route = ctx.nl.routes().await.is_ok_and(|rs| {
            rs.iter().any(|r| {
                r.dst == ipam.subnet.network()
                    && r.prefix == ipam.subnet.prefix()
                    && r.kind == netlink_packet_route::route::RouteType::Unreachable
            })
        });
        let has_v6 = match net.ipam6 {
            None => true,
            Some(i6) => {
                let gw = ctx.nl.addresses6(Some(lo)).await.is_ok_and(|a| {
                    a.iter()
                        .any(|a| a.ip == i6.gateway && a.prefix == 128 && a.dnet)
                });
                let route = ctx.nl.routes6().await.is_ok_and(|rs| {
                    rs.iter().any(|r| {
                        r.dst == i6.subnet.network()
                            && r.prefix == i6.subnet.prefix()
                            && r.kind == netlink_packet_route::route::RouteType::Unreachable
                    })
                });
                gw && route
            }
        };
        let want6 = dp_network6(net).map(|(_, n)| n).unwrap_or_default();
        has_gw
            && has_route
            && has_v6
            && ctx.dp.network(net.dp_id).is_ok_and(|n| n == want)
            && ctx.dp.network6(net.dp_id).is_ok_and(|n| n == want6)
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
        let Some(host_ifname) = ep.host_ifname.as_deref() else {
            return errors;
        };
        match ctx.nl.link(host_ifname).await {
            Ok(Some(l)) => {
                keep(&mut errors, ctx.dp.clear_endpoint6(ep.ip6, Some(l.index)));
                keep(&mut errors, ctx.dp.clear_endpoint(ep.ip, Some(l.index)));
                // Deleting one end deletes the pair, its routes and neighbours,
                // and detaches the programs.
                keep(&mut errors, ctx.nl.del_link(l.index).await);
            }
            Ok(None) => {}
            Err(e) => errors.push(e.into()),
        }
        // Entries the link no longer explains (a half-made attach, or a
        // link deleted behind the daemon's back).
        if let Some(ip6) = ep.ip6 {
            keep(&mut errors, forget_address6(&mut ctx.dp, ip6));
        }
        if let Some(ip) = ep.ip {
            keep(&mut errors, forget_address(&mut ctx.dp, ip));
        }
        keep(&mut errors, ctx.dp.detach_endpoint(host_ifname));
        keep(&mut errors, refresh_members(&mut ctx.dp, a.network.dp_id));
        errors
    }

    /// The endpoint leaves the datapath's maps at once (its programs, still
    /// attached, drop what the container sends); the pair and its pins go
    /// in the background.
    async fn remove(&self, ctx: &mut Ctx, a: &Attachment<'_>) -> Vec<Error> {
        let ep = a.endpoint;
        let Some(host_ifname) = ep.host_ifname.as_deref() else {
            return Vec::new();
        };
        // (The daemon's threads are in its namespace.)
        let Some(index) = crate::netlink::index_of(host_ifname) else {
            // Nothing to leave to the background.
            return self.detach(ctx, a).await;
        };
        let mut errors = Vec::new();
        keep(&mut errors, ctx.dp.clear_endpoint6(ep.ip6, Some(index)));
        if let Some(ip6) = ep.ip6 {
            keep(&mut errors, forget_address6(&mut ctx.dp, ip6));
        }
        keep(&mut errors, ctx.dp.clear_endpoint(ep.ip, Some(index)));
        if let Some(ip) = ep.ip {
            keep(&mut errors, forget_address(&mut ctx.dp, ip));
        }
        keep(&mut errors, refresh_members(&mut ctx.dp, a.network.dp_id));
        let netns = match a.container.netns {
            Netns::Owned { .. } | Netns::External { .. } => netns::identity(a.netns).ok(),
            Netns::Host | Netns::Runtime => None,
        };
        ctx.reaper
            .remove_link(index, host_ifname, netns, ctx.dp.endpoint_pins(host_ifname));
        errors
    }

    async fn refresh(&self, ctx: &mut Ctx, a: &Attachment<'_>) -> Result<()> {
        let Some(host_ifname) = a.endpoint.host_ifname.as_deref() else {
            return Ok(());
        };
        if matches!(ctx.nl.link(host_ifname).await, Ok(Some(_)))
            && !ctx.dp.endpoint_attached(host_ifname)
        {
            tracing::info!(veth = host_ifname, "attaching this build's programs");
            ctx.dp.attach_endpoint(host_ifname)?;
        }
        Ok(())
    }

    async fn endpoint_ok(&self, ctx: &Ctx, a: &Attachment<'_>) -> bool {
        let Some(host_ifname) = a.endpoint.host_ifname.as_deref() else {
            return false;
        };
        let Ok(Some(link)) = ctx.nl.link(host_ifname).await else {
            return false;
        };
        let Ok(want) = dp_endpoint(a, link.index) else {
            return false;
        };
        // One lookup per map: a restart checks every endpoint.
        let in_map = |name| {
            let key = if name == dnet_common::maps::ENDPOINTS_BY_IF {
                want.ifindex
            } else {
                want.addr_be
            };
            ctx.dp
                .endpoint(name, key)
                .is_ok_and(|e| e.as_ref() == Some(&want))
        };
        let checks = [
            (
                "alias",
                link.alias.as_deref() == Some(markers::endpoint_alias(&a.container.id).as_str()),
            ),
            ("up", link.up),
            (
                "by-ifindex entry",
                in_map(dnet_common::maps::ENDPOINTS_BY_IF),
            ),
            (
                "by-address entry",
                in_map(dnet_common::maps::ENDPOINTS_BY_IP),
            ),
            ("IPv6 entries", endpoint6_ok(ctx, a, &want)),
            ("programs attached", ctx.dp.endpoint_attached(host_ifname)),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((what, _)) => {
                tracing::debug!(veth = host_ifname, alias = ?link.alias, "endpoint not whole: {what}");
                false
            }
            None => true,
        }
    }
}

/// The endpoint's IPv6 entries are as they should be: both there for a
/// dual-stack endpoint, none by its interface for an IPv4-only one.
fn endpoint6_ok(ctx: &Ctx, a: &Attachment<'_>, want: &DpEndpoint) -> bool {
    let Ok(own) = ctx.dp.endpoint6_addr(want.ifindex) else {
        return false;
    };
    match a.v6() {
        None => own.is_none(),
        Some((_, ip6)) => {
            own == Some(ip6)
                && ctx
                    .dp
                    .endpoint6(ip6)
                    .is_ok_and(|e| e.as_ref() == Some(want))
        }
    }
}

/// Removes every IPv6 map entry for `ip6`, whatever interface it names.
fn forget_address6(dp: &mut Datapath, ip6: Ipv6Addr) -> Result<()> {
    for ifindex in dp.ifindexes_with6(ip6)? {
        dp.clear_endpoint6(None, Some(ifindex))?;
    }
    Ok(dp.clear_endpoint6(Some(ip6), None)?)
}

/// Removes every map entry for `ip`, whatever interface it names.
fn forget_address(dp: &mut Datapath, ip: std::net::Ipv4Addr) -> Result<()> {
    for ifindex in dp.ifindexes_with(ip)? {
        dp.clear_endpoint(None, Some(ifindex))?;
    }
    Ok(dp.clear_endpoint(Some(ip), None)?)
}

async fn attach(ctx: &mut Ctx, a: &Attachment<'_>) -> Result<()> {
    let ipam = ipam(a.network)?;
    let ep = a.endpoint;
    let (Some(ip), Some(mac), Some(host_ifname), Some(ifname)) = (
        ep.ip,
        ep.mac,
        ep.host_ifname.as_deref(),
        ep.ifname.as_deref(),
    ) else {
        return Err(Error::Invalid("bridge endpoint is incomplete".into()));
    };
    let mtu = ctx.mtu(a.network);
    // Another runtime moves the container end itself: it stays here, down,
    // under a temporary name.
    let host_side = matches!(a.container.netns, Netns::Runtime);
    let peer_name = if host_side {
        container_side_name(host_ifname)
    } else {
        ifname.to_owned()
    };
    // The container's namespace, opened once for the whole attach.
    let ns = netns::open(a.netns)?;
    let v6 = a.v6();
    if v6.is_some() && !host_side {
        // Before the container end arrives: it takes its IPv6 settings
        // from `default` when it is made.
        netns::run_in_fd(ns.as_fd(), netns::container_ipv6_defaults)??;
    }
    let made = ctx
        .nl
        .add_veth(
            host_ifname,
            docker_mac(ipam.gateway),
            mtu,
            &markers::endpoint_alias(&a.container.id),
            VethPeer {
                name: &peer_name,
                netns: &ns,
                mac: mac.0,
            },
        )
        .await;
    let host = match made {
        Ok(l) => l,
        // The host end's name is checked free when it is chosen: the
        // other end's is the one taken.
        Err(e)
            if e.errno() == Some(libc::EEXIST)
                && crate::netlink::index_of(host_ifname).is_none() =>
        {
            return Err(conflict!(
                "the container's namespace already has an interface called {peer_name}"
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // IPv4 forwarding on the host end is set by `add_veth`.
    host_side_ipv6(host_ifname, v6.is_some())?;

    // The programs and map entries come first: no frame crosses the pair
    // before the datapath knows the endpoint.
    let dp_ep = dp_endpoint(a, host.index)?;
    ctx.dp.reset_stats(dp_ep.slot)?;
    ctx.dp.set_endpoint(&dp_ep)?;
    if let Some((_, ip6)) = v6 {
        ctx.dp.set_endpoint6(host.index, ip6, &dp_ep)?;
    }
    ctx.dp.attach_endpoint(host_ifname)?;
    refresh_members(&mut ctx.dp, a.network.dp_id)?;

    ctx.nl.add_neighbour(host.index, ip, mac.0).await?;
    ctx.nl.set_up(host.index).await?;
    let mut route = RouteSpec::device(ip, 32, host.index);
    route.pref_src = Some(ipam.gateway);
    ctx.nl.add_route(route).await?;
    if let Some((i6, ip6)) = v6 {
        ctx.nl.add_neighbour(host.index, ip6, mac.0).await?;
        let mut route = RouteSpec6::device(ip6, 128, host.index);
        route.pref_src = Some(i6.gateway);
        ctx.nl.add_route(route).await?;
    }

    if host_side {
        return Ok(());
    }
    configure_container_side(ns.as_fd(), ifname, ip, ipam, v6, a.primary).await?;
    wait_oper_up(&ctx.nl, host_ifname).await
}

/// Most time to wait for a host-side veth to open (`wait_oper_up`).
const OPER_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits (bounded) until the host end of a new pair transmits. It came up
/// before the container end, without a carrier, so the kernel left its
/// transmit queue on the "noop" qdisc, which drops everything, until its
/// link watcher (a work item that needs the RTNL lock) sees the carrier
/// the container end turned on. On a busy machine that can come after
/// `dnet run` returns: the host's first packets into the container (a
/// ping, the datapath's ARP answers, broadcast copies) were lost. The
/// link's operational state turns up in the same step, so that is what is
/// waited for; usually the first look finds it.
async fn wait_oper_up(nl: &Netlink, ifname: &str) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let link = nl
            .link(ifname)
            .await?
            .ok_or_else(|| conflict!("veth {ifname} vanished"))?;
        if link.oper_up {
            return Ok(());
        }
        if start.elapsed() > OPER_UP_WAIT {
            tracing::warn!(
                veth = ifname,
                "the kernel has not opened the host-side veth yet; its first packets may be lost"
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Address, link state and routes inside the container.
///
/// The address keeps the subnet's prefix and broadcast (as on docker0), but
/// the subnet is routed through the gateway instead of on-link: every packet
/// leaves with the gateway's MAC and the datapath sets the peer's. A
/// container then needs one neighbour entry, not one per peer; the kernel's
/// neighbour table is shared by all namespaces (`gc_thresh3`, 1024 by
/// default), and a full mesh of a few dozen on-link containers overflows it.
/// ARP for a peer is still answered, for tools that ask.
async fn configure_container_side(
    ns: BorrowedFd<'_>,
    ifname: &str,
    ip: std::net::Ipv4Addr,
    ipam: Ipam,
    v6: Option<(Ipam6, Ipv6Addr)>,
    primary: bool,
) -> Result<()> {
    let cnl =
        Netlink::open_in_fd(ns, || super::container_ipv6_switch(ifname, v6.is_some())).await?;
    let link = cnl
        .link(ifname)
        .await?
        .ok_or_else(|| conflict!("{ifname} is missing in the container"))?;
    cnl.add_address(link.index, ip, ipam.subnet.prefix(), None, true)
        .await?;
    cnl.set_up(link.index).await?;
    // Routes already in the namespace are its owner's: never replaced.
    if !cnl
        .add_route_if_absent(RouteSpec::via(
            ipam.subnet.network(),
            ipam.subnet.prefix(),
            ipam.gateway,
            link.index,
        ))
        .await?
    {
        return Err(conflict!(
            "the container's namespace already has a route to {}",
            ipam.subnet
        ));
    }
    if primary {
        super::add_default_route(&cnl, ipam.gateway, link.index).await?;
    }
    if let Some((i6, ip6)) = v6 {
        super::configure_container_ipv6(
            &cnl,
            link.index,
            i6,
            ip6,
            primary,
            super::Subnet6Route::ViaGateway,
        )
        .await?;
    }
    Ok(())
}
