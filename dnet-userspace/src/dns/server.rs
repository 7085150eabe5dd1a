//! The listeners: UDP and TCP port 53 on one gateway address, in the
//! daemon's namespace (the gateway sits on `lo`). Each query is answered
//! from the current names table; forwards run as tasks of their own, a
//! bounded number at a time.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::OwnedFd,
    sync::Arc,
    time::Duration,
};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket, sockopt,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};

use super::{
    Shared,
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
/// (`IP_FREEBIND`: the gateway is put on `lo` by the same daemon).
fn bound(addr: Ipv4Addr, ty: SockType) -> std::io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Inet,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(addr, PORT)),
    )?;
    Ok(fd)
}

/// Binds both sockets of `addr`, then serves them until aborted.
pub fn start(addr: Ipv4Addr, shared: Arc<Shared>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let udp = UdpSocket::from_std(std::net::UdpSocket::from(bound(addr, SockType::Datagram)?))?;
    let tcp = bound(addr, SockType::Stream)?;
    listen(&tcp, nix::sys::socket::Backlog::new(128)?)?;
    let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp))?;
    Ok(tokio::spawn(async move {
        tokio::join!(serve_udp(udp, shared.clone()), serve_tcp(tcp, shared));
    }))
}

async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let slots = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("resolver: receiving: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let SocketAddr::V4(src) = from else { continue };
        let query = &buf[..n];
        let names = shared.names();
        match answer::answer(query, &names, *src.ip(), true) {
            Outcome::Reply(r) => {
                let _ = sock.send_to(&r, from).await;
            }
            Outcome::Drop => {}
            Outcome::Forward => {
                let ups = shared.upstreams_for(&names, *src.ip());
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    if let Some(r) = answer::servfail(query) {
                        let _ = sock.send_to(&r, from).await;
                    }
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
        let SocketAddr::V4(src) = from else { continue };
        // Beyond the limit the connection is closed at once.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_conn(stream, *src.ip(), &shared).await;
            drop(permit);
        });
    }
}

/// Queries of one TCP connection (two-byte length, then the message), in turn.
async fn serve_conn(mut s: TcpStream, src: Ipv4Addr, shared: &Shared) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0u8; usize::from(len?)];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let names = shared.names();
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
