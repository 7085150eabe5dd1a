//! conntest: a small TCP, UDP and ICMP echo client and server that proves
//! traffic flows, used by dnet's tests, demos and benchmark.
//!
//! Servers answer each request with the address they saw it come from, so
//! a test can check NAT (`198.18.0.2:40000`) as well as reachability.
//!
//!   conntest serve tcp|udp [IP:]PORT      serve until killed
//!   conntest tcp IP:PORT [--timeout S]    print what the server saw; exit 0
//!   conntest udp IP:PORT [--timeout S]      when it answered, 1 otherwise
//!                [--broadcast]            (to a broadcast address)
//!                [--bind PORT]            from this source port
//!                [--count N --interval S] N requests in a row; all must be
//!                [--while PATH]           answered (a loss test); with
//!                                         --while, fewer if PATH goes
//!   conntest ping IP... [--timeout S] [--count N] [--size N]
//!                                         every address must answer
//!   conntest connections IP:PORT --count N  N TCP connections at once; all
//!                [--hold S]               answered or exit 1; kept open S s
//!                [--hold-while PATH]      (at most), or while PATH exists
//!
//! Every client call is bounded by its timeout (3 s by default).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conntest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{name} needs a value")),
        None => Ok(default),
    }
}

fn path_flag(args: &[String], name: &str) -> anyhow::Result<Option<String>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(Some(
            args.get(i + 1)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a path"))?,
        )),
        None => Ok(None),
    }
}

fn addr(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            port,
        )));
    }
    s.parse()
        .map_err(|_| anyhow::anyhow!("bad address {s:?} (want IP:PORT)"))
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let timeout = Duration::from_secs_f64(flag(args, "--timeout", 3.0)?);
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", "tcp", a, ..] => serve_tcp(addr(a)?),
        ["serve", "udp", a, ..] => serve_udp(addr(a)?),
        ["tcp", a, ..] => {
            println!("{}", tcp_once(addr(a)?, timeout)?);
            Ok(())
        }
        ["udp", a, ..] => {
            let count: u32 = flag(args, "--count", 0)?;
            let broadcast = args.iter().any(|a| a == "--broadcast");
            if count > 0 {
                let interval = Duration::from_secs_f64(flag(args, "--interval", 0.01)?);
                let until = path_flag(args, "--while")?;
                return udp_series(addr(a)?, count, interval, timeout, until.as_deref());
            }
            let bind_port: u16 = flag(args, "--bind", 0)?;
            println!("{}", udp_once(addr(a)?, timeout, broadcast, bind_port)?);
            Ok(())
        }
        ["ping", ..] => {
            let ips: Vec<Ipv4Addr> = args[1..]
                .iter()
                .take_while(|a| !a.starts_with("--"))
                .map(|a| a.parse())
                .collect::<Result<_, _>>()?;
            anyhow::ensure!(!ips.is_empty(), "ping needs an address");
            let count: u16 = flag(args, "--count", 1)?;
            let size: usize = flag(args, "--size", 56)?;
            for seq in 0..count {
                for ip in &ips {
                    let rtt = ping(*ip, seq, size, timeout)?;
                    println!(
                        "reply from {ip}: seq={seq} time={:.3} ms",
                        rtt.as_secs_f64() * 1e3
                    );
                }
            }
            Ok(())
        }
        ["connections", a, ..] => {
            let count: usize = flag(args, "--count", 100)?;
            let hold = Duration::from_secs_f64(flag(args, "--hold", 0.0)?);
            let hold_while = path_flag(args, "--hold-while")?;
            connections(addr(a)?, count, timeout, hold, hold_while.as_deref())
        }
        _ => anyhow::bail!(
            "usage: conntest serve tcp|udp [IP:]PORT | tcp IP:PORT | udp IP:PORT | ping IP | connections IP:PORT --count N"
        ),
    }
}

fn serve_tcp(a: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(a)?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let Ok(peer) = s.peer_addr() else { return };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            // One answer per line, until the client closes.
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                if s.write_all(format!("{peer}\n").as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        });
    }
    Ok(())
}

fn serve_udp(a: SocketAddr) -> anyhow::Result<()> {
    let s = UdpSocket::bind(a)?;
    let mut buf = [0u8; 65536];
    loop {
        let (_, peer) = s.recv_from(&mut buf)?;
        let _ = s.send_to(format!("{peer}\n").as_bytes(), peer);
    }
}

fn tcp_once(a: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&a, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"hello\n")?;
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line)?;
    anyhow::ensure!(!line.is_empty(), "no answer from {a}");
    Ok(line.trim().to_owned())
}

/// One request over a connected socket (so that an ICMP port unreachable
/// comes back as "connection refused"), or a broadcast one.
fn udp_once(
    a: SocketAddr,
    timeout: Duration,
    broadcast: bool,
    bind_port: u16,
) -> anyhow::Result<String> {
    let s = UdpSocket::bind(("0.0.0.0", bind_port))?;
    s.set_broadcast(broadcast)?;
    s.set_read_timeout(Some(timeout / 3))?;
    if !broadcast {
        s.connect(a)?;
    }
    let mut buf = [0u8; 512];
    // Three tries: UDP may lose the first datagram while ARP resolves.
    for _ in 0..3 {
        if broadcast {
            s.send_to(b"hello\n", a)?;
        } else {
            s.send(b"hello\n")?;
        }
        match s.recv_from(&mut buf) {
            Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(e.into()),
            Err(_) => {}
        }
    }
    anyhow::bail!("no answer from {a}")
}

/// `count` numbered requests, one after the other; fails unless every one
/// is answered.
fn udp_series(
    a: SocketAddr,
    count: u32,
    interval: Duration,
    timeout: Duration,
    while_exists: Option<&str>,
) -> anyhow::Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 512];
    let mut lost = 0;
    let mut sent = 0;
    for i in 0..count {
        if while_exists.is_some_and(|p| !std::path::Path::new(p).exists()) {
            break;
        }
        sent += 1;
        s.send_to(format!("{i}\n").as_bytes(), a)?;
        if s.recv_from(&mut buf).is_err() {
            lost += 1;
        }
        std::thread::sleep(interval);
    }
    println!("{} of {sent} answered", sent - lost);
    anyhow::ensure!(lost == 0, "{lost} of {sent} requests lost");
    Ok(())
}

fn connections(
    a: SocketAddr,
    count: usize,
    timeout: Duration,
    hold: Duration,
    hold_while: Option<&str>,
) -> anyhow::Result<()> {
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect_timeout(&a, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"hello\n")?;
        open.push(s);
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &mut open {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        anyhow::ensure!(!line.is_empty(), "a connection got no answer");
        seen.insert(line.trim().to_owned());
    }
    anyhow::ensure!(
        seen.len() == count,
        "{} answers were not distinct",
        count - seen.len()
    );
    println!("{count} connections answered");
    // Kept open a while, so that others can look at them all at once:
    // `hold` at most, and with `hold_while` only while that file exists.
    let start = Instant::now();
    while start.elapsed() < hold && hold_while.is_none_or(|p| std::path::Path::new(p).exists()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One ICMP echo over a raw socket (needs CAP_NET_RAW).
fn ping(ip: Ipv4Addr, seq: u16, size: usize, timeout: Duration) -> anyhow::Result<Duration> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
    let fd = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend((0..size).map(|i| i as u8));
    let c = dnet_common::csum::checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let dst = SockaddrIn::from(SocketAddrV4::new(ip, 0));
    let start = Instant::now();
    nix::sys::socket::sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &pkt,
        &dst,
        MsgFlags::empty(),
    )?;
    let mut file = std::fs::File::from(fd);
    let mut buf = [0u8; 65536];
    while start.elapsed() < timeout {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        let tv = libc::timeval {
            tv_sec: left.as_secs() as libc::time_t,
            tv_usec: left.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: a valid timeval, its size, on a socket fd we own.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => return Err(e.into()),
        };
        // A raw socket hands over the IP header too.
        let ihl = ((buf[0] & 0x0f) as usize) * 4;
        if n < ihl + 8 || buf[12..16] != ip.octets() {
            continue;
        }
        let icmp = &buf[ihl..n];
        if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
            return Ok(start.elapsed());
        }
    }
    anyhow::bail!("no echo reply from {ip} within {timeout:?}")
}
