//! What another runtime's front end (Docker's network driver) needs beyond
//! the attach path: networks it knows by its own id, the attachment it made
//! looked up by its ref, and ports it publishes on an existing attachment.
//! Every call is idempotent: a runtime retries.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use ipnetwork::Ipv4Network;

use super::{Engine, Inner};
use crate::{
    api::{AttachResponse, NetworkCreate, NetworkView},
    conflict,
    error::{Error, Result},
    model::{Container, Netns, Network, RuntimeRef},
    not_found,
    spec::{PortMapping, Proto},
};

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

/// A port to publish, as a runtime asks for it: one container port, a host
/// port, a range to pick one free host port from, or none (dnet picks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRequest {
    pub proto: Proto,
    pub container_port: u16,
    /// `None`: every address of the host (both families on a dual-stack
    /// network); an address publishes in its own family only.
    pub host_ip: Option<std::net::IpAddr>,
    /// 0: dnet picks a free port.
    pub host_port: u16,
    /// The end of a range to pick from (0 or equal to `host_port`: exactly
    /// `host_port`).
    pub host_port_end: u16,
}

impl PortRequest {
    /// Does an existing mapping answer this request?
    fn met_by(&self, m: &PortMapping) -> bool {
        m.count == 1
            && m.proto == self.proto
            && m.container_port == self.container_port
            && m.host_ip == self.host_ip
            && match self.host_port {
                0 => true,
                p => (p..=self.host_port_end.max(p)).contains(&m.host_port),
            }
    }
}

impl Engine {
    /// Creates a network that `rt` knows by its own id; a repeat returns
    /// the network made the first time (and false).
    pub async fn create_runtime_network(
        &self,
        req: NetworkCreate,
        rt: RuntimeRef,
    ) -> Result<(NetworkView, bool)> {
        let mut inner = self.inner.lock().await;
        if let Some(n) = inner.runtime_network(&rt) {
            return Ok((inner.network_view(n), false));
        }
        let net = inner.create_network_for(req, false, Some(rt)).await?;
        if inner.pools_became_network(&net) {
            inner.addressed_by_dnet(&net.id)?;
        }
        let net = inner.state.networks.get(&net.id).expect("made").clone();
        Ok((inner.network_view(&net), true))
    }

    /// The network `rt` made, if it exists.
    pub async fn runtime_network(&self, rt: &RuntimeRef) -> Option<NetworkView> {
        let inner = self.inner.lock().await;
        inner.runtime_network(rt).map(|n| inner.network_view(n))
    }

    /// Removes the network `rt` made; none is success (a repeat).
    pub async fn remove_runtime_network(&self, rt: &RuntimeRef) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let Some(id) = inner.runtime_network(rt).map(|n| n.id.clone()) else {
            return Ok(());
        };
        inner.remove_network(&id).await
    }

    /// The keys of the networks `runtime` made.
    pub async fn runtime_networks(&self, runtime: &str) -> Vec<RuntimeRef> {
        let inner = self.inner.lock().await;
        inner
            .state
            .networks
            .values()
            .filter_map(|n| n.runtime.clone())
            .filter(|r| r.runtime == runtime)
            .collect()
    }

    /// What dnet learned about the network `rt` made, from the runtime
    /// itself: its `name` there, which the dnet network takes if it is a
    /// valid name no other dnet network has (else it keeps its own, and the
    /// error says why); whether dnet's IPAM hands out its addresses; and
    /// else the range the runtime's IPAM hands them out from (`--ip-range`,
    /// which Docker does not send the driver), shown with the network.
    pub async fn learn_runtime_network(
        &self,
        rt: &RuntimeRef,
        name: &str,
        dnet_ipam: bool,
        ip_range: Option<Ipv4Network>,
    ) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let Some(net) = inner.runtime_network(rt).cloned() else {
            return Ok(());
        };
        if dnet_ipam {
            inner.addressed_by_dnet(&net.id)?;
        }
        let name_ok = if net.name == name {
            Ok(false)
        } else {
            crate::spec::validate_name("network", name)
                .map_err(Error::from)
                .and_then(|()| match inner.state.network_by_name(name) {
                    Some(other) => Err(conflict!(
                        "dnet's network {} ({}) has that name: this one stays {}",
                        other.name,
                        &other.id[..12.min(other.id.len())],
                        net.name
                    )),
                    None => Ok(true),
                })
        };
        let mut st = inner.state.clone();
        let rec = st.networks.get_mut(&net.id).expect("present");
        let mut changed = false;
        if matches!(name_ok, Ok(true)) {
            rec.name = name.to_owned();
            changed = true;
        }
        if !dnet_ipam
            && let (Some(r), Some(ipam)) = (ip_range, rec.ipam.as_mut())
            && ipam.ip_range.is_none()
            && r.prefix() >= ipam.subnet.prefix()
            && ipam.subnet.contains(r.network())
        {
            ipam.ip_range = Some(r);
            changed = true;
        }
        if changed {
            inner.commit(st)?;
            tracing::info!(network = %net.name, "named {name} as in {}", rt.runtime);
        }
        name_ok.map(|_| ())
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

    /// Publishes `ports` for the container `rt` attached, in place of the
    /// ports it published before; requests that its current mappings meet
    /// keep them (a repeat changes nothing). Returns the mappings. Bad
    /// input changes nothing.
    pub async fn set_runtime_ports(
        &self,
        rt: &RuntimeRef,
        ports: &[PortRequest],
    ) -> Result<Vec<PortMapping>> {
        self.inner.lock().await.set_runtime_ports(rt, ports)
    }
}

impl Inner {
    fn runtime_network(&self, rt: &RuntimeRef) -> Option<&crate::model::Network> {
        self.state
            .networks
            .values()
            .find(|n| n.runtime.as_ref() == Some(rt))
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

    fn set_runtime_ports(
        &mut self,
        rt: &RuntimeRef,
        reqs: &[PortRequest],
    ) -> Result<Vec<PortMapping>> {
        let c = self
            .runtime_container(rt)
            .ok_or_else(|| not_found!("no container attached by {} {}", rt.runtime, rt.id))?
            .clone();
        let net = c
            .endpoints
            .first()
            .and_then(|e| self.state.networks.get(&e.network_id))
            .ok_or_else(|| not_found!("container {} has no network", c.name))?
            .clone();
        // A network that cannot publish (not a bridge, internal) is refused
        // by `check_mappings` at the first request.
        let mut chosen: Vec<PortMapping> = Vec::new();
        for r in reqs {
            if let Some(m) = c.ports.iter().find(|m| r.met_by(m) && !chosen.contains(m)) {
                chosen.push(*m);
                continue;
            }
            let candidates: Vec<u16> = match r.host_port {
                0 => self.free_port_candidates(),
                p => (p..=r.host_port_end.max(p)).collect(),
            };
            let mut last_err = None;
            let mut found = None;
            for port in candidates {
                let m = PortMapping {
                    host_ip: r.host_ip,
                    host_port: port,
                    container_port: r.container_port,
                    count: 1,
                    proto: r.proto,
                };
                let mut all = chosen.clone();
                all.push(m);
                match self.check_mappings(&all, &net, Some(&c.id)) {
                    Ok(()) => {
                        found = Some(m);
                        break;
                    }
                    // A bad address is bad for every port.
                    Err(e @ crate::error::Error::Invalid(_)) => return Err(e),
                    Err(e) => last_err = Some(e),
                }
            }
            match (found, last_err) {
                (Some(m), _) => chosen.push(m),
                (None, Some(e)) if r.host_port != 0 && r.host_port_end <= r.host_port => {
                    return Err(e);
                }
                (None, _) => {
                    return Err(conflict!(
                        "no free host port for {}/{} in the range asked for",
                        r.container_port,
                        r.proto.as_str()
                    ));
                }
            }
        }
        if chosen == c.ports {
            return Ok(chosen);
        }
        let old = self.state.clone();
        let mut st = self.state.clone();
        st.containers
            .get_mut(&c.id)
            .expect("present")
            .ports
            .clone_from(&chosen);
        self.commit(st)?;
        if let Err(e) = self.sync_services() {
            // Back to what was published.
            if let Err(e) = self.commit(old) {
                tracing::warn!(container = %c.name, "restoring its ports: {e}");
            }
            if let Err(e) = self.sync_services() {
                tracing::warn!(container = %c.name, "restoring its ports: {e}");
            }
            return Err(e);
        }
        tracing::info!(container = %c.name, ports = chosen.len(), "ports published");
        Ok(chosen)
    }

    /// Host ports to pick from: the host's ephemeral range without the
    /// NAT's ports (a published port there would meet translated flows).
    fn free_port_candidates(&self) -> Vec<u16> {
        let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().map(str::parse::<u16>);
                Some((it.next()?.ok()?, it.next()?.ok()?))
            })
            .unwrap_or((32768, 60999));
        let (nlo, nhi) = self.cfg.nat.ports;
        (lo..=hi).filter(|p| !(nlo..=nhi).contains(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_met_by_a_matching_mapping_only() {
        let m: PortMapping = "8080:80".parse().unwrap();
        let r = PortRequest {
            proto: Proto::Tcp,
            container_port: 80,
            host_ip: None,
            host_port: 8080,
            host_port_end: 8080,
        };
        assert!(r.met_by(&m));
        assert!(PortRequest { host_port: 0, ..r }.met_by(&m));
        assert!(
            PortRequest {
                host_port: 8000,
                host_port_end: 8090,
                ..r
            }
            .met_by(&m)
        );
        assert!(
            !PortRequest {
                host_port: 8081,
                ..r
            }
            .met_by(&m)
        );
        assert!(
            !PortRequest {
                proto: Proto::Udp,
                ..r
            }
            .met_by(&m)
        );
        assert!(
            !PortRequest {
                host_ip: Some(Ipv4Addr::LOCALHOST.into()),
                ..r
            }
            .met_by(&m)
        );
    }
}
