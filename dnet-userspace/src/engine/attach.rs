//! The one attach path. `POST /v1/attach` and `POST /v1/detach` (the Docker
//! and CNI front ends), `network connect` and `network disconnect` all add
//! and remove endpoints through [`Inner::add_endpoint`] and
//! [`Inner::remove_endpoints`].

use super::{Engine, Inner};
use crate::{
    api::{AttachRequest, AttachResponse, AttachTarget, DetachRequest, RouteView},
    conflict,
    driver::{self},
    error::Result,
    invalid,
    model::{Container, Endpoint, MacAddr, Netns, Network},
    not_found,
    spec::PortMapping,
};

/// What a new endpoint is asked to be; `None` and empty take the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndpointOpts<'a> {
    /// Interface name in the container (default: the first free ethN).
    pub ifname: Option<&'a str>,
    /// Static IPv4 address.
    pub ip: Option<&'a str>,
    /// Static IPv6 address (dual-stack networks).
    pub ip6: Option<&'a str>,
    /// Static MAC (default: 02:42 + the IPv4 address).
    pub mac: Option<&'a str>,
    /// `-p` specs.
    pub publish: &'a [String],
    /// Extra names in the network.
    pub aliases: &'a [String],
}

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
fn gateway_endpoint<'a, 'n>(
    c: &'a Container,
    net_of: impl Fn(&str) -> Option<&'n Network>,
) -> Option<&'a Endpoint> {
    c.endpoints.iter().find(|e| {
        e.ip.is_some() && net_of(&e.network_id).is_some_and(|n| !n.internal && n.ipam.is_some())
    })
}

impl Engine {
    /// Attaches a namespace (or makes a pair for another runtime to move)
    /// to a network.
    pub async fn attach(&self, req: AttachRequest) -> Result<AttachResponse> {
        Ok(self.attach_created(req).await?.0)
    }

    /// [`Engine::attach`], and whether the attachment is new (false: a
    /// repeat with the same runtime ref and network).
    pub async fn attach_created(&self, req: AttachRequest) -> Result<(AttachResponse, bool)> {
        if let AttachTarget::Netns { path } = &req.target {
            self.settled_in(std::path::Path::new(path)).await?;
        }
        self.inner.lock().await.attach_req(req).await
    }

    /// Detaches a container from one network or from all of its networks.
    pub async fn detach(&self, req: DetachRequest) -> Result<()> {
        self.inner.lock().await.detach_req(req).await
    }
}

impl Inner {
    async fn attach_req(&mut self, req: AttachRequest) -> Result<(AttachResponse, bool)> {
        let net = self.find_network(&req.network)?.clone();
        let by_runtime = req
            .runtime
            .as_ref()
            .and_then(|r| self.runtime_container(r))
            .cloned();
        if let Some(c) = &by_runtime
            && let Some(ep) = c.endpoints.iter().find(|e| e.network_id == net.id)
        {
            return Ok((self.attach_response(c, ep, &c.ports), false));
        }
        let c = match &req.target {
            AttachTarget::HostSide => {
                if !driver::caps(net.driver).addresses {
                    return Err(invalid!(
                        "a host-side attach needs a bridge or macvlan network ({} uses the {} driver)",
                        net.name,
                        net.driver
                    ));
                }
                match by_runtime {
                    Some(c) if matches!(c.netns, Netns::Runtime) => c,
                    Some(c) => {
                        return Err(conflict!(
                            "the runtime's container is {}, attached by namespace, not host-side",
                            c.name
                        ));
                    }
                    None => self.foreign_record(req.name.as_deref(), "rt", Netns::Runtime)?,
                }
            }
            AttachTarget::Netns { path } => {
                let c = self.external_container(path, req.name.as_deref())?;
                if let Some(o) = &by_runtime
                    && o.id != c.id
                {
                    return Err(conflict!(
                        "the runtime's container is {}, in another namespace than {path}",
                        o.name
                    ));
                }
                c
            }
        };
        let mut c = c;
        if c.runtime.is_none() && !self.state.containers.contains_key(&c.id) {
            c.runtime = req.runtime.clone();
        }
        let opts = EndpointOpts {
            ifname: req.ifname.as_deref(),
            ip: req.ip.as_deref(),
            ip6: req.ip6.as_deref(),
            mac: req.mac.as_deref(),
            publish: &req.publish,
            aliases: &req.aliases,
        };
        let (c, ep, ports) = self.add_endpoint(c, &net, &opts).await?;
        Ok((self.attach_response(&c, &ep, &ports), true))
    }

    /// Adds an endpoint of `net` to `c` (a container of the state, or a new
    /// record, committed with it). Bad input changes nothing.
    pub(super) async fn add_endpoint(
        &mut self,
        mut c: Container,
        net: &Network,
        opts: &EndpointOpts<'_>,
    ) -> Result<(Container, Endpoint, Vec<PortMapping>)> {
        if driver::caps(net.driver).exclusive {
            return Err(invalid!(
                "cannot connect to the {} network: a container joins it only when it is made",
                net.name
            ));
        }
        if matches!(c.netns, Netns::Host)
            || c.endpoints.iter().any(|e| {
                self.state
                    .networks
                    .get(&e.network_id)
                    .is_some_and(|n| driver::caps(n.driver).exclusive)
            })
        {
            return Err(invalid!(
                "container {} uses the host or none network and cannot join others",
                c.name
            ));
        }
        if c.endpoints.iter().any(|e| e.network_id == net.id) {
            return Err(conflict!(
                "container {} is already connected to network {}",
                c.name,
                net.name
            ));
        }
        let ports = self.check_ports(opts.publish, net)?;
        let ep = self.new_endpoint(net, &c, opts).await?;
        c.endpoints.push(ep.clone());
        c.ports.extend(ports.iter().cloned());
        // The state's file is written and synced while the kernel objects
        // are made (most of an attach waits for the kernel), and published
        // once they are.
        let mut st = self.state.clone();
        st.containers.insert(c.id.clone(), c.clone());
        let prepared = self.store.prepare(&self.state, &st)?;
        let written = tokio::task::spawn_blocking(move || prepared.write());
        let made = self.attach(&c, &ep).await;
        let written = match written.await {
            Ok(r) => r.map_err(Into::into),
            Err(e) => Err(conflict!("writing the state: {e}")),
        };
        if let Err(e) = made {
            // The driver removed what it had made.
            self.store.discard();
            return Err(e);
        }
        if let Err(e) = written {
            self.store.discard();
            self.detach(&c, &ep).await;
            return Err(e);
        }
        super::crash::point("connect:made");
        if let Err(e) = self.commit_prepared(st) {
            self.detach(&c, &ep).await;
            return Err(e);
        }
        // This request's ports, and those that led nowhere (the container
        // was on internal networks only) lead to this network now, if it may
        // carry them.
        if let Err(e) = self.sync_services() {
            tracing::warn!(container = %c.name, "publishing: {e}");
        }
        // Its hosts file gains the new address; its resolv.conf names this
        // network's resolver if it is its first with one.
        self.refresh_container_files(&c);
        tracing::info!(container = %c.name, network = %net.name, ip = ?ep.ip, "connected");
        Ok((c, ep, ports))
    }

    pub(super) async fn detach_req(&mut self, req: DetachRequest) -> Result<()> {
        let c = match (&req.container, &req.runtime) {
            (Some(key), None) => self.state.find_container(key).cloned(),
            (None, Some(r)) => self.runtime_container(r).cloned(),
            _ => return Err(invalid!("give either a container or a runtime ref")),
        };
        let Some(c) = c else {
            if req.missing_ok {
                return Ok(());
            }
            return Err(match (&req.container, &req.runtime) {
                (Some(key), _) => not_found!("container {key:?} not found"),
                (_, Some(r)) => not_found!("no container attached by {} {}", r.runtime, r.id),
                _ => unreachable!("checked above"),
            });
        };
        let nets: Vec<Network> = match &req.network {
            Some(key) => {
                let net = match self.find_network(key) {
                    Ok(n) => n.clone(),
                    Err(_) if req.missing_ok => return Ok(()),
                    Err(e) => return Err(e),
                };
                if !c.endpoints.iter().any(|e| e.network_id == net.id) {
                    if req.missing_ok {
                        return Ok(());
                    }
                    return Err(not_found!(
                        "container {} is not connected to network {}",
                        c.name,
                        net.name
                    ));
                }
                vec![net]
            }
            None => c
                .endpoints
                .iter()
                .filter_map(|e| self.state.networks.get(&e.network_id).cloned())
                .collect(),
        };
        if let Some(net) = nets.iter().find(|n| driver::caps(n.driver).exclusive) {
            return Err(invalid!(
                "a container cannot leave the {} network",
                net.name
            ));
        }
        self.remove_endpoints(&c, &nets).await
    }

    /// Removes `c`'s endpoints in `nets`: commits, then tears down. A
    /// container from another runtime left with no endpoint goes.
    pub(super) async fn remove_endpoints(&mut self, c: &Container, nets: &[Network]) -> Result<()> {
        let leaves = |e: &Endpoint| nets.iter().any(|n| n.id == e.network_id);
        let eps: Vec<Endpoint> = c.endpoints.iter().filter(|e| leaves(e)).cloned().collect();
        let mut st = self.state.clone();
        let gone = {
            let sc = st.containers.get_mut(&c.id).expect("present");
            sc.endpoints.retain(|e| !leaves(e));
            // A namespace attached from another runtime exists here only
            // for its endpoints.
            matches!(sc.netns, Netns::External { .. } | Netns::Runtime) && sc.endpoints.is_empty()
        };
        if gone {
            st.containers.remove(&c.id);
        }
        // The default route goes with the endpoint that gave it: the next
        // non-internal network's gateway takes over, as Docker re-elects it.
        // (A daemon killed before the re-election: the next start re-elects,
        // told where by `default_route_due`.)
        let was_primary = gateway_endpoint(c, |id| {
            self.state
                .networks
                .get(id)
                .or_else(|| nets.iter().find(|n| n.id == id))
        })
        .is_some_and(leaves);
        if was_primary
            && st
                .containers
                .get(&c.id)
                .is_some_and(|sc| self.default_route_endpoint(sc).is_some())
        {
            st.default_route_due.insert(c.id.clone());
        }
        self.commit(st)?;
        super::crash::point("disconnect:committed");
        for ep in &eps {
            self.remove(c, ep).await;
        }
        if was_primary
            && let Some(sc) = self.state.containers.get(&c.id)
            && let Some(next) = self.default_route_endpoint(sc)
        {
            // The old route goes with its interface, whose removal may
            // still be under way in the background: it goes now.
            if let Err(e) = self.drop_default_routes(c, &eps).await {
                tracing::warn!(container = %c.name, "removing its old default route: {e}");
            }
            match self.elect_default_route(c, &next).await {
                // Done: the next commit drops the mark.
                Ok(()) => {
                    self.state.default_route_due.remove(&c.id);
                }
                Err(e) => {
                    tracing::warn!(container = %c.name, "re-electing its default route: {e}")
                }
            }
        }
        // Its published ports now lead to its next address on a bridge
        // network that is not internal, if any (or nowhere, if it went);
        // the flows of the addresses it left go.
        if let Err(e) = self.sync_services() {
            tracing::warn!(container = %c.name, "republishing: {e}");
        }
        let addrs: Vec<_> = eps.iter().filter_map(|e| e.ip).collect();
        self.forget_flows(&addrs);
        if let Some(sc) = self.state.containers.get(&c.id) {
            self.refresh_container_files(sc);
        }
        for net in nets {
            tracing::info!(container = %c.name, network = %net.name, "disconnected");
        }
        Ok(())
    }

    /// Removes the default routes of `c` through `eps`' gateways and
    /// interfaces (interfaces whose removal may still be under way).
    async fn drop_default_routes(&self, c: &Container, eps: &[Endpoint]) -> Result<()> {
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

    /// What a runtime needs to know of `c`'s endpoint `ep`.
    pub(super) fn attach_response(
        &self,
        c: &Container,
        ep: &Endpoint,
        ports: &[PortMapping],
    ) -> AttachResponse {
        let net = &self.state.networks[&ep.network_id];
        let ipam = net.ipam.filter(|_| ep.ip.is_some());
        let gateway = ipam.map(|i| i.gateway).filter(|_| !net.internal);
        let primary = self.gives_default_route(c, ep);
        let mut routes = Vec::new();
        if let Some(i) = ipam
            && driver::caps(net.driver).host_gateway
        {
            // The subnet goes through the gateway (see the bridge driver).
            routes.push(RouteView {
                dst: i.subnet.to_string(),
                gateway: Some(i.gateway.into()),
            });
        }
        if primary && let Some(gw) = gateway {
            routes.push(RouteView {
                dst: "0.0.0.0/0".into(),
                gateway: Some(gw.into()),
            });
        }
        // The IPv6 side of a dual-stack endpoint, routed as the bridge
        // driver routes it.
        let ipam6 = net.ipam6.filter(|_| ep.ip6.is_some());
        let gateway6 = ipam6.map(|i| i.gateway).filter(|_| !net.internal);
        if let Some(i) = ipam6 {
            routes.push(RouteView {
                dst: i.subnet.to_string(),
                gateway: Some(i.gateway.into()),
            });
            if primary && let Some(gw) = gateway6 {
                routes.push(RouteView {
                    dst: "::/0".into(),
                    gateway: Some(gw.into()),
                });
            }
        }
        AttachResponse {
            container_id: c.id.clone(),
            container: c.name.clone(),
            network_id: net.id.clone(),
            network: net.name.clone(),
            ifname: ep.ifname.clone().unwrap_or_default(),
            host_ifname: ep.host_ifname.clone(),
            container_side: match c.netns {
                Netns::Runtime => driver::driver(net.driver).runtime_link(c, net, ep),
                _ => None,
            },
            ip: ep.ip,
            prefix: ipam.map(|i| i.subnet.prefix()),
            mac: ep.mac,
            gateway,
            ip6: ep.ip6,
            prefix6: ipam6.map(|i| i.subnet.prefix()),
            gateway6,
            routes,
            mtu: self.ctx.mtu(net),
            ports: ports.to_vec(),
            dns: crate::dns::resolver_of(net).filter(|_| ep.ip.is_some()),
        }
    }
}
