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
pub mod crash;
mod etc;
mod nat;
mod pool;
mod ports;
mod process;
mod reconcile;
mod runtime;
mod runtime_ipam;
mod runtime_net;

pub use attach::EndpointOpts;
pub use nat::NatOptions;
pub use runtime_net::PortRequest;

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex as StdMutex},
    time::Duration,
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use tokio::sync::Mutex;

use crate::{
    api::{
        AttachedView, ConnectRequest, ContainerCreate, ContainerView, DetachRequest,
        DisconnectRequest, EndpointStatsView, Info, NetworkCreate, NetworkView, StatsView, Status,
    },
    conflict,
    datapath::{self, Datapath},
    driver::{self, Attachment, Ctx},
    error::{Error, Result},
    invalid,
    ipam::{self, Pool, Pool6},
    model::{
        Container, DriverKind, Endpoint, Ipam, Ipam6, MacAddr, Netns, Network, Process, RuntimeRef,
        State, new_id, now,
    },
    netlink::{Netlink, RTPROT_DNET},
    netns, not_found, spec,
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
    runtime_ipam: runtime_ipam::RuntimeIpam,
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
        runtime_net::spawn_runtime_collector(&engine);
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

    pub async fn create_container(&self, req: ContainerCreate) -> Result<ContainerView> {
        let mut inner = self.inner.lock().await;
        let id = inner.create_container(req, &self.exits).await?;
        Ok(inner.container_view(&inner.state.containers[&id]))
    }

    pub async fn containers(&self) -> Vec<ContainerView> {
        let inner = self.inner.lock().await;
        let mut v: Vec<ContainerView> = inner
            .state
            .containers
            .values()
            .map(|c| inner.container_view(c))
            .collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        v
    }

    pub async fn container(&self, key: &str) -> Result<ContainerView> {
        let inner = self.inner.lock().await;
        let c = inner.find_container(key)?;
        Ok(inner.container_view(c))
    }

    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let c = inner.find_container(key)?.clone();
        if let Some(p) = &c.process
            && process::alive(p)
            && !force
        {
            return Err(conflict!(
                "container {} is running: stop it first or use `dnet rm -f`",
                c.name
            ));
        }
        inner.remove_container(&c.id).await
    }

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

    /// The translated flows.
    pub async fn conntrack(&self) -> Result<Vec<conntrack::FlowView>> {
        let inner = self.inner.lock().await;
        let entries = inner.ctx.dp.conntrack()?;
        let entries6 = inner.ctx.dp.conntrack6()?;
        let now = conntrack::now_ns();
        let t = inner.cfg.nat.timeouts;
        Ok(conntrack::flows(&entries)
            .iter()
            .map(|f| conntrack::view(f, now, &t))
            .chain(
                conntrack::flows(&entries6)
                    .iter()
                    .map(|f| conntrack::view(f, now, &t)),
            )
            .collect())
    }

    /// Empties the conntrack table; returns how many entries went.
    pub async fn flush_conntrack(&self) -> Result<usize> {
        let mut inner = self.inner.lock().await;
        let keys: Vec<_> = inner
            .ctx
            .dp
            .conntrack()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        inner.ctx.dp.ct_remove(&keys)?;
        let keys6: Vec<_> = inner
            .ctx
            .dp
            .conntrack6()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        inner.ctx.dp.ct_remove(&keys6)?;
        Ok(keys.len() + keys6.len())
    }

    /// Removes foreground containers whose `dnet run` is gone, and notes
    /// the exit of detached processes.
    async fn reap(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let orphans: Vec<String> = inner
            .state
            .containers
            .values()
            .filter(|c| c.owner.as_ref().is_some_and(|o| !process::alive(o)))
            .map(|c| c.id.clone())
            .collect();
        for id in orphans {
            tracing::info!(container = %id, "its dnet run is gone: removing");
            inner.remove_container(&id).await?;
        }
        let exited: Vec<(String, i32)> = inner
            .state
            .containers
            .values()
            .filter_map(|c| {
                let p = c.process.as_ref()?;
                if p.exit_code.is_some() || process::alive(p) {
                    return None;
                }
                let code = self.exits.lock().expect("exits lock").remove(&p.pid);
                Some((c.id.clone(), code.unwrap_or(-1)))
            })
            .collect();
        if !exited.is_empty() {
            let mut st = inner.state.clone();
            for (id, code) in exited {
                if let Some(p) = st.containers.get_mut(&id).and_then(|c| c.process.as_mut()) {
                    p.exit_code = Some(code);
                }
            }
            inner.commit(st)?;
        }
        Ok(())
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

    /// Makes `state`, prepared with `Store::prepare` and written, the
    /// committed state (an endpoint's addition). The sync of the publish
    /// line, which only a power loss needs, runs after the answer on a
    /// blocking thread: the prepared changes were synced before, so a load
    /// finds the old state or the new one, whole, and a power loss also
    /// takes every link, filter and namespace the new record describes.
    fn commit_prepared(&mut self, state: State) -> Result<()> {
        let sync = self.store.publish(&state)?;
        tokio::task::spawn_blocking(move || {
            if let Err(e) = sync.run() {
                tracing::warn!("syncing the state log: {e}");
            }
        });
        self.commit_published(state);
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

    /// Subnets routed where the daemon runs (its own routes aside).
    async fn routed_subnets(&self) -> Result<Vec<Ipv4Network>> {
        Ok(self
            .ctx
            .nl
            .routes()
            .await?
            .into_iter()
            .filter(|r| {
                r.table == 254
                    && r.prefix > 0
                    && r.protocol != netlink_packet_route::route::RouteProtocol::Other(RTPROT_DNET)
            })
            .filter_map(|r| Ipv4Network::new(r.dst, r.prefix).ok())
            .collect())
    }

    /// IPv6 subnets routed where the daemon runs (its own routes, the
    /// default route, link-local and multicast aside).
    async fn routed_subnets6(&self) -> Result<Vec<Ipv6Network>> {
        let special: [Ipv6Network; 2] = [
            "fe80::/10".parse().expect("a literal"),
            "ff00::/8".parse().expect("a literal"),
        ];
        Ok(self
            .ctx
            .nl
            .routes6()
            .await?
            .into_iter()
            .filter(|r| {
                r.table == 254
                    && r.prefix > 0
                    && r.protocol != netlink_packet_route::route::RouteProtocol::Other(RTPROT_DNET)
            })
            .filter_map(|r| Ipv6Network::new(r.dst, r.prefix).ok())
            .filter(|n| !special.iter().any(|s| s.overlaps(*n)))
            .collect())
    }

    async fn ensure_predefined(&mut self) -> Result<()> {
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

    async fn create_network(&mut self, req: NetworkCreate, predefined: bool) -> Result<Network> {
        self.create_network_for(req, predefined, None).await
    }

    /// [`Inner::create_network`] for another runtime, which knows the
    /// network by `runtime` (a Docker network id).
    async fn create_network_for(
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
            runtime,
            runtime_ipam: false,
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

    /// The subnet, gateway and range of a new network of `kind`, checked
    /// against the other networks, the pools `held` for another runtime's
    /// networks (dnet's IPAM for Docker) and the routes where the daemon
    /// runs. Without a kind (a runtime's pool, whose driver is not said), a
    /// subnet given is taken as a LAN's and one picked as a host's own.
    async fn choose_ipam(
        &self,
        req: &NetworkCreate,
        kind: Option<DriverKind>,
        held: &[Ipv4Network],
    ) -> Result<Ipam> {
        let lan = match kind {
            Some(k) => driver::caps(k).lan_subnet,
            None => req.subnet.is_some(),
        };
        // Two networks on LANs are checked by their driver, which knows
        // their parents and says so.
        let mut others: Vec<(String, Ipv4Network)> = self
            .state
            .networks
            .values()
            .filter(|n| !(lan && driver::caps(n.driver).lan_subnet))
            .filter_map(|n| n.ipam.map(|i| (format!("network {:?}", n.name), i.subnet)))
            .collect();
        others.extend(held.iter().map(|s| ("a pool handed out".to_owned(), *s)));
        // A LAN's subnet (a macvlan network's) is routed where the daemon
        // runs: the parent's route to it is expected, not a clash.
        let routes = if !lan {
            self.routed_subnets().await?
        } else {
            Vec::new()
        };
        let subnet = match &req.subnet {
            Some(s) => parse_net("subnet", s)?,
            None => {
                if req.gateway.is_some() || req.ip_range.is_some() {
                    return Err(invalid!("--gateway and --ip-range need --subnet"));
                }
                if let Some(kind) = kind.filter(|_| lan) {
                    return Err(invalid!(
                        "a {kind} network needs --subnet (the parent LAN's)"
                    ));
                }
                let mut taken: Vec<Ipv4Network> = others.iter().map(|(_, s)| *s).collect();
                taken.extend(&routes);
                ipam::next_free_subnet(&taken).ok_or_else(|| {
                    conflict!("no free subnet left in the default pools: give --subnet")
                })?
            }
        };
        pool::choose(
            subnet,
            req.gateway.as_deref(),
            req.ip_range.as_deref(),
            &others,
            &routes,
        )
    }

    /// The IPv6 side of a new network (`None`: IPv4 only), and the ULA /48
    /// when this is the first time one is chosen (to be committed with it).
    /// `held`: the IPv6 pools handed out for another runtime's networks;
    /// without a kind, a pool for such a network (the runtime does not say
    /// its driver: the network must then be one that can be dual-stack).
    async fn choose_ipam6(
        &self,
        req: &NetworkCreate,
        kind: Option<DriverKind>,
        held: &[Ipv6Network],
    ) -> Result<(Option<Ipam6>, Option<Ipv6Network>)> {
        if !req.ipv6 {
            if let Some(s) = req.subnet6.as_ref().or(req.gateway6.as_ref()) {
                return Err(invalid!(
                    "{s} is an IPv6 address: an IPv6 subnet or gateway needs --ipv6"
                ));
            }
            if let Some(r) = &req.ip_range6 {
                return Err(invalid!(
                    "{r} is an IPv6 range: an IPv6 --ip-range needs --ipv6"
                ));
            }
            return Ok((None, None));
        }
        if let Some(kind) = kind
            && !driver::caps(kind).ipv6
        {
            return Err(invalid!(
                "--ipv6 is supported on bridge networks only (not {kind})"
            ));
        }
        let mut others: Vec<(String, Ipv6Network)> = self
            .state
            .networks
            .values()
            .filter_map(|n| n.ipam6.map(|i| (format!("network {:?}", n.name), i.subnet)))
            .collect();
        others.extend(held.iter().map(|s| ("a pool handed out".to_owned(), *s)));
        let routes = self.routed_subnets6().await?;
        let mut new_ula = None;
        let subnet = match &req.subnet6 {
            Some(s) => parse_net6("subnet", s)?,
            None => {
                if req.gateway6.is_some() || req.ip_range6.is_some() {
                    return Err(invalid!(
                        "an IPv6 --gateway or --ip-range needs an IPv6 --subnet"
                    ));
                }
                let ula = match self.state.ula48 {
                    Some(u) => u,
                    None => *new_ula.insert(ipam::random_ula48()),
                };
                let mut taken: Vec<Ipv6Network> = others.iter().map(|(_, s)| *s).collect();
                taken.extend(&routes);
                ipam::next_free_subnet6(ula, &taken)
                    .ok_or_else(|| conflict!("no free /64 left in {ula}: give an IPv6 --subnet"))?
            }
        };
        let ipam6 = pool::choose(
            subnet,
            req.gateway6.as_deref(),
            req.ip_range6.as_deref(),
            &others,
            &routes,
        )?;
        Ok((Some(ipam6), new_ula))
    }

    async fn remove_network(&mut self, key: &str) -> Result<()> {
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

    /// A new endpoint of `net` for container `c` (address, MAC, names).
    async fn new_endpoint(
        &self,
        net: &Network,
        c: &Container,
        opts: &EndpointOpts<'_>,
    ) -> Result<Endpoint> {
        self.check_runtime_addressing(net, c)?;
        let ip = opts.ip;
        for a in opts.aliases {
            spec::validate_name("alias", a)?;
        }
        let mac = opts.mac.map(attach::parse_mac).transpose()?;
        if let Some(name) = opts.ifname {
            attach::validate_ifname(name)?;
            if c.endpoints
                .iter()
                .any(|e| e.ifname.as_deref() == Some(name))
            {
                return Err(conflict!(
                    "container {} already has an interface {name}",
                    c.name
                ));
            }
        }
        if let Some(m) = mac
            && let Some((o, _)) = self
                .state
                .endpoints_of(&net.id)
                .find(|(_, e)| e.mac == Some(m))
        {
            return Err(conflict!(
                "MAC {m} is already used by container {} in network {}",
                o.name,
                net.name
            ));
        }
        let mut ep = Endpoint {
            network_id: net.id.clone(),
            ifname: None,
            host_ifname: None,
            ip: None,
            ip6: None,
            mac: None,
            slot: None,
            aliases: opts.aliases.to_vec(),
        };
        let requested6 = opts.ip6.map(|s| parse_ip6("--ip6", s)).transpose()?;
        if let (Some(a), None) = (requested6, net.ipam6) {
            return Err(invalid!(
                "--ip6 {a}: network {} is not dual-stack (it was made without --ipv6)",
                net.name
            ));
        }
        let Some(ipam) = net.ipam else {
            if ip.is_some() || mac.is_some() {
                return Err(invalid!(
                    "network {} has no addresses to choose from",
                    net.name
                ));
            }
            return Ok(ep);
        };
        let requested = ip.map(|s| parse_ip("--ip", s)).transpose()?;
        let reserved = driver::driver(net.driver)
            .prepare(&self.ctx, &self.state, net, c, &mut ep)
            .await?;
        let pool = Pool::new(ipam.subnet, Some(ipam.gateway), ipam.ip_range)?;
        let mut used = self.state.used_addresses(&net.id);
        used.extend(reserved);
        let addr = pool.allocate(&used, requested)?;
        if let Some(i6) = net.ipam6 {
            let pool6 = Pool6::new(i6.subnet, Some(i6.gateway), i6.ip_range)?;
            ep.ip6 = Some(pool6.allocate(&self.state.used_addresses6(&net.id), requested6)?);
        }
        ep.ifname = Some(match opts.ifname {
            Some(name) => name.to_owned(),
            None => {
                let n = (0..)
                    .find(|i| {
                        !c.endpoints
                            .iter()
                            .any(|e| e.ifname.as_deref() == Some(&format!("eth{i}")))
                    })
                    .expect("a free interface name");
                format!("eth{n}")
            }
        });
        ep.ip = Some(addr);
        ep.mac = Some(mac.unwrap_or(MacAddr(dnet_common::addr::docker_mac(addr))));
        Ok(ep)
    }

    fn netns_path(&self, c: &Container) -> PathBuf {
        match &c.netns {
            Netns::Owned { path } | Netns::External { path, .. } => path.clone(),
            Netns::Host | Netns::Runtime => netns::own_path(),
        }
    }

    async fn attach(&mut self, c: &Container, ep: &Endpoint) -> Result<()> {
        let net = self.state.networks[&ep.network_id].clone();
        let path = self.netns_path(c);
        // An interface of the namespace being removed in the background may
        // still hold the name this one takes.
        // (`Engine::settled_in` waited without the lock: this wait is for
        // a removal that began since, and bounded too.)
        if matches!(c.netns, Netns::Owned { .. } | Netns::External { .. })
            && self.ctx.reaper.pending() > 0
            && let Ok(id) = netns::identity(&path)
            && !self.ctx.reaper.settled_in(id, self.cfg.removal_wait).await
        {
            return Err(removal_stuck(&path, self.cfg.removal_wait));
        }
        let a = Attachment {
            container: c,
            endpoint: ep,
            network: &net,
            netns: &path,
            primary: self.gives_default_route(c, ep),
        };
        driver::driver(net.driver).attach(&mut self.ctx, &a).await
    }

    /// Removes what [`Inner::attach`] made, before it returns.
    async fn detach(&mut self, c: &Container, ep: &Endpoint) {
        self.unmake(c, ep, false).await
    }

    /// Removes an endpoint the state no longer holds: what the kernel
    /// takes long to remove finishes in the background (`driver::Reaper`).
    async fn remove(&mut self, c: &Container, ep: &Endpoint) {
        self.unmake(c, ep, true).await
    }

    async fn unmake(&mut self, c: &Container, ep: &Endpoint, background: bool) {
        let Some(net) = self.state.networks.get(&ep.network_id).cloned() else {
            return;
        };
        let path = self.netns_path(c);
        let a = Attachment {
            container: c,
            endpoint: ep,
            network: &net,
            netns: &path,
            primary: false,
        };
        let d = driver::driver(net.driver);
        let errors = if background {
            d.remove(&mut self.ctx, &a).await
        } else {
            d.detach(&mut self.ctx, &a).await
        };
        for e in errors {
            tracing::warn!(container = %c.name, network = %net.name, "detaching: {e}");
        }
    }

    async fn create_container(
        &mut self,
        req: ContainerCreate,
        exits: &Arc<StdMutex<HashMap<u32, i32>>>,
    ) -> Result<String> {
        let id = new_id();
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("ctr-{}", &id[..8]));
        spec::validate_name("container", &name)?;
        if self
            .state
            .find_container(&name)
            .is_some_and(|c| c.name == name)
        {
            return Err(conflict!("container name {name:?} is already in use"));
        }
        let net = self
            .find_network(req.network.as_deref().unwrap_or("bridge"))?
            .clone();
        let ports = self.check_ports(&req.publish, &net)?;
        let dns = req
            .dns
            .iter()
            .map(|s| parse_ip("--dns", s))
            .collect::<Result<Vec<_>>>()?;
        if let Some(h) = &req.hostname {
            etc::validate_hostname(h)?;
        }
        let caps = driver::caps(net.driver);
        if caps.host_netns && (req.hostname.is_some() || !dns.is_empty()) {
            // As Docker: the host's own files and name are the container's.
            return Err(invalid!(
                "--hostname and --dns do not go with the host network: the container shares the host's name and files"
            ));
        }
        if req.detach && req.command.is_empty() {
            return Err(invalid!("a detached container needs a command"));
        }
        let owner = match req.owner_pid {
            Some(pid) => Some(Process {
                pid,
                start_time: process::start_time(pid)
                    .ok_or_else(|| invalid!("owner process {pid} is not running"))?,
                command: req.command.clone(),
                exit_code: None,
                log: PathBuf::new(),
            }),
            None => None,
        };
        let netns = if caps.host_netns {
            Netns::Host
        } else {
            Netns::Owned {
                path: self.cfg.netns_dir().join(&id),
            }
        };
        let mut c = Container {
            id: id.clone(),
            name,
            created: now(),
            netns,
            endpoints: Vec::new(),
            ports,
            process: None,
            owner,
            runtime: None,
            dns,
            hostname: req.hostname.clone(),
        };
        let ep = self
            .new_endpoint(
                &net,
                &c,
                &EndpointOpts {
                    ip: req.ip.as_deref(),
                    ip6: req.ip6.as_deref(),
                    aliases: &req.aliases,
                    ..Default::default()
                },
            )
            .await?;
        c.endpoints.push(ep.clone());

        // Kernel objects, then the commit; undone on any failure.
        if let Netns::Owned { path } = &c.netns {
            netns::create(path)?;
        }
        let made = async {
            self.make_container_ns(&c)?;
            self.attach(&c, &ep).await?;
            self.publish(&c)?;
            if req.detach {
                let path = self.netns_path(&c);
                let log = self.cfg.log_dir().join(format!("{id}.log"));
                let ns = self.ns_paths(&c);
                let mut child = process::spawn(&id, &path, ns.as_ref(), &req.command, &log)?;
                let pid = child
                    .id()
                    .ok_or_else(|| invalid!("the command exited at once"))?;
                c.process = Some(Process {
                    pid,
                    start_time: process::start_time(pid).unwrap_or(0),
                    command: req.command.clone(),
                    exit_code: None,
                    log,
                });
                let exits = exits.clone();
                tokio::spawn(async move {
                    let code = match child.wait().await {
                        Ok(s) => s.code().unwrap_or_else(|| {
                            use std::os::unix::process::ExitStatusExt as _;
                            128 + s.signal().unwrap_or(0)
                        }),
                        Err(_) => -1,
                    };
                    exits.lock().expect("exits lock").insert(pid, code);
                });
            }
            crash::point("container-create:made");
            let mut st = self.state.clone();
            st.containers.insert(id.clone(), c.clone());
            self.commit(st)
        }
        .await;
        if let Err(e) = made {
            self.teardown_container(&c, false).await;
            return Err(e);
        }
        tracing::info!(container = %c.name, id = %&id[..12], network = %net.name, ip = ?ep.ip, "container created");
        Ok(id)
    }

    /// Removes a container's kernel objects and processes (not its record);
    /// with `background`, its links go in the background (`Inner::remove`).
    async fn teardown_container(&mut self, c: &Container, background: bool) {
        if let Some(p) = &c.process {
            process::kill(p);
        }
        self.unpublish(c);
        for ep in c.endpoints.iter().rev() {
            self.unmake(c, ep, background).await;
        }
        // After the endpoints: no flow of the container can start after this.
        let addrs: Vec<Ipv4Addr> = c.endpoints.iter().filter_map(|e| e.ip).collect();
        self.forget_flows(&addrs);
        if let Netns::Owned { path } = &c.netns {
            process::kill_all_in(path);
            if c.process.is_some() {
                process::remove_cgroup(&c.id).await;
            }
            if let Err(e) = netns::remove(path) {
                tracing::warn!(container = %c.name, "removing its namespace: {e}");
            }
            self.remove_container_ns(c);
        }
    }

    /// Binds the containers' own /etc files again when the host's changed
    /// (a file renamed over one detaches the bind in every namespace), and
    /// follows the host's resolv.conf: the resolver's upstreams and the
    /// containers' own resolv.conf.
    fn follow_host_files(&mut self) {
        let now = etc::host_file_ids();
        if now != self.host_files {
            self.host_files = now;
            self.rebind_container_files();
        }
        // A missing file reads as empty, as at start.
        let text = std::fs::read_to_string(&self.cfg.resolv_conf).unwrap_or_default();
        if text != self.host_resolv {
            tracing::info!(path = %self.cfg.resolv_conf.display(), "the host's resolv.conf changed");
            self.host_resolv = text;
            self.dns.host_resolv_conf(&self.host_resolv);
            for c in self.state.containers.values() {
                self.refresh_container_files(c);
            }
        }
    }

    async fn remove_container(&mut self, id: &str) -> Result<()> {
        let c = self.state.containers[id].clone();
        let mut st = self.state.clone();
        st.containers.remove(id);
        self.commit(st)?;
        crash::point("container-remove:committed");
        self.teardown_container(&c, true).await;
        tracing::info!(container = %c.name, "container removed");
        Ok(())
    }

    async fn connect(&mut self, net_key: &str, req: ConnectRequest) -> Result<String> {
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

    /// A container record for a namespace made by someone else.
    fn external_container(&self, path: &str, name: Option<&str>) -> Result<Container> {
        let path = PathBuf::from(path);
        if !netns::is_netns(&path) {
            return Err(invalid!("{} is not a network namespace", path.display()));
        }
        let (dev, ino) = netns::identity(&path)?;
        // A container end there would be an interface of the host itself
        // (its routes replaced, its traffic taken for a container's).
        for (own, what) in [
            (netns::own_path(), "the daemon's own"),
            (PathBuf::from("/proc/1/ns/net"), "the host's (PID 1's)"),
        ] {
            if netns::identity(&own).ok() == Some((dev, ino)) {
                return Err(invalid!(
                    "{} is {what} network namespace: only a container's can be attached",
                    path.display()
                ));
            }
        }
        if let Some(c) = self.state.containers.values().find(|c| match &c.netns {
            Netns::External { dev: d, ino: i, .. } => (*d, *i) == (dev, ino),
            Netns::Owned { path: p } => netns::identity(p).ok() == Some((dev, ino)),
            Netns::Host => netns::identity(&netns::own_path()).ok() == Some((dev, ino)),
            Netns::Runtime => false,
        }) {
            return Ok(c.clone());
        }
        self.foreign_record(name, "ns", Netns::External { path, dev, ino })
    }

    /// A new record for a container another runtime made (named `name`,
    /// else `PREFIX-<id8>`), not yet in the state.
    fn foreign_record(&self, name: Option<&str>, prefix: &str, netns: Netns) -> Result<Container> {
        let id = new_id();
        let name = name
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{prefix}-{}", &id[..8]));
        match name.split_once('/') {
            // A pod's `NAMESPACE/NAME`, as CNI_ARGS' K8S_POD_NAMESPACE and
            // K8S_POD_NAME give it.
            Some((ns, pod)) => {
                spec::validate_name("pod namespace", ns)?;
                spec::validate_name("pod", pod)?;
            }
            None => spec::validate_name("container", &name)?,
        }
        if self.state.containers.values().any(|c| c.name == name) {
            return Err(conflict!("container name {name:?} is already in use"));
        }
        Ok(Container {
            id,
            name,
            created: now(),
            netns,
            endpoints: Vec::new(),
            ports: Vec::new(),
            process: None,
            owner: None,
            runtime: None,
            dns: Vec::new(),
            hostname: None,
        })
    }

    async fn disconnect(&mut self, net_key: &str, req: DisconnectRequest) -> Result<()> {
        self.detach_req(DetachRequest {
            network: Some(net_key.to_owned()),
            container: Some(req.container),
            runtime: None,
            missing_ok: false,
        })
        .await
    }

    fn attached_view(&self, c: &Container, e: &Endpoint) -> AttachedView {
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

    fn network_view(&self, n: &Network) -> NetworkView {
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
            runtime: n.runtime.clone(),
            containers: self
                .state
                .endpoints_of(&n.id)
                .map(|(c, e)| self.attached_view(c, e))
                .collect(),
            notes: driver::driver(n.driver).notes(n),
        }
    }

    fn container_view(&self, c: &Container) -> ContainerView {
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
