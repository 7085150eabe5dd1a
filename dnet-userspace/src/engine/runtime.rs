//! What a runtime's front end asks about its own attachments, by its own
//! keys: `POST /v1/attach/check` (CNI CHECK: the attachment as it stands)
//! and `POST /v1/attach/collect` (CNI GC: detach what the runtime no longer
//! knows). Attaching and detaching themselves go through [`super::attach`].

use super::{Engine, Inner};
use crate::{
    api::{AttachCheck, AttachCollect, AttachResponse, Collected},
    error::{Error, Result},
    invalid,
    model::{Container, Network},
    not_found,
};

impl Engine {
    /// The existing attachment of a runtime's container to a network.
    pub async fn attach_check(&self, req: AttachCheck) -> Result<AttachResponse> {
        self.inner.lock().await.attach_check(&req)
    }

    /// Detaches the runtime's containers not in `keep` (from `network`
    /// only, when given).
    pub async fn attach_collect(&self, req: AttachCollect) -> Result<Collected> {
        self.inner.lock().await.attach_collect(req).await
    }
}

impl Inner {
    fn attach_check(&self, req: &AttachCheck) -> Result<AttachResponse> {
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

    async fn attach_collect(&mut self, req: AttachCollect) -> Result<Collected> {
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
}
