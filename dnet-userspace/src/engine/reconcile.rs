//! Bringing the kernel in line with the state, at every start.
//!
//! What the state holds and the kernel lacks is made again; what dnet made
//! (marked by link aliases `dnet:...`, in the daemon's namespace and, for
//! macvlan children, in the containers', route protocol 213, pins under its
//! bpffs folder, namespaces under its state folder, map entries) and the
//! state no longer holds is removed. What still matches is left untouched,
//! so forwarding does not stop while a restarted daemon adopts its pins.

use std::collections::HashSet;

use dnet_common::addr::ipv4_be;

use super::{Inner, process};
use crate::{
    driver::{self, Attachment},
    error::Result,
    model::Netns,
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
        // What each driver made first: the links, addresses, routes and
        // datapath entries of endpoints and networks that are gone.
        let containers: Vec<_> = st
            .containers
            .values()
            .filter(|c| !matches!(c.netns, Netns::Host))
            .map(|c| (c.clone(), self.netns_path(c)))
            .collect();
        for d in driver::all() {
            d.collect_garbage(&mut self.ctx, &st, &containers).await?;
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
