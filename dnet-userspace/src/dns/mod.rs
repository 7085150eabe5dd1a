//! The resolver: containers of a user-defined bridge network find each
//! other by name.
//!
//! It listens on UDP and TCP port 53 of each such network's gateway, in
//! the daemon's namespace, answers names of the asking container's
//! networks from a table built from the state at every commit
//! ([`Resolver::update`]), and forwards the rest upstream.
//!
//! - `names`: the table (who asks, what a name means to them);
//! - `answer`: one query to one decision, with `hickory-proto` messages;
//! - `server`: the UDP and TCP listeners;
//! - `forward`: the upstreams.

mod answer;
mod forward;
mod names;
mod server;

pub use forward::{from_resolv_conf, parse_upstream};
pub use names::{has_names, resolver_of};

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
};

use crate::model::State;
use names::Names;

/// What the daemon forwards to.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Upstream resolvers, tried in turn.
    pub upstreams: Vec<SocketAddr>,
}

/// What the listeners share: the current table and the upstreams.
pub struct Shared {
    names: RwLock<Arc<Names>>,
    upstreams: Vec<SocketAddr>,
}

impl Shared {
    fn names(&self) -> Arc<Names> {
        self.names.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The client's own upstreams (`dnet run --dns`), else the daemon's.
    fn upstreams_for(&self, names: &Names, src: Ipv4Addr) -> Vec<SocketAddr> {
        match names.client(src) {
            Some(c) if !c.upstreams.is_empty() => c.upstreams.clone(),
            _ => self.upstreams.clone(),
        }
    }
}

pub struct Resolver {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<Ipv4Addr, tokio::task::JoinHandle<()>>>,
}

impl Resolver {
    pub fn new(opts: Options) -> Resolver {
        Resolver {
            shared: Arc::new(Shared {
                names: RwLock::new(Arc::new(Names::default())),
                upstreams: opts.upstreams,
            }),
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// Answers from `state` from now on, and listens on exactly its
    /// networks' gateways. Must run inside the tokio runtime.
    pub fn update(&self, state: &State) {
        let names = Names::build(state, |c| {
            c.dns
                .iter()
                .map(|ip| SocketAddr::new((*ip).into(), 53))
                .collect()
        });
        let want = names.gateways().clone();
        *self.shared.names.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(names);
        let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        l.retain(|addr, task| {
            let keep = want.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in want {
            if l.contains_key(&addr) {
                continue;
            }
            match server::start(addr, self.shared.clone()) {
                Ok(task) => {
                    tracing::info!(%addr, "resolver listening");
                    l.insert(addr, task);
                }
                // Tried again at the next change.
                Err(e) => tracing::warn!(%addr, "resolver: cannot listen: {e}"),
            }
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let l = self.listeners.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in l.values() {
            task.abort();
        }
    }
}
