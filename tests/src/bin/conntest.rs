//! conntest: a small TCP, UDP and ICMP echo client and server that proves
//! traffic flows, used by dnet's tests, demos and benchmark.
//!
//! Servers answer each request with the address they saw it come from, so
//! a test can check NAT (`198.18.0.2:40000`) as well as reachability.
//!
//!   conntest serve tcp|udp [IP:]PORT      serve until killed (`[::]:PORT`:
//!                                         IPv6 and IPv4; `tcp` and `udp`
//!                                         take `[IPv6]:PORT` too)
//!   conntest tcp IP:PORT [--timeout S]    print what the server saw; exit 0
//!   conntest udp IP:PORT [--timeout S]      when it answered, 1 otherwise
//!                [--broadcast]            (to a broadcast address)
//!                [--bind PORT]            from this source port
//!                [--count N --interval S] N requests in a row; all must be
//!                [--while PATH]           answered (a loss test); with
//!                                         --while, fewer if PATH goes
//!   conntest udp-flood IP:PORT          64-byte datagrams as fast as they
//!                [--seconds S] [--count N]  go, for S s (1; at most 60) or N
//!                [--broadcast]            datagrams; prints `SENT SECONDS`
//!   conntest ping IP... [--timeout S] [--count N] [--size N] [--id N]
//!                                         every address must answer
//!   conntest connections IP:PORT --count N  N TCP connections at once; all
//!                [--hold S]               answered or exit 1; kept open S s
//!                [--hold-while PATH]      (at most), or while PATH exists
//!                [--again]                then one more request on each,
//!                                         all answered
//!   conntest serve udp-echo [IP:]PORT     sends every datagram back whole
//!   conntest echo IP:PORT [--size N]      one UDP datagram of N bytes (up to
//!                                         three tries), larger than the MTU
//!                                         if need be (fragmented); exit 0
//!                                         when the same bytes come back
//!   conntest probe IP:PORT [--ttl N]      one UDP datagram (up to three tries);
//!                [--size N] [--df]        prints the server's answer or the
//!                                         ICMP error that came back
//!                                         (`time-exceeded from IP`,
//!                                         `frag-needed mtu N from IP`), as
//!                                         traceroute and tracepath read them
//!   conntest raw-udp IP:PORT --dst-mac MAC  one UDP datagram in a hand-made
//!                [--vlan ID]... [--dev D] Ethernet frame from D's (eth0's) own
//!                                         MAC and address, with 802.1Q tags
//!   conntest syn-flood IP:PORT --dst-mac MAC  N TCP SYNs in hand-made frames
//!                --count N [--dev D]      from D's (eth0's) MAC and address,
//!                                         source ports 10000 up (a bounded
//!                                         flood; answers are left to the
//!                                         kernel)
//!   conntest udp-flows IP:PORT --count N  one datagram from each of N
//!                                         sockets (N new UDP flows, a
//!                                         bounded flood); answers are not
//!                                         awaited
//!   conntest sniff [--dev D]              watches frames arriving on D until
//!                                         the timeout; prints `ready` once
//!                                         listening, a line per tagged frame
//!                                         and per untagged IPv4 packet
//!                                         (`ipv4 SRC > DST`), then
//!                                         `N tagged of M frames`
//!   conntest dns query|serve ...          see `dns.rs`
//!
//! Every client call is bounded by its timeout (3 s by default).

#[path = "conntest/dns.rs"]
mod dns;

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
        ["dns", "query", server, name, rest @ ..] => {
            let ty = rest
                .first()
                .filter(|t| !t.starts_with("--"))
                .unwrap_or(&"a");
            let tcp = rest.contains(&"--tcp");
            dns::query(server, name, ty, tcp, timeout)
        }
        ["dns", "serve", a, ip, ..] => dns::serve(addr(a)?, ip.parse()?),
        ["serve", "tcp", a, ..] => serve_tcp(addr(a)?),
        ["serve", "udp", a, ..] => serve_udp(addr(a)?),
        ["serve", "udp-echo", a, ..] => serve_udp_echo(addr(a)?),
        ["echo", a, ..] => {
            let size: usize = flag(args, "--size", 4000)?;
            println!("{}", echo(addr(a)?, size, timeout)?);
            Ok(())
        }
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
        ["udp-flood", a, ..] => {
            let secs: f64 = flag(args, "--seconds", 1.0)?;
            let count: u64 = flag(args, "--count", u64::MAX)?;
            let broadcast = args.iter().any(|a| a == "--broadcast");
            let (sent, took) = udp_flood(
                addr(a)?,
                Duration::from_secs_f64(secs.clamp(0.0, 60.0)),
                count,
                broadcast,
            )?;
            println!("{sent} {:.6}", took.as_secs_f64());
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
            let id: u16 = flag(args, "--id", (std::process::id() as u16) ^ 0x5a5a)?;
            for seq in 0..count {
                for ip in &ips {
                    let rtt = ping(*ip, id, seq, size, timeout)?;
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
            let again = args.iter().any(|a| a == "--again");
            connections(addr(a)?, count, timeout, hold, hold_while.as_deref(), again)
        }
        ["probe", a, ..] => {
            let ttl: u32 = flag(args, "--ttl", 0)?;
            let size: usize = flag(args, "--size", 6)?;
            let df = args.iter().any(|a| a == "--df");
            let line = probe(addr(a)?, ttl, size, df, timeout)?;
            println!("{line}");
            Ok(())
        }
        ["raw-udp", a, ..] => {
            let mac: String = flag(args, "--dst-mac", String::new())?;
            let dev: String = flag(args, "--dev", "eth0".to_owned())?;
            let vlans = args
                .iter()
                .enumerate()
                .filter(|(_, a)| *a == "--vlan")
                .map(|(i, _)| {
                    args.get(i + 1)
                        .and_then(|v| v.parse::<u16>().ok())
                        .filter(|v| *v < 4096)
                        .ok_or_else(|| anyhow::anyhow!("--vlan needs an id below 4096"))
                })
                .collect::<anyhow::Result<Vec<u16>>>()?;
            raw_udp(addr(a)?, &dev, parse_mac(&mac)?, &vlans)
        }
        ["syn-flood", a, ..] => {
            let mac: String = flag(args, "--dst-mac", String::new())?;
            let dev: String = flag(args, "--dev", "eth0".to_owned())?;
            let count: u16 = flag(args, "--count", 100)?;
            syn_flood(addr(a)?, &dev, parse_mac(&mac)?, count)
        }
        ["udp-flows", a, ..] => {
            let count: u16 = flag(args, "--count", 100)?;
            udp_flows(addr(a)?, count)
        }
        ["sniff", ..] => {
            let dev: String = flag(args, "--dev", "eth0".to_owned())?;
            sniff(&dev, timeout)
        }
        _ => anyhow::bail!(
            "usage: conntest serve tcp|udp [IP:]PORT | tcp IP:PORT | udp IP:PORT | ping IP | connections IP:PORT --count N | probe IP:PORT | raw-udp IP:PORT --dst-mac MAC | syn-flood IP:PORT --dst-mac MAC --count N | sniff"
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

fn serve_udp_echo(a: SocketAddr) -> anyhow::Result<()> {
    let s = UdpSocket::bind(a)?;
    let mut buf = [0u8; 65536];
    loop {
        let (n, peer) = s.recv_from(&mut buf)?;
        let _ = s.send_to(&buf[..n], peer);
    }
}

/// One datagram of `size` patterned bytes to an echo server, which must
/// send the same bytes back.
fn echo(a: SocketAddr, size: usize, timeout: Duration) -> anyhow::Result<String> {
    let s = UdpSocket::bind(if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    s.connect(a)?;
    s.set_read_timeout(Some(timeout / 3))?;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        s.send(&payload)?;
        if let Ok(n) = s.recv(&mut buf) {
            anyhow::ensure!(
                buf[..n] == payload[..],
                "{n} bytes came back, not the {size} sent"
            );
            return Ok(format!("echoed {size} bytes"));
        }
    }
    anyhow::bail!("no echo from {a}")
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
    let s = if a.is_ipv6() {
        UdpSocket::bind(("::", bind_port))?
    } else {
        UdpSocket::bind(("0.0.0.0", bind_port))?
    };
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

/// Sends 64-byte datagrams to `a` until `count` are sent or `limit` has
/// passed (a bounded flood); a full queue (`ENOBUFS`) is waited out.
/// Returns what was sent and how long it took.
fn udp_flood(
    a: SocketAddr,
    limit: Duration,
    count: u64,
    broadcast: bool,
) -> anyhow::Result<(u64, Duration)> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_broadcast(broadcast)?;
    let payload = [0u8; 64];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        // The clock every 64 datagrams: a reading costs as much as a send.
        if sent.is_multiple_of(64) && start.elapsed() >= limit {
            break;
        }
        match s.send_to(&payload, a) {
            Ok(_) => sent += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                std::thread::yield_now();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((sent, start.elapsed()))
}

fn connections(
    a: SocketAddr,
    count: usize,
    timeout: Duration,
    hold: Duration,
    hold_while: Option<&str>,
    again: bool,
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
    if again {
        for (i, s) in open.iter_mut().enumerate() {
            s.write_all(b"again\n")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            anyhow::ensure!(!line.is_empty(), "connection {i} got no second answer");
        }
        println!("{count} connections answered again");
    }
    Ok(())
}

/// One ICMP echo with identifier `id` over a raw socket (needs
/// CAP_NET_RAW).
fn ping(
    ip: Ipv4Addr,
    id: u16,
    seq: u16,
    size: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
    let fd = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
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

/// One UDP datagram to `a`, as a traceroute or tracepath probe: with TTL
/// `ttl` (0: the default) and, with `df`, the DF bit set whatever the path
/// MTU the kernel knows (`IP_PMTUDISC_PROBE`). Returns the server's answer,
/// or the ICMP error that came back for the probe (`IP_RECVERR`).
fn probe(
    a: SocketAddr,
    ttl: u32,
    size: usize,
    df: bool,
    timeout: Duration,
) -> anyhow::Result<String> {
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt,
    };
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(a)?;
    setsockopt(&s, sockopt::Ipv4RecvErr, &true)?;
    if ttl > 0 {
        setsockopt(&s, sockopt::Ipv4Ttl, &(ttl as i32))?;
    }
    if df {
        let v: libc::c_int = libc::IP_PMTUDISC_PROBE;
        // SAFETY: an int option of the right size on a socket we own.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(
            r == 0,
            "IP_MTU_DISCOVER: {}",
            std::io::Error::last_os_error()
        );
    }
    s.set_nonblocking(true)?;
    let payload = vec![b'x'; size.max(1)];
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        // An error the previous try left on the socket may fail this send.
        let _ = s.send(&payload);
        let start = Instant::now();
        while start.elapsed() < timeout / 3 {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
            if let Ok(m) = recvmsg::<SockaddrIn>(
                s.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_ERRQUEUE,
            ) {
                for c in m.cmsgs()? {
                    if let ControlMessageOwned::Ipv4RecvErr(e, from) = c {
                        let from = from
                            .map(|f| Ipv4Addr::from(u32::from_be(f.sin_addr.s_addr)).to_string())
                            .unwrap_or_else(|| "?".to_owned());
                        if e.ee_origin != libc::SO_EE_ORIGIN_ICMP {
                            return Ok(format!("local error {} mtu {}", e.ee_errno, e.ee_info));
                        }
                        return Ok(match (e.ee_type, e.ee_code) {
                            (11, _) => format!("time-exceeded from {from}"),
                            (3, 4) => format!("frag-needed mtu {} from {from}", e.ee_info),
                            (t, c) => format!("icmp type {t} code {c} from {from}"),
                        });
                    }
                }
            }
            match s.recv(&mut buf) {
                Ok(n) => {
                    return Ok(format!(
                        "answer {}",
                        String::from_utf8_lossy(&buf[..n]).trim()
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The error itself is read from the error queue above.
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    anyhow::bail!("no answer and no ICMP error from {a}")
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("bad MAC {s:?}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {s:?} (want six bytes)"))
}

/// `dev`'s MAC and first IPv4 address.
fn own_addresses(dev: &str) -> anyhow::Result<([u8; 6], Ipv4Addr, i32)> {
    let mut mac = None;
    let mut ip = None;
    for a in nix::ifaddrs::getifaddrs()?.filter(|a| a.interface_name == dev) {
        let Some(addr) = a.address else { continue };
        if let Some(l) = addr.as_link_addr()
            && let Some(m) = l.addr()
        {
            mac = Some(m);
        }
        if let Some(i) = addr.as_sockaddr_in()
            && ip.is_none()
        {
            ip = Some(i.ip());
        }
    }
    let index = nix::net::if_::if_nametoindex(dev)? as i32;
    match (mac, ip) {
        (Some(m), Some(i)) => Ok((m, i, index)),
        _ => anyhow::bail!("{dev} has no MAC or no IPv4 address"),
    }
}

/// A packet socket; `protocol` in network order (0: send only).
fn packet_socket(protocol: u16) -> anyhow::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol as libc::c_int) };
    anyhow::ensure!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

fn link_addr(index: i32, protocol: u16, mac: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&mac);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol,
        sll_ifindex: index,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

/// An Ethernet frame (802.1Q tags `vlans` first) holding an IPv4 packet
/// from `src` to `dst` of protocol `proto` with `l4` as its payload, whose
/// checksum at `csum_at` (inside `l4`) is filled in over the pseudo header.
fn ipv4_frame(
    (dst_mac, src_mac): ([u8; 6], [u8; 6]),
    vlans: &[u16],
    (src, dst): (Ipv4Addr, Ipv4Addr),
    proto: u8,
    mut l4: Vec<u8>,
    csum_at: usize,
) -> Vec<u8> {
    use dnet_common::csum;
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let c = csum::fold(csum::sum(&l4, csum::sum(&pseudo, 0)));
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut frame = Vec::with_capacity(14 + 4 * vlans.len() + ip.len() + l4.len());
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    for v in vlans {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&v.to_be_bytes());
    }
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&l4);
    frame
}

/// Sends `frame` as it is through the packet socket `fd` to `sa`.
fn send_frame(
    fd: &std::os::fd::OwnedFd,
    sa: &libc::sockaddr_ll,
    frame: &[u8],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the frame and the address outlive the call; the length given
    // is the address's size.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP datagram in a frame built here, sent through a packet socket: the
/// frame leaves as it is, 802.1Q tags included (the receiving side's kernel
/// moves the outer one into the packet's metadata).
/// One datagram from each of `count` sockets, all kept open until every
/// one went (so that each has its own source port).
fn udp_flows(dst: SocketAddr, count: u16) -> anyhow::Result<()> {
    let mut socks = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(b"flow\n", dst)?;
        socks.push(s);
    }
    println!("sent {count} flows");
    Ok(())
}

fn raw_udp(dst: SocketAddr, dev: &str, dst_mac: [u8; 6], vlans: &[u16]) -> anyhow::Result<()> {
    let SocketAddr::V4(dst) = dst else {
        anyhow::bail!("IPv4 only")
    };
    let (mac, src, index) = own_addresses(dev)?;
    let payload = b"hello\n";
    let mut udp = Vec::new();
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let frame = ipv4_frame((dst_mac, mac), vlans, (src, *dst.ip()), 17, udp, 6);
    let fd = packet_socket(0)?;
    send_frame(&fd, &link_addr(index, 0, dst_mac), &frame)
        .map_err(|e| anyhow::anyhow!("send: {e}"))?;
    println!("sent {} bytes, vlans {vlans:?}", frame.len());
    Ok(())
}

/// `count` TCP SYNs to `dst`, each from its own source port, in frames
/// built here and sent through a packet socket (a flood without sockets:
/// what comes back is the kernel's to answer).
fn syn_flood(dst: SocketAddr, dev: &str, dst_mac: [u8; 6], count: u16) -> anyhow::Result<()> {
    let SocketAddr::V4(dst) = dst else {
        anyhow::bail!("IPv4 only")
    };
    let (mac, src, index) = own_addresses(dev)?;
    let fd = packet_socket(0)?;
    let sa = link_addr(index, 0, dst_mac);
    let mut sent = 0u32;
    for i in 0..count {
        let sport = 10000u16.wrapping_add(i);
        let mut tcp = Vec::with_capacity(20);
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dst.port().to_be_bytes());
        tcp.extend_from_slice(&u32::from(i).to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        tcp.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        let frame = ipv4_frame((dst_mac, mac), &[], (src, *dst.ip()), 6, tcp, 16);
        if send_frame(&fd, &sa, &frame).is_ok() {
            sent += 1;
        }
    }
    println!("sent {sent} SYNs");
    Ok(())
}

/// Counts the frames that arrive on `dev` until `timeout`, and says which
/// carried an 802.1Q tag (in the packet's metadata, where the kernel puts
/// it, or still in the frame).
fn sniff(dev: &str, timeout: Duration) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    const ETH_P_ALL: u16 = 0x0003;
    let fd = packet_socket(ETH_P_ALL.to_be())?;
    let index = nix::net::if_::if_nametoindex(dev)? as i32;
    let sa = link_addr(index, ETH_P_ALL.to_be(), [0; 6]);
    // SAFETY: a sockaddr_ll of the size given, on our socket.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(r == 0, "bind: {}", std::io::Error::last_os_error());
    let on: libc::c_int = 1;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: options of the sizes given, on our socket.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    println!("ready");
    std::io::Write::flush(&mut std::io::stdout())?;
    let (mut tagged, mut total) = (0, 0);
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    // Room for one tpacket_auxdata control message, 8-byte aligned.
    let mut control = [0u64; 8];
    while start.elapsed() < timeout {
        // SAFETY: zeroed plain C structs, filled in below.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut from as *mut libc::sockaddr_ll as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: every pointer in `msg` points at a live buffer of the
        // length it gives.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            continue;
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        total += 1;
        let mut vlan = None;
        // SAFETY: the control buffer was filled by the kernel; the CMSG
        // macros walk it within `msg_controllen`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux: libc::tpacket_auxdata = std::ptr::read_unaligned(
                        libc::CMSG_DATA(c) as *const libc::tpacket_auxdata
                    );
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                        vlan = Some(aux.tp_vlan_tci & 0x0fff);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let n = n as usize;
        if vlan.is_none()
            && n >= 16
            && matches!(u16::from_be_bytes([buf[12], buf[13]]), 0x8100 | 0x88a8)
        {
            vlan = Some(u16::from_be_bytes([buf[14], buf[15]]) & 0x0fff);
        }
        if let Some(v) = vlan {
            tagged += 1;
            println!("tagged vlan {v}, {n} bytes");
        } else if n >= 34 && buf[12..14] == [0x08, 0x00] {
            let (s, d) = (&buf[26..30], &buf[30..34]);
            println!(
                "ipv4 {} > {}",
                Ipv4Addr::new(s[0], s[1], s[2], s[3]),
                Ipv4Addr::new(d[0], d[1], d[2], d[3])
            );
        }
    }
    println!("{tagged} tagged of {total} frames");
    Ok(())
}
