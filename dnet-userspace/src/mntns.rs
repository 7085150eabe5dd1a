//! A container's own mount and UTS namespaces: the host's files, except
//! `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`, which are the
//! container's (bind mounts of files the daemon wrote), and its own host
//! name. Both are kept alive by bind mounts of their namespace files
//! (`ID` and `ID.uts` in a folder that is a private mount, as
//! `unshare --mount=FILE` needs), so `dnet run`, `dnet exec` and a detached
//! command all enter the same ones. The host's files are never written.
//!
//! A file bind mount silently goes away when the host renames another file
//! over its mount point (resolvconf, NetworkManager and systemd-resolved
//! all write `/etc/resolv.conf` that way): [`rebind`] puts it back, and the
//! daemon calls it when the host's file changes. With `nss-resolve`, glibc
//! asks systemd-resolved over a socket in `/run/systemd/resolve` and never
//! reads resolv.conf: a folder of the container's own is bound over that
//! folder when it exists, which hides the socket.

use std::{
    ffi::CString,
    fs, io,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags},
    sched::CloneFlags,
};

use crate::netns::{NetnsError, io_err, sys};

/// One file or folder of the container's own, bound over a host path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// Where a container's namespaces are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsPaths {
    pub mnt: PathBuf,
    pub uts: PathBuf,
}

impl NsPaths {
    pub fn new(dir: &Path, id: &str) -> NsPaths {
        NsPaths {
            mnt: dir.join(id),
            uts: dir.join(format!("{id}.uts")),
        }
    }
}

/// Whether `path` is a mount point of the calling process's namespace.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_ref()))
}

/// Makes `dir` (created if missing) a private mount, so that namespace
/// files bound under it propagate nowhere (a mount namespace may not be
/// bound where it would propagate into itself).
pub fn ensure_private_dir(dir: &Path) -> Result<(), NetnsError> {
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let dir = fs::canonicalize(dir).map_err(io_err("resolve", dir))?;
    if !is_mount_point(&dir) {
        nix::mount::mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind-mount the namespace folder"))?;
    }
    nix::mount::mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("make the namespace folder private"))
}

/// Whether `path` is a bound mount namespace file.
pub fn is_mntns(path: &Path) -> bool {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    if !nix::sys::statfs::fstatfs(&f)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
    {
        return false;
    }
    // SAFETY: the ioctl takes no argument and only reads the fd's namespace.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    t == libc::CLONE_NEWNS
}

/// Binds each of `binds` in the calling thread's mount namespace. A target
/// the host does not have is skipped.
fn bind_all(binds: &[Bind]) -> Result<(), NetnsError> {
    for b in binds {
        if !b.target.exists() {
            continue;
        }
        nix::mount::mount(
            Some(&b.source),
            &b.target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetnsError::Sys {
            op: "bind-mount a container file",
            source,
        })?;
    }
    Ok(())
}

/// Makes the mount and UTS namespaces of a container and binds them at
/// `paths`: in them, `binds` are mounted (in order) and the host name is
/// `hostname`. Leaves nothing behind on failure, and never touches
/// namespaces already bound at `paths`.
pub fn create(paths: &NsPaths, binds: &[Bind], hostname: &str) -> Result<(), NetnsError> {
    let mut made: Vec<&PathBuf> = Vec::new();
    for p in [&paths.mnt, &paths.uts] {
        if let Err(e) = fs::OpenOptions::new().write(true).create_new(true).open(p) {
            for m in made {
                let _ = fs::remove_file(m);
            }
            return Err(io_err("create", p)(e));
        }
        made.push(p);
    }
    let made = make(paths, binds.to_vec(), hostname.to_owned());
    if made.is_err() {
        let _ = remove(paths);
    }
    made
}

fn make(paths: &NsPaths, binds: Vec<Bind>, hostname: String) -> Result<(), NetnsError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<i32, NetnsError>>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let r = (|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
                .map_err(sys("unshare"))?;
            // The host's later mounts still show, the container's never
            // reach the host.
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&str>,
            )
            .map_err(sys("make / a slave"))?;
            bind_all(&binds)?;
            nix::unistd::sethostname(&hostname).map_err(sys("sethostname"))?;
            Ok(nix::unistd::gettid().as_raw())
        })();
        let failed = r.is_err();
        let _ = ready_tx.send(r);
        if !failed {
            // Stay in the namespaces until they are bound.
            let _ = done_rx.recv();
        }
    });
    let bound = match ready_rx.recv() {
        Ok(Ok(tid)) => (|| {
            let task = PathBuf::from(format!("/proc/self/task/{tid}/ns"));
            for (ns, to) in [("mnt", &paths.mnt), ("uts", &paths.uts)] {
                nix::mount::mount(
                    Some(&task.join(ns)),
                    to,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(sys("bind-mount the container's namespace"))?;
            }
            Ok(())
        })(),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(NetnsError::Panicked),
    };
    let _ = done_tx.send(());
    t.join().map_err(|_| NetnsError::Panicked)?;
    bound
}

/// Unmounts and deletes the namespace files. Missing is not an error.
pub fn remove(paths: &NsPaths) -> Result<(), NetnsError> {
    let mut first = Ok(());
    for p in [&paths.mnt, &paths.uts] {
        match nix::mount::umount2(p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                if first.is_ok() {
                    first = Err(sys("unmount the container's namespace")(e));
                }
                continue;
            }
        }
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                if first.is_ok() {
                    first = Err(io_err("remove", p)(e));
                }
            }
        }
    }
    first
}

/// Binds again, inside the mount namespace at `mnt`, each of `binds` whose
/// target no longer shows its source (the host renamed a file over it).
/// Returns how many were bound again.
pub fn rebind(mnt: &Path, binds: &[Bind]) -> Result<usize, NetnsError> {
    let fd = fs::File::open(mnt).map_err(io_err("open", mnt))?;
    let binds = binds.to_vec();
    std::thread::spawn(move || -> Result<usize, NetnsError> {
        // A thread shares its filesystem context with the process until it
        // unshares it; setns into a mount namespace needs its own.
        nix::sched::unshare(CloneFlags::CLONE_FS).map_err(sys("unshare CLONE_FS"))?;
        nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNS).map_err(sys("setns"))?;
        let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let stale: Vec<Bind> = binds
            .into_iter()
            .filter(|b| b.source.is_file() && id(&b.source) != id(&b.target))
            .collect();
        bind_all(&stale)?;
        Ok(stale.len())
    })
    .join()
    .map_err(|_| NetnsError::Panicked)?
}

/// What a process needs to enter a container: namespace files opened
/// before it forks, and the folder to stay in, as a C string.
pub struct Entry {
    fds: Vec<(std::os::fd::OwnedFd, CloneFlags)>,
    cwd: Option<CString>,
}

impl Entry {
    /// Opens the namespaces to enter (the network namespace, then the
    /// mount and UTS namespaces when the container has them).
    pub fn open(netns: &Path, ns: Option<&NsPaths>) -> Result<Entry, NetnsError> {
        let mut fds = vec![(crate::netns::open(netns)?, CloneFlags::CLONE_NEWNET)];
        if let Some(p) = ns {
            for (path, flag) in [
                (&p.mnt, CloneFlags::CLONE_NEWNS),
                (&p.uts, CloneFlags::CLONE_NEWUTS),
            ] {
                let f = fs::File::open(path).map_err(io_err("open", path))?;
                fds.push((f.into(), flag));
            }
        }
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| CString::new(d.into_os_string().into_encoded_bytes()).ok());
        Ok(Entry { fds, cwd })
    }

    /// Enters the namespaces. Called between fork and exec: plain syscalls
    /// on what was opened and allocated before the fork, nothing else.
    pub fn enter(&self) -> io::Result<()> {
        for (fd, flag) in &self.fds {
            nix::sched::setns(fd.as_fd(), *flag)?;
        }
        if let Some(cwd) = &self.cwd {
            // Entering a mount namespace moves to its root; go back to the
            // same folder, which the container sees too. Best effort.
            // SAFETY: `cwd` is a valid NUL-terminated string made before the fork.
            let _ = unsafe { libc::chdir(cwd.as_ptr()) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of the test's own, removed with every mount under it.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = remove(&NsPaths::new(&self.0.join("ns"), "c1"));
            let _ = nix::mount::umount2(&self.0.join("ns"), MntFlags::MNT_DETACH);
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Reads `path` as the mount namespace at `mnt` shows it.
    fn read_in(mnt: &Path, path: &Path) -> String {
        let fd = fs::File::open(mnt).unwrap();
        let path = path.to_owned();
        std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_FS).unwrap();
            nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNS).unwrap();
            fs::read_to_string(path).unwrap()
        })
        .join()
        .unwrap()
    }

    /// The trap of the notes, in a folder that plays the host's /etc: a
    /// file renamed over the bind's mount point detaches the bind in the
    /// container's namespace, and `rebind` puts it back.
    #[test]
    fn a_file_the_host_renamed_over_is_bound_again() {
        if !nix::unistd::geteuid().is_root() {
            // Straight to stderr, past the test harness's capture, so that a
            // plain `cargo test` shows what it skipped.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped mntns::tests::a_file_the_host_renamed_over_is_bound_again: it makes mount \
                 namespaces and needs root (`cargo xtask test` runs it)"
            );
            return;
        }
        let dir =
            TempDir(std::env::temp_dir().join(format!("dnet-test-{}-mntns", std::process::id())));
        let (etc, own) = (dir.0.join("etc"), dir.0.join("own"));
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(&own).unwrap();
        let target = etc.join("resolv.conf");
        fs::write(&target, "host 1\n").unwrap();
        fs::write(own.join("resolv.conf"), "own\n").unwrap();
        ensure_private_dir(&dir.0.join("ns")).unwrap();
        // Twice is fine (a restarted daemon).
        ensure_private_dir(&dir.0.join("ns")).unwrap();
        let paths = NsPaths::new(&dir.0.join("ns"), "c1");
        let binds = vec![Bind {
            source: own.join("resolv.conf"),
            target: target.clone(),
        }];
        create(&paths, &binds, "c1-host").unwrap();
        assert!(is_mntns(&paths.mnt));
        assert!(!is_mntns(&paths.uts), "the UTS namespace is another kind");
        assert_eq!(read_in(&paths.mnt, &target), "own\n");
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "host 1\n",
            "the host's file"
        );
        assert_eq!(rebind(&paths.mnt, &binds).unwrap(), 0, "nothing stale");
        // The host replaces its file the way resolvconf does.
        fs::write(etc.join("resolv.conf.new"), "host 2\n").unwrap();
        fs::rename(etc.join("resolv.conf.new"), &target).unwrap();
        assert_eq!(read_in(&paths.mnt, &target), "host 2\n", "the bind went");
        assert_eq!(rebind(&paths.mnt, &binds).unwrap(), 1);
        assert_eq!(read_in(&paths.mnt, &target), "own\n");
        assert_eq!(fs::read_to_string(&target).unwrap(), "host 2\n");
        // Making them again is refused and leaves the live ones alone.
        assert!(create(&paths, &binds, "x").is_err());
        assert_eq!(read_in(&paths.mnt, &target), "own\n");
        // Removing twice is fine.
        remove(&paths).unwrap();
        remove(&paths).unwrap();
        assert!(!paths.mnt.exists() && !paths.uts.exists());
    }
}
