//! The one attach path. `POST /v1/attach` and `POST /v1/detach` (the Docker
//! and CNI front ends), `network connect` and `network disconnect` all add
//! and remove endpoints through [`Inner::add_endpoint`] and
//! [`Inner::remove_endpoints`]. A runtime's front end also asks about its
//! own attachments by its own keys: `POST /v1/attach/check` (CNI CHECK: the
//! attachment as it stands) and `POST /v1/attach/collect` (CNI GC: detach
//! what the runtime no longer knows); the attachments a runtime dropped
//! without a word are collected here too.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use super::{Engine, Inner, endpoint::gateway_endpoint};
use crate::{
    api::{
        AttachCheck, AttachCollect, AttachRequest, AttachResponse, AttachTarget, Collected,
        ConnectRequest, ContainerView, DetachRequest, DisconnectRequest,
    },
    conflict, driver,
    error::{Error, Result},
    invalid,
    model::{Container, Endpoint, Netns, Network, RuntimeRef},
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

/// How often host-side attachments are checked for a veth that went.
const COLLECT_INTERVAL: Duration = Duration::from_secs(2);

/// Collects, for the engine's lifetime, the host-side attachments whose
/// runtime dropped them without a word (see
/// [`Inner::collect_gone_runtime_endpoints`]).
pub(super) fn spawn_runtime_collector(engine: &Arc<Engine>) {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(COLLECT_INTERVAL).await;
            let Some(engine) = weak.upgrade() else { break };
            if let Err(e) = engine
                .inner
                .lock()
                .await
                .collect_gone_runtime_endpoints()
                .await
            {
                tracing::warn!("collecting runtime endpoints: {e}");
            }
        }
    });
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

    pub async fn connect(&self, net: &str, req: ConnectRequest) -> Result<ContainerView> {
        let path = match (&req.container, &req.netns) {
            (Some(name), None) => {
                let inner = self.inner.lock().await;
                inner
                    .find_container(name)
                    .ok()
                    .filter(|c| matches!(c.netns, Netns::Owned { .. } | Netns::External { .. }))
                    .map(|c| inner.netns_path(c))
            }
            (None, Some(path)) => Some(PathBuf::from(path)),
            _ => None,
        };
        if let Some(path) = path {
            self.settled_in(&path).await?;
        }
        let mut inner = self.inner.lock().await;
        let id = inner.connect(net, req).await?;
        Ok(inner.container_view(&inner.state.containers[&id]))
    }

    pub async fn disconnect(&self, net: &str, req: DisconnectRequest) -> Result<()> {
        self.inner.lock().await.disconnect(net, req).await
    }

    /// The existing attachment of a runtime's container to a network.
    pub async fn attach_check(&self, req: AttachCheck) -> Result<AttachResponse> {
        self.inner.lock().await.attach_check(&req)
    }

    /// Detaches the runtime's containers not in `keep` (from `network`
    /// only, when given).
    pub async fn attach_collect(&self, req: AttachCollect) -> Result<Collected> {
        self.inner.lock().await.attach_collect(req).await
    }

    /// The attachment `rt` made, if it exists.
    pub async fn runtime_attachment(&self, rt: &RuntimeRef) -> Option<AttachResponse> {
        let inner = self.inner.lock().await;
        let c = inner.runtime_container(rt)?;
        let ep = c.endpoints.first()?;
        Some(inner.attach_response(c, ep, &c.ports))
    }

    /// Collects now the host-side attachments whose veth went (see
    /// [`Inner::collect_gone_runtime_endpoints`]); how many.
    pub async fn collect_runtime_endpoints(&self) -> Result<usize> {
        self.inner
            .lock()
            .await
            .collect_gone_runtime_endpoints()
            .await
    }

    /// Detaches the endpoints of `rt`'s runtime, other than `rt`, that hold
    /// `ip` or `ip6` on the network `network_id`: the runtime has just
    /// handed that address to its new endpoint `rt`, so by its own word they
    /// are gone. (Its IPAM hands out each family's addresses on its own: an
    /// old endpoint may hold the new one's IPv6 address and not its IPv4.)
    /// dockerd drops its endpoints without a call after an unclean restart
    /// and starts its containers again at once, while the old namespaces
    /// (and so their veths) may live on for its stop timeout (10 s) and
    /// the kernel's teardown after it. Returns how many went.
    pub async fn collect_runtime_holders(
        &self,
        network_id: &str,
        rt: &RuntimeRef,
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
    ) -> Result<usize> {
        if ip.is_none() && ip6.is_none() {
            return Ok(0);
        }
        let mut inner = self.inner.lock().await;
        let Some(net) = inner.state.networks.get(network_id).cloned() else {
            return Ok(0);
        };
        let holders: Vec<Container> = inner
            .state
            .containers
            .values()
            .filter(|c| {
                matches!(c.netns, Netns::Runtime)
                    && c.runtime
                        .as_ref()
                        .is_some_and(|r| r.runtime == rt.runtime && r.id != rt.id)
                    && c.endpoints.iter().any(|e| {
                        e.network_id == net.id
                            && ((ip.is_some() && e.ip == ip) || (ip6.is_some() && e.ip6 == ip6))
                    })
            })
            .cloned()
            .collect();
        for c in &holders {
            tracing::info!(container = %c.name, ?ip, ?ip6, network = %net.name, "its runtime gave its address to a new endpoint: collecting it");
            inner
                .remove_endpoints(c, std::slice::from_ref(&net))
                .await?;
        }
        Ok(holders.len())
    }
}

impl Inner {
    pub(super) async fn attach_req(
        &mut self,
        req: AttachRequest,
    ) -> Result<(AttachResponse, bool)> {
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
        // once they are. The commit sets this one record: written as such,
        // with no copy or comparison of the whole state.
        let prepared = self.store.prepare_container(&c)?;
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
        if let Err(e) = self.commit_prepared_container(c.clone()) {
            self.detach(&c, &ep).await;
            return Err(e);
        }
        // This request's ports, and those that led nowhere (the container
        // was on internal networks only) lead to this network now, if it may
        // carry them. A container without ports changes no published port,
        // and its attach skips reading the maps whole (each read walks all
        // 65,536 buckets of each empty map).
        if !c.ports.is_empty()
            && let Err(e) = self.sync_services()
        {
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
        // the flows of the addresses it left go. Without ports, nothing to
        // republish.
        if !c.ports.is_empty()
            && let Err(e) = self.sync_services()
        {
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

    pub(super) async fn connect(&mut self, net_key: &str, req: ConnectRequest) -> Result<String> {
        let net = self.find_network(net_key)?.clone();
        let c = match (&req.container, &req.netns) {
            (Some(name), None) => self.find_container(name)?.clone(),
            (None, Some(path)) => self.external_container(path, req.name.as_deref())?,
            _ => return Err(invalid!("give either a container or --netns")),
        };
        let opts = EndpointOpts {
            ip: req.ip.as_deref(),
            ip6: req.ip6.as_deref(),
            aliases: &req.aliases,
            ..Default::default()
        };
        let (c, _, _) = self.add_endpoint(c, &net, &opts).await?;
        Ok(c.id)
    }

    pub(super) async fn disconnect(&mut self, net_key: &str, req: DisconnectRequest) -> Result<()> {
        self.detach_req(DetachRequest {
            network: Some(net_key.to_owned()),
            container: Some(req.container),
            runtime: None,
            missing_ok: false,
        })
        .await
    }

    pub(super) fn attach_check(&self, req: &AttachCheck) -> Result<AttachResponse> {
        let net = self.find_network(&req.network)?;
        let r = &req.runtime;
        let c = self
            .state
            .containers
            .values()
            .find(|c| c.runtime.as_ref() == Some(r))
            .ok_or_else(|| not_found!("no container attached by {} {}", r.runtime, r.id))?;
        let ep = c
            .endpoints
            .iter()
            .find(|e| e.network_id == net.id)
            .ok_or_else(|| {
                not_found!(
                    "the container {} of {} {} is not attached to network {}",
                    c.name,
                    r.runtime,
                    r.id,
                    net.name
                )
            })?;
        Ok(self.attach_response(c, ep, &c.ports))
    }

    pub(super) async fn attach_collect(&mut self, req: AttachCollect) -> Result<Collected> {
        if req.runtime.is_empty() {
            return Err(invalid!("collect needs a runtime (\"cni\")"));
        }
        let net = match &req.network {
            Some(key) => Some(self.find_network(key)?.clone()),
            None => None,
        };
        let stale: Vec<(Container, Vec<Network>)> = self
            .state
            .containers
            .values()
            .filter_map(|c| {
                let r = c.runtime.as_ref()?;
                if r.runtime != req.runtime || req.keep.contains(&r.id) {
                    return None;
                }
                let nets: Vec<Network> = c
                    .endpoints
                    .iter()
                    .filter(|e| net.as_ref().is_none_or(|n| n.id == e.network_id))
                    .filter_map(|e| self.state.networks.get(&e.network_id).cloned())
                    .collect();
                (!nets.is_empty()).then(|| (c.clone(), nets))
            })
            .collect();
        let mut out = Collected::default();
        let mut first_err: Option<Error> = None;
        // Each container on its own: one that fails does not keep the
        // others attached.
        for (c, nets) in stale {
            match self.remove_endpoints(&c, &nets).await {
                Ok(()) => {
                    tracing::info!(container = %c.name, "collected: its runtime no longer knows it");
                    out.detached
                        .push(c.runtime.map(|r| r.id).unwrap_or_default());
                }
                Err(e) => {
                    tracing::warn!(container = %c.name, "collecting: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The container record `rt` made, if any.
    pub(super) fn runtime_container(&self, rt: &RuntimeRef) -> Option<&Container> {
        self.state
            .containers
            .values()
            .find(|c| c.runtime.as_ref() == Some(rt))
    }

    /// Host-side attachments whose host veth is gone: the runtime's
    /// namespace went, and the kernel took the pair with it, without the
    /// runtime telling dnet (dockerd after an unclean restart drops its
    /// endpoints so). They go as a detach would take them.
    pub(super) async fn collect_gone_runtime_endpoints(&mut self) -> Result<usize> {
        let runtime: Vec<Container> = self
            .state
            .containers
            .values()
            .filter(|c| matches!(c.netns, Netns::Runtime))
            .cloned()
            .collect();
        if runtime.is_empty() {
            return Ok(0);
        }
        let links = self.ctx.nl.links().await?;
        let mut collected = 0;
        for c in runtime {
            let gone: Vec<Network> = c
                .endpoints
                .iter()
                .filter(|e| {
                    e.host_ifname
                        .as_ref()
                        .is_some_and(|h| !links.iter().any(|l| &l.name == h))
                })
                .filter_map(|e| self.state.networks.get(&e.network_id).cloned())
                .collect();
            if gone.is_empty() {
                continue;
            }
            tracing::info!(container = %c.name, "its veth is gone with its runtime's namespace: collecting it");
            self.remove_endpoints(&c, &gone).await?;
            collected += gone.len();
        }
        Ok(collected)
    }
}
