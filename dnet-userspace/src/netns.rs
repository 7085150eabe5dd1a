//! Network namespaces: create, enter, identify and remove them.
//!
//! `setns(2)` changes the calling *thread's* namespace, so everything that
//! runs inside another namespace runs on a fresh OS thread made for it and
//! ended after it; no pooled thread (tokio's included) ever switches.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags},
    sched::CloneFlags,
};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{0} is not a network namespace")]
    NotNetns(PathBuf),
    #[error("namespace thread panicked")]
    Panicked,
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> NetnsError {
    move |source| NetnsError::Sys { op, source }
}

/// The namespace file of the calling process.
pub fn own_path() -> PathBuf {
    PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
}

/// Opens a namespace file, checking that it is one.
pub fn open(path: &Path) -> Result<OwnedFd, NetnsError> {
    let f = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => NetnsError::NotNetns(path.to_owned()),
        _ => io_err("open", path)(e),
    })?;
    if !file_is_netns(&f) {
        return Err(NetnsError::NotNetns(path.to_owned()));
    }
    Ok(f.into())
}

/// `path` refers to a network namespace (an nsfs file: `/proc/PID/ns/net`
/// or a bind mount of one).
pub fn is_netns(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| file_is_netns(&f))
}

fn file_is_netns(f: &File) -> bool {
    // Opening `/proc/PID/ns/net` and asking its namespace type is the sure test.
    nix::sys::statfs::fstatfs(f).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        && ns_type_is_net(f)
}

fn ns_type_is_net(f: &File) -> bool {
    // NS_GET_NSTYPE = _IO(0xb7, 0x3)
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: the ioctl takes no argument and only reads the fd's namespace.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    t == libc::CLONE_NEWNET
}

/// (device, inode) of a namespace: its identity.
pub fn identity(path: &Path) -> Result<(u64, u64), NetnsError> {
    let m = fs::metadata(path).map_err(io_err("stat", path))?;
    Ok((m.dev(), m.ino()))
}

/// Runs `f` on a new thread inside the namespace at `path`.
pub fn run_in<F, R>(path: &Path, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    run_in_fd(open(path)?.as_fd(), f)
}

/// Runs `f` on a new thread inside the namespace `fd` (from [`open`]).
pub fn run_in_fd<F, R>(fd: BorrowedFd<'_>, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        s.spawn(move || -> Result<R, NetnsError> {
            nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(sys("setns"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| NetnsError::Panicked)?
    })
}

/// Makes a new network namespace and bind-mounts it at `path`. Inside it,
/// `lo` is up and IPv6 is off for every interface made later (dnet networks
/// are IPv4-only). Leaves nothing behind on failure.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create", path))?;
    let target = path.to_owned();
    let made = std::thread::spawn(move || -> Result<(), NetnsError> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare"))?;
        let own = PathBuf::from("/proc/thread-self/ns/net");
        nix::mount::mount(
            Some(&own),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind-mount the namespace"))?;
        set_up("lo").map_err(io_err("bring up", Path::new("lo")))?;
        for conf in ["all", "default"] {
            disable_ipv6(conf)?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| NetnsError::Panicked)
    .and_then(|r| r);
    if made.is_err() {
        let _ = remove(path);
    }
    made
}

/// Unmounts and deletes a namespace made by [`create`]. The namespace itself
/// ends when its last process and interface reference are gone. Missing is
/// not an error.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(sys("unmount the namespace")(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Writes a sysctl of the calling thread's network namespace
/// (`net/ipv4/ip_forward` form).
/// (Looked up in a proc instance of dnet's own: see `procsys`.)
pub fn sysctl(name: &str, value: &str) -> Result<(), NetnsError> {
    crate::procsys::write(name, value).map_err(io_err("write", &crate::procsys::path_of(name)))
}

/// Writes `net/ipv6/conf/CONF/KEY` of the calling thread's namespace
/// (`CONF`: an interface, `all` or `default`).
pub fn sysctl6(conf: &str, key: &str, value: &str) -> Result<(), NetnsError> {
    sysctl(&format!("net/ipv6/conf/{conf}/{key}"), value)
}

/// Turns IPv6 off on an interface (or `all`, `default`) of the calling
/// thread's namespace: what every IPv4-only endpoint gets.
pub fn disable_ipv6(conf: &str) -> Result<(), NetnsError> {
    sysctl6(conf, "disable_ipv6", "1")
}

/// The `net/ipv6/conf` keys a quiet IPv6 interface has at 0: it takes
/// no router advertisements, autoconfiguration or redirects, runs no
/// duplicate address detection and sends no router solicitations.
pub const QUIET_IPV6: [&str; 5] = [
    "accept_ra",
    "autoconf",
    "accept_dad",
    "router_solicitations",
    "accept_redirects",
];

/// What a dual-stack container's namespace needs before its interface
/// arrives (a new namespace has the kernel's defaults, not the host's):
/// interfaces made later are quiet ([`QUIET_IPV6`]).
pub fn container_ipv6_defaults() -> Result<(), NetnsError> {
    for key in QUIET_IPV6 {
        sysctl6("default", key, "0")?;
    }
    Ok(())
}

/// Reads a sysctl of the calling thread's network namespace.
pub fn sysctl_read(name: &str) -> Result<String, NetnsError> {
    crate::procsys::read(name)
        .map(|s| s.trim().to_owned())
        .map_err(io_err("read", &crate::procsys::path_of(name)))
}

/// Sets an interface of the calling thread's namespace up (SIOCSIFFLAGS),
/// without netlink: used inside fresh namespaces.
fn set_up(ifname: &str) -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name (zeroed
    // beyond it); the ioctls read and write only that struct.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `SO_NETNS_COOKIE` of the calling thread's network namespace: the id BPF
/// programs see from `bpf_get_netns_cookie`.
pub fn cookie() -> Result<u64, NetnsError> {
    use std::os::fd::AsRawFd as _;
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("socket"))?;
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for the kernel to write; the socket is ours.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(sys("SO_NETNS_COOKIE")(nix::Error::last()));
    }
    Ok(v)
}
