//! Bringing the kernel in line with the state, at every start.
//!
//! What the state holds and the kernel lacks is made again; what dnet made
//! (marked by link aliases `dnet:...`, in the daemon's namespace and, for
//! macvlan children, in the containers', route protocol 213, pins under its
//! bpffs folder, namespaces under its state folder, map entries) and the
//! state no longer holds is removed. What still matches is left untouched,
//! so forwarding does not stop while a restarted daemon adopts its pins.

use std::collections::HashSet;

use dnet_common::{addr::ipv4_be, maps as m};
use netlink_packet_route::route::{RouteProtocol, RouteType};

use super::{Inner, process};
use crate::{
    driver::{self, Attachment},
    error::Result,
    model::{DriverKind, Netns},
    netlink::{RTPROT_DNET, RouteSpec},
    netns,
};

impl Inner {
    pub(super) async fn reconcile(&mut self) -> Result<()> {
        for net in self.state.networks.values().cloned().collect::<Vec<_>>() {
            let d = driver::driver(net.driver);
            if !d.network_ok(&self.ctx, &net).await {
                tracing::info!(network = %net.name, "making its kernel objects again");
                if let Err(e) = d.create_network(&mut self.ctx, &net).await {
                    tracing::error!(network = %net.name, "cannot restore: {e}");
                }
            }
        }

        let mut st = self.state.clone();
        for c in self.state.containers.values().cloned().collect::<Vec<_>>() {
            match &c.netns {
                Netns::Owned { path } if !netns::is_netns(path) => {
                    // The namespace is gone (a reboot): a new one, and the
                    // endpoints below are made again in it.
                    tracing::info!(container = %c.name, "its namespace is gone: making a new one");
                    let _ = netns::remove(path);
                    netns::create(path)?;
                }
                Netns::External { path, dev, ino }
                    if !netns::is_netns(path)
                        || netns::identity(path).ok() != Some((*dev, *ino)) =>
                {
                    tracing::info!(container = %c.name, "its namespace is gone: forgetting it");
                    for ep in &c.endpoints {
                        self.detach(&c, ep).await;
                    }
                    st.containers.remove(&c.id);
                    continue;
                }
                _ => {}
            }
            if let Some(p) = self.ns_paths(&c)
                && !crate::mntns::is_mntns(&p.mnt)
            {
                tracing::info!(container = %c.name, "making its mount namespace again");
                let _ = crate::mntns::remove(&p);
                if let Err(e) = self.make_container_ns(&c) {
                    tracing::error!(container = %c.name, "cannot restore its mount namespace: {e}");
                }
            }
            let path = self.netns_path(&c);
            for ep in c.endpoints.iter() {
                let Some(net) = self.state.networks.get(&ep.network_id).cloned() else {
                    continue;
                };
                let a = Attachment {
                    container: &c,
                    endpoint: ep,
                    network: &net,
                    netns: &path,
                    primary: self.gives_default_route(&c, ep),
                };
                let d = driver::driver(net.driver);
                if matches!(c.netns, Netns::Runtime) && !d.endpoint_ok(&self.ctx, &a).await {
                    // The pair's container end is wherever the runtime put
                    // it: it cannot be made again here.
                    tracing::info!(container = %c.name, network = %net.name, "its endpoint is gone: forgetting it");
                    for e in d.detach(&mut self.ctx, &a).await {
                        tracing::debug!("clearing the old endpoint: {e}");
                    }
                    if let Some(sc) = st.containers.get_mut(&c.id) {
                        sc.endpoints.retain(|e| e.network_id != ep.network_id);
                        if sc.endpoints.is_empty() {
                            st.containers.remove(&c.id);
                        }
                    }
                    continue;
                }
                if let Err(e) = d.refresh(&mut self.ctx, &a).await {
                    tracing::warn!(container = %c.name, network = %net.name, "cannot refresh its endpoint: {e}");
                }
                if !d.endpoint_ok(&self.ctx, &a).await {
                    tracing::info!(container = %c.name, network = %net.name, "making its endpoint again");
                    for e in d.detach(&mut self.ctx, &a).await {
                        tracing::debug!("clearing the old endpoint: {e}");
                    }
                    if let Err(e) = d.attach(&mut self.ctx, &a).await {
                        tracing::error!(container = %c.name, network = %net.name, "cannot restore: {e}");
                    }
                }
            }
        }
        if st != self.state {
            self.commit(st)?;
        }
        self.collect_garbage().await?;
        self.elect_missing_default_routes().await;
        // The containers' resolv.conf and hosts as the state and the host's
        // resolv.conf are now: either may have changed while no daemon ran
        // (or one was killed between a commit and the files' update).
        for c in self.state.containers.values() {
            self.refresh_container_files(c);
        }
        Ok(())
    }

    /// A container whose namespace has no default route while it has a
    /// network that gives one gets it back: a daemon killed between a
    /// disconnect's commit and the re-election left it without (the
    /// collector above removed the endpoint the old route went through).
    /// Only the containers such a disconnect marked (`default_route_due`)
    /// are looked at: a start enters no other namespace for this. The
    /// marks of those checked go (with the next commit); one whose check
    /// failed stays for the next start.
    async fn elect_missing_default_routes(&mut self) {
        let due = std::mem::take(&mut self.state.default_route_due);
        for id in due {
            let Some(c) = self.state.containers.get(&id) else {
                continue;
            };
            let Some(ep) = self.default_route_endpoint(c) else {
                continue;
            };
            let has_default = async {
                let cnl = crate::netlink::Netlink::open_in(&self.netns_path(c)).await?;
                let routes = cnl.routes().await?;
                Ok::<_, crate::error::Error>(
                    routes
                        .iter()
                        .any(|r| r.prefix == 0 && r.table == u32::from(libc::RT_TABLE_MAIN)),
                )
            };
            let done = match has_default.await {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::info!(container = %c.name, "no default route: re-electing it");
                    self.elect_default_route(c, &ep).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::warn!(container = %c.name, "checking its default route: {e}");
                self.state.default_route_due.insert(id);
            }
        }
    }

    /// Removes what dnet made and the state does not hold.
    async fn collect_garbage(&mut self) -> Result<()> {
        let st = self.state.clone();
        let veths: HashSet<String> = st
            .containers
            .values()
            .flat_map(|c| c.endpoints.iter().filter_map(|e| e.host_ifname.clone()))
            .collect();
        let bridges: Vec<_> = st
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
        for l in self.ctx.nl.links().await? {
            let ours = match l.alias.as_deref() {
                Some(alias) => alias.starts_with("dnet:ep:"),
                None => {
                    l.kind.as_deref() == Some("veth")
                        && l.mac.is_some_and(|m| gateway_macs.contains(&m))
                }
            };
            if ours && !veths.contains(&l.name) {
                tracing::info!(link = %l.name, "removing a link dnet no longer uses");
                self.ctx.nl.del_link(l.index).await?;
            }
        }

        let lo = driver::loopback(&self.ctx.nl).await?;
        for a in self.ctx.nl.addresses(Some(lo)).await? {
            if a.label.as_deref() == Some(driver::GATEWAY_LABEL)
                && !bridges
                    .iter()
                    .any(|n| n.ipam.is_some_and(|i| i.gateway == a.ip))
            {
                tracing::info!(address = %a.ip, "removing a gateway address dnet no longer uses");
                self.ctx.nl.del_address(lo, a.ip, a.prefix).await?;
            }
        }

        for r in self.ctx.nl.routes().await? {
            if r.protocol == RouteProtocol::Other(RTPROT_DNET)
                && r.kind == RouteType::Unreachable
                && !bridges.iter().any(|n| {
                    n.ipam.is_some_and(|i| {
                        i.subnet.network() == r.dst && i.subnet.prefix() == r.prefix
                    })
                })
            {
                tracing::info!(route = %format!("{}/{}", r.dst, r.prefix), "removing a route dnet no longer uses");
                self.ctx
                    .nl
                    .del_route(RouteSpec::unreachable(r.dst, r.prefix))
                    .await?;
            }
        }

        // Datapath entries.
        let ips: HashSet<u32> = st
            .containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.host_ifname.is_some())
            .filter_map(|e| e.ip.map(ipv4_be))
            .collect();
        let live_ifindexes: HashSet<u32> = self
            .ctx
            .nl
            .links()
            .await?
            .into_iter()
            .filter(|l| veths.contains(&l.name))
            .map(|l| l.index)
            .collect();
        for (addr, _) in self.ctx.dp.endpoints(m::ENDPOINTS_BY_IP)? {
            if !ips.contains(&addr) {
                self.ctx
                    .dp
                    .clear_endpoint(Some(dnet_common::addr::ipv4_from_be(addr)), None)?;
            }
        }
        for (ifindex, _) in self.ctx.dp.endpoints(m::ENDPOINTS_BY_IF)? {
            if !live_ifindexes.contains(&ifindex) {
                self.ctx.dp.clear_endpoint(None, Some(ifindex))?;
            }
        }
        for (subnet, id) in self.ctx.dp.subnets()? {
            if bridges
                .iter()
                .any(|n| n.dp_id == id && n.ipam.is_some_and(|i| i.subnet == subnet))
            {
                continue;
            }
            if bridges.iter().any(|n| n.dp_id == id) {
                // The id is another network's now: only the subnet goes.
                self.ctx.dp.clear_subnet(subnet)?;
            } else {
                self.ctx.dp.clear_network(id, Some(subnet))?;
            }
        }
        for id in 1..m::MAX_NETWORKS {
            if self.ctx.dp.network(id).is_ok_and(|n| n.active != 0)
                && !bridges.iter().any(|n| n.dp_id == id)
            {
                self.ctx.dp.clear_network(id, None)?;
            }
        }
        // IPv6 entries, as the IPv4 ones above.
        let ips6: HashSet<std::net::Ipv6Addr> = st
            .containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.host_ifname.is_some())
            .filter_map(|e| e.ip6)
            .collect();
        for (addr, _) in self.ctx.dp.endpoints6()? {
            if !ips6.contains(&addr) {
                self.ctx.dp.clear_endpoint6(Some(addr), None)?;
            }
        }
        for (ifindex, addr) in self.ctx.dp.endpoint6_addrs()? {
            if !live_ifindexes.contains(&ifindex) || !ips6.contains(&addr) {
                self.ctx.dp.clear_endpoint6(None, Some(ifindex))?;
            }
        }
        for (subnet, id) in self.ctx.dp.subnets6()? {
            if !bridges
                .iter()
                .any(|n| n.dp_id == id && n.ipam6.is_some_and(|i| i.subnet == subnet))
            {
                self.ctx.dp.clear_subnet6(subnet)?;
            }
        }
        for id in 1..m::MAX_NETWORKS {
            if self.ctx.dp.network6(id).is_ok_and(|n| n.active != 0)
                && !bridges.iter().any(|n| n.dp_id == id && n.ipam6.is_some())
            {
                self.ctx.dp.clear_network6(id, None)?;
            }
        }
        for a in self.ctx.nl.addresses6(Some(lo)).await? {
            if a.dnet
                && !bridges
                    .iter()
                    .any(|n| n.ipam6.is_some_and(|i| i.gateway == a.ip))
            {
                tracing::info!(address = %a.ip, "removing an IPv6 gateway address dnet no longer uses");
                self.ctx.nl.del_address6(lo, a.ip, a.prefix).await?;
            }
        }
        for r in self.ctx.nl.routes6().await? {
            if r.protocol == RouteProtocol::Other(RTPROT_DNET)
                && r.kind == RouteType::Unreachable
                && !bridges.iter().any(|n| {
                    n.ipam6.is_some_and(|i| {
                        i.subnet.network() == r.dst && i.subnet.prefix() == r.prefix
                    })
                })
            {
                tracing::info!(route = %format!("{}/{}", r.dst, r.prefix), "removing an IPv6 route dnet no longer uses");
                self.ctx
                    .nl
                    .del_route6(crate::netlink::RouteSpec6::unreachable(r.dst, r.prefix))
                    .await?;
            }
        }
        for ifname in self.ctx.dp.pinned_interfaces()? {
            if !veths.contains(&ifname) {
                self.ctx.dp.detach_endpoint(&ifname)?;
            }
        }
        for n in &bridges {
            driver::refresh_members(&mut self.ctx.dp, n.dp_id)?;
        }
        self.sync_services()?;
        // Flows of containers the state no longer holds.
        let known: Vec<std::net::Ipv4Addr> = st
            .containers
            .values()
            .flat_map(|c| c.endpoints.iter().filter_map(|e| e.ip))
            .collect();
        let entries = self.ctx.dp.conntrack()?;
        let known_be: HashSet<u32> = known.iter().map(|a| ipv4_be(*a)).collect();
        // (The host's own echo flows are no container's: they stay.)
        let stale: Vec<_> = entries
            .iter()
            .filter(|(_, e)| {
                e.flags & dnet_common::nat::CT_F_HOST == 0 && !known_be.contains(&e.endpoint_be)
            })
            .map(|(k, _)| *k)
            .collect();
        self.ctx.dp.ct_remove(&stale)?;
        // NAT66 flows name their container by its IPv4 address too.
        let stale6: Vec<_> = self
            .ctx
            .dp
            .conntrack6()?
            .iter()
            .filter(|(_, e)| !known_be.contains(&e.endpoint_be))
            .map(|(k, _)| *k)
            .collect();
        self.ctx.dp.ct_remove(&stale6)?;

        let containers: Vec<_> = st
            .containers
            .values()
            .filter(|c| !matches!(c.netns, Netns::Host))
            .map(|c| (c.clone(), self.netns_path(c)))
            .collect();
        driver::collect_macvlan_garbage(&self.ctx, &st, &containers).await?;

        // Namespaces under the state folder that no container owns.
        let owned: HashSet<_> = st
            .containers
            .values()
            .filter_map(|c| match &c.netns {
                Netns::Owned { path } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let dir = self.cfg.netns_dir();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let path = e.path();
                if !owned.contains(&path) {
                    tracing::info!(netns = %path.display(), "removing a namespace dnet no longer uses");
                    process::kill_all_in(&path);
                    netns::remove(&path)?;
                }
            }
        }
        // Cgroups of containers that are no longer in the state.
        process::collect_cgroups(&st.containers.keys().cloned().collect()).await;
        // Mount namespaces and files of containers the state no longer holds.
        let ids: HashSet<&str> = st.containers.keys().map(String::as_str).collect();
        let mnt_dir = self.cfg.state_dir.join("mntns");
        if let Ok(entries) = std::fs::read_dir(&mnt_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".uts").unwrap_or(&name);
                if !ids.contains(id) {
                    tracing::info!(file = %e.path().display(), "removing a mount namespace dnet no longer uses");
                    crate::mntns::remove(&crate::mntns::NsPaths::new(&mnt_dir, id))?;
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.cfg.state_dir.join("containers")) {
            for e in entries.flatten() {
                if !ids.contains(e.file_name().to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}
