//! `/proc/sys` of the calling thread's network namespace, looked up in a
//! proc instance of dnet's own rather than in the machine's `/proc`.
//!
//! Why: the kernel keeps one directory entry per namespace for a name such
//! as `net/ipv6`, all children of the one `/proc/sys/net` entry, so all in
//! the same hash chain of the dentry cache; a lookup compares the entries
//! of every namespace that ever looked the name up before it finds (or
//! misses) its own. With 1,000 namespaces attached, the two sysctl writes
//! of an attach (the host end's and the container end's `disable_ipv6`)
//! made most of the growth of an attach's cost with the number of
//! endpoints. A proc instance of its own (`fsopen("proc")`, one superblock
//! each since Linux 5.8) has its own `/proc/sys/net` entry, so its chains
//! hold only the namespaces that used that instance: it is replaced after
//! [`ROTATE`] lookups, which bounds them, and the old one is released on a
//! thread of its own (a detached mount's release waits for an RCU grace
//! period).
//!
//! Where a proc instance cannot be made (an older kernel, a sandbox that
//! forbids it), the machine's `/proc/sys` serves, as before.

use std::{
    ffi::CString,
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

/// Lookups served by one proc instance before it is replaced.
pub(crate) const ROTATE: u32 = 64;

/// The instance in use and the lookups it served.
static INSTANCE: Mutex<Option<(Arc<OwnedFd>, u32)>> = Mutex::new(None);
/// Set once a proc instance could not be made: `/proc/sys` from then on.
static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

// From linux/mount.h.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;

/// A new proc instance, as a detached mount (attached nowhere: it goes
/// with its last descriptor).
fn new_instance() -> io::Result<OwnedFd> {
    let fstype = CString::new("proc").expect("no NUL");
    // SAFETY: fsopen takes a NUL-terminated name and flags, and returns a
    // new descriptor (or -1), which the OwnedFd takes over.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fs` is a descriptor fsopen just returned, owned by no one else.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux argument.
    if unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsmount takes the configured context's descriptor and flags,
    // and returns a new descriptor (or -1), which the OwnedFd takes over.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )
    };
    if mnt < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, a descriptor fsmount just returned.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

/// The instance for the next lookup, if dnet can have one.
fn instance() -> Option<Arc<OwnedFd>> {
    if UNAVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    let mut slot = INSTANCE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((fd, uses)) = slot.as_mut()
        && *uses < ROTATE
    {
        *uses += 1;
        return Some(fd.clone());
    }
    let fresh = match new_instance() {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            tracing::debug!("no proc instance of dnet's own ({e}): /proc/sys serves");
            UNAVAILABLE.store(true, Ordering::Relaxed);
            *slot = None;
            return None;
        }
    };
    if let Some((old, _)) = slot.replace((fresh.clone(), 1)) {
        // Its release waits for a grace period: not on an operation's path.
        let _ = std::thread::Builder::new()
            .name("dnet-procsys".into())
            .spawn(move || drop(old));
    }
    Some(fresh)
}

/// Opens `/proc/sys/<name>` of the calling thread's network namespace.
fn open(name: &str, write: bool) -> io::Result<File> {
    let Some(mnt) = instance() else {
        let path = Path::new("/proc/sys").join(name);
        return std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path);
    };
    let rel = CString::new(format!("sys/{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a sysctl name"))?;
    let flags = libc::O_CLOEXEC
        | if write {
            libc::O_WRONLY
        } else {
            libc::O_RDONLY
        };
    // SAFETY: openat takes a valid directory descriptor (the instance's
    // root, held by `mnt` for the call) and a NUL-terminated relative path;
    // it returns a new descriptor (or -1), which the File takes over.
    let fd = unsafe { libc::openat(mnt.as_raw_fd(), rel.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat just returned, owned by no one else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The path errors name.
pub(crate) fn path_of(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name)
}

/// Writes `/proc/sys/<name>` (`net/ipv4/ip_forward` form) of the calling
/// thread's network namespace.
pub(crate) fn write(name: &str, value: &str) -> io::Result<()> {
    open(name, true)?.write_all(value.as_bytes())
}

/// Reads `/proc/sys/<name>` of the calling thread's network namespace.
pub(crate) fn read(name: &str) -> io::Result<String> {
    let mut s = String::new();
    open(name, false)?.read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsFd as _, unix::fs::MetadataExt as _};

    use super::*;
    use crate::netns;

    /// Straight to stderr, past the test harness's capture, so that a
    /// plain `cargo test` shows what it skipped.
    fn skipped(test: &str) {
        let _ = writeln!(
            io::stderr(),
            "skipped procsys::tests::{test}: it mounts proc and makes namespaces, and needs root \
             (`cargo xtask test` runs it)"
        );
    }

    /// The device of the instance the next lookup uses (one per proc
    /// superblock).
    fn instance_dev() -> Option<u64> {
        let fd = instance()?;
        Some(
            File::from(fd.as_fd().try_clone_to_owned().unwrap())
                .metadata()
                .unwrap()
                .dev(),
        )
    }

    #[test]
    fn reads_and_writes_the_calling_threads_namespace() {
        if !nix::unistd::geteuid().is_root() {
            skipped("reads_and_writes_the_calling_threads_namespace");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        netns::create(&a).unwrap();
        netns::create(&b).unwrap();
        let key = "net/ipv6/conf/lo/disable_ipv6";
        let via_proc = || std::fs::read_to_string(path_of(key)).unwrap();
        // Made by `create`: IPv6 off for interfaces made later, `lo` as it was.
        let before_b = netns::run_in(&b, via_proc).unwrap();
        let flipped = if before_b.trim() == "1" { "0" } else { "1" };
        for _ in 0..2 * ROTATE + 1 {
            netns::run_in(&a, || write(key, flipped)).unwrap().unwrap();
        }
        // The machine's /proc and dnet's instance agree, in each namespace.
        assert_eq!(netns::run_in(&a, via_proc).unwrap().trim(), flipped);
        assert_eq!(
            netns::run_in(&a, || read(key)).unwrap().unwrap().trim(),
            flipped
        );
        assert_eq!(netns::run_in(&b, via_proc).unwrap(), before_b);
        assert_eq!(netns::run_in(&b, || read(key)).unwrap().unwrap(), before_b);
        // A missing name is an error, as in /proc/sys.
        let missing = netns::run_in(&a, || read("net/ipv6/conf/nosuch0/disable_ipv6")).unwrap();
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        netns::remove(&a).unwrap();
        netns::remove(&b).unwrap();
    }

    #[test]
    fn an_instance_is_replaced_after_rotate_lookups() {
        if !nix::unistd::geteuid().is_root() {
            skipped("an_instance_is_replaced_after_rotate_lookups");
            return;
        }
        // Tests run in parallel: another test's lookups may move the count,
        // but never past ROTATE without a new instance.
        let first = instance_dev().expect("a proc instance");
        let mut seen = std::collections::BTreeSet::from([first]);
        for _ in 0..2 * ROTATE {
            seen.insert(instance_dev().unwrap());
        }
        assert!(
            seen.len() >= 2,
            "one instance served {} lookups",
            2 * ROTATE + 1
        );
    }
}
