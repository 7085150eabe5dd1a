//! One endpoint: its address, MAC and interface name, the kernel objects
//! its driver makes and removes, and the default route it may give its
//! container.

use super::{EndpointOpts, Inner, parse_ip, parse_ip6, removal_stuck};
use crate::{
    conflict,
    driver::{self, Attachment},
    error::Result,
    invalid,
    ipam::{Pool, Pool6},
    model::{Container, Endpoint, MacAddr, Netns, Network},
    netns, spec,
};

/// A unicast MAC other than all zeros.
pub(super) fn parse_mac(s: &str) -> Result<MacAddr> {
    let m: MacAddr = s.parse().map_err(|_| {
        invalid!("invalid MAC {s:?}: expected six hex bytes such as 02:42:ac:11:00:02")
    })?;
    if m.0[0] & 1 == 1 {
        return Err(invalid!("MAC {m} is a multicast address"));
    }
    if m.0 == [0; 6] {
        return Err(invalid!("MAC {m} is all zeros"));
    }
    Ok(m)
}

/// An interface name the kernel takes.
pub(super) fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid!(
            "invalid interface name {name:?}: 1 to 15 letters, digits, '_', '-' or '.'"
        ))
    }
}

/// The endpoint of `c` whose network's gateway is its default route: the
/// first with an address on a network that is not internal.
pub(super) fn gateway_endpoint<'a, 'n>(
    c: &'a Container,
    net_of: impl Fn(&str) -> Option<&'n Network>,
) -> Option<&'a Endpoint> {
    c.endpoints.iter().find(|e| {
        e.ip.is_some() && net_of(&e.network_id).is_some_and(|n| !n.internal && n.ipam.is_some())
    })
}

impl Inner {
    /// A new endpoint of `net` for container `c` (address, MAC, names).
    pub(super) async fn new_endpoint(
        &self,
        net: &Network,
        c: &Container,
        opts: &EndpointOpts<'_>,
    ) -> Result<Endpoint> {
        self.check_runtime_addressing(net, c)?;
        let ip = opts.ip;
        for a in opts.aliases {
            spec::validate_name("alias", a)?;
        }
        let mac = opts.mac.map(parse_mac).transpose()?;
        if let Some(name) = opts.ifname {
            validate_ifname(name)?;
            if c.endpoints
                .iter()
                .any(|e| e.ifname.as_deref() == Some(name))
            {
                return Err(conflict!(
                    "container {} already has an interface {name}",
                    c.name
                ));
            }
        }
        if let Some(m) = mac
            && let Some((o, _)) = self
                .state
                .endpoints_of(&net.id)
                .find(|(_, e)| e.mac == Some(m))
        {
            return Err(conflict!(
                "MAC {m} is already used by container {} in network {}",
                o.name,
                net.name
            ));
        }
        let mut ep = Endpoint {
            network_id: net.id.clone(),
            ifname: None,
            host_ifname: None,
            ip: None,
            ip6: None,
            mac: None,
            slot: None,
            aliases: opts.aliases.to_vec(),
        };
        let requested6 = opts.ip6.map(|s| parse_ip6("--ip6", s)).transpose()?;
        if let (Some(a), None) = (requested6, net.ipam6) {
            return Err(invalid!(
                "--ip6 {a}: network {} is not dual-stack (it was made without --ipv6)",
                net.name
            ));
        }
        let Some(ipam) = net.ipam else {
            if ip.is_some() || mac.is_some() {
                return Err(invalid!(
                    "network {} has no addresses to choose from",
                    net.name
                ));
            }
            return Ok(ep);
        };
        let requested = ip.map(|s| parse_ip("--ip", s)).transpose()?;
        let reserved = driver::driver(net.driver)
            .prepare(&self.ctx, &self.state, net, c, &mut ep)
            .await?;
        let pool = Pool::new(ipam.subnet, Some(ipam.gateway), ipam.ip_range)?;
        let mut used = self.state.used_addresses(&net.id);
        used.extend(reserved.v4);
        let addr = pool.allocate(&used, requested)?;
        if let Some(i6) = net.ipam6 {
            let pool6 = Pool6::new(i6.subnet, Some(i6.gateway), i6.ip_range)?;
            let mut used6 = self.state.used_addresses6(&net.id);
            used6.extend(reserved.v6);
            ep.ip6 = Some(pool6.allocate(&used6, requested6)?);
        }
        ep.ifname = Some(match opts.ifname {
            Some(name) => name.to_owned(),
            None => {
                let n = (0..)
                    .find(|i| {
                        !c.endpoints
                            .iter()
                            .any(|e| e.ifname.as_deref() == Some(&format!("eth{i}")))
                    })
                    .expect("a free interface name");
                format!("eth{n}")
            }
        });
        ep.ip = Some(addr);
        ep.mac = Some(mac.unwrap_or(MacAddr(dnet_common::addr::docker_mac(addr))));
        Ok(ep)
    }

    pub(super) async fn attach(&mut self, c: &Container, ep: &Endpoint) -> Result<()> {
        let net = self.state.networks[&ep.network_id].clone();
        let path = self.netns_path(c);
        // An interface of the namespace being removed in the background may
        // still hold the name this one takes.
        // (`Engine::settled_in` waited without the lock: this wait is for
        // a removal that began since, and bounded too.)
        if matches!(c.netns, Netns::Owned { .. } | Netns::External { .. })
            && self.ctx.reaper.pending() > 0
            && let Ok(id) = netns::identity(&path)
            && !self.ctx.reaper.settled_in(id, self.cfg.removal_wait).await
        {
            return Err(removal_stuck(&path, self.cfg.removal_wait));
        }
        let a = Attachment {
            container: c,
            endpoint: ep,
            network: &net,
            netns: &path,
            primary: self.gives_default_route(c, ep),
        };
        driver::driver(net.driver).attach(&mut self.ctx, &a).await
    }

    /// Removes what [`Inner::attach`] made, before it returns.
    pub(super) async fn detach(&mut self, c: &Container, ep: &Endpoint) {
        self.unmake(c, ep, false).await
    }

    /// Removes an endpoint the state no longer holds: what the kernel
    /// takes long to remove finishes in the background (`driver::Reaper`).
    pub(super) async fn remove(&mut self, c: &Container, ep: &Endpoint) {
        self.unmake(c, ep, true).await
    }

    pub(super) async fn unmake(&mut self, c: &Container, ep: &Endpoint, background: bool) {
        let Some(net) = self.state.networks.get(&ep.network_id).cloned() else {
            return;
        };
        let path = self.netns_path(c);
        let a = Attachment {
            container: c,
            endpoint: ep,
            network: &net,
            netns: &path,
            primary: false,
        };
        let d = driver::driver(net.driver);
        let errors = if background {
            d.remove(&mut self.ctx, &a).await
        } else {
            d.detach(&mut self.ctx, &a).await
        };
        for e in errors {
            tracing::warn!(container = %c.name, network = %net.name, "detaching: {e}");
        }
    }

    /// Removes the default routes of `c` through `eps`' gateways and
    /// interfaces (interfaces whose removal may still be under way).
    pub(super) async fn drop_default_routes(&self, c: &Container, eps: &[Endpoint]) -> Result<()> {
        let cnl = crate::netlink::Netlink::open_in(&self.netns_path(c)).await?;
        for old in eps {
            let gw = self
                .state
                .networks
                .get(&old.network_id)
                .and_then(|n| n.ipam)
                .map(|i| i.gateway);
            if let (Some(gw), Some(name)) = (gw, old.ifname.as_deref())
                && let Some(l) = cnl.link(name).await?
            {
                cnl.del_route(crate::netlink::RouteSpec::via(
                    std::net::Ipv4Addr::UNSPECIFIED,
                    0,
                    gw,
                    l.index,
                ))
                .await?;
            }
        }
        Ok(())
    }

    /// The endpoint whose gateway gives `c` its default route: the first
    /// on a network that is not internal. None for another runtime's
    /// namespace (its routes are its own business) or the host's.
    pub(super) fn default_route_endpoint(&self, c: &Container) -> Option<Endpoint> {
        if !matches!(c.netns, Netns::Owned { .. } | Netns::External { .. }) {
            return None;
        }
        gateway_endpoint(c, |id| self.state.networks.get(id)).cloned()
    }

    /// Whether `ep` is the endpoint of `c` whose gateway is its default
    /// route (in any namespace: for another runtime's, the route it is told
    /// of). An internal network never is, as in Docker: a container on
    /// internal networks only has no default route at all.
    pub(super) fn gives_default_route(&self, c: &Container, ep: &Endpoint) -> bool {
        gateway_endpoint(c, |id| self.state.networks.get(id))
            .is_some_and(|e| e.network_id == ep.network_id)
    }

    /// Gives `c` a default route through the gateway of `ep`'s network.
    pub(super) async fn elect_default_route(&self, c: &Container, ep: &Endpoint) -> Result<()> {
        let net = &self.state.networks[&ep.network_id];
        let (Some(ipam), Some(ifname), Some(_)) = (net.ipam, ep.ifname.as_deref(), ep.ip) else {
            return Ok(());
        };
        let cnl = crate::netlink::Netlink::open_in(&self.netns_path(c)).await?;
        let link = cnl
            .link(ifname)
            .await?
            .ok_or_else(|| conflict!("{ifname} is missing in the container"))?;
        driver::add_default_route(&cnl, ipam.gateway, link.index).await
    }
}
