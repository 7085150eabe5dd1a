//! The engine: the daemon's state and every operation on it.
//!
//! Each change follows one pattern, so that the state on disk and the
//! kernel always agree after a crash (see `reconcile`):
//! 1. validate against a copy of the state; bad input changes nothing;
//! 2. make the kernel objects; on failure remove what was made;
//! 3. commit the new state atomically; on failure remove the objects.
//!
//! Removals commit first and tear down after. A crash between the two steps
//! leaves objects the state does not know, which the next start removes.
//!
//! Operations are serialised by one lock; they take milliseconds.

mod attach;
pub mod conntrack;
mod container;
pub mod crash;
mod endpoint;
mod etc;
mod ipam;
mod nat;
mod network;
mod pool;
mod ports;
mod process;
mod reconcile;
mod view;

pub use attach::EndpointOpts;
pub use nat::NatOptions;
pub use ports::PortRequest;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex as StdMutex},
    time::Duration,
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use tokio::sync::Mutex;

use crate::{
    api::Info,
    conflict,
    datapath::{self, Datapath},
    driver::{self, Ctx},
    error::Result,
    invalid,
    model::{Container, Netns, Network, State},
    netlink::Netlink,
    netns, not_found,
    store::Store,
};
/// Where one daemon instance keeps its things. Two instances with different
/// folders (in two sandboxes) never share anything.
#[derive(Clone, Debug)]
pub struct Config {
    /// The uplink; `None` picks the interface of the default route.
    pub uplink: Option<String>,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub nat: NatOptions,
    /// What the resolver forwards to.
    pub dns: crate::dns::Options,
    /// The host's resolv.conf (followed: see `follow_host_files`).
    pub resolv_conf: PathBuf,
    /// How long an attach waits for the removal of an interface in its
    /// namespace (`driver::Reaper`) before it fails.
    pub removal_wait: Duration,
    /// The default `bridge` network is dual-stack (`--ipv6`), with this
    /// IPv6 subnet (`--fixed-cidr-v6`) or one of the ULA /48.
    pub ipv6: bool,
    pub fixed_cidr_v6: Option<Ipv6Network>,
}

impl Config {
    fn netns_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }
    fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

pub struct Engine {
    inner: Mutex<Inner>,
    /// The reaper of `Inner::ctx`, to wait for without the lock.
    reaper: driver::Reaper,
    removal_wait: Duration,
    /// Exit codes of detached processes the daemon started, by pid.
    exits: Arc<StdMutex<HashMap<u32, i32>>>,
}

struct Inner {
    cfg: Config,
    state: State,
    store: Store,
    ctx: Ctx,
    /// Answers names from the committed state (see `commit`).
    dns: crate::dns::Resolver,
    /// Pools and addresses handed out to another runtime's IPAM.
    runtime_ipam: ipam::RuntimeIpam,
    /// (device, inode) of the host's /etc files containers get their own
    /// of, when last looked at (see `follow_host_files`).
    host_files: Vec<Option<(u64, u64)>>,
    /// The host's resolv.conf (`Config::resolv_conf`) when last read.
    host_resolv: String,
}

/// An attach refused because the removal of an interface in its namespace
/// did not end within `wait` (a `del_link` that hangs).
fn removal_stuck(path: &Path, wait: Duration) -> crate::error::Error {
    conflict!(
        "the removal of an earlier interface in namespace {} is still under way after {}s \
         (its name may be the one this attach takes): try again later; \
         the daemon's next start finishes it",
        path.display(),
        wait.as_secs()
    )
}

impl Engine {
    /// Opens the state, loads the datapath (a verifier rejection fails
    /// here), brings the kernel in line with the state, and starts the
    /// reaper of finished containers.
    pub async fn start(cfg: Config) -> Result<Arc<Engine>> {
        let mut store = Store::open(&cfg.state_dir)?;
        let state = store.load()?;
        datapath::ensure_mounted(&cfg.bpffs)?;
        let dp = Datapath::load_with(Some(&cfg.bpffs), cfg.nat.ct_entries)?;
        let nl = Netlink::open()?;
        if let Some(name) = &cfg.uplink
            && nl.link(name).await?.is_none()
        {
            return Err(invalid!("uplink {name:?} does not exist"));
        }
        // Listening before the uplink is first read: no change falls
        // between the two.
        let changes = crate::netlink::monitor()?;
        let dns = crate::dns::Resolver::new(cfg.dns.clone());
        let host_resolv = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default();
        dns.host_resolv_conf(&host_resolv);
        let mut inner = Inner {
            cfg,
            dns,
            host_files: Vec::new(),
            host_resolv,
            state,
            store,
            ctx: Ctx {
                nl,
                dp,
                uplink: None,
                reaper: driver::Reaper::start()
                    .map_err(|e| conflict!("starting the reaper: {e}"))?,
            },
            runtime_ipam: Default::default(),
        };
        inner.setup_nat().await?;
        inner.ensure_predefined().await?;
        inner.reconcile().await?;
        // The names of the state as it is after the restart.
        inner.dns.update(&inner.state);
        let gc_interval = inner.cfg.nat.gc_interval;
        let engine = Arc::new(Engine {
            reaper: inner.ctx.reaper.clone(),
            removal_wait: inner.cfg.removal_wait,
            inner: Mutex::new(inner),
            exits: Arc::new(StdMutex::new(HashMap::new())),
        });
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(engine) = weak.upgrade() else { break };
                if let Err(e) = engine.reap().await {
                    tracing::warn!("reaping containers: {e}");
                }
                engine.inner.lock().await.follow_host_files();
            }
        });
        tokio::spawn(follow_uplink(Arc::downgrade(&engine), changes));
        attach::spawn_runtime_collector(&engine);
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(gc_interval).await;
                let Some(engine) = weak.upgrade() else { break };
                match engine.inner.lock().await.collect_flows() {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(entries = n, "expired flows collected"),
                    Err(e) => tracing::warn!("collecting expired flows: {e}"),
                }
            }
        });
        Ok(engine)
    }

    pub async fn info(&self) -> Info {
        let inner = self.inner.lock().await;
        let uplink_addr = match &inner.ctx.uplink {
            Some(u) => inner
                .ctx
                .nl
                .addresses(Some(u.index))
                .await
                .ok()
                .and_then(|a| a.first().map(|a| a.ip)),
            None => None,
        };
        Info {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uplink: inner.ctx.uplink.as_ref().map(|u| u.name.clone()),
            uplink_addr,
            state_dir: inner.cfg.state_dir.clone(),
            bpffs: inner.cfg.bpffs.clone(),
            networks: inner.state.networks.len(),
            containers: inner.state.containers.len(),
            pending_removals: inner.ctx.reaper.pending(),
            removal_waits: self.reaper.waiting(),
            programs: inner.ctx.dp.programs(),
            maps: inner.ctx.dp.maps(),
        }
    }

    /// Waits, without the lock (the daemon answers meanwhile), for the
    /// removals under way in the namespace at `path` (an interface of it
    /// may still hold the name a new one takes): `--removal-wait` at most,
    /// then a clear error. `Inner::attach` checks again under the lock.
    pub(crate) async fn settled_in(&self, path: &Path) -> Result<()> {
        if self.reaper.pending() == 0 {
            return Ok(());
        }
        let Ok(id) = netns::identity(path) else {
            return Ok(());
        };
        if self.reaper.settled_in(id, self.removal_wait).await {
            return Ok(());
        }
        Err(removal_stuck(path, self.removal_wait))
    }

    /// Waits for the link removals under way (see `driver::Reaper`).
    pub async fn settle(&self) {
        let inner = self.inner.lock().await;
        inner.ctx.reaper.settled().await;
    }
}

/// How long a burst of netlink changes may last before the uplink is read
/// again (an interface renumbered sends several).
const UPLINK_SETTLE: Duration = Duration::from_millis(100);
/// How often the uplink is read again with no change announced: the kernel
/// drops notifications when the listening socket's buffer is full.
const UPLINK_RECHECK: Duration = Duration::from_secs(30);

/// Follows the uplink for the engine's lifetime (see
/// [`Inner::follow_uplink`]).
async fn follow_uplink(
    engine: std::sync::Weak<Engine>,
    mut changes: impl futures::Stream<Item = crate::netlink::Change> + Unpin,
) {
    use futures::{FutureExt as _, StreamExt as _};
    loop {
        let mut seen = Vec::new();
        let recheck = match tokio::time::timeout(UPLINK_RECHECK, changes.next()).await {
            Ok(Some(c)) => {
                seen.push(c);
                tokio::time::sleep(UPLINK_SETTLE).await;
                while let Some(Some(c)) = changes.next().now_or_never() {
                    if !seen.contains(&c) {
                        seen.push(c);
                    }
                }
                false
            }
            Ok(None) => {
                tracing::warn!(
                    "netlink notifications ended: the uplink is read every {UPLINK_RECHECK:?}"
                );
                tokio::time::sleep(UPLINK_RECHECK).await;
                true
            }
            Err(_) => true,
        };
        let Some(engine) = engine.upgrade() else {
            break;
        };
        let mut inner = engine.inner.lock().await;
        if (recheck || seen.iter().any(|c| inner.uplink_concerned(c)))
            && let Err(e) = inner.follow_uplink().await
        {
            tracing::warn!("following the uplink: {e}");
        }
    }
}

/// The link of the default route, if there is one.
async fn default_route_link(nl: &Netlink) -> Result<Option<crate::netlink::Link>> {
    let routes = nl.routes().await?;
    let Some(oif) = routes
        .iter()
        .find(|r| r.prefix == 0 && r.table == 254 && r.oif.is_some())
        .and_then(|r| r.oif)
    else {
        return Ok(None);
    };
    Ok(nl.links().await?.into_iter().find(|l| l.index == oif))
}

fn parse_net(what: &str, s: &str) -> Result<Ipv4Network> {
    let net: Ipv4Network = s
        .parse()
        .map_err(|_| invalid!("invalid {what} {s:?}: expected an IPv4 CIDR such as 10.1.0.0/16"))?;
    Ok(net)
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| invalid!("invalid {what} {s:?}: expected an IPv4 address"))
}

fn parse_net6(what: &str, s: &str) -> Result<Ipv6Network> {
    s.parse().map_err(|_| {
        invalid!("invalid IPv6 {what} {s:?}: expected an IPv6 CIDR such as fd00:1::/64")
    })
}

fn parse_ip6(what: &str, s: &str) -> Result<Ipv6Addr> {
    s.parse()
        .map_err(|_| invalid!("invalid {what} {s:?}: expected an IPv6 address"))
}

impl Inner {
    /// Makes `state` the committed state.
    fn commit(&mut self, state: State) -> Result<()> {
        self.store.commit(&self.state, &state)?;
        self.commit_published(state);
        Ok(())
    }

    /// Makes the state with container record `c` set, prepared with
    /// `Store::prepare_container` and written, the committed state (an
    /// endpoint's addition): `c` goes into the state in place (no copy of
    /// the whole). The sync of the publish line, which only a power loss
    /// needs, runs after the answer on a blocking thread: the prepared
    /// changes were synced before, so a load finds the old state or the new
    /// one, whole, and a power loss also takes every link, filter and
    /// namespace the new record describes.
    fn commit_prepared_container(&mut self, c: Container) -> Result<()> {
        let id = c.id.clone();
        // The names change only if the record has a part in them, before
        // or after (a table built again for every attach was a cost that
        // grew with the number of containers).
        let names = crate::dns::contributes(&self.state, &c);
        let old = self.state.containers.insert(id.clone(), c);
        let names = names
            || old
                .as_ref()
                .is_some_and(|o| crate::dns::contributes(&self.state, o));
        let sync = match self.store.publish(&self.state) {
            Ok(sync) => sync,
            Err(e) => {
                // Not committed: the state stays as it was.
                match old {
                    Some(old) => self.state.containers.insert(id, old),
                    None => self.state.containers.remove(&id),
                };
                return Err(e.into());
            }
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = sync.run() {
                tracing::warn!("syncing the state log: {e}");
            }
        });
        if names {
            self.dns.update(&self.state);
        } else {
            self.dns.relisten();
        }
        Ok(())
    }

    fn commit_published(&mut self, state: State) {
        self.state = state;
        // Names follow the state at once.
        self.dns.update(&self.state);
    }

    fn find_network(&self, key: &str) -> Result<&Network> {
        self.state
            .find_network(key)
            .ok_or_else(|| not_found!("network {key:?} not found"))
    }

    fn find_container(&self, key: &str) -> Result<&Container> {
        self.state
            .find_container(key)
            .ok_or_else(|| not_found!("container {key:?} not found"))
    }

    fn netns_path(&self, c: &Container) -> PathBuf {
        match &c.netns {
            Netns::Owned { path } | Netns::External { path, .. } => path.clone(),
            Netns::Host | Netns::Runtime => netns::own_path(),
        }
    }
}
