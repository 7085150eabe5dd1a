//! What the API shows: networks, containers, their endpoints and their
//! counters, built from the state.

use super::{Engine, Inner, process};
use crate::{
    api::{
        AttachResponse, AttachedView, ContainerView, EndpointStatsView, NetworkView, RouteView,
        StatsView, Status,
    },
    driver::{self, Attachment},
    error::Result,
    model::{Container, Endpoint, Netns, Network},
    spec::PortMapping,
};

impl Engine {
    pub async fn stats(&self) -> Result<StatsView> {
        let inner = self.inner.lock().await;
        let st = &inner.state;
        let mut endpoints = Vec::new();
        for c in st.containers.values() {
            let path = inner.netns_path(c);
            for e in &c.endpoints {
                let Some(net) = st.networks.get(&e.network_id) else {
                    continue;
                };
                let a = Attachment {
                    container: c,
                    endpoint: e,
                    network: net,
                    netns: &path,
                    primary: false,
                };
                let Some(s) = driver::driver(net.driver).stats(&inner.ctx, &a).await? else {
                    continue;
                };
                endpoints.push(EndpointStatsView {
                    container: c.name.clone(),
                    network: net.name.clone(),
                    ifname: e.ifname.clone(),
                    ip: e.ip,
                    ip6: e.ip6,
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    translated: s.translated,
                    drops: s.drops,
                });
            }
        }
        endpoints.sort_by(|a, b| (&a.container, &a.network).cmp(&(&b.container, &b.network)));
        let global = inner.ctx.dp.stats(0)?;
        Ok(StatsView {
            endpoints,
            unattributed_drops: driver::drops_by_reason(&global.drops),
        })
    }
}

impl Inner {
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
        // The IPv6 side of a dual-stack endpoint, routed as its driver
        // routes it (a LAN's subnet is on the link, as for IPv4).
        let ipam6 = net.ipam6.filter(|_| ep.ip6.is_some());
        let gateway6 = ipam6.map(|i| i.gateway).filter(|_| !net.internal);
        if let Some(i) = ipam6 {
            if driver::caps(net.driver).host_gateway {
                routes.push(RouteView {
                    dst: i.subnet.to_string(),
                    gateway: Some(i.gateway.into()),
                });
            }
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

    pub(super) fn attached_view(&self, c: &Container, e: &Endpoint) -> AttachedView {
        let net = self.state.networks.get(&e.network_id);
        AttachedView {
            container: c.name.clone(),
            container_id: c.id.clone(),
            network: net.map(|n| n.name.clone()).unwrap_or_default(),
            ifname: e.ifname.clone(),
            host_ifname: e.host_ifname.clone(),
            ip: e.ip,
            prefix: net
                .and_then(|n| n.ipam)
                .map(|i| i.subnet.prefix())
                .filter(|_| e.ip.is_some()),
            mac: e.mac,
            gateway: net
                .and_then(|n| n.ipam)
                .map(|i| i.gateway)
                .filter(|_| e.ip.is_some()),
            ip6: e.ip6,
            prefix6: net
                .and_then(|n| n.ipam6)
                .map(|i| i.subnet.prefix())
                .filter(|_| e.ip6.is_some()),
            gateway6: net
                .and_then(|n| n.ipam6)
                .map(|i| i.gateway)
                .filter(|_| e.ip6.is_some()),
        }
    }

    pub(super) fn network_view(&self, n: &Network) -> NetworkView {
        NetworkView {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: n.driver,
            created: n.created,
            predefined: n.predefined,
            internal: n.internal,
            ipam: n.ipam,
            ipam6: n.ipam6,
            options: n.options.clone(),
            gateway_link: driver::driver(n.driver).gateway_link().map(str::to_owned),
            host_address: n.host_address,
            host_address6: n.host_address6,
            runtime: n.runtime.clone(),
            containers: self
                .state
                .endpoints_of(&n.id)
                .map(|(c, e)| self.attached_view(c, e))
                .collect(),
            notes: driver::driver(n.driver).notes(n),
        }
    }

    pub(super) fn container_view(&self, c: &Container) -> ContainerView {
        let (status, exit_code, pid, command) = match (&c.process, &c.owner) {
            (Some(p), _) if process::alive(p) => {
                (Status::Running, None, Some(p.pid), p.command.clone())
            }
            (Some(p), _) => (Status::Exited, p.exit_code, None, p.command.clone()),
            (None, Some(o)) => (Status::Attached, None, None, o.command.clone()),
            (None, None) => (Status::Attached, None, None, Vec::new()),
        };
        ContainerView {
            id: c.id.clone(),
            name: c.name.clone(),
            created: c.created,
            netns_path: self.netns_path(c),
            status,
            exit_code,
            pid,
            command,
            networks: c
                .endpoints
                .iter()
                .map(|e| self.attached_view(c, e))
                .collect(),
            ports: c.ports.clone(),
            mntns_path: self.ns_paths(c).map(|p| p.mnt),
            utsns_path: self.ns_paths(c).map(|p| p.uts),
        }
    }
}
