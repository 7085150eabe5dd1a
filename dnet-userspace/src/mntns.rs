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
//!
//! A bound file is never written in place, where a reader could find it
//! empty or half-written: a new file is renamed over the source
//! ([`write_file`]) and [`replace`] swaps the container's mount of it, so
//! a reader opens either the whole old file or the whole new one.

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
    let binds = binds.to_vec();
    in_mntns(mnt, move || {
        let stale: Vec<Bind> = binds
            .into_iter()
            .filter(|b| b.source.is_file() && file_id(&b.source) != file_id(&b.target))
            .collect();
        bind_all(&stale)?;
        Ok(stale.len())
    })
}

/// (device, inode) of the file at `p`, following links.
fn file_id(p: &Path) -> Option<(u64, u64)> {
    fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Runs `f` on a thread of its own inside the mount namespace at `mnt`.
fn in_mntns<T: Send + 'static>(
    mnt: &Path,
    f: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    let fd = fs::File::open(mnt).map_err(io_err("open", mnt))?;
    std::thread::spawn(move || {
        // A thread shares its filesystem context with the process until it
        // unshares it; setns into a mount namespace needs its own.
        nix::sched::unshare(CloneFlags::CLONE_FS).map_err(sys("unshare CLONE_FS"))?;
        nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNS).map_err(sys("setns"))?;
        f()
    })
    .join()
    .map_err(|_| NetnsError::Panicked)?
}

/// Writes `text` to `path` as a new file (mode 0644) renamed over the old
/// one, unless it already holds `text`; whether it changed. What is bound
/// of the old file keeps showing the old text, whole, until [`replace`]
/// (or [`rebind`]) swaps it; a folder's bind shows the new file at once.
pub fn write_file(path: &Path, text: &str) -> Result<bool, NetnsError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    if fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(false);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.new"));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(text.as_bytes())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename over", path))?;
    Ok(true)
}

/// `open_tree(2)` and `move_mount(2)` flags (linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// Since Linux 6.5.
const MOVE_MOUNT_BENEATH: libc::c_uint = 0x200;

/// Mounts a copy of `source` beneath the top mount at `target` (in the
/// calling thread's mount namespace).
fn mount_beneath(source: &Path, target: &Path) -> nix::Result<()> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL);
    let (src, dst) = (cstr(source)?, cstr(target)?);
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree reads the NUL-terminated path `src`, alive for the
    // call, and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), flags) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: `fd` was just returned by open_tree and is owned by no one
    // else; OwnedFd closes it once.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) };
    // SAFETY: move_mount reads the two NUL-terminated paths (the empty
    // one with MOVE_MOUNT_F_EMPTY_PATH names `fd` itself), alive for the
    // call; `fd` is a valid open_tree descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_BENEATH,
        )
    };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Swaps, inside the mount namespace at `mnt`, each file of `binds` whose
/// source [`write_file`] replaced: the new file is mounted beneath the
/// old one's bind, which is then unmounted, so that at every instant the
/// path shows one whole file. Where the old bind is gone (the host renamed
/// a file over it) or the kernel has no `MOVE_MOUNT_BENEATH` (before 6.5),
/// the new file is bound on top instead (as [`rebind`]). Returns how many
/// were swapped.
pub fn replace(mnt: &Path, binds: &[Bind]) -> Result<usize, NetnsError> {
    let binds = binds.to_vec();
    in_mntns(mnt, move || {
        let mut n = 0;
        for b in binds {
            if !b.source.is_file() || !b.target.exists() || file_id(&b.source) == file_id(&b.target)
            {
                continue;
            }
            match mount_beneath(&b.source, &b.target) {
                Ok(()) => nix::mount::umount2(&b.target, MntFlags::MNT_DETACH)
                    .map_err(sys("unmount a container file's old bind"))?,
                Err(nix::Error::EINVAL) => bind_all(std::slice::from_ref(&b))?,
                Err(e) => return Err(sys("mount a container file beneath its old bind")(e)),
            }
            n += 1;
        }
        Ok(n)
    })
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

    /// A container file updated while a reader in the container reads it
    /// in a loop: every read is one whole version, never an empty or
    /// half-written file (writing in place, truncate then write, shows the
    /// reader an empty file). Count-based: a fixed number of updates, each
    /// after the reader has read at least once since the last.
    #[test]
    fn a_replaced_file_is_read_whole_or_not_at_all() {
        if !nix::unistd::geteuid().is_root() {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped mntns::tests::a_replaced_file_is_read_whole_or_not_at_all: it makes \
                 mount namespaces and needs root (`cargo xtask test` runs it)"
            );
            return;
        }
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, Ordering},
        };
        let dir = TempDir(
            std::env::temp_dir().join(format!("dnet-test-{}-mntns-swap", std::process::id())),
        );
        let (etc, own) = (dir.0.join("etc"), dir.0.join("own"));
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(&own).unwrap();
        let target = etc.join("hosts");
        fs::write(&target, "host\n").unwrap();
        let long: String = (0..40).map(|i| format!("10.0.0.{i}\tname{i}\n")).collect();
        let short = "10.1.0.1\tshort\n".to_owned();
        fs::write(own.join("hosts"), &long).unwrap();
        ensure_private_dir(&dir.0.join("ns")).unwrap();
        let paths = NsPaths::new(&dir.0.join("ns"), "c1");
        let binds = vec![Bind {
            source: own.join("hosts"),
            target: target.clone(),
        }];
        create(&paths, &binds, "c1-host").unwrap();

        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let fd = fs::File::open(&paths.mnt).unwrap();
        let reader = {
            let (done, reads, target) = (done.clone(), reads.clone(), target.clone());
            let (long, short) = (long.clone(), short.clone());
            std::thread::spawn(move || -> Result<(), String> {
                nix::sched::unshare(CloneFlags::CLONE_FS).unwrap();
                nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNS).unwrap();
                while !done.load(Ordering::Acquire) {
                    let t = fs::read_to_string(&target).map_err(|e| e.to_string())?;
                    if t != long && t != short {
                        return Err(format!("read {} bytes: {t:?}", t.len()));
                    }
                    reads.fetch_add(1, Ordering::Release);
                }
                Ok(())
            })
        };
        for i in 0..300 {
            let seen = reads.load(Ordering::Acquire);
            while reads.load(Ordering::Acquire) == seen && !reader.is_finished() {
                std::thread::yield_now();
            }
            let text = if i % 2 == 0 { &short } else { &long };
            assert!(write_file(&binds[0].source, text).unwrap());
            assert_eq!(replace(&paths.mnt, &binds).unwrap(), 1);
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap().unwrap();
        assert_eq!(read_in(&paths.mnt, &target), long);
        // One mount of it, not one per update.
        let stacked = read_in(&paths.mnt, Path::new("/proc/thread-self/mountinfo"))
            .lines()
            .filter(|l| l.split_whitespace().nth(4) == Some(target.to_str().unwrap()))
            .count();
        assert_eq!(stacked, 1);
        // Unchanged text is not written again.
        assert!(!write_file(&binds[0].source, &long).unwrap());
        assert_eq!(replace(&paths.mnt, &binds).unwrap(), 0);
        remove(&paths).unwrap();
    }
}
