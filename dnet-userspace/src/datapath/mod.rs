//! The datapath: the one module that talks to aya.
//!
//! It loads the eBPF object embedded at build time, pins the maps under the
//! daemon's bpffs folder (`<bpffs>/maps/NAME`) so that a restarted daemon
//! adopts them, attaches the programs to the uplink with tcx links pinned
//! at `<bpffs>/host/` and to containers' host-side veths with cls_bpf
//! filters (see [`Datapath::attach_endpoint`]); either way forwarding goes
//! on while the daemon is down. It also reads and writes the maps.

mod batch;
mod bpffs;
mod lookup6;
mod mirror;
mod progs;
#[cfg(test)]
mod tests;
mod typed;

use std::{
    collections::HashSet,
    fs, io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        HashMap, IterableMap as _, LpmTrie, MapData, PerCpuValues, ProgramArray, lpm_trie::Key,
    },
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{NlOptions, TcAttachOptions, TcHandle},
    },
    util::nr_cpus,
};
pub use bpffs::{check as check_bpffs, ensure_mounted};
use dnet_common::{
    Config, CtAddr, CtEntry, CtEntryOf, CtKey, CtKeyOf, Endpoint, Endpoint6, EndpointStats, Ip6,
    MemberKey, NetFanout, Network, Network6, QuotaKey, Service, Service6, ServiceKey, ServiceKey6,
    addr::ipv4_be,
    maps as m,
    nat::{CT_F_COUNTED, CT_F_REPLY},
};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use typed::Maps;

/// The eBPF object, built from `dnet-ebpf` by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dnet"));

/// Program names (the entry points in `dnet-ebpf/src/main.rs`).
pub const PROG_FROM_CONTAINER: &str = "lxc_from_container";
pub const PROG_TO_CONTAINER: &str = "lxc_to_container";
/// IPv6 from a container, tail-called by [`PROG_FROM_CONTAINER`].
pub const PROG_FROM_CONTAINER6: &str = "lxc6_from_container";
/// NAT66 of a container's IPv6, tail-called by [`PROG_FROM_CONTAINER6`].
pub const PROG_NAT6_FROM_CONTAINER: &str = "lxc6_nat_from_container";
/// IPv6 on the uplink, tail-called by [`PROG_FROM_UPLINK`].
pub const PROG_FROM_UPLINK6: &str = "host6_from_uplink";
/// New flows to ports published over IPv6, tail-called by
/// [`PROG_FROM_UPLINK6`].
pub const PROG_PUBLISHED6: &str = "host6_publish";
/// A routed IPv6 network's packets to the world, tail-called by
/// [`PROG_FROM_CONTAINER6`].
pub const PROG_ROUTED6_FROM_CONTAINER: &str = "lxc6_routed_from_container";
/// Packets from the world to a routed IPv6 network's containers,
/// tail-called by [`PROG_FROM_UPLINK6`].
pub const PROG_ROUTED6_FROM_UPLINK: &str = "host6_routed";
/// ICMPv6 errors from the world about NAT66 flows, tail-called by
/// [`PROG_FROM_UPLINK6`].
pub const PROG_ICMP6_ERROR_FROM_UPLINK: &str = "host6_icmp6_error";
/// ICMPv6 errors from containers about flows to ports published over
/// IPv6, tail-called by [`PROG_FROM_CONTAINER6`].
pub const PROG_ICMP6_ERROR_FROM_CONTAINER: &str = "lxc6_icmp6_error";
/// "Packet too big" and "time exceeded" for containers' NAT66 packets,
/// tail-called by [`PROG_NAT6_FROM_CONTAINER`].
pub const PROG_ICMP6_REPLY: &str = "lxc6_icmp6_reply";
/// "Time exceeded" for the world's packets to containers whose hop limit
/// runs out at dnet's hop, tail-called by [`PROG_FROM_UPLINK6`],
/// [`PROG_PUBLISHED6`] and [`PROG_ROUTED6_FROM_UPLINK`].
pub const PROG_ICMP6_REPLY_FROM_UPLINK: &str = "host6_icmp6_reply";
/// Hairpin over IPv6, tail-called by [`PROG_FROM_CONTAINER6`].
pub const PROG_HAIRPIN6: &str = "lxc6_hairpin";
/// Containers' IPv6 fragments bound for NAT66, tail-called by
/// [`PROG_NAT6_FROM_CONTAINER`].
pub const PROG_NAT6_FRAG: &str = "lxc6_nat_frag";
/// The world's IPv6 fragments to the uplink's IPv6 address, tail-called by
/// [`PROG_FROM_UPLINK6`].
pub const PROG_FRAG6_FROM_UPLINK: &str = "host6_frag";
/// The world's first IPv6 fragments of new flows to ports published over
/// IPv6, tail-called by [`PROG_FRAG6_FROM_UPLINK`].
pub const PROG_FRAG6_PUBLISHED: &str = "host6_frag_publish";
pub const PROG_FROM_UPLINK: &str = "host_from_uplink";
pub const PROG_TO_UPLINK: &str = "host_to_uplink";
/// The socket hooks, with the operation each is attached to.
pub const SOCK_PROGS: [&str; 8] = [
    "sock_connect4",
    "sock_sendmsg4",
    "sock_recvmsg4",
    "sock_getpeername4",
    "sock_connect6",
    "sock_sendmsg6",
    "sock_recvmsg6",
    "sock_getpeername6",
];
const TC_PROGS: [&str; 18] = [
    PROG_FROM_CONTAINER,
    PROG_FROM_CONTAINER6,
    PROG_NAT6_FROM_CONTAINER,
    PROG_NAT6_FRAG,
    PROG_FRAG6_FROM_UPLINK,
    PROG_FRAG6_PUBLISHED,
    PROG_HAIRPIN6,
    PROG_FROM_UPLINK6,
    PROG_PUBLISHED6,
    PROG_ROUTED6_FROM_CONTAINER,
    PROG_ROUTED6_FROM_UPLINK,
    PROG_ICMP6_ERROR_FROM_UPLINK,
    PROG_ICMP6_ERROR_FROM_CONTAINER,
    PROG_ICMP6_REPLY,
    PROG_ICMP6_REPLY_FROM_UPLINK,
    PROG_TO_CONTAINER,
    PROG_FROM_UPLINK,
    PROG_TO_UPLINK,
];
/// The container programs of a host-side veth, with their hooks.
const EP_PROGS: [(&str, TcAttachType, u32); 2] = [
    (
        PROG_FROM_CONTAINER,
        TcAttachType::Ingress,
        crate::netlink::CLSACT_INGRESS,
    ),
    (
        PROG_TO_CONTAINER,
        TcAttachType::Egress,
        crate::netlink::CLSACT_EGRESS,
    ),
];
/// The priority and handle of dnet's filter at each hook of a host-side
/// veth (`tc filter show dev VETH ingress`: `pref 1 ... handle 0x1`).
const EP_FILTER_PRIORITY: u16 = 1;
const EP_FILTER_HANDLE: TcHandle = TcHandle::new(0, 1);
/// The uplink's programs, with their hooks and pins.
const UPLINK_PROGS: [(TcAttachType, &str, &str); 2] = [
    (TcAttachType::Ingress, PROG_FROM_UPLINK, "uplink-ingress"),
    (TcAttachType::Egress, PROG_TO_UPLINK, "uplink-egress"),
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("link of {name}: {source}")]
    Link {
        name: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("object has no {0}")]
    Missing(&'static str),
    #[error("parsing the eBPF object: {0}")]
    Object(#[source] Box<aya_obj::ParseError>),
}

type Result<T, E = DatapathError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map {
        name,
        source: Box::new(e),
    }
}

fn prog_err(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> DatapathError {
    move |e| DatapathError::Program {
        name,
        source: Box::new(e),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DatapathError + 'a {
    move |source| DatapathError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A program as `dnet info` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProgramSummary {
    pub name: String,
    pub id: u32,
    pub tag: String,
    pub attach: String,
}

/// A map as `dnet info` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MapSummary {
    pub name: String,
    pub id: u32,
    pub max_entries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<PathBuf>,
}

pub struct Datapath {
    ebpf: Ebpf,
    /// The maps userspace uses, taken from `ebpf` once at load.
    maps: Maps,
    /// Every map of the load as `dnet info` shows it (read at load: a map's
    /// id and size never change).
    map_summaries: Vec<MapSummary>,
    /// The daemon's bpffs folder; `None` loads unpinned (tests).
    pins: Option<PathBuf>,
    /// Links of an unpinned datapath, kept alive here instead of in bpffs.
    held_links: Vec<FdLink>,
    /// The ids of the pinned maps this load uses (see
    /// [`Datapath::filter_current`]); none when unpinned.
    pinned_maps: Vec<u32>,
    /// The endpoint maps by interface as written (see `mirror.rs`); read
    /// at first use.
    mirror: Option<mirror::Mirror>,
    /// Each network's broadcast members by index, as written (see
    /// [`Datapath::set_members`]); a network's is read at its first use.
    members: std::collections::HashMap<u32, Vec<u32>>,
}

/// For [`Datapath::ct_remove_if_created`]: whenever the entry was made.
pub const ANY_CREATED: u64 = u64::MAX;

/// The suffix of a link pinned beside the one it replaces, before it is
/// renamed over it (bpffs refuses names with a dot).
const NEW_PIN: &str = "-new";

impl Datapath {
    /// Loads the object and every program, so that a verifier rejection
    /// fails here. With `pins`, maps are pinned there (reused if present).
    pub fn load(pins: Option<&Path>) -> Result<Datapath> {
        Datapath::load_with(pins, m::CT_ENTRIES)
    }

    /// As [`Datapath::load`], with the conntrack map's size.
    pub fn load_with(pins: Option<&Path>, ct_entries: u32) -> Result<Datapath> {
        let mut loader = EbpfLoader::new();
        let sizes = map_sizes(ct_entries);
        for (name, n) in sizes {
            loader.map_max_entries(name, n);
        }
        let map_paths: Vec<(&'static str, PathBuf)> = match pins {
            Some(dir) => {
                let maps_dir = dir.join("maps");
                fs::create_dir_all(&maps_dir).map_err(io_err("create", &maps_dir))?;
                for sub in ["links", "host"] {
                    let d = dir.join(sub);
                    fs::create_dir_all(&d).map_err(io_err("create", &d))?;
                    // A swap cut short by a crash leaves its new pin (see
                    // `keep_link`); the old one is still in place.
                    for e in fs::read_dir(&d).map_err(io_err("read", &d))?.flatten() {
                        if e.file_name().to_string_lossy().ends_with(NEW_PIN) {
                            remove_if_exists(&e.path())?;
                        }
                    }
                }
                for name in m::RETIRED {
                    remove_if_exists(&maps_dir.join(name))?;
                }
                drop_reshaped(&maps_dir, &sizes)?;
                m::ALL
                    .iter()
                    .chain([&m::PROGS])
                    .map(|n| (*n, maps_dir.join(n)))
                    .collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        for name in TC_PROGS {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing(name))?
                .try_into()
                .map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
        }
        set_tail_calls(&mut ebpf)?;
        for name in SOCK_PROGS {
            let p: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing(name))?
                .try_into()
                .map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
        }
        let mut pinned_maps = Vec::with_capacity(map_paths.len());
        for (name, path) in &map_paths {
            let info = aya::maps::MapInfo::from_pin(path).map_err(map_err(name))?;
            pinned_maps.push(info.id());
        }
        let map_summaries = map_summaries(&ebpf, pins);
        let maps = Maps::take(&mut ebpf)?;
        Ok(Datapath {
            ebpf,
            maps,
            map_summaries,
            pins: pins.map(Path::to_owned),
            held_links: Vec::new(),
            pinned_maps,
            mirror: None,
            members: Default::default(),
        })
    }

    fn link_pin(&self, ifname: &str, dir: &str) -> Option<PathBuf> {
        self.pins
            .as_ref()
            .map(|p| p.join("links").join(format!("{ifname}-{dir}")))
    }

    /// Attaches the container programs to a host-side veth: a clsact qdisc
    /// and one direct-action cls_bpf filter at each hook (dnet's priority
    /// and handle), where this build's are not there yet. A filter of
    /// another build is replaced in place (every packet meets one of the
    /// two), and the tcx links an older build pinned for the veth go once
    /// the filters are in (tcx programs run before any filter).
    ///
    /// Not tcx, on purpose: each tcx attach waits for an RCU grace period
    /// under the rtnl lock (most of a connect's time), while a filter on a
    /// link that is still down costs a netlink round trip. The filters need
    /// no pin: they belong to the link's qdisc and outlive the daemon.
    pub fn attach_endpoint(&mut self, ifname: &str) -> Result<()> {
        let index = ifindex_of(ifname)?;
        match aya::programs::tc::qdisc_add_clsact(ifname) {
            Ok(()) => {}
            Err(aya::programs::tc::TcError::NetlinkError(e))
                if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(DatapathError::Program {
                    name: "clsact",
                    source: Box::new(e.into()),
                });
            }
        }
        for (prog, kind, parent) in EP_PROGS {
            let found = ep_filter(index, parent, ifname)?;
            if found.as_ref().is_some_and(|f| self.filter_current(f, prog)) {
                continue;
            }
            let p: &mut SchedClassifier = self
                .ebpf
                .program_mut(prog)
                .ok_or(DatapathError::Missing(prog))?
                .try_into()
                .map_err(prog_err(prog))?;
            let id = if found.is_some() {
                let link = aya::programs::tc::SchedClassifierLink::attached(
                    ifname,
                    kind,
                    EP_FILTER_PRIORITY,
                    EP_FILTER_HANDLE,
                    None,
                )
                .map_err(io_err("find", Path::new(ifname)))?;
                p.attach_to_link(link).map_err(prog_err(prog))?
            } else {
                p.attach_with_options(
                    ifname,
                    kind,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: EP_FILTER_PRIORITY,
                        handle: EP_FILTER_HANDLE,
                        classid: None,
                    }),
                )
                .map_err(prog_err(prog))?
            };
            let link = p.take_link(id).map_err(prog_err(prog))?;
            // Dropping the handle would delete the filter: it stays with
            // the link's qdisc (the handle holds no descriptor or memory
            // of its own, so nothing leaks).
            std::mem::forget(link);
        }
        self.detach_endpoint(ifname)
    }

    /// The filter `f` runs program `name` as this build loaded it: the same
    /// code (name and tag) on the same maps. A filter a daemon attached
    /// before its pinned maps were made anew (bpffs wiped, a map retired or
    /// resized) has the same tag but reads the orphaned maps: it is not
    /// current, and is replaced in place.
    fn filter_current(&self, f: &crate::netlink::BpfFilter, name: &str) -> bool {
        let Some(tag) = self.tag(name) else {
            return false;
        };
        f.name.as_deref() == Some(name)
            && f.tag.map(u64::from_be_bytes) == Some(tag)
            && f.id.is_some_and(|id| self.same_maps(id, name))
    }

    /// Program `id` uses the pinned maps this load's program `name` uses
    /// (its own `.rodata` and the like are per load).
    fn same_maps(&self, id: u32, name: &str) -> bool {
        let Some(info) = self.ebpf.program(name).and_then(|p| p.info().ok()) else {
            return false;
        };
        if info.id() == id {
            return true;
        }
        let Ok(Some(ours)) = info.map_ids() else {
            return false;
        };
        let Ok(theirs) = progs::map_ids(id) else {
            return false;
        };
        ours.iter()
            .filter(|i| self.pinned_maps.contains(i))
            .all(|i| theirs.contains(i))
    }

    /// Attaches `prog` to `ifname` at `kind` and pins the link at `pin`
    /// (see [`Datapath::keep_link`] for the swap).
    fn attach_tcx(
        &mut self,
        ifname: &str,
        kind: TcAttachType,
        prog: &'static str,
        pin: Option<PathBuf>,
    ) -> Result<()> {
        // tcx refuses one program twice at a hook: if this very program is
        // there already (beside a program of another build), the link pinned
        // at `pin` goes first.
        let id = self
            .ebpf
            .program(prog)
            .and_then(|p| p.info().ok())
            .map(|i| i.id());
        if let Some(pin) = &pin
            && SchedClassifier::query_tcx(ifname, kind)
                .is_ok_and(|(_, progs)| progs.iter().any(|p| Some(p.id()) == id))
        {
            remove_if_exists(pin)?;
        }
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog)
            .ok_or(DatapathError::Missing(prog))?
            .try_into()
            .map_err(prog_err(prog))?;
        let id = p.attach(ifname, kind).map_err(prog_err(prog))?;
        let link: FdLink = p
            .take_link(id)
            .map_err(prog_err(prog))?
            .try_into()
            .map_err(|e| DatapathError::Link {
                name: prog,
                source: Box::new(e),
            })?;
        self.keep_link(link, pin)
    }

    /// Pins `link` at `pin`, or keeps it here when the datapath is unpinned.
    /// A link already pinned there (a stale one, or another build's program)
    /// goes only once the new one, attached beside it, is pinned: the new
    /// pin is made beside the old and renamed over it, so every packet meets
    /// one of the two programs, and a failure leaves the old one in place.
    fn keep_link(&mut self, link: FdLink, pin: Option<PathBuf>) -> Result<()> {
        match pin {
            Some(pin) => {
                let new = PathBuf::from(format!("{}{NEW_PIN}", pin.display()));
                remove_if_exists(&new)?;
                // On failure the new link is dropped, and so detached.
                link.pin(&new).map_err(|e| DatapathError::Pin {
                    path: new.clone(),
                    source: Box::new(e),
                })?;
                if let Err(e) = fs::rename(&new, &pin) {
                    let _ = fs::remove_file(&new);
                    return Err(io_err("rename", &pin)(e));
                }
            }
            None => self.held_links.push(link),
        }
        Ok(())
    }

    fn host_pin(&self, name: &str) -> Option<PathBuf> {
        self.pins.as_ref().map(|p| p.join("host").join(name))
    }

    /// Attaches the uplink programs (tcx ingress and egress), each unless
    /// this build's already is.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<()> {
        for (kind, prog, pin) in UPLINK_PROGS {
            if !self.uplink_prog_attached(ifname, kind, prog, pin) {
                let pin = self.host_pin(pin);
                self.attach_tcx(ifname, kind, prog, pin)?;
            }
        }
        Ok(())
    }

    /// The uplink programs, as this build loaded them, are attached to
    /// `ifname` and pinned.
    pub fn uplink_attached(&self, ifname: &str) -> bool {
        UPLINK_PROGS
            .iter()
            .all(|&(kind, prog, pin)| self.uplink_prog_attached(ifname, kind, prog, pin))
    }

    fn uplink_prog_attached(
        &self,
        ifname: &str,
        kind: TcAttachType,
        prog: &str,
        pin: &str,
    ) -> bool {
        self.tcx_current(ifname, kind, prog) && self.host_pin(pin).is_none_or(|p| p.exists())
    }

    /// The tag (a hash of the instructions) of program `name` as this
    /// build loaded it.
    fn tag(&self, name: &str) -> Option<u64> {
        self.ebpf.program(name)?.info().ok().map(|i| i.tag())
    }

    /// Program `name`, as this build loaded it, is attached to `ifname` at
    /// `kind`, on the maps this load uses: one of another build's (a daemon
    /// of another version left it), or one on maps since made anew, must be
    /// swapped. A program whose link was just unpinned may still be
    /// listed beside it for a moment (the kernel releases links from a work
    /// queue), so this asks for ours, not for ours alone.
    fn tcx_current(&self, ifname: &str, kind: TcAttachType, name: &str) -> bool {
        let Some(tag) = self.tag(name) else {
            return false;
        };
        // The kernel keeps the first 15 bytes of a program's name.
        let kernel_name = &name[..name.len().min(15)];
        SchedClassifier::query_tcx(ifname, kind).is_ok_and(|(_, progs)| {
            progs.iter().any(|p| {
                p.name_as_str() == Some(kernel_name)
                    && p.tag() == tag
                    && self.same_maps(p.id(), name)
            })
        })
    }

    /// The link pinned at `pin` runs program `name` as this build loaded it,
    /// on the maps this load uses.
    fn pinned_link_current(&self, pin: &Path, name: &str) -> bool {
        let Some(tag) = self.tag(name) else {
            return false;
        };
        let Ok(link) = PinnedLink::from_pin(pin) else {
            return false;
        };
        // Dropping this handle closes a file descriptor; the pin holds the link.
        let Ok(info) = FdLink::from(link).info() else {
            return false;
        };
        let id = info.program_id();
        aya::programs::loaded_programs()
            .flatten()
            .any(|p| p.id() == id && p.tag() == tag && self.same_maps(id, name))
    }

    /// Attaches the socket hooks to the cgroup v2 hierarchy at `cgroup`,
    /// beside any other programs there (other daemons' included), unless
    /// their pinned links already exist.
    pub fn attach_sock_hooks(&mut self, cgroup: &Path) -> Result<()> {
        let dir = fs::File::open(cgroup).map_err(io_err("open", cgroup))?;
        for name in SOCK_PROGS {
            let pin = self.host_pin(name);
            if let Some(pin) = &pin
                && self.pinned_link_current(pin, name)
            {
                continue;
            }
            let p: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing(name))?
                .try_into()
                .map_err(prog_err(name))?;
            // A cgroup link always sits beside the cgroup's other programs
            // (the kernel attaches links with BPF_F_ALLOW_MULTI) and refuses
            // any flag, so the "single" mode here means: no flags.
            let id = p
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(prog_err(name))?;
            let link: FdLink = p
                .take_link(id)
                .map_err(prog_err(name))?
                .try_into()
                .map_err(|e| DatapathError::Link {
                    name,
                    source: Box::new(e),
                })?;
            self.keep_link(link, pin)?;
        }
        Ok(())
    }

    /// The CPUs whose limit counters the datapath sums (`Config::nr_cpus`).
    pub fn quota_cpus() -> u32 {
        nr_cpus().map(|n| n as u32).unwrap_or(1).min(m::MAX_CPUS)
    }

    /// Writes the NAT configuration.
    pub fn set_config(&mut self, cfg: &Config) -> Result<()> {
        let a = &mut self.maps.config;
        a.set(0, cfg, 0).map_err(map_err(m::CONFIG))
    }

    pub fn config(&self) -> Result<Config> {
        let a = &self.maps.config;
        a.get(&0, 0).map_err(map_err(m::CONFIG))
    }

    /// Publishes a port.
    pub fn set_service(&mut self, key: &ServiceKey, svc: &Service) -> Result<()> {
        let h = &mut self.maps.services;
        h.insert(key, svc, 0).map_err(map_err(m::SERVICES))
    }

    /// Unpublishes a port; a missing one is fine.
    pub fn clear_service(&mut self, key: &ServiceKey) -> Result<()> {
        let h = &mut self.maps.services;
        absent_is_fine(h.remove(key)).map_err(map_err(m::SERVICES))
    }

    pub fn services(&self) -> Result<Vec<(ServiceKey, Service)>> {
        let h = &self.maps.services;
        h.iter().map(|r| r.map_err(map_err(m::SERVICES))).collect()
    }

    /// Publishes a port over IPv6.
    pub fn set_service6(&mut self, key: &ServiceKey6, svc: &Service6) -> Result<()> {
        let h = &mut self.maps.services6;
        h.insert(key, svc, 0).map_err(map_err(m::SERVICES6))
    }

    /// Unpublishes an IPv6 port; a missing one is fine.
    pub fn clear_service6(&mut self, key: &ServiceKey6) -> Result<()> {
        let h = &mut self.maps.services6;
        absent_is_fine(h.remove(key)).map_err(map_err(m::SERVICES6))
    }

    pub fn services6(&self) -> Result<Vec<(ServiceKey6, Service6)>> {
        let h = &self.maps.services6;
        h.iter().map(|r| r.map_err(map_err(m::SERVICES6))).collect()
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        conntrack_of(&self.maps.ct, m::CT)
    }

    /// Every IPv6 conntrack entry (NAT66).
    pub fn conntrack6(&self) -> Result<Vec<(dnet_common::CtKey6, dnet_common::CtEntry6)>> {
        conntrack_of(&self.maps.ct6, m::CT6)
    }

    /// Forgets every fragmented IPv4 datagram the datapath follows
    /// (`DNET_FRAGS`, 16-byte keys and 8-byte values, per load): tests that
    /// replay frames start from none.
    #[cfg(test)]
    pub fn forget_fragments(&mut self) {
        let map = self.ebpf.map_mut("DNET_FRAGS").expect("DNET_FRAGS");
        let mut h: aya::maps::HashMap<_, [u8; 16], [u8; 8]> = map.try_into().expect("a hash");
        let keys: Vec<[u8; 16]> = h.keys().map(|k| k.expect("a key")).collect();
        for k in keys {
            h.remove(&k).expect("remove");
        }
    }

    /// Removes conntrack entries; missing ones are fine. A flow's first
    /// entry goes before its reply entry, whatever the order of `keys`:
    /// while the first is there, the datapath holds its reply tuple (and
    /// NAT port) for it.
    pub fn ct_remove<A: Family>(&mut self, keys: &[CtKeyOf<A>]) -> Result<()> {
        let keys: Vec<(CtKeyOf<A>, u64)> = keys.iter().map(|k| (*k, ANY_CREATED)).collect();
        self.ct_remove_if_created(&keys).map(|_| ())
    }

    /// Removes each entry whose `created_ns` is still the one given (an
    /// entry made meanwhile under the same key stays; [`ANY_CREATED`]
    /// matches any); returns how many went. First entries go before reply
    /// entries, as in [`Datapath::ct_remove`].
    pub fn ct_remove_if_created<A: Family>(&mut self, keys: &[(CtKeyOf<A>, u64)]) -> Result<usize> {
        let h = A::table(&mut self.maps);
        let mut n = 0;
        let mut charged = Vec::new();
        for replies in [false, true] {
            for (k, created) in keys {
                let Ok(e) = h.get(k, 0) else { continue };
                if (e.flags & CT_F_REPLY != 0) != replies
                    || (*created != ANY_CREATED && e.created_ns != *created)
                {
                    continue;
                }
                match h.remove(k) {
                    // Removed here: a charged flow's charge comes back.
                    Ok(()) if e.flags & CT_F_COUNTED != 0 => charged.push((*k, e.endpoint_be)),
                    r => absent_is_fine(r).map_err(map_err(A::CT))?,
                }
                n += 1;
            }
        }
        self.quota_closed(&charged)?;
        Ok(n)
    }

    /// Gives back, in `DNET_CT_CLOSED`, the charges of the flows whose
    /// first entries (`keys`, charged ones, with the endpoint each names)
    /// the daemon removed.
    fn quota_closed<A: CtAddr>(&mut self, keys: &[(CtKeyOf<A>, u32)]) -> Result<()> {
        let mut gone: std::collections::HashMap<QuotaKey, i64> = std::collections::HashMap::new();
        for (k, ep) in keys {
            for q in [QuotaKey::opener(k, *ep), QuotaKey::destination(k, *ep)] {
                *gone.entry(q).or_default() += 1;
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let h = &mut self.maps.ct_closed;
        for (q, n) in gone {
            let was = h.get(&q, 0).unwrap_or(0);
            h.insert(q, was + n, 0).map_err(map_err(m::CT_CLOSED))?;
        }
        Ok(())
    }

    /// The limit counters per key (`QuotaKey`): the datapath's, summed over
    /// the CPUs it sums (`Config::nr_cpus`, at most `MAX_CPUS`: on a host
    /// with more, charges on the others are not seen by the limits), and
    /// the daemon's.
    fn quota_parts(&self) -> Result<std::collections::HashMap<QuotaKey, (i64, i64)>> {
        let cpus = self.config()?.nr_cpus as usize;
        let opened = &self.maps.ct_opened;
        let closed = &self.maps.ct_closed;
        let mut out: std::collections::HashMap<QuotaKey, (i64, i64)> =
            std::collections::HashMap::new();
        for r in opened.iter() {
            let (k, per_cpu) = r.map_err(map_err(m::CT_OPENED))?;
            out.entry(k).or_default().0 += per_cpu.iter().take(cpus).sum::<i64>();
        }
        for r in closed.iter() {
            let (k, n) = r.map_err(map_err(m::CT_CLOSED))?;
            out.entry(k).or_default().1 += n;
        }
        Ok(out)
    }

    /// Live flows per limit key with any (`QuotaKey`), as the datapath
    /// judges new flows by them.
    pub fn quota(&self) -> Result<Vec<(QuotaKey, u64)>> {
        Ok(self
            .quota_parts()?
            .into_iter()
            .map(|(k, (opened, closed))| (k, opened - closed))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k, n as u64))
            .collect())
    }

    /// Sets the limit counters to the truth: the charged flows
    /// (`CT_F_COUNTED` first entries) in `DNET_CT` per key. The counters
    /// drift: a closing packet that gives a charge back between the
    /// collector's read of an entry and its removal gives it back twice,
    /// and on a host with more than `MAX_CPUS` CPUs charges on the others
    /// are never summed while their releases may be. The daemon's counter
    /// is set so that the datapath's sum less it is the truth; keys with no
    /// charged flow are forgotten (the datapath makes them again when
    /// needed), the datapath's counter first, so that a flow it charges
    /// between the two removals counts from zero. Returns how many keys
    /// were forgotten.
    ///
    /// The table is read before the counters: a flow charged or given back
    /// in between is off by one in the count until the next sweep, which
    /// puts it right.
    pub fn quota_sweep(&mut self) -> Result<usize> {
        if self.quota_parts()?.is_empty() {
            // No counter: nothing was charged, nothing to read.
            return Ok(0);
        }
        let mut truth = charged_flows(&self.conntrack()?);
        for (k, n) in charged_flows(&self.conntrack6()?) {
            *truth.entry(k).or_default() += n;
        }
        let parts = self.quota_parts()?;
        let idle: Vec<QuotaKey> = parts
            .keys()
            .filter(|k| !truth.contains_key(k))
            .copied()
            .collect();
        {
            let h = &mut self.maps.ct_opened;
            for k in &idle {
                absent_is_fine(h.remove(k)).map_err(map_err(m::CT_OPENED))?;
            }
        }
        let h = &mut self.maps.ct_closed;
        for k in &idle {
            absent_is_fine(h.remove(k)).map_err(map_err(m::CT_CLOSED))?;
        }
        for (k, n) in &truth {
            let (opened, closed) = parts.get(k).copied().unwrap_or_default();
            if opened - closed != *n {
                h.insert(k, opened - n, 0).map_err(map_err(m::CT_CLOSED))?;
            }
        }
        Ok(idle.len())
    }

    /// Removes a subnet from the LPM map only (its id may be another
    /// network's now); a missing entry is fine.
    pub fn clear_subnet(&mut self, subnet: Ipv4Network) -> Result<()> {
        let t = &mut self.maps.subnets;
        absent_is_fine(t.remove(&subnet_key(subnet))).map_err(map_err(m::SUBNETS))
    }

    /// Inserts a conntrack entry (tests, and nothing else).
    pub fn ct_insert(&mut self, key: &CtKey, e: &CtEntry) -> Result<()> {
        let h = &mut self.maps.ct;
        h.insert(key, e, 0).map_err(map_err(m::CT))
    }

    /// The container programs, as this build loaded them, are attached to
    /// `ifname` (its filters), and no tcx link of an older build is pinned
    /// for it (its program would run first).
    pub fn endpoint_attached(&self, ifname: &str) -> bool {
        let Ok(index) = ifindex_of(ifname) else {
            return false;
        };
        let no_pin = |dir| self.link_pin(ifname, dir).is_none_or(|p| !p.exists());
        EP_PROGS.iter().all(|&(prog, _, parent)| {
            ep_filter(index, parent, ifname)
                .is_ok_and(|f| f.is_some_and(|f| self.filter_current(&f, prog)))
        }) && no_pin("ingress")
            && no_pin("egress")
    }

    /// Removes the tcx link pins an older build made for `ifname`'s
    /// programs (this build pins none for a veth: its filters go with the
    /// link).
    pub fn detach_endpoint(&mut self, ifname: &str) -> Result<()> {
        for dir in ["ingress", "egress"] {
            if let Some(pin) = self.link_pin(ifname, dir) {
                remove_if_exists(&pin)?;
            }
        }
        Ok(())
    }

    /// Where an older build pinned `ifname`'s container program links (none
    /// when unpinned), for whoever removes them after the interface
    /// (`driver::Reaper`).
    pub fn endpoint_pins(&self, ifname: &str) -> Vec<PathBuf> {
        ["ingress", "egress"]
            .into_iter()
            .filter_map(|dir| self.link_pin(ifname, dir))
            .collect()
    }

    /// Interfaces with links an older build pinned.
    pub fn pinned_interfaces(&self) -> Result<Vec<String>> {
        let Some(dir) = self.pins.as_ref().map(|p| p.join("links")) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err("read", &dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix("-ingress")
                    .or_else(|| n.strip_suffix("-egress"))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Writes a network's entry and its subnet.
    pub fn set_network(&mut self, dp_id: u32, subnet: Ipv4Network, net: &Network) -> Result<()> {
        let a = &mut self.maps.networks;
        a.set(dp_id, net, 0).map_err(map_err(m::NETWORKS))?;
        let t = &mut self.maps.subnets;
        t.insert(&subnet_key(subnet), dp_id, 0)
            .map_err(map_err(m::SUBNETS))?;
        Ok(())
    }

    /// Sets the sources that may open flows to published ports from the
    /// world (`0.0.0.0/0`, `::/0`: any of that family; a family none of
    /// whose prefixes is listed opens none). The new prefixes go in before
    /// the old ones go, so a source listed in both is never refused
    /// meanwhile.
    pub fn set_publish_from(&mut self, prefixes: &[IpNetwork]) -> Result<()> {
        let v4: Vec<Key<u32>> = prefixes
            .iter()
            .filter_map(|p| match p {
                IpNetwork::V4(p) => Some(subnet_key(*p)),
                IpNetwork::V6(_) => None,
            })
            .collect();
        let v6: Vec<Key<[u8; 16]>> = prefixes
            .iter()
            .filter_map(|p| match p {
                IpNetwork::V6(p) => Some(subnet6_key(*p)),
                IpNetwork::V4(_) => None,
            })
            .collect();
        set_prefixes(&mut self.maps.publish_from, m::PUBLISH_FROM, &v4)?;
        set_prefixes(&mut self.maps.publish_from6, m::PUBLISH_FROM6, &v6)
    }

    /// The network entry at `dp_id`.
    pub fn network(&self, dp_id: u32) -> Result<Network> {
        let a = &self.maps.networks;
        a.get(&dp_id, 0).map_err(map_err(m::NETWORKS))
    }

    /// Removes a network's entries.
    pub fn clear_network(&mut self, dp_id: u32, subnet: Option<Ipv4Network>) -> Result<()> {
        let a = &mut self.maps.networks;
        a.set(dp_id, Network::default(), 0)
            .map_err(map_err(m::NETWORKS))?;
        self.set_members(dp_id, &[])?;
        if let Some(subnet) = subnet {
            let t = &mut self.maps.subnets;
            absent_is_fine(t.remove(&subnet_key(subnet))).map_err(map_err(m::SUBNETS))?;
        }
        Ok(())
    }

    /// Subnets in the LPM map, with their network ids.
    pub fn subnets(&self) -> Result<Vec<(Ipv4Network, u32)>> {
        let t = &self.maps.subnets;
        t.iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let net = Ipv4Network::new(
                        dnet_common::addr::ipv4_from_be(k.data()),
                        k.prefix_len() as u8,
                    )
                    .expect("prefix from the kernel is valid");
                    (net, v)
                })
                .map_err(map_err(m::SUBNETS))
            })
            .collect()
    }

    /// Makes `ifindexes` (host-side veths) the members that get a network's
    /// broadcasts. Only what differs is written, in an order that keeps
    /// every member that stays reachable by a broadcast running meanwhile:
    /// a member that goes leaves its index to the last one (copied there
    /// before the count shrinks), a new one is written before the count
    /// grows to take it in.
    ///
    /// The members as written are kept (read from the maps once per
    /// network), so a call writes only the difference, with no read.
    pub fn set_members(&mut self, dp_id: u32, ifindexes: &[u32]) -> Result<()> {
        let mut now = match self.members.remove(&dp_id) {
            Some(now) => now,
            None => {
                let (now, stale) = self.member_entries(dp_id)?;
                // Left behind by a daemon stopped halfway: beyond the count,
                // never read.
                for index in stale {
                    self.remove_member(dp_id, index)?;
                }
                now
            }
        };
        // A write that fails leaves the cache out (read again next time).
        self.write_members(dp_id, &mut now, ifindexes)?;
        self.members.insert(dp_id, now);
        Ok(())
    }

    fn write_members(&mut self, dp_id: u32, now: &mut Vec<u32>, ifindexes: &[u32]) -> Result<()> {
        let want: HashSet<u32> = ifindexes.iter().copied().collect();
        // Going: from the top down, so that the last member (moved into the
        // hole) has been looked at already. A duplicate goes too.
        let mut kept = HashSet::new();
        let mut i = now.len();
        while i > 0 {
            i -= 1;
            if want.contains(&now[i]) && kept.insert(now[i]) {
                continue;
            }
            let last = now.len() - 1;
            if i != last {
                self.put_member(dp_id, i, now[last])?;
                now[i] = now[last];
            }
            self.put_member_count(dp_id, last)?;
            self.remove_member(dp_id, last)?;
            now.pop();
        }
        // Coming.
        for &ifindex in ifindexes {
            if kept.insert(ifindex) {
                self.put_member(dp_id, now.len(), ifindex)?;
                now.push(ifindex);
                self.put_member_count(dp_id, now.len())?;
            }
        }
        Ok(())
    }

    fn put_member(&mut self, dp_id: u32, index: usize, ifindex: u32) -> Result<()> {
        let h = &mut self.maps.net_member;
        h.insert(member_key(dp_id, index), ifindex, 0)
            .map_err(map_err(m::NET_MEMBER))
    }

    fn remove_member(&mut self, dp_id: u32, index: usize) -> Result<()> {
        let h = &mut self.maps.net_member;
        absent_is_fine(h.remove(&member_key(dp_id, index))).map_err(map_err(m::NET_MEMBER))
    }

    fn put_member_count(&mut self, dp_id: u32, count: usize) -> Result<()> {
        let a = &mut self.maps.net_fanout;
        let v = NetFanout {
            count: count as u32,
            _pad: 0,
        };
        a.set(dp_id, v, 0).map_err(map_err(m::NET_FANOUT))
    }

    /// A network's broadcast members (host-side veth ifindexes), in index
    /// order.
    pub fn members(&self, dp_id: u32) -> Result<Vec<u32>> {
        Ok(self.member_entries(dp_id)?.0)
    }

    /// A network's members by index (`0` where an index below the count
    /// has no entry), and the indexes of its entries beyond the count.
    fn member_entries(&self, dp_id: u32) -> Result<(Vec<u32>, Vec<usize>)> {
        let counts = &self.maps.net_fanout;
        let count = counts.get(&dp_id, 0).map_err(map_err(m::NET_FANOUT))?.count as usize;
        let fd = self.maps.net_member.map().fd().as_fd();
        // SAFETY: DNET_NET_MEMBER is a hash map of `MemberKey` keys and `u32`
        // values, as its typed handle says (the layout test in dnet-common
        // pins the key's size).
        let all: Vec<(MemberKey, u32)> = unsafe { batch::lookup_all(fd, 1024) }
            .map_err(io_err("read", Path::new(m::NET_MEMBER)))?;
        let mut members = vec![0; count.min(m::MAX_ENDPOINTS as usize)];
        let mut stale = Vec::new();
        for (k, ifindex) in all.into_iter().filter(|(k, _)| k.net_id == dp_id) {
            match members.get_mut(k.index as usize) {
                Some(slot) => *slot = ifindex,
                None => stale.push(k.index as usize),
            }
        }
        Ok((members, stale))
    }

    /// Writes an endpoint into both endpoint maps.
    pub fn set_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        let r = self.write_endpoint(ep);
        self.mirrored(r, |m| m.set(ep))
    }

    fn write_endpoint(&mut self, ep: &Endpoint) -> Result<()> {
        self.maps
            .ep_by_ip
            .insert(ep.addr_be, ep, 0)
            .map_err(map_err(m::ENDPOINTS_BY_IP))?;
        self.maps
            .ep_by_if
            .insert(ep.ifindex, ep, 0)
            .map_err(map_err(m::ENDPOINTS_BY_IF))
    }

    /// Removes an endpoint from both maps; missing entries are fine.
    pub fn clear_endpoint(&mut self, addr: Option<Ipv4Addr>, ifindex: Option<u32>) -> Result<()> {
        let r = self.remove_endpoint(addr, ifindex);
        self.mirrored(r, |m| m.clear(ifindex))
    }

    fn remove_endpoint(&mut self, addr: Option<Ipv4Addr>, ifindex: Option<u32>) -> Result<()> {
        let maps = &mut self.maps;
        for (h, name, key) in [
            (&mut maps.ep_by_ip, m::ENDPOINTS_BY_IP, addr.map(ipv4_be)),
            (&mut maps.ep_by_if, m::ENDPOINTS_BY_IF, ifindex),
        ] {
            let Some(key) = key else { continue };
            absent_is_fine(h.remove(&key)).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Entries of an endpoint map (`ENDPOINTS_BY_IP` or `ENDPOINTS_BY_IF`).
    pub fn endpoints(&self, name: &'static str) -> Result<Vec<(u32, Endpoint)>> {
        let h = self.maps.endpoints(name)?;
        h.iter().map(|r| r.map_err(map_err(name))).collect()
    }

    /// The entry at `key` of an endpoint map (`ENDPOINTS_BY_IP` or
    /// `ENDPOINTS_BY_IF`), if there is one: one lookup, however many
    /// endpoints there are.
    pub fn endpoint(&self, name: &'static str, key: u32) -> Result<Option<Endpoint>> {
        let h = self.maps.endpoints(name)?;
        match h.get(&key, 0) {
            Ok(e) => Ok(Some(e)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(None)
            }
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Writes a dual-stack network's IPv6 entry and its IPv6 subnet (the
    /// network's IPv4 entry, written by [`Datapath::set_network`], stays
    /// as it is: its gateway MAC answers for both gateways).
    pub fn set_network6(&mut self, dp_id: u32, subnet: Ipv6Network, net: &Network6) -> Result<()> {
        let a = &mut self.maps.networks6;
        a.set(dp_id, net, 0).map_err(map_err(m::NETWORKS6))?;
        let t = &mut self.maps.subnets6;
        t.insert(&subnet6_key(subnet), dp_id, 0)
            .map_err(map_err(m::SUBNETS6))
    }

    /// The IPv6 entry of network `dp_id` (`active == 0`: IPv4 only).
    pub fn network6(&self, dp_id: u32) -> Result<Network6> {
        let a = &self.maps.networks6;
        a.get(&dp_id, 0).map_err(map_err(m::NETWORKS6))
    }

    /// Removes a network's IPv6 entry and, when given, its IPv6 subnet; a
    /// missing subnet is fine. The network is IPv4-only afterwards (its
    /// IPv6 is dropped with the `ipv6` reason).
    pub fn clear_network6(&mut self, dp_id: u32, subnet: Option<Ipv6Network>) -> Result<()> {
        let a = &mut self.maps.networks6;
        a.set(dp_id, Network6::default(), 0)
            .map_err(map_err(m::NETWORKS6))?;
        if let Some(subnet) = subnet {
            self.clear_subnet6(subnet)?;
        }
        Ok(())
    }

    /// Removes an IPv6 subnet from the LPM map only (its id may be another
    /// network's now); a missing entry is fine.
    pub fn clear_subnet6(&mut self, subnet: Ipv6Network) -> Result<()> {
        let t = &mut self.maps.subnets6;
        absent_is_fine(t.remove(&subnet6_key(subnet))).map_err(map_err(m::SUBNETS6))
    }

    /// IPv6 subnets in the LPM map, with their network ids.
    pub fn subnets6(&self) -> Result<Vec<(Ipv6Network, u32)>> {
        let t = &self.maps.subnets6;
        t.iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let net = Ipv6Network::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8)
                        .expect("prefix from the kernel is valid");
                    (net, v)
                })
                .map_err(map_err(m::SUBNETS6))
            })
            .collect()
    }

    /// Gives the endpoint `ep` (already written by [`Datapath::set_endpoint`],
    /// on host-side veth `ifindex`) its IPv6 address: `ENDPOINTS6_BY_IP`
    /// first (peers may reach it), then `ENDPOINT6_BY_IF` (it may send).
    /// An endpoint without these entries has its IPv6 dropped.
    pub fn set_endpoint6(&mut self, ifindex: u32, addr: Ipv6Addr, ep: &Endpoint) -> Result<()> {
        let r = self.write_endpoint6(ifindex, addr, ep);
        self.mirrored(r, |m| m.set6(ifindex, addr))
    }

    fn write_endpoint6(&mut self, ifindex: u32, addr: Ipv6Addr, ep: &Endpoint) -> Result<()> {
        let h = &mut self.maps.ep6_by_ip;
        h.insert(ip6(addr), ep, 0)
            .map_err(map_err(m::ENDPOINTS6_BY_IP))?;
        let h = &mut self.maps.ep6_by_if;
        let v = Endpoint6 {
            addr: addr.octets(),
        };
        h.insert(ifindex, v, 0).map_err(map_err(m::ENDPOINT6_BY_IF))
    }

    /// Removes an endpoint's IPv6 entries (by address, by interface, or
    /// both); missing entries are fine. The interface's entry goes first,
    /// so the endpoint stops sending before peers stop reaching it.
    pub fn clear_endpoint6(&mut self, addr: Option<Ipv6Addr>, ifindex: Option<u32>) -> Result<()> {
        let r = self.remove_endpoint6(addr, ifindex);
        self.mirrored(r, |m| m.clear6(ifindex))
    }

    fn remove_endpoint6(&mut self, addr: Option<Ipv6Addr>, ifindex: Option<u32>) -> Result<()> {
        if let Some(ifindex) = ifindex {
            let h = &mut self.maps.ep6_by_if;
            absent_is_fine(h.remove(&ifindex)).map_err(map_err(m::ENDPOINT6_BY_IF))?;
        }
        if let Some(addr) = addr {
            let h = &mut self.maps.ep6_by_ip;
            absent_is_fine(h.remove(&ip6(addr))).map_err(map_err(m::ENDPOINTS6_BY_IP))?;
        }
        Ok(())
    }

    /// Entries of `ENDPOINTS6_BY_IP`: dual-stack endpoints by IPv6 address.
    pub fn endpoints6(&self) -> Result<Vec<(Ipv6Addr, Endpoint)>> {
        let h = &self.maps.ep6_by_ip;
        h.iter()
            .map(|r| {
                r.map(|(k, e)| (Ipv6Addr::from(k.addr), e))
                    .map_err(map_err(m::ENDPOINTS6_BY_IP))
            })
            .collect()
    }

    /// Entries of `ENDPOINT6_BY_IF`: (host-side veth ifindex, IPv6 address).
    pub fn endpoint6_addrs(&self) -> Result<Vec<(u32, Ipv6Addr)>> {
        let h = &self.maps.ep6_by_if;
        h.iter()
            .map(|r| {
                r.map(|(k, e)| (k, Ipv6Addr::from(e.addr)))
                    .map_err(map_err(m::ENDPOINT6_BY_IF))
            })
            .collect()
    }

    /// Zeroes a stats slot (before an endpoint takes it).
    pub fn reset_stats(&mut self, slot: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| io_err("count CPUs", Path::new("/sys"))(e))?;
        let zero = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
            .map_err(|e| io_err("build per-CPU value", Path::new(""))(e))?;
        let a = &mut self.maps.stats;
        a.set(slot, zero, 0).map_err(map_err(m::STATS))
    }

    /// A stats slot, summed over CPUs.
    pub fn stats(&self, slot: u32) -> Result<EndpointStats> {
        let a = &self.maps.stats;
        let per_cpu = a.get(&slot, 0).map_err(map_err(m::STATS))?;
        let mut sum = EndpointStats::default();
        for s in per_cpu.iter() {
            sum.rx_packets += s.rx_packets;
            sum.rx_bytes += s.rx_bytes;
            sum.tx_packets += s.tx_packets;
            sum.tx_bytes += s.tx_bytes;
            sum.translated += s.translated;
            for (d, x) in sum.drops.iter_mut().zip(s.drops.iter()) {
                *d += x;
            }
        }
        Ok(sum)
    }

    /// The loaded programs, for `dnet info`.
    pub fn programs(&self) -> Vec<ProgramSummary> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                let attach = match name {
                    PROG_FROM_CONTAINER => "tc ingress (cls_bpf), host-side veth",
                    PROG_TO_CONTAINER => "tc egress (cls_bpf), host-side veth",
                    PROG_FROM_CONTAINER6 => "tail call of lxc_from_container (IPv6)",
                    PROG_NAT6_FROM_CONTAINER => "tail call of lxc6_from_container (NAT66)",
                    PROG_HAIRPIN6 => "tail call of lxc6_from_container (hairpin)",
                    PROG_NAT6_FRAG => "tail call of lxc6_nat_from_container (fragments)",
                    PROG_FRAG6_FROM_UPLINK => "tail call of host6_from_uplink (fragments)",
                    PROG_FRAG6_PUBLISHED => "tail call of host6_frag (published ports)",
                    PROG_FROM_UPLINK6 => "tail call of host_from_uplink (IPv6)",
                    PROG_PUBLISHED6 => "tail call of host6_from_uplink (published ports)",
                    PROG_ROUTED6_FROM_CONTAINER => "tail call of lxc6_from_container (routed IPv6)",
                    PROG_ROUTED6_FROM_UPLINK => "tail call of host6_from_uplink (routed IPv6)",
                    PROG_ICMP6_ERROR_FROM_UPLINK => {
                        "tail call of host6_from_uplink (ICMPv6 errors)"
                    }
                    PROG_ICMP6_ERROR_FROM_CONTAINER => {
                        "tail call of lxc6_from_container (ICMPv6 errors)"
                    }
                    PROG_ICMP6_REPLY => {
                        "tail call of lxc6_nat/routed_from_container (ICMPv6 answers)"
                    }
                    PROG_ICMP6_REPLY_FROM_UPLINK => {
                        "tail call of host6_from_uplink/publish/routed (time exceeded)"
                    }
                    PROG_FROM_UPLINK => "tcx ingress, uplink",
                    PROG_TO_UPLINK => "tcx egress, uplink",
                    "sock_connect4" => "cgroup connect4",
                    "sock_sendmsg4" => "cgroup sendmsg4",
                    "sock_recvmsg4" => "cgroup recvmsg4",
                    "sock_getpeername4" => "cgroup getpeername4",
                    "sock_connect6" => "cgroup connect6",
                    "sock_sendmsg6" => "cgroup sendmsg6",
                    "sock_recvmsg6" => "cgroup recvmsg6",
                    "sock_getpeername6" => "cgroup getpeername6",
                    _ => "",
                };
                Some(ProgramSummary {
                    name: name.to_owned(),
                    id: info.id(),
                    tag: format!("{:016x}", info.tag()),
                    attach: attach.to_owned(),
                })
            })
            .collect()
    }

    /// The maps, for `dnet info`.
    pub fn maps(&self) -> Vec<MapSummary> {
        self.map_summaries.clone()
    }

    /// The program, for `BPF_PROG_TEST_RUN`.
    pub fn program(&self, name: &str) -> Option<&SchedClassifier> {
        self.ebpf.program(name)?.try_into().ok()
    }
}

/// Points the tail-call slots at this build's programs (a pinned array of
/// an older build's pointed at its own: programs still attached from it
/// jump to this build's from now on).
fn set_tail_calls(ebpf: &mut Ebpf) -> Result<()> {
    for (slot, name) in [
        (m::PROG_SLOT_FROM_CONTAINER6, PROG_FROM_CONTAINER6),
        (m::PROG_SLOT_NAT6_FROM_CONTAINER, PROG_NAT6_FROM_CONTAINER),
        (m::PROG_SLOT_FROM_UPLINK6, PROG_FROM_UPLINK6),
        (m::PROG_SLOT_PUBLISHED6, PROG_PUBLISHED6),
        (
            m::PROG_SLOT_ROUTED6_FROM_CONTAINER,
            PROG_ROUTED6_FROM_CONTAINER,
        ),
        (m::PROG_SLOT_ROUTED6_FROM_UPLINK, PROG_ROUTED6_FROM_UPLINK),
        (
            m::PROG_SLOT_ICMP6_ERROR_FROM_UPLINK,
            PROG_ICMP6_ERROR_FROM_UPLINK,
        ),
        (
            m::PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER,
            PROG_ICMP6_ERROR_FROM_CONTAINER,
        ),
        (m::PROG_SLOT_ICMP6_REPLY, PROG_ICMP6_REPLY),
        (m::PROG_SLOT_HAIRPIN6, PROG_HAIRPIN6),
        (m::PROG_SLOT_NAT6_FRAG_FROM_CONTAINER, PROG_NAT6_FRAG),
        (m::PROG_SLOT_FRAG6_FROM_UPLINK, PROG_FRAG6_FROM_UPLINK),
        (m::PROG_SLOT_FRAG6_PUBLISHED, PROG_FRAG6_PUBLISHED),
        (
            m::PROG_SLOT_ICMP6_REPLY_FROM_UPLINK,
            PROG_ICMP6_REPLY_FROM_UPLINK,
        ),
    ] {
        let fd = ebpf
            .program(name)
            .ok_or(DatapathError::Missing(name))?
            .fd()
            .map_err(prog_err(name))?
            .try_clone()
            .map_err(io_err("duplicate the descriptor of", Path::new(name)))?;
        let map = ebpf
            .map_mut(m::PROGS)
            .ok_or(DatapathError::Missing(m::PROGS))?;
        let mut a: ProgramArray<&mut MapData> =
            ProgramArray::try_from(map).map_err(map_err(m::PROGS))?;
        a.set(slot, &fd, 0).map_err(map_err(m::PROGS))?;
    }
    Ok(())
}

/// An address family's conntrack table, by its address type.
pub trait Family: CtAddr + aya::Pod {
    /// The table's map name.
    const CT: &'static str;
    /// The table.
    fn table(maps: &mut Maps) -> &mut HashMap<MapData, CtKeyOf<Self>, CtEntryOf<Self>>;
}

impl Family for u32 {
    const CT: &'static str = m::CT;
    fn table(maps: &mut Maps) -> &mut HashMap<MapData, CtKey, CtEntry> {
        &mut maps.ct
    }
}

impl Family for [u8; 16] {
    const CT: &'static str = m::CT6;
    fn table(maps: &mut Maps) -> &mut HashMap<MapData, dnet_common::CtKey6, dnet_common::CtEntry6> {
        &mut maps.ct6
    }
}

/// Makes the LPM trie `t` (map `name`) hold exactly `want` (value 1),
/// adding before removing.
fn set_prefixes<K: aya::Pod + PartialEq>(
    t: &mut LpmTrie<MapData, K, u8>,
    name: &'static str,
    want: &[Key<K>],
) -> Result<()> {
    for k in want {
        t.insert(k, 1, 0).map_err(map_err(name))?;
    }
    let same = |a: &Key<K>, b: &Key<K>| a.prefix_len() == b.prefix_len() && a.data() == b.data();
    let stale: Vec<Key<K>> = t
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !want.iter().any(|w| same(k, w)))
        .collect();
    for k in &stale {
        absent_is_fine(t.remove(k)).map_err(map_err(name))?;
    }
    Ok(())
}

/// Every entry of the conntrack table `h` (map `name`).
fn conntrack_of<A: CtAddr + aya::Pod>(
    h: &HashMap<MapData, CtKeyOf<A>, CtEntryOf<A>>,
    name: &'static str,
) -> Result<Vec<(CtKeyOf<A>, CtEntryOf<A>)>> {
    // SAFETY: the conntrack tables are hash maps of `CtKeyOf<A>` keys and
    // `CtEntryOf<A>` values, `A` their family's address (the layout test in
    // dnet-common pins their sizes), as the typed handle `h` says.
    unsafe { batch::lookup_all(h.map().fd().as_fd(), 4096) }
        .map_err(io_err("read", Path::new(name)))
}

/// The maps of a load, by name, as `dnet info` shows them.
fn map_summaries(ebpf: &Ebpf, pins: Option<&Path>) -> Vec<MapSummary> {
    let mut v: Vec<MapSummary> = ebpf
        .maps()
        .filter_map(|(name, map)| {
            let data = match map {
                aya::maps::Map::Array(d)
                | aya::maps::Map::HashMap(d)
                | aya::maps::Map::PerCpuLruHashMap(d)
                | aya::maps::Map::LruHashMap(d)
                | aya::maps::Map::LpmTrie(d)
                | aya::maps::Map::PerCpuArray(d)
                | aya::maps::Map::PerCpuHashMap(d)
                | aya::maps::Map::ProgramArray(d) => d,
                _ => return None,
            };
            let info = data.info().ok()?;
            Some(MapSummary {
                name: name.to_owned(),
                id: info.id(),
                max_entries: info.max_entries(),
                pinned: pins.map(|p| p.join("maps").join(name)),
            })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// A delete of a missing key succeeds: the entry is gone either way.
fn absent_is_fine(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn subnet_key(subnet: Ipv4Network) -> Key<u32> {
    Key::new(subnet.prefix() as u32, ipv4_be(subnet.network()))
}

fn subnet6_key(subnet: Ipv6Network) -> Key<[u8; 16]> {
    Key::new(subnet.prefix() as u32, subnet.network().octets())
}

fn ip6(addr: Ipv6Addr) -> Ip6 {
    Ip6 {
        addr: addr.octets(),
    }
}

/// The sizes set at load rather than by the object: the conntrack tables
/// hold `ct_entries` entries (two per flow), and the limit counters a key
/// per live flow at most and one per endpoint and family: both conntrack
/// tables (IPv4 and IPv6, `ct_entries / 2` flows each) keep their keys in
/// the same counter maps, so that one family's flows never use up the keys
/// the other's need.
fn map_sizes(ct_entries: u32) -> [(&'static str, u32); 4] {
    let quota_entries = ct_entries + 2 * m::MAX_ENDPOINTS;
    [
        (m::CT, ct_entries),
        (m::CT6, ct_entries),
        (m::CT_OPENED, quota_entries),
        (m::CT_CLOSED, quota_entries),
    ]
}

/// A map's shape as the kernel keeps it: type, key and value sizes, and
/// entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// The shape this build gives each pinned map: the object's definitions,
/// with the sizes of [`map_sizes`].
fn wanted_shapes(sizes: &[(&'static str, u32)]) -> Result<Vec<(&'static str, Shape)>> {
    let obj = aya_obj::Object::parse(OBJECT).map_err(|e| DatapathError::Object(Box::new(e)))?;
    m::ALL
        .iter()
        .chain([&m::PROGS])
        .map(|&name| {
            let def = obj.maps.get(name).ok_or(DatapathError::Missing(name))?;
            let max_entries = sizes
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(def.max_entries(), |(_, n)| *n);
            let shape = Shape {
                map_type: def.map_type(),
                key_size: def.key_size(),
                value_size: def.value_size(),
                max_entries,
            };
            Ok((name, shape))
        })
        .collect()
}

/// Removes each map pinned under `maps_dir` whose shape is not the one this
/// build gives it (an older build's layout or map type, such as the LRU
/// conntrack table of old, or another `--ct-entries`): a pinned map is
/// reused as it is, so this build's programs could not use it, or it would
/// keep its old size. The load makes it anew, and the daemon fills it
/// again (the conntrack tables start empty: translated flows start over).
fn drop_reshaped(maps_dir: &Path, sizes: &[(&'static str, u32)]) -> Result<()> {
    for (name, want) in wanted_shapes(sizes)? {
        let pin = maps_dir.join(name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&pin) else {
            continue;
        };
        let Some(map_type) = map_type_of(&info) else {
            continue;
        };
        let have = Shape {
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        if have != want {
            tracing::warn!(
                map = name,
                pinned = %have,
                wanted = %want,
                "replacing a pinned map of another shape (its entries start over)"
            );
            remove_if_exists(&pin)?;
        }
    }
    Ok(())
}

/// The kernel's number for the type of map `info`.
fn map_type_of(info: &aya::maps::MapInfo) -> Option<u32> {
    let t = info.map_type().ok()?;
    Some(t as u32)
}

fn member_key(dp_id: u32, index: usize) -> MemberKey {
    MemberKey {
        net_id: dp_id,
        index: index as u32,
    }
}

/// The index of link `ifname` in the calling thread's namespace.
fn ifindex_of(ifname: &str) -> Result<u32> {
    crate::netlink::index_of(ifname).ok_or_else(|| DatapathError::Io {
        op: "find",
        path: PathBuf::from(ifname),
        source: io::Error::from_raw_os_error(libc::ENODEV),
    })
}

/// dnet's filter at clsact hook `parent` of link `index`, if there is one.
fn ep_filter(index: u32, parent: u32, ifname: &str) -> Result<Option<crate::netlink::BpfFilter>> {
    Ok(crate::netlink::bpf_filters(index, parent)
        .map_err(io_err("list the filters of", Path::new(ifname)))?
        .into_iter()
        .find(|f| f.priority == EP_FILTER_PRIORITY && f.handle == u32::from(EP_FILTER_HANDLE)))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// The charged flows per limit key: first entries with `CT_F_COUNTED`,
/// each counted for its container and its destination (as `quota::charge`
/// counts them).
pub(crate) fn charged_flows<A: CtAddr>(
    entries: &[(CtKeyOf<A>, CtEntryOf<A>)],
) -> std::collections::HashMap<QuotaKey, i64> {
    let mut out = std::collections::HashMap::new();
    for (k, e) in entries {
        if e.flags & (CT_F_COUNTED | CT_F_REPLY) != CT_F_COUNTED {
            continue;
        }
        for q in [
            QuotaKey::opener(k, e.endpoint_be),
            QuotaKey::destination(k, e.endpoint_be),
        ] {
            *out.entry(q).or_default() += 1;
        }
    }
    out
}
