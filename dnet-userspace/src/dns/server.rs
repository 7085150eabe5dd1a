//! The listeners: UDP and TCP port 53 on one gateway address, IPv4 or
//! IPv6, in the daemon's namespace (the gateway sits on `lo`). Each query is answered
//! from the current names table; forwards run as tasks of their own, a
//! bounded number at a time.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    sync::Arc,
    time::Duration,
};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, listen, setsockopt, socket,
    sockopt,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};

use super::{
    Shared, View,
    answer::{self, Outcome},
    forward,
};

pub const PORT: u16 = 53;
/// Forwards under way at once, per listener; beyond, SERVFAIL at once.
const MAX_FORWARDS: usize = 256;
/// TCP connections at once, per listener.
const MAX_TCP: usize = 64;
/// A TCP client idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A socket bound to `addr`:53 that may be made before the address exists
/// (`IP_FREEBIND`, which IPv6 sockets honour too: the gateway is put on
/// `lo` by the same daemon).
fn bound(addr: IpAddr, ty: SockType) -> std::io::Result<OwnedFd> {
    let family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    match addr {
        IpAddr::V4(a) => bind(raw, &SockaddrIn::from(SocketAddrV4::new(a, PORT)))?,
        IpAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(raw, &SockaddrIn6::from(SocketAddrV6::new(a, PORT, 0, 0)))?
        }
    }
    Ok(fd)
}

/// Binds both sockets of `addr`, then serves them until aborted.
pub fn start(addr: IpAddr, shared: Arc<Shared>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let udp = UdpSocket::from_std(std::net::UdpSocket::from(bound(addr, SockType::Datagram)?))?;
    let tcp = bound(addr, SockType::Stream)?;
    listen(&tcp, nix::sys::socket::Backlog::new(128)?)?;
    let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp))?;
    Ok(tokio::spawn(async move {
        tokio::join!(serve_udp(udp, shared.clone()), serve_tcp(tcp, shared));
    }))
}

/// Datagrams taken (`recvmmsg`) or sent (`sendmmsg`) per system call under
/// load; one at a time when they come one at a time.
const BATCH: usize = 32;
/// The largest query taken; a longer one is cut (and answered FORMERR).
const DGRAM: usize = 4096;

type MmsgArrays = (
    [libc::sockaddr_in6; BATCH],
    [libc::iovec; BATCH],
    [libc::mmsghdr; BATCH],
);

/// Zeroed addresses, iovecs and headers for one `recvmmsg`/`sendmmsg`.
fn mmsg_arrays() -> MmsgArrays {
    // SAFETY: sockaddr_in6, iovec and mmsghdr are plain C structs (integers
    // and raw pointers) for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// Queries taken in one system call: their bytes and sources.
struct Received {
    bufs: Vec<[u8; DGRAM]>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    n: usize,
}

impl Received {
    fn new() -> Received {
        Received {
            bufs: vec![[0u8; DGRAM]; BATCH],
            lens: [0; BATCH],
            from: [None; BATCH],
            n: 0,
        }
    }

    /// Takes the datagrams waiting on `fd` (at most [`BATCH`]) without
    /// waiting; `WouldBlock` when there is none.
    fn recv(&mut self, fd: RawFd) -> std::io::Result<()> {
        let (mut addrs, mut iovs, mut hdrs) = mmsg_arrays();
        for (((h, iov), addr), buf) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(addrs.iter_mut())
            .zip(self.bufs.iter_mut())
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = DGRAM;
            h.msg_hdr.msg_name = std::ptr::from_mut(addr).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at an iovec of DGRAM bytes inside
        // self.bufs and at a sockaddr_in6 (room for either family), all alive and not otherwise
        // borrowed during the call; the kernel writes at most BATCH
        // headers and within those bounds.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.n = r as usize;
        for i in 0..self.n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(DGRAM);
            self.from[i] = from_raw(&addrs[i]);
        }
        Ok(())
    }
}

/// Sends as many of `replies` as the socket takes in one system call
/// (`sendmmsg`, without waiting); how many went, or `WouldBlock`.
fn send_batch(fd: RawFd, replies: &[(Vec<u8>, SocketAddr)]) -> std::io::Result<usize> {
    let n = replies.len().min(BATCH);
    let (mut addrs, mut iovs, mut hdrs) = mmsg_arrays();
    for i in 0..n {
        let (bytes, to) = &replies[i];
        let len = to_raw(to, &mut addrs[i]);
        iovs[i].iov_base = bytes.as_ptr().cast_mut().cast();
        iovs[i].iov_len = bytes.len();
        hdrs[i].msg_hdr.msg_name = std::ptr::from_mut(&mut addrs[i]).cast();
        hdrs[i].msg_hdr.msg_namelen = len;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first n headers point at live socket addresses and at
    // iovecs over the replies' bytes, which the kernel only reads.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// A datagram's source, from the address `recvmmsg` wrote.
fn from_raw(a: &libc::sockaddr_in6) -> Option<SocketAddr> {
    match i32::from(a.sin6_family) {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in, which is smaller
            // than the sockaddr_in6 it was written into and shares its
            // alignment.
            let a4 = unsafe { &*std::ptr::from_ref(a).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a4.sin_addr.s_addr)),
                u16::from_be(a4.sin_port),
            )))
        }
        libc::AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(a.sin6_addr.s6_addr),
            u16::from_be(a.sin6_port),
            a.sin6_flowinfo,
            a.sin6_scope_id,
        ))),
        _ => None,
    }
}

/// Writes `to` into `raw` for `sendmmsg`; its length.
fn to_raw(to: &SocketAddr, raw: &mut libc::sockaddr_in6) -> libc::socklen_t {
    match to {
        SocketAddr::V4(to) => {
            // SAFETY: as in `from_raw`: a sockaddr_in fits in, and is
            // aligned as, the sockaddr_in6 it is written into.
            let a4 = unsafe { &mut *std::ptr::from_mut(raw).cast::<libc::sockaddr_in>() };
            a4.sin_family = libc::AF_INET as libc::sa_family_t;
            a4.sin_port = to.port().to_be();
            a4.sin_addr.s_addr = u32::from(*to.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(to) => {
            raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            raw.sin6_port = to.port().to_be();
            raw.sin6_addr.s6_addr = to.ip().octets();
            raw.sin6_flowinfo = to.flowinfo();
            raw.sin6_scope_id = to.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let fd = sock.as_raw_fd();
    let slots = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut got = Received::new();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut view = View::new(&shared);
    loop {
        if let Err(e) = sock
            .async_io(tokio::io::Interest::READABLE, || got.recv(fd))
            .await
        {
            tracing::warn!("resolver: receiving: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let names = view.current(&shared);
        for i in 0..got.n {
            let Some(from) = got.from[i] else { continue };
            // An IPv6 client is known by its endpoint's IPv4 address; an
            // unknown one is answered as any unknown source is.
            let src = names
                .client_addr(from.ip())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            let query = &got.bufs[i][..got.lens[i]];
            match answer::answer(query, names, src, true) {
                Outcome::Reply(r) => replies.push((r, from)),
                Outcome::Drop => {}
                Outcome::Forward => {
                    let ups = shared.upstreams_for(names, src);
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        replies.extend(answer::servfail(query).map(|r| (r, from)));
                        continue;
                    };
                    let (sock, query) = (sock.clone(), query.to_vec());
                    tokio::spawn(async move {
                        let r = match forward::forward(&query, &ups, false).await {
                            Some(r) => Some(r),
                            None => answer::servfail(&query),
                        };
                        if let Some(r) = r {
                            let _ = sock.send_to(&r, from).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
        // The answers of the batch, in as few calls as the socket allows.
        let mut sent = 0;
        while sent < replies.len() {
            match sock
                .async_io(tokio::io::Interest::WRITABLE, || {
                    send_batch(fd, &replies[sent..])
                })
                .await
            {
                Ok(n) => sent += n.max(1),
                // One that cannot go (an unreachable client) is skipped.
                Err(_) => sent += 1,
            }
        }
        replies.clear();
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("resolver: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Beyond the limit the connection is closed at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_conn(stream, from.ip(), &shared).await;
            drop(permit);
        });
    }
}

/// Queries of one TCP connection (two-byte length, then the message), in turn.
async fn serve_conn(mut s: TcpStream, from: IpAddr, shared: &Shared) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0u8; usize::from(len?)];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let names = shared.names();
        let src = names.client_addr(from).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let r = match answer::answer(&query, &names, src, false) {
            Outcome::Reply(r) => r,
            Outcome::Drop => return Ok(()),
            Outcome::Forward => {
                let ups = shared.upstreams_for(&names, src);
                match forward::forward(&query, &ups, true).await {
                    Some(r) => r,
                    None => match answer::servfail(&query) {
                        Some(r) => r,
                        None => return Ok(()),
                    },
                }
            }
        };
        let Ok(n) = u16::try_from(r.len()) else {
            return Ok(());
        };
        let mut msg = n.to_be_bytes().to_vec();
        msg.extend_from_slice(&r);
        s.write_all(&msg).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use hickory_proto::{
        op::{Message, Query, ResponseCode},
        rr::{Name, RecordType},
    };

    use super::*;
    use crate::dns::{Options, Resolver};

    #[test]
    fn batches_take_and_send_many_datagrams_with_their_sources() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = a.local_addr().unwrap();
        let v4 = |s: &std::net::UdpSocket| match s.local_addr().unwrap() {
            SocketAddr::V4(x) => x,
            SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
        };
        // More than a batch, of several lengths, from two sources.
        for i in 0..40u8 {
            let s = if i.is_multiple_of(2) { &b } else { &c };
            s.send_to(&vec![i; usize::from(i) % 20 + 1], to).unwrap();
        }
        let mut got = Received::new();
        let mut seen = Vec::new();
        let mut calls = Vec::new();
        loop {
            match got.recv(a.as_raw_fd()) {
                Ok(()) => {
                    calls.push(got.n);
                    for i in 0..got.n {
                        seen.push((got.bufs[i][..got.lens[i]].to_vec(), got.from[i]));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        // All were waiting: one full batch, then the rest.
        assert_eq!(calls, vec![BATCH, 40 - BATCH]);
        assert_eq!(seen.len(), 40);
        for (i, (bytes, from)) in seen.iter().enumerate() {
            let i = i as u8;
            assert_eq!(bytes, &vec![i; usize::from(i) % 20 + 1]);
            let want = if i.is_multiple_of(2) { v4(&b) } else { v4(&c) };
            assert_eq!(*from, Some(SocketAddr::V4(want)), "datagram {i}");
        }
        // 40 answers to b: two calls at least, every one arrives in order.
        let replies: Vec<(Vec<u8>, SocketAddr)> = (0..40u8)
            .map(|i| (vec![i; 3], SocketAddr::V4(v4(&b))))
            .collect();
        let mut sent = 0;
        let mut calls = 0;
        while sent < replies.len() {
            sent += send_batch(a.as_raw_fd(), &replies[sent..]).unwrap();
            calls += 1;
        }
        assert!(calls >= 2, "at most {BATCH} a call");
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        for i in 0..40u8 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&[i; 3][..], to));
        }
    }

    #[tokio::test]
    async fn a_burst_of_queries_gets_every_answer_with_its_id() {
        let r = Resolver::new(Options::default());
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = sock.local_addr().unwrap();
        let task = tokio::spawn(serve_udp(sock, r.shared.clone()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for id in 0..100u16 {
            let mut m = Message::query();
            m.metadata.id = id;
            m.add_query(Query::query(
                Name::from_ascii("web.").unwrap(),
                RecordType::A,
            ));
            client.send_to(&m.to_vec().unwrap(), server).await.unwrap();
        }
        let mut ids = BTreeSet::new();
        let mut buf = [0u8; 512];
        while ids.len() < 100 {
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("an answer to every query")
                .unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            // 127.0.0.1 is no container: refused, but answered.
            assert_eq!(m.metadata.response_code, ResponseCode::Refused);
            assert!(ids.insert(m.metadata.id), "one answer per query");
        }
        assert_eq!(ids, (0..100).collect());
        task.abort();
    }
}
