//! The state store: a snapshot and a log of the commits since.
//!
//! `state.json` holds the whole state as of some commit, in the format of
//! earlier versions (which kept only that file and rewrote it whole at
//! every commit: their folder loads as it is and migrates with its first
//! compaction). `state.log` holds the commits since, one line each: the
//! networks and containers a commit changed (or removed), and the small
//! rest of the state when it changed. A commit appends one line and syncs
//! the file, so its cost follows what it changed, not how much the state
//! holds (with 1,000 containers the whole file was ~1 MB per commit).
//!
//! Each line is `CRC32 JSON\n`, and is synced before the next is written:
//! only the last line can be torn by a crash. A load drops a torn last
//! line and cuts the log back to the whole lines before it, so an
//! operation is recorded whole or not at all; a bad line with whole lines
//! after it is corruption, and is reported.
//!
//! When the log outgrows the snapshot (and 1 MiB), the store writes a new
//! snapshot (temporary file, sync, rename, folder sync) and then empties
//! the log. A crash between the two leaves a log the new snapshot already
//! holds; replayed again it gives the same state (each line sets records to
//! their values or removes them), so that is consistent too.
//!
//! An exclusive `flock` on `lock` keeps a second daemon off the same folder.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use ipnetwork::Ipv6Network;
use serde::{Deserialize, Serialize};

use crate::model::{Container, Network, State};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state log {path} is corrupt at byte {offset}: whole commits follow a bad one")]
    CorruptLog { path: PathBuf, offset: u64 },
    #[error("another dnet daemon uses the state folder {0}")]
    Locked(PathBuf),
}

/// The snapshot's file name.
const SNAPSHOT: &str = "state.json";
/// The log's file name.
const LOG: &str = "state.log";
/// The log is compacted once it is larger than this and than the snapshot.
const COMPACT_MIN: u64 = 1 << 20;

pub struct Store {
    dir: PathBuf,
    /// The log, opened for appending by [`Store::load`].
    log: Option<File>,
    /// Bytes in the log.
    log_len: u64,
    /// Bytes in the snapshot when it was last read or written.
    snapshot_len: u64,
    /// The id of the next prepared commit.
    next_id: u64,
    /// The log is compacted once it is larger than this and than the
    /// snapshot ([`COMPACT_MIN`]; smaller in tests).
    compact_min: u64,
    /// The prepared commit not yet published or discarded: its id, and
    /// where its line starts in the log.
    pending: Option<(u64, u64)>,
    /// Held for the daemon's lifetime: the flock goes with it.
    _lock: nix::fcntl::Flock<File>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What a commit changed: records set (`Some`) or removed (`None`), and
/// the rest of the state when it changed.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Changes {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    networks: BTreeMap<String, Option<Network>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    containers: BTreeMap<String, Option<Container>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rest: Option<Rest>,
}

/// The state but its networks and containers (small).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Rest {
    ula48: Option<Ipv6Network>,
    default_route_due: BTreeSet<String>,
}

impl Rest {
    fn of(s: &State) -> Rest {
        Rest {
            ula48: s.ula48,
            default_route_due: s.default_route_due.clone(),
        }
    }
}

/// Records of `new` that differ from `old`'s, and those `new` lacks.
fn diff<V: Clone + PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> BTreeMap<String, Option<V>> {
    let mut d: BTreeMap<String, Option<V>> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    d.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    d
}

fn apply<V>(to: &mut BTreeMap<String, V>, changes: BTreeMap<String, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => to.insert(k, v),
            None => to.remove(&k),
        };
    }
}

impl Changes {
    fn between(old: &State, new: &State) -> Changes {
        let rest = Rest::of(new);
        Changes {
            networks: diff(&old.networks, &new.networks),
            containers: diff(&old.containers, &new.containers),
            rest: (rest != Rest::of(old)).then_some(rest),
        }
    }

    fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.containers.is_empty() && self.rest.is_none()
    }

    fn apply(self, s: &mut State) {
        apply(&mut s.networks, self.networks);
        apply(&mut s.containers, self.containers);
        if let Some(r) = self.rest {
            s.ula48 = r.ula48;
            s.default_route_due = r.default_route_due;
        }
    }
}

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// A commit.
    Commit(Changes),
    /// A commit written ahead (see [`Store::prepare`]): part of the state
    /// once a `Publish` of its id follows.
    Prepared {
        id: u64,
        changes: Changes,
    },
    Publish {
        id: u64,
    },
}

fn line(e: &Entry) -> Vec<u8> {
    let json = serde_json::to_vec(e).expect("log entry serializes");
    let mut l = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    l.extend_from_slice(&json);
    l.push(b'\n');
    l
}

/// The entry of a whole, intact line (without its `\n`).
fn parse_line(l: &[u8]) -> Option<Entry> {
    let (crc, json) = (l.get(..8)?, l.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    (l[8] == b' ' && crc32fast::hash(json) == crc)
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
}

/// The state in `dir`, read without taking the folder (a snapshot of a
/// running daemon's state, for tools and tests), with the length of the
/// log's whole lines and the next free prepared-commit id.
fn read_dir(dir: &Path) -> Result<(State, u64, u64, u64), StoreError> {
    let path = dir.join(SNAPSHOT);
    let (mut state, snapshot_len) = match fs::read(&path) {
        Ok(bytes) => (
            serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::Corrupt { path, source })?,
            bytes.len() as u64,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (State::default(), 0),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let path = dir.join(LOG);
    let log = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let mut prepared = BTreeMap::new();
    let mut next_id = 0;
    let mut at = 0;
    while at < log.len() {
        let entry = log[at..]
            .iter()
            .position(|&b| b == b'\n')
            .and_then(|n| Some((parse_line(&log[at..at + n])?, n)));
        let Some((entry, n)) = entry else {
            // A torn last line; whole lines after it are corruption.
            let later_whole = log[at..]
                .split(|&b| b == b'\n')
                .skip(1)
                .any(|l| parse_line(l).is_some());
            if later_whole {
                return Err(StoreError::CorruptLog {
                    path,
                    offset: at as u64,
                });
            }
            tracing::warn!(
                "{}: dropping {} bytes of a commit a crash cut short",
                path.display(),
                log.len() - at
            );
            break;
        };
        at += n + 1;
        match entry {
            Entry::Commit(c) => c.apply(&mut state),
            Entry::Prepared { id, changes } => {
                next_id = next_id.max(id + 1);
                prepared.insert(id, changes);
            }
            Entry::Publish { id } => {
                if let Some(c) = prepared.remove(&id) {
                    c.apply(&mut state);
                }
            }
        }
    }
    Ok((state, at as u64, snapshot_len, next_id))
}

/// The committed state in `dir` (empty if there is none), read without
/// taking the folder: what a daemon using it would load.
pub fn read(dir: &Path) -> Result<State, StoreError> {
    Ok(read_dir(dir)?.0)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = File::open(dir).map_err(io_err("open", dir))?;
    nix::unistd::fsync(f.as_fd()).map_err(|e| io_err("sync", dir)(io::Error::from(e)))
}

impl Store {
    /// Opens (creating) the state folder and takes its lock.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        {
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create", dir))?;
            // The containers' logs and namespaces are the daemon's alone,
            // also in a folder made by an older version.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("chmod", dir))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| StoreError::Locked(dir.to_owned()))?;
        Ok(Store {
            dir: dir.to_owned(),
            log: None,
            log_len: 0,
            snapshot_len: 0,
            next_id: 0,
            compact_min: COMPACT_MIN,
            pending: None,
            _lock: lock,
        })
    }

    /// The snapshot's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    /// The last committed state (empty on first start); opens the log for
    /// the commits that follow, cut back to its whole lines.
    pub fn load(&mut self) -> Result<State, StoreError> {
        let (state, whole, snapshot_len, next_id) = read_dir(&self.dir)?;
        let path = self.log_path();
        let existed = path.exists();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if log.metadata().map_err(io_err("stat", &path))?.len() != whole {
            log.set_len(whole).map_err(io_err("truncate", &path))?;
            log.sync_all().map_err(io_err("sync", &path))?;
        }
        if !existed {
            sync_dir(&self.dir)?;
        }
        self.log = Some(log);
        self.log_len = whole;
        self.snapshot_len = snapshot_len;
        self.next_id = next_id;
        Ok(state)
    }

    fn log(&self) -> &File {
        self.log.as_ref().expect("Store::load opens the log")
    }

    fn append(&mut self, bytes: &[u8], sync: bool) -> Result<(), StoreError> {
        let path = self.log_path();
        let mut log = self.log();
        let written = log.write_all(bytes).and_then(|()| match sync {
            true => log.sync_data(),
            false => Ok(()),
        });
        if let Err(e) = written {
            // A line half written would make every later one corruption.
            self.truncate(self.log_len);
            return Err(io_err("write", &path)(e));
        }
        self.log_len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the log back to `len` bytes (best effort: a load drops a torn
    /// last line anyway).
    fn truncate(&mut self, len: u64) {
        if let Err(e) = self.log().set_len(len) {
            tracing::warn!("truncating {}: {e}", self.log_path().display());
        }
        self.log_len = len;
    }

    /// Makes `new` the committed state, durably and atomically: `old` is
    /// the state committed before, and only what differs is written.
    pub fn commit(&mut self, old: &State, new: &State) -> Result<(), StoreError> {
        let changes = Changes::between(old, new);
        if changes.is_empty() {
            return Ok(());
        }
        self.append(&line(&Entry::Commit(changes)), true)?;
        self.compact_if_due(new)
    }

    /// The first half of a commit of `new` (with `old` committed before),
    /// which may run on another thread while the caller makes the kernel
    /// objects the state will record: the changes written to the log and
    /// synced, not yet part of the state. Nothing is committed until
    /// [`Store::publish`].
    pub fn prepare(&mut self, old: &State, new: &State) -> Result<Prepared, StoreError> {
        self.prepare_changes(Changes::between(old, new))
    }

    /// [`Store::prepare`] of a commit that sets one container record (adds
    /// it, or replaces it with `c`) and changes nothing else: the same line
    /// as `prepare(old, new)` would write, made without comparing every
    /// record of the state (a cost that grew with the number of containers
    /// at every attach).
    pub fn prepare_container(&mut self, c: &Container) -> Result<Prepared, StoreError> {
        self.prepare_changes(Changes {
            containers: BTreeMap::from([(c.id.clone(), Some(c.clone()))]),
            ..Changes::default()
        })
    }

    fn prepare_changes(&mut self, changes: Changes) -> Result<Prepared, StoreError> {
        let log = self
            .log()
            .try_clone()
            .map_err(io_err("dup", &self.log_path()))?;
        let id = self.next_id;
        self.next_id += 1;
        self.pending = Some((id, self.log_len));
        let bytes = line(&Entry::Prepared { id, changes });
        // Counted now: nothing else is appended before it is written.
        self.log_len += bytes.len() as u64;
        Ok(Prepared {
            path: self.log_path(),
            log,
            bytes,
        })
    }

    /// The second half of a commit: the prepared changes become the state
    /// `new`. Their line is written; the returned [`LogSync`] makes it
    /// survive a power loss as well (any later load, a restarted daemon's,
    /// reads it already).
    pub fn publish(&mut self, new: &State) -> Result<LogSync, StoreError> {
        let (id, _) = self
            .pending
            .take()
            .expect("Store::publish follows Store::prepare");
        self.append(&line(&Entry::Publish { id }), false)?;
        self.compact_if_due(new)?;
        Ok(LogSync {
            path: self.log_path(),
            log: self
                .log()
                .try_clone()
                .map_err(io_err("dup", &self.log_path()))?,
        })
    }

    /// Drops a prepared commit that is not to be published, once its
    /// [`Prepared::write`] has returned: its line goes from the log (a
    /// line left there, whole or torn, is never applied either).
    pub fn discard(&mut self) {
        if let Some((_, at)) = self.pending.take() {
            self.truncate(at);
        }
    }

    /// Writes `state` as the snapshot and empties the log, once the log is
    /// larger than the snapshot.
    fn compact_if_due(&mut self, state: &State) -> Result<(), StoreError> {
        if self.log_len <= self.compact_min.max(self.snapshot_len) || self.pending.is_some() {
            return Ok(());
        }
        self.compact(state)
    }

    fn compact(&mut self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        let tmp = self.dir.join("state.json.tmp");
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        let path = self.path();
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        sync_dir(&self.dir)?;
        let log = self.log_path();
        self.log().set_len(0).map_err(io_err("truncate", &log))?;
        self.log().sync_all().map_err(io_err("sync", &log))?;
        self.log_len = 0;
        self.snapshot_len = bytes.len() as u64;
        Ok(())
    }
}

/// The log's sync after a publish (see [`Store::publish`]).
#[must_use = "the commit is not durable until the log is synced"]
pub struct LogSync {
    path: PathBuf,
    log: File,
}

impl LogSync {
    /// Syncs the log (blocking).
    pub fn run(self) -> Result<(), StoreError> {
        self.log.sync_data().map_err(io_err("sync", &self.path))
    }
}

/// A commit to write ahead (see [`Store::prepare`]).
pub struct Prepared {
    path: PathBuf,
    log: File,
    bytes: Vec<u8>,
}

impl Prepared {
    /// Appends and syncs the prepared line (blocking).
    pub fn write(mut self) -> Result<(), StoreError> {
        self.log
            .write_all(&self.bytes)
            .map_err(io_err("write", &self.path))?;
        self.log.sync_data().map_err(io_err("sync", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriverKind;

    fn network(id: &str) -> Network {
        Network {
            id: id.into(),
            name: format!("n-{id}"),
            driver: DriverKind::None,
            created: 0,
            predefined: false,
            internal: false,
            ipam: None,
            ipam6: None,
            options: Default::default(),
            dp_id: 0,
            host_address: None,
            host_address6: None,
            runtime: None,
            runtime_ipam: false,
        }
    }

    /// `s` with network `id` added (or replaced, with `dp_id`).
    fn with(s: &State, id: &str, dp_id: u32) -> State {
        let mut s = s.clone();
        s.networks.insert(
            id.into(),
            Network {
                dp_id,
                ..network(id)
            },
        );
        s
    }

    fn opened(dir: &Path) -> (Store, State) {
        let mut store = Store::open(dir).unwrap();
        let s = store.load().unwrap();
        (store, s)
    }

    fn log_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(LOG)).unwrap().len()
    }

    #[test]
    fn commit_then_load_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        assert_eq!(s0, State::default());
        let s1 = with(&s0, "a", 1);
        store.commit(&s0, &s1).unwrap();
        assert_eq!(read(dir.path()).unwrap(), s1);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(store);
        let (_, loaded) = opened(dir.path());
        assert_eq!(loaded, s1);
    }

    #[test]
    fn a_commit_writes_what_changed_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        let mut s = s0;
        for i in 0..50 {
            let next = with(&s, &format!("n{i:02}"), i);
            store.commit(&s, &next).unwrap();
            s = next;
        }
        let before = log_len(dir.path());
        let mut next = with(&s, "n07", 99);
        next.networks.remove("n08");
        next.ula48 = Some("fd00:1:2::/48".parse().unwrap());
        store.commit(&s, &next).unwrap();
        let added = log_len(dir.path()) - before;
        assert!(added < 600, "one line of two records: {added} bytes");
        // A commit that changes nothing writes nothing.
        store.commit(&next, &next).unwrap();
        assert_eq!(log_len(dir.path()) - before, added);
        drop(store);
        assert_eq!(opened(dir.path()).1, next);
    }

    #[test]
    fn a_commit_torn_by_a_crash_is_dropped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        let s1 = with(&s0, "a", 1);
        store.commit(&s0, &s1).unwrap();
        drop(store);
        // A crash mid-write: part of the next line, or zeros the file
        // system had allocated for it.
        let next = line(&Entry::Commit(Changes::between(&s1, &with(&s1, "b", 2))));
        for torn in [&next[..next.len() - 1], &next[..12], &[0u8; 64][..]] {
            let whole = log_len(dir.path());
            let mut f = OpenOptions::new()
                .append(true)
                .open(dir.path().join(LOG))
                .unwrap();
            f.write_all(torn).unwrap();
            drop(f);
            let (mut store, loaded) = opened(dir.path());
            assert_eq!(loaded, s1);
            assert_eq!(log_len(dir.path()), whole, "cut back to the whole lines");
            // The commits that follow load.
            let s2 = with(&s1, "c", 3);
            store.commit(&s1, &s2).unwrap();
            drop(store);
            assert_eq!(opened(dir.path()).1, s2);
            // Back to s1 for the next case.
            let (mut store, _) = opened(dir.path());
            store.commit(&s2, &s1).unwrap();
            drop(store);
        }
    }

    #[test]
    fn a_bad_line_before_whole_ones_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        let s1 = with(&s0, "a", 1);
        store.commit(&s0, &s1).unwrap();
        store.commit(&s1, &with(&s1, "b", 2)).unwrap();
        drop(store);
        let path = dir.path().join(LOG);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(matches!(store.load(), Err(StoreError::CorruptLog { .. })));
        // Nothing was cut.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_prepared_commit_counts_once_published() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        let s1 = with(&s0, "a", 1);
        store.prepare(&s0, &s1).unwrap().write().unwrap();
        // Written and synced, not committed: a crash here keeps s0.
        assert_eq!(read(dir.path()).unwrap(), s0);
        store.publish(&s1).unwrap().run().unwrap();
        assert_eq!(read(dir.path()).unwrap(), s1);
        // A discarded one leaves nothing, and the next commits load.
        let s2 = with(&s1, "b", 2);
        let before = log_len(dir.path());
        store.prepare(&s1, &s2).unwrap().write().unwrap();
        store.discard();
        assert_eq!(log_len(dir.path()), before);
        let s3 = with(&s1, "c", 3);
        store.prepare(&s1, &s3).unwrap().write().unwrap();
        store.publish(&s3).unwrap().run().unwrap();
        drop(store);
        assert_eq!(opened(dir.path()).1, s3);
    }

    fn container(id: &str, net: &str) -> Container {
        Container {
            id: id.into(),
            name: format!("c-{id}"),
            created: 0,
            netns: crate::model::Netns::Host,
            endpoints: vec![crate::model::Endpoint {
                network_id: net.into(),
                ifname: None,
                host_ifname: None,
                ip: None,
                ip6: None,
                mac: None,
                slot: None,
                aliases: Vec::new(),
            }],
            ports: Vec::new(),
            process: None,
            owner: None,
            runtime: None,
            dns: Vec::new(),
            hostname: None,
        }
    }

    #[test]
    fn a_prepared_container_writes_the_line_a_whole_diff_would() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        let mut s1 = with(&s0, "a", 1);
        for i in 0..20 {
            let c = container(&format!("c{i:02}"), "a");
            s1.containers.insert(c.id.clone(), c);
        }
        store.commit(&s0, &s1).unwrap();
        // A new record, then one replaced (a second endpoint).
        let mut c = container("new", "a");
        for _ in 0..2 {
            let mut s2 = s1.clone();
            s2.containers.insert(c.id.clone(), c.clone());
            let before = log_len(dir.path());
            store.prepare_container(&c).unwrap().write().unwrap();
            let written = fs::read(dir.path().join(LOG)).unwrap()[before as usize..].to_vec();
            let whole = line(&Entry::Prepared {
                id: store.pending.unwrap().0,
                changes: Changes::between(&s1, &s2),
            });
            assert_eq!(written, whole);
            // Not the state until published.
            assert_eq!(read(dir.path()).unwrap(), s1);
            store.publish(&s2).unwrap().run().unwrap();
            assert_eq!(read(dir.path()).unwrap(), s2);
            s1 = s2;
            c.endpoints.push(c.endpoints[0].clone());
            c.endpoints[1].network_id = "b".into();
        }
        drop(store);
        assert_eq!(opened(dir.path()).1, s1);
    }

    #[test]
    fn an_unpublished_line_is_never_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        let s1 = with(&s0, "a", 1);
        // A daemon killed between the write and the publish.
        store.prepare(&s0, &s1).unwrap().write().unwrap();
        drop(store);
        let (mut store, loaded) = opened(dir.path());
        assert_eq!(loaded, s0);
        // Its id is not reused: a later publish does not revive it.
        let s2 = with(&s0, "b", 2);
        store.prepare(&s0, &s2).unwrap().write().unwrap();
        store.publish(&s2).unwrap().run().unwrap();
        drop(store);
        assert_eq!(opened(dir.path()).1, s2);
    }

    #[test]
    fn the_old_single_file_state_migrates() {
        let dir = tempfile::tempdir().unwrap();
        // As the store before the log wrote it: the whole state, nothing else.
        let mut old = with(&State::default(), "a", 1);
        old.ula48 = Some("fd00:1:2::/48".parse().unwrap());
        old.default_route_due.insert("c1".into());
        fs::write(
            dir.path().join("state.json"),
            serde_json::to_vec_pretty(&old).unwrap(),
        )
        .unwrap();
        let (mut store, loaded) = opened(dir.path());
        assert_eq!(loaded, old);
        let s1 = with(&old, "b", 2);
        store.commit(&old, &s1).unwrap();
        // The old file stays the snapshot until a compaction.
        store.compact(&s1).unwrap();
        assert_eq!(log_len(dir.path()), 0);
        let snapshot: State =
            serde_json::from_slice(&fs::read(dir.path().join("state.json")).unwrap()).unwrap();
        assert_eq!(snapshot, s1);
        drop(store);
        assert_eq!(opened(dir.path()).1, s1);
    }

    #[test]
    fn the_log_is_compacted_when_it_outgrows_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut s) = opened(dir.path());
        store.compact_min = 4096;
        let mut compacted = false;
        for i in 0..1000u32 {
            // Commits that change one record: the log grows, the state not.
            let next = with(&s, "a", i);
            store.commit(&s, &next).unwrap();
            s = next;
            if log_len(dir.path()) == 0 {
                compacted = true;
                break;
            }
        }
        assert!(compacted, "the log stays below compact_min");
        assert!(!dir.path().join("state.json.tmp").exists());
        drop(store);
        assert_eq!(opened(dir.path()).1, s);
    }

    #[test]
    fn a_crash_mid_compaction_loads_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, s0) = opened(dir.path());
        let s1 = with(&s0, "a", 1);
        let s2 = with(&s1, "b", 2);
        let s3 = {
            let mut s = s2.clone();
            s.networks.remove("a");
            s
        };
        store.commit(&s0, &s1).unwrap();
        store.commit(&s1, &s2).unwrap();
        store.commit(&s2, &s3).unwrap();
        drop(store);
        // Killed after a compaction's temporary file is written: ignored.
        fs::write(dir.path().join("state.json.tmp"), b"{\"netw").unwrap();
        assert_eq!(opened(dir.path()).1, s3);
        // Killed after its rename, before the log is emptied: the log
        // replays over a snapshot that already holds it.
        fs::write(
            dir.path().join("state.json"),
            serde_json::to_vec_pretty(&s3).unwrap(),
        )
        .unwrap();
        assert!(log_len(dir.path()) > 0);
        assert_eq!(opened(dir.path()).1, s3);
    }

    #[test]
    fn corrupt_state_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), b"not json").unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
