//! Networks: made, listed, removed, and those another runtime (Docker's
//! network driver) knows by its own id. Every runtime call is idempotent:
//! a runtime retries.

use std::collections::BTreeMap;

use ipnetwork::Ipv4Network;

use super::{Engine, Inner, crash};
use crate::{
    api::{NetworkCreate, NetworkView},
    conflict, driver,
    error::{Error, Result},
    invalid,
    model::{DriverKind, Network, RuntimeRef, new_id, now},
    spec,
};

impl Engine {
    pub async fn create_network(&self, req: NetworkCreate) -> Result<NetworkView> {
        let mut inner = self.inner.lock().await;
        let net = inner.create_network(req, false).await?;
        Ok(inner.network_view(&net))
    }

    pub async fn networks(&self) -> Vec<NetworkView> {
        let inner = self.inner.lock().await;
        let mut v: Vec<NetworkView> = inner
            .state
            .networks
            .values()
            .map(|n| inner.network_view(n))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub async fn network(&self, key: &str) -> Result<NetworkView> {
        let inner = self.inner.lock().await;
        let net = inner.find_network(key)?;
        Ok(inner.network_view(net))
    }

    pub async fn remove_network(&self, key: &str) -> Result<()> {
        self.inner.lock().await.remove_network(key).await
    }

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
}

impl Inner {
    pub(super) async fn ensure_predefined(&mut self) -> Result<()> {
        for (name, driver) in driver::PREDEFINED {
            let ipv6 = driver::caps(driver).ipv6 && self.cfg.ipv6;
            match self.state.network_by_name(name) {
                None => {
                    tracing::info!(network = name, "creating the predefined network");
                    self.create_network(
                        NetworkCreate {
                            name: name.to_owned(),
                            driver: Some(driver.as_str().to_owned()),
                            ipv6,
                            subnet6: self
                                .cfg
                                .fixed_cidr_v6
                                .filter(|_| ipv6)
                                .map(|s| s.to_string()),
                            ..Default::default()
                        },
                        true,
                    )
                    .await?;
                }
                Some(n) if driver::caps(driver).ipv6 => {
                    let has = n.ipam6.map(|i| i.subnet);
                    let differs = match (ipv6, has, self.cfg.fixed_cidr_v6) {
                        (false, None, _) | (true, Some(_), None) => false,
                        (true, Some(h), Some(want)) => h != want,
                        _ => true,
                    };
                    if differs {
                        tracing::warn!(
                            network = name,
                            ipv6 = ?has,
                            "the default bridge network keeps the IPv6 settings it was made with \
                             (--ipv6 and --fixed-cidr-v6 apply when it is made: with a new state)"
                        );
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub(super) async fn create_network(
        &mut self,
        req: NetworkCreate,
        predefined: bool,
    ) -> Result<Network> {
        self.create_network_for(req, predefined, None).await
    }

    /// [`Inner::create_network`] for another runtime, which knows the
    /// network by `runtime` (a Docker network id).
    pub(super) async fn create_network_for(
        &mut self,
        req: NetworkCreate,
        predefined: bool,
        runtime: Option<RuntimeRef>,
    ) -> Result<Network> {
        spec::validate_name("network", &req.name)?;
        if self.state.network_by_name(&req.name).is_some() {
            return Err(conflict!("network {:?} already exists", req.name));
        }
        let driver_kind: DriverKind = req
            .driver
            .as_deref()
            .unwrap_or("bridge")
            .parse()
            .map_err(Error::Invalid)?;
        let caps = driver::caps(driver_kind);
        if !predefined && caps.exclusive {
            return Err(invalid!(
                "only one network with the {driver_kind} driver exists: the predefined {driver_kind:?} network"
            ));
        }
        let mut options = BTreeMap::new();
        for o in &req.options {
            let (k, v) = spec::parse_option(o)?;
            options.insert(k, v);
        }
        let (ipam6, ula48) = self.choose_ipam6(&req, Some(driver_kind), &[]).await?;
        let ipam = if caps.addresses {
            Some(self.choose_ipam(&req, Some(driver_kind), &[]).await?)
        } else {
            if req.subnet.is_some() || req.gateway.is_some() || req.ip_range.is_some() {
                return Err(invalid!("the {driver_kind} driver takes no addresses"));
            }
            None
        };
        let dp_id = if caps.datapath {
            self.state
                .free_dp_id(dnet_common::maps::MAX_NETWORKS)
                .ok_or_else(|| conflict!("too many networks"))?
        } else {
            0
        };
        let mut net = Network {
            id: new_id(),
            name: req.name.clone(),
            driver: driver_kind,
            created: now(),
            predefined,
            internal: req.internal,
            ipam,
            ipam6,
            options,
            dp_id,
            host_address: None,
            host_address6: None,
            // Another runtime's network made from pools dnet's IPAM handed
            // out: known before the driver validates it.
            runtime_ipam: runtime.is_some() && ipam.is_some_and(|i| self.is_pending_pool(i.subnet)),
            runtime,
        };
        let driver = driver::driver(driver_kind);
        driver.validate(&self.ctx, &self.state, &mut net).await?;
        if let Err(e) = driver.create_network(&mut self.ctx, &net).await {
            for e in driver.delete_network(&mut self.ctx, &net).await {
                tracing::warn!("cleaning up a failed network create: {e}");
            }
            return Err(e);
        }
        crash::point("network-create:made");
        let mut st = self.state.clone();
        st.networks.insert(net.id.clone(), net.clone());
        if ula48.is_some() {
            st.ula48 = ula48;
        }
        if let Err(e) = self.commit(st) {
            for e in driver.delete_network(&mut self.ctx, &net).await {
                tracing::warn!("cleaning up a failed network create: {e}");
            }
            return Err(e);
        }
        tracing::info!(network = %net.name, id = %&net.id[..12], driver = %driver_kind, "network created");
        Ok(net)
    }

    pub(super) async fn remove_network(&mut self, key: &str) -> Result<()> {
        let net = self.find_network(key)?.clone();
        if net.predefined {
            return Err(Error::Forbidden(format!(
                "{} is a predefined network and cannot be removed",
                net.name
            )));
        }
        let users: Vec<String> = self
            .state
            .endpoints_of(&net.id)
            .map(|(c, _)| c.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(conflict!(
                "network {} has active endpoints (containers: {}): remove or disconnect them first",
                net.name,
                users.join(", ")
            ));
        }
        let mut st = self.state.clone();
        st.networks.remove(&net.id);
        self.commit(st)?;
        crash::point("network-remove:committed");
        for e in driver::driver(net.driver)
            .delete_network(&mut self.ctx, &net)
            .await
        {
            tracing::warn!(network = %net.name, "removing: {e}");
        }
        tracing::info!(network = %net.name, "network removed");
        Ok(())
    }

    pub(super) fn runtime_network(&self, rt: &RuntimeRef) -> Option<&crate::model::Network> {
        self.state
            .networks
            .values()
            .find(|n| n.runtime.as_ref() == Some(rt))
    }
}
