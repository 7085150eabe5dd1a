//! The leak check behind `cargo xtask test`: what a run of the suites left
//! in the machine's own view, whoever made it (the harness, dnet itself, a
//! runtime a later suite starts).
//!
//! Two kinds of things are looked at:
//!
//! - **Things named after a sandbox** (`dnt<pid>x<n>…`, `dnb<pid>x<n>…`, the
//!   datapath tests' `dnet-test-<pid>-…`): entries of the folders in
//!   [`Watch::named_dirs`] (sandbox folders in the temp dir, `/run/netns`,
//!   bpffs folders) and every mount under them (the nsfs bind mounts of
//!   container namespaces, which keep their links alive and which `ip netns
//!   list` does not show). Other runs of the suites share the machine, so
//!   one counts only when the pid in its name is one of this run's: each
//!   test process records its pid under the run folder named by
//!   [`RUN_DIR_ENV`] ([`record_pid`]).
//! - **The machine's own namespace**, which no run may change at all:
//!   links, addresses, routes (IPv4 and IPv6, every table), the programs
//!   attached to the cgroup v2 root (where the daemon's socket hooks sit),
//!   the paths of [`Watch::machine_paths`], and processes named in
//!   [`Watch::process_names`]. A cgroup program is someone else's when a
//!   link pinned in bpffs outside this run's folders holds it (another
//!   run's sandbox, a daemon of another engineer or of a runtime).
//!
//! Stray processes of this run are found by what ties them to it, never by
//! a machine-wide name search: the run's own `dnet` and `conntest`
//! binaries, the run folder in their environment (inherited by everything
//! a test starts: daemons, containers, servers), or a network namespace of
//! a sandbox of this run.
//!
//! Every lookup that fails makes the check fail: an unreadable
//! `/proc/self/mountinfo` is not "no mount left".

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::owner_pid;

/// Names the run folder: test processes record their pid there.
pub const RUN_DIR_ENV: &str = "DNET_TEST_RUN_DIR";

/// Records `pid` as one of this run's (names with it are this run's), if
/// the run has a folder. A test process calls it for itself before it
/// makes anything named after its pid.
pub fn record_pid(pid: u32) {
    let Some(dir) = std::env::var_os(RUN_DIR_ENV) else {
        return;
    };
    let pids = Path::new(&dir).join("pids");
    fs::create_dir_all(&pids)
        .and_then(|()| fs::write(pids.join(pid.to_string()), ""))
        .unwrap_or_else(|e| panic!("recording pid {pid} in {}: {e}", pids.display()));
}

/// The pids recorded in the run folder `run_dir`.
pub fn recorded_pids(run_dir: &Path) -> io::Result<BTreeSet<u32>> {
    let pids = run_dir.join("pids");
    let rd = match fs::read_dir(&pids) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        r => r?,
    };
    let mut out = BTreeSet::new();
    for e in rd {
        let name = e?.file_name();
        let pid = name.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name:?} in {}", pids.display()),
            )
        })?;
        out.insert(pid);
    }
    Ok(out)
}

/// What the check looks at beyond links, addresses, routes and cgroup
/// programs. Suites that start other software (dockerd, containerd,
/// podman) add their state here.
#[derive(Clone, Debug)]
pub struct Watch {
    /// Folders whose entries are named after a sandbox; an entry of this
    /// run, or a mount under one, is a leak.
    pub named_dirs: Vec<PathBuf>,
    /// Paths of the machine's own view that no run may change: whether
    /// they exist and, for a folder, its listing.
    pub machine_paths: Vec<PathBuf>,
    /// Process names (`comm`) of runtimes and their helpers: one that
    /// appears during the run is a leak unless it runs in a network
    /// namespace of another run's sandbox.
    pub process_names: Vec<String>,
}

impl Default for Watch {
    fn default() -> Watch {
        Watch {
            named_dirs: vec![
                std::env::temp_dir(),
                PathBuf::from("/run/netns"),
                PathBuf::from("/sys/fs/bpf"),
                // Docker's plugin sockets: a sandbox's dnet daemon serves
                // its driver there as `<sandbox name>.sock` and removes the
                // socket when it stops.
                PathBuf::from("/run/docker/plugins"),
            ],
            // Where CNI runtimes look (the CNI suites install into temp
            // folders only).
            machine_paths: vec![
                PathBuf::from("/opt/cni/bin"),
                PathBuf::from("/etc/cni/net.d"),
            ],
            process_names: [
                "dockerd",
                "containerd",
                "containerd-shim",
                "containerd-shim-runc-v2",
                "podman",
                "conmon",
                "netavark",
                "aardvark-dns",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// One line of `/proc/PID/mountinfo`: where, and what kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// Undoes the octal escapes of mountinfo paths (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/PID/mountinfo`; a line it cannot read is an error.
pub fn parse_mountinfo(text: &str) -> io::Result<Vec<Mount>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            // id parent maj:min root point options [optional...] - fstype source super
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-");
            match (f.get(4), sep.and_then(|i| f.get(i + 1))) {
                (Some(point), Some(fstype)) if sep > Some(5) => Ok(Mount {
                    point: PathBuf::from(unescape(point)),
                    fstype: (*fstype).to_owned(),
                }),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("mountinfo line {l:?}"),
                )),
            }
        })
        .collect()
}

/// The sandbox-named entry of `named_dirs` that `path` lies in (or is),
/// with the pid in its name.
fn sandbox_entry(path: &Path, named_dirs: &[PathBuf]) -> Option<(PathBuf, u32)> {
    named_dirs.iter().find_map(|d| {
        let first = path.strip_prefix(d).ok()?.components().next()?;
        let name = first.as_os_str().to_str()?;
        Some((d.join(name), owner_pid(name)?))
    })
}

/// Mounts under entries of `named_dirs` named after one of `pids`.
pub fn leaked_mounts(
    mounts: &[Mount],
    named_dirs: &[PathBuf],
    pids: &BTreeSet<u32>,
) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| sandbox_entry(&m.point, named_dirs).is_some_and(|(_, p)| pids.contains(&p)))
        .map(|m| format!("{} mount {}", m.fstype, m.point.display()))
        .collect()
}

/// Entries of `dir` named after one of `pids`. A missing folder has none.
fn named_entries(dir: &Path, pids: &BTreeSet<u32>) -> io::Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", dir.display())))?,
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        if let Some(pid) = e.file_name().to_str().and_then(owner_pid)
            && pids.contains(&pid)
        {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// A process as the check sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: u32,
    /// Clock ticks since boot: with the pid, names one process for good.
    pub start: u64,
    pub comm: String,
    pub exe: Option<PathBuf>,
    /// (device, inode) of its network namespace.
    pub netns: (u64, u64),
    /// Its environment holds `RUN_DIR_ENV=<run folder>`.
    pub run_dir: Option<PathBuf>,
}

/// Reads one process; `None` when it is gone (or a kernel thread).
fn read_proc(pid: u32) -> io::Result<Option<Proc>> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let gone = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
    };
    // A process that holds privileges beyond the caller's cannot be
    // looked into (EACCES); it cannot be one the run started either, since
    // every process of the run is the caller's or a descendant of it.
    let denied = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
    let stat = match fs::read_to_string(base.join("stat")) {
        Err(e) if gone(&e) => return Ok(None),
        r => r?,
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat"),
        ));
    };
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let start = fields.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
    let exe = match fs::read_link(base.join("exe")) {
        Ok(p) => Some(p),
        // Kernel threads have none; zombies neither.
        Err(e) if gone(&e) => None,
        Err(e) if denied(&e) => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("/proc/{pid}/exe: {e}"))),
    };
    let netns = match fs::metadata(base.join("ns/net")) {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) if gone(&e) || denied(&e) => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("/proc/{pid}/ns/net: {e}"))),
    };
    let environ = match fs::read(base.join("environ")) {
        Ok(b) => b,
        Err(e) if gone(&e) => Vec::new(),
        Err(e) if denied(&e) => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("/proc/{pid}/environ: {e}"),
            ));
        }
    };
    let prefix = format!("{RUN_DIR_ENV}=");
    let run_dir = environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix(&prefix).map(PathBuf::from));
    Ok(Some(Proc {
        pid,
        start,
        comm,
        exe,
        netns,
        run_dir,
    }))
}

/// Every process of the machine but this one.
pub fn processes() -> io::Result<Vec<Proc>> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc")? {
        let Some(pid) = e?.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me
            && let Some(p) = read_proc(pid)?
        {
            out.push(p);
        }
    }
    Ok(out)
}

/// What ties processes to one run of the suites.
#[derive(Clone, Debug)]
pub struct Run {
    /// The run folder (the value of [`RUN_DIR_ENV`]).
    pub dir: PathBuf,
    /// The binaries the run tests (`dnet`, `conntest`).
    pub bins: Vec<PathBuf>,
}

impl Run {
    /// The processes of this run: its binaries, its folder in their
    /// environment, or a namespace in `netns`.
    pub fn processes(&self, all: &[Proc], netns: &BTreeSet<(u64, u64)>) -> Vec<Proc> {
        all.iter()
            .filter(|p| {
                p.exe.as_ref().is_some_and(|e| self.bins.contains(e))
                    || p.run_dir.as_ref() == Some(&self.dir)
                    || netns.contains(&p.netns)
            })
            .cloned()
            .collect()
    }

    /// What this run left in the machine's view: entries named after its
    /// pids, mounts under them, and its processes not in `earlier` (those
    /// that were there before the run started).
    pub fn leftovers(&self, watch: &Watch, earlier: &[Proc]) -> io::Result<Vec<String>> {
        let pids = recorded_pids(&self.dir)?;
        let mut out = Vec::new();
        let mut netns = BTreeSet::new();
        for d in &watch.named_dirs {
            for e in named_entries(d, &pids)? {
                if let Ok(m) = fs::metadata(&e)
                    && d == Path::new("/run/netns")
                {
                    netns.insert((m.dev(), m.ino()));
                }
                out.push(format!("{}", e.display()));
            }
        }
        let mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo")?)?;
        out.extend(leaked_mounts(&mounts, &watch.named_dirs, &pids));
        let all = processes()?;
        for p in self.processes(&all, &netns) {
            if !earlier.iter().any(|e| (e.pid, e.start) == (p.pid, p.start)) {
                out.push(format!(
                    "process {} ({}{})",
                    p.pid,
                    p.comm,
                    p.exe
                        .as_ref()
                        .map(|e| format!(", {}", e.display()))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(out)
    }
}

/// The machine's own namespace as the check compares it: every part a
/// sorted list of normalised lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineView {
    pub parts: BTreeMap<String, BTreeSet<String>>,
    /// (attach type, program id) on the cgroup v2 root (none without v2).
    pub cgroup_programs: BTreeSet<(String, u32)>,
    /// Watched runtime processes: (pid, start, comm, netns).
    pub runtimes: BTreeSet<(u32, u64, String, (u64, u64))>,
    /// Detached containers' cgroups, `dnet/ns<inode>/<id>` under the
    /// cgroup v2 root: (path, inode of the daemon's namespace).
    pub container_cgroups: BTreeSet<(String, u64)>,
}

/// The folders under `<cgroup v2 root>/dnet/ns<inode>/`, each with the
/// inode of the namespace of the daemon that made it.
fn container_cgroups(root: &Path) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    for d in fs::read_dir(root.join("dnet"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(ino) = name.strip_prefix("ns").and_then(|i| i.parse().ok()) else {
            continue;
        };
        out.insert((d.path().display().to_string(), ino));
        for c in fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if c.path().is_dir() {
                out.insert((c.path().display().to_string(), ino));
            }
        }
    }
    out
}

/// `ip -j ARGS` of the machine's own namespace, each object without its
/// fields that change on their own (lifetimes, counters).
fn ip_lines(args: &[&str]) -> io::Result<BTreeSet<String>> {
    let o = Command::new("ip").arg("-j").args(args).output()?;
    if !o.status.success() {
        return Err(io::Error::other(format!(
            "ip -j {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("ip -j {args:?}: {e}")))?;
    const VOLATILE: &[&str] = &[
        "valid_life_time",
        "preferred_life_time",
        "expires",
        "cacheinfo",
        "stats",
        "stats64",
        "operstate",
        "flags",
        "linkinfo",
        "addr_info",
        "qdisc",
        "txqlen",
    ];
    let strip = |mut x: serde_json::Value| {
        if let Some(o) = x.as_object_mut() {
            o.retain(|k, _| !VOLATILE.contains(&k.as_str()));
        }
        x.to_string()
    };
    let mut out = BTreeSet::new();
    for x in v.as_array().cloned().unwrap_or_default() {
        // Addresses: one line per address, with its interface.
        if let Some(addrs) = x.get("addr_info").and_then(|a| a.as_array()) {
            for a in addrs {
                out.insert(format!("{} {}", x["ifname"], strip(a.clone())));
            }
            continue;
        }
        let kind = x["linkinfo"]["info_kind"].as_str().map(str::to_owned);
        let mut line = strip(x);
        if let Some(k) = kind {
            line.push_str(&format!(" kind {k}"));
        }
        out.insert(line);
    }
    Ok(out)
}

/// The machine's own namespace now (the caller's namespace: run it there).
pub fn machine_view(watch: &Watch) -> io::Result<MachineView> {
    let mut parts = BTreeMap::new();
    parts.insert("link".to_owned(), ip_lines(&["-d", "link", "show"])?);
    parts.insert("address".to_owned(), ip_lines(&["addr", "show"])?);
    parts.insert(
        "route".to_owned(),
        ip_lines(&["-4", "route", "show", "table", "all"])?,
    );
    parts.insert(
        "route6".to_owned(),
        ip_lines(&["-6", "route", "show", "table", "all"])?,
    );
    parts.insert("rule".to_owned(), ip_lines(&["rule", "show"])?);
    let mut paths = BTreeSet::new();
    for p in &watch.machine_paths {
        match fs::read_dir(p) {
            Ok(rd) => {
                for e in rd {
                    paths.insert(e?.path().display().to_string());
                }
                paths.insert(format!("{}/", p.display()));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                paths.insert(p.display().to_string());
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        }
    }
    parts.insert("path".to_owned(), paths);
    // The daemon's socket hooks sit on the cgroup v2 root, wherever it is
    // mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` beside v1).
    let mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo")?)?;
    let mut cgroup_programs = BTreeSet::new();
    let mut cgroups = BTreeSet::new();
    if let Some(root) = mounts.iter().find(|m| m.fstype == "cgroup2") {
        cgroups = container_cgroups(&root.point);
        cgroup_programs.extend(
            crate::bpf::cgroup_programs(&root.point)?
                .into_iter()
                .map(|(k, id)| (k.to_owned(), id)),
        );
    }
    let runtimes = processes()?
        .into_iter()
        .filter(|p| watch.process_names.contains(&p.comm))
        .map(|p| (p.pid, p.start, p.comm, p.netns))
        .collect();
    Ok(MachineView {
        parts,
        cgroup_programs,
        runtimes,
        container_cgroups: cgroups,
    })
}

/// What belongs to others (anything not named after a pid in `ours`):
/// the programs that links pinned anywhere else in bpffs hold (other runs'
/// sandboxes, another engineer's daemon, a runtime), and the network
/// namespaces of other runs' sandboxes. Their folders may go while this
/// looks; what cannot be read is not theirs (and so counts against the
/// run).
#[derive(Clone, Debug, Default)]
pub struct Foreign {
    pub programs: BTreeSet<u32>,
    pub netns: BTreeSet<(u64, u64)>,
}

/// Links pinned under `dir` (to `depth` levels): the programs they hold.
fn pinned_programs(dir: &Path, depth: u32, out: &mut BTreeSet<u32>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => pinned_programs(&path, depth - 1, out),
            Ok(t) if t.is_file() => {
                if let Ok(id) = crate::bpf::link_prog_id(&path) {
                    out.insert(id);
                }
            }
            _ => {}
        }
    }
}

pub fn foreign(ours: &BTreeSet<u32>) -> Foreign {
    let mut f = Foreign::default();
    let not_ours = |n: &str| owner_pid(n).is_none_or(|p| !ours.contains(&p));
    if let Ok(rd) = fs::read_dir("/sys/fs/bpf") {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(not_ours) {
                pinned_programs(&e.path(), 3, &mut f.programs);
            }
        }
    }
    let theirs = |n: &str| owner_pid(n).is_some_and(|p| !ours.contains(&p));
    if let Ok(rd) = fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(theirs)
                && let Ok(m) = fs::metadata(e.path())
            {
                f.netns.insert((m.dev(), m.ino()));
            }
        }
    }
    f
}

/// How the machine's own namespace changed from `before` to `after`,
/// leaving out what other runs' sandboxes explain.
pub fn machine_changes(
    before: &MachineView,
    after: &MachineView,
    foreign_before: &Foreign,
    foreign_after: &Foreign,
) -> Vec<String> {
    let mut out = Vec::new();
    let empty = BTreeSet::new();
    let kinds: BTreeSet<&String> = before.parts.keys().chain(after.parts.keys()).collect();
    for k in kinds {
        let (b, a) = (
            before.parts.get(k).unwrap_or(&empty),
            after.parts.get(k).unwrap_or(&empty),
        );
        out.extend(a.difference(b).map(|x| format!("new {k}: {x}")));
        out.extend(b.difference(a).map(|x| format!("{k} gone: {x}")));
    }
    for (t, id) in after.cgroup_programs.difference(&before.cgroup_programs) {
        if !foreign_after.programs.contains(id) {
            out.push(format!("new cgroup program on the root: {t} id {id}"));
        }
    }
    for (t, id) in before.cgroup_programs.difference(&after.cgroup_programs) {
        if !foreign_before.programs.contains(id) {
            out.push(format!("cgroup program gone from the root: {t} id {id}"));
        }
    }
    // Another run's daemon may still hold its cgroups; its namespace tells.
    let theirs: BTreeSet<u64> = foreign_after.netns.iter().map(|(_, ino)| *ino).collect();
    for (path, ino) in after
        .container_cgroups
        .difference(&before.container_cgroups)
    {
        if !theirs.contains(ino) {
            out.push(format!("new container cgroup: {path}"));
        }
    }
    for (pid, _, comm, netns) in after.runtimes.difference(&before.runtimes) {
        if !foreign_after.netns.contains(netns) {
            out.push(format!("new process {pid} ({comm})"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
31 22 0:4 net:[4026532345] /run/netns/dnt4242x0h rw shared:5 - nsfs nsfs rw
32 22 0:4 net:[4026532346] /tmp/dnt4242x0/state/netns/0123abcd rw shared:5 - nsfs nsfs rw
33 22 0:4 net:[4026532347] /tmp/dnt77x1/state/netns/feed rw - nsfs nsfs rw
34 22 0:4 net:[4026532348] /tmp/dnt4242x3/a\\040b rw - nsfs nsfs rw
35 22 0:30 / /sys/fs/bpf/dnet-test-4242-swap rw - bpf bpf rw
36 22 0:31 / /tmp/dnt4242 rw - tmpfs tmpfs rw
";

    fn dirs() -> Vec<PathBuf> {
        ["/tmp", "/run/netns", "/sys/fs/bpf"]
            .map(PathBuf::from)
            .to_vec()
    }

    #[test]
    fn a_leaked_container_namespace_mount_is_seen_and_blamed_by_pid() {
        let mounts = parse_mountinfo(MOUNTINFO).unwrap();
        let ours = BTreeSet::from([4242]);
        let found = leaked_mounts(&mounts, &dirs(), &ours);
        assert_eq!(
            found,
            [
                "nsfs mount /run/netns/dnt4242x0h",
                "nsfs mount /tmp/dnt4242x0/state/netns/0123abcd",
                "nsfs mount /tmp/dnt4242x3/a b",
                "bpf mount /sys/fs/bpf/dnet-test-4242-swap",
            ]
        );
        // Another run's (pid 77) is not ours; neither is a name without
        // the `x<n>` of a sandbox.
        assert!(leaked_mounts(&mounts, &dirs(), &BTreeSet::from([1])).is_empty());
        assert_eq!(
            leaked_mounts(&mounts, &dirs(), &BTreeSet::from([77])),
            ["nsfs mount /tmp/dnt77x1/state/netns/feed"]
        );
    }

    #[test]
    fn an_unreadable_mountinfo_line_is_an_error_not_nothing() {
        assert!(parse_mountinfo("31 22 0:4 net:[1] /run/netns/x rw\n").is_err());
        assert!(parse_mountinfo("garbage\n").is_err());
        assert!(parse_mountinfo("").unwrap().is_empty());
    }

    #[test]
    fn the_machines_changes_are_all_seen_but_other_runs_cgroup_programs() {
        let mut before = MachineView::default();
        before
            .parts
            .insert("route".into(), BTreeSet::from(["default via x".to_owned()]));
        before.cgroup_programs.insert(("connect4".into(), 7));
        let mut after = before.clone();
        assert!(
            machine_changes(&before, &after, &Foreign::default(), &Foreign::default()).is_empty()
        );
        after
            .parts
            .get_mut("route")
            .unwrap()
            .insert("10.0.0.0/8 dev veth1".to_owned());
        after.cgroup_programs.insert(("connect4".into(), 9));
        after.cgroup_programs.insert(("sendmsg4".into(), 10));
        after.cgroup_programs.remove(&("connect4".into(), 7));
        let theirs = Foreign {
            programs: BTreeSet::from([10]),
            netns: BTreeSet::new(),
        };
        let changes = machine_changes(&before, &after, &Foreign::default(), &theirs);
        assert_eq!(
            changes,
            [
                "new route: 10.0.0.0/8 dev veth1",
                "new cgroup program on the root: connect4 id 9",
                "cgroup program gone from the root: connect4 id 7",
            ]
        );
    }

    #[test]
    fn names_of_the_suites_carry_their_pid() {
        assert_eq!(owner_pid("dnt4242x0h"), Some(4242));
        assert_eq!(owner_pid("dnet-test-4242-swap"), Some(4242));
        assert_eq!(owner_pid("dnet-run-4242"), None);
        assert_eq!(owner_pid("docker"), None);
    }
}
