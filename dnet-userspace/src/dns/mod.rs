//! The resolver: containers of a user-defined bridge network find each
//! other by name.
//!
//! It listens on UDP and TCP port 53 of each such network's gateway (both
//! gateways of a dual-stack network), in
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
pub use names::{contributes, has_names, resolver_of, resolver6_of};

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::model::State;
use names::Names;

/// What the daemon forwards to.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Upstream resolvers, tried in turn (`--dns-upstream`); empty: the
    /// nameservers of the host's resolv.conf, followed as it changes
    /// ([`Resolver::host_resolv_conf`]).
    pub upstreams: Vec<SocketAddr>,
}

/// What the listeners share: the current table and the upstreams.
pub struct Shared {
    names: RwLock<Arc<Names>>,
    /// Bumped after each new table, so a listener takes no lock per query
    /// ([`View`]).
    generation: AtomicU64,
    upstreams: RwLock<Arc<[SocketAddr]>>,
}

impl Shared {
    fn names(&self) -> Arc<Names> {
        self.names.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The client's own upstreams (`dnet run --dns`), else the daemon's.
    fn upstreams_for(&self, names: &Names, src: Ipv4Addr) -> Arc<[SocketAddr]> {
        match names.client(src) {
            Some(c) if !c.upstreams.is_empty() => c.upstreams.clone(),
            _ => self
                .upstreams
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A listener's copy of the current table, taken again only after it
/// changed: one atomic load per query, no lock.
pub struct View {
    generation: u64,
    names: Arc<Names>,
}

impl View {
    pub fn new(shared: &Shared) -> View {
        let generation = shared.generation.load(Ordering::Acquire);
        View {
            generation,
            names: shared.names(),
        }
    }

    /// The table as of now (a new one is seen by the next query after
    /// [`Resolver::update`] returns).
    pub fn current(&mut self, shared: &Shared) -> &Arc<Names> {
        let g = shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.names = shared.names();
            self.generation = g;
        }
        &self.names
    }
}

pub struct Resolver {
    shared: Arc<Shared>,
    /// Upstreams given to the daemon; empty: the host's, followed.
    fixed: bool,
    listeners: Mutex<HashMap<IpAddr, tokio::task::JoinHandle<()>>>,
}

impl Resolver {
    pub fn new(opts: Options) -> Resolver {
        Resolver {
            fixed: !opts.upstreams.is_empty(),
            shared: Arc::new(Shared {
                names: RwLock::new(Arc::new(Names::default())),
                generation: AtomicU64::new(0),
                upstreams: RwLock::new(opts.upstreams.into()),
            }),
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// The host's resolv.conf is now `text`: unless the daemon was given
    /// its upstreams, forwarding goes to its nameservers from now on.
    pub fn host_resolv_conf(&self, text: &str) {
        if self.fixed {
            return;
        }
        let v = from_resolv_conf(text);
        if v.is_empty() {
            tracing::warn!(
                "no nameserver in the host's resolv.conf and no --dns-upstream: \
                 containers' other names get SERVFAIL"
            );
        } else {
            tracing::info!(upstreams = ?v, "resolver: the host's nameservers");
        }
        *self
            .shared
            .upstreams
            .write()
            .unwrap_or_else(|e| e.into_inner()) = v.into();
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
        self.shared.generation.fetch_add(1, Ordering::Release);
        self.listen(want);
    }

    /// After a change of the state that leaves the names as they are (see
    /// [`contributes`]): only the listeners are checked again, as
    /// [`Resolver::update`] checks them (one that failed is tried again).
    pub fn relisten(&self) {
        let want = self
            .shared
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .gateways()
            .clone();
        self.listen(want);
    }

    /// Listens on exactly the gateways `want`.
    fn listen(&self, want: std::collections::BTreeSet<IpAddr>) {
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
