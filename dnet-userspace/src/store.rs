//! The state store: one JSON document, replaced atomically.
//!
//! A commit writes the whole state to a temporary file, syncs it, renames it
//! over `state.json` and syncs the folder. `rename(2)` is atomic, so after a
//! crash at any instant the file holds either the old state or the new one,
//! never a mix: an operation is recorded whole or not at all. The state is
//! small (kilobytes per hundred containers), so rewriting it whole keeps the
//! store simple and its recovery trivial.
//!
//! An exclusive `flock` on `lock` keeps a second daemon off the same folder.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use crate::model::State;

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
    #[error("another dnet daemon uses the state folder {0}")]
    Locked(PathBuf),
}

pub struct Store {
    dir: PathBuf,
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
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The last committed state (empty on first start).
    pub fn load(&self) -> Result<State, StoreError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Makes `state` the committed state, durably and atomically.
    pub fn commit(&self, state: &State) -> Result<(), StoreError> {
        self.prepare(state).write()?;
        self.publish()
    }

    /// The first half of a commit, which may run on another thread while
    /// the caller makes the kernel objects the state will record: `state`
    /// written and synced to the temporary file. Nothing is committed until
    /// [`Store::publish`]; the temporary file alone is never loaded.
    pub fn prepare(&self, state: &State) -> Prepared {
        Prepared {
            tmp: self.dir.join("state.json.tmp"),
            bytes: serde_json::to_vec_pretty(state).expect("state serializes"),
        }
    }

    /// The second half of a commit: the prepared file becomes the state.
    pub fn publish(&self) -> Result<(), StoreError> {
        self.rename_prepared()?.run()
    }

    /// [`Store::publish`] with the folder's sync left to the caller: the
    /// rename makes the prepared state the one any later load (a restarted
    /// daemon's) reads, whole; the returned [`FolderSync`] makes the rename
    /// survive a power loss as well.
    pub fn rename_prepared(&self) -> Result<FolderSync, StoreError> {
        let path = self.path();
        let tmp = self.dir.join("state.json.tmp");
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        Ok(FolderSync {
            dir: self.dir.clone(),
        })
    }

    /// Drops a prepared state that is not to be published.
    pub fn discard(&self) {
        let _ = fs::remove_file(self.dir.join("state.json.tmp"));
    }
}

/// The state folder's sync after a rename (see [`Store::rename_prepared`]).
#[must_use = "the rename is not durable until the folder is synced"]
pub struct FolderSync {
    dir: PathBuf,
}

impl FolderSync {
    /// Syncs the folder (blocking).
    pub fn run(self) -> Result<(), StoreError> {
        let dir = File::open(&self.dir).map_err(io_err("open", &self.dir))?;
        nix::unistd::fsync(dir.as_fd()).map_err(|e| io_err("sync", &self.dir)(io::Error::from(e)))
    }
}

/// A state to write to the temporary file (see [`Store::prepare`]).
pub struct Prepared {
    tmp: PathBuf,
    bytes: Vec<u8>,
}

impl Prepared {
    /// Writes and syncs the temporary file (blocking).
    pub fn write(self) -> Result<(), StoreError> {
        let tmp = &self.tmp;
        let mut f = File::create(tmp).map_err(io_err("create", tmp))?;
        f.write_all(&self.bytes).map_err(io_err("write", tmp))?;
        f.sync_all().map_err(io_err("sync", tmp))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DriverKind, Network};

    #[test]
    fn commit_then_load_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        let mut s = State::default();
        s.networks.insert(
            "id".into(),
            Network {
                id: "id".into(),
                name: "n".into(),
                driver: DriverKind::None,
                created: 0,
                predefined: false,
                internal: false,
                ipam: None,
                ipam6: None,
                options: Default::default(),
                dp_id: 0,
                host_address: None,
                runtime: None,
                runtime_ipam: false,
            },
        );
        store.commit(&s).unwrap();
        assert_eq!(store.load().unwrap(), s);
        assert!(!dir.path().join("state.json.tmp").exists());
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(store);
        assert!(Store::open(dir.path()).is_ok());
    }

    #[test]
    fn a_torn_temporary_file_does_not_change_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.commit(&State::default()).unwrap();
        // A crash mid-write leaves only the temporary file half written.
        fs::write(dir.path().join("state.json.tmp"), b"{\"netw").unwrap();
        assert_eq!(store.load().unwrap(), State::default());
    }

    #[test]
    fn corrupt_state_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(store.path(), b"not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
