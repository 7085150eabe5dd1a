//! Forwarding names that are not dnet's to upstream resolvers, from the
//! daemon's own namespace (so a loopback stub such as 127.0.0.53 works):
//! each upstream in turn with a short timeout, SERVFAIL when all fail.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

/// How long one upstream may take to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The first answer of `upstreams` to `query` (over TCP when `tcp`), with
/// the client's id; `None` when every upstream failed.
pub async fn forward(query: &[u8], upstreams: &[SocketAddr], tcp: bool) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let client_id = [query[0], query[1]];
    for up in upstreams {
        // A fresh id (and, over UDP, a fresh port) per upstream query, so
        // an off-path guess has to match both.
        let id: [u8; 2] = rand::random();
        let mut q = query.to_vec();
        q[..2].copy_from_slice(&id);
        let r = if tcp {
            timeout(UPSTREAM_TIMEOUT, over_tcp(&q, *up)).await
        } else {
            timeout(UPSTREAM_TIMEOUT, over_udp(&q, *up, id)).await
        };
        match r {
            Ok(Ok(mut a)) if a.len() >= 12 && a[..2] == id => {
                a[..2].copy_from_slice(&client_id);
                return Some(a);
            }
            Ok(Ok(_)) => tracing::debug!(upstream = %up, "a reply that does not match"),
            Ok(Err(e)) => tracing::debug!(upstream = %up, "forwarding: {e}"),
            Err(_) => tracing::debug!(upstream = %up, "forwarding: no answer in time"),
        }
    }
    None
}

async fn over_udp(q: &[u8], up: SocketAddr, id: [u8; 2]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(q).await?;
    // Filled by the kernel as it is: no zeroing of 64 KiB per query.
    let mut buf = Vec::with_capacity(65535);
    loop {
        buf.clear();
        let n = sock.recv_buf(&mut buf).await?;
        // Only a response with our id; anything else is ignored.
        if n >= 12 && buf[..2] == id && buf[2] & 0x80 != 0 {
            return Ok(buf);
        }
    }
}

async fn over_tcp(q: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    let len = u16::try_from(q.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend_from_slice(q);
    s.write_all(&msg).await?;
    let n = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The daemon's default upstreams: the first three `nameserver` lines of a
/// resolv.conf (`text`).
pub fn from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // A scoped IPv6 address (fe80::1%eth0) is not taken.
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

/// `IP` or `IP:PORT` (`[IPv6]:PORT`); the port defaults to 53.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(format!(
            "{s:?}: expected IP or IP:PORT, such as 192.0.2.53 or 192.0.2.53:5353"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_three_nameservers_at_most() {
        let t = "# hi\nsearch example.com\nnameserver 10.0.0.1\nnameserver  ::1\n\
                 nameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions ndots:2\n";
        let v = from_resolv_conf(t);
        assert_eq!(
            v,
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap()
            ]
        );
        assert!(from_resolv_conf("").is_empty());
    }

    #[test]
    fn upstreams_parse_with_or_without_port() {
        assert_eq!(parse_upstream("1.2.3.4"), Ok("1.2.3.4:53".parse().unwrap()));
        assert_eq!(
            parse_upstream("1.2.3.4:5353"),
            Ok("1.2.3.4:5353".parse().unwrap())
        );
        assert_eq!(parse_upstream("::1"), Ok("[::1]:53".parse().unwrap()));
        assert!(parse_upstream("1.2.3.4:0").is_err());
        assert!(parse_upstream("example.com").is_err());
        assert!(parse_upstream("1.2.3.4:99999").is_err());
    }

    #[tokio::test]
    async fn next_upstream_on_failure_and_none_when_all_fail() {
        // A silent upstream (bound, never answers) and a working one.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = good.recv_from(&mut buf).await.unwrap();
            buf[2] |= 0x80;
            good.send_to(&buf[..n], from).await.unwrap();
        });
        let q = [0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let a = forward(&q, &[silent.local_addr().unwrap(), good_addr], false)
            .await
            .expect("the second answers");
        assert_eq!(&a[..2], &[0xab, 0xcd], "the client's id comes back");
        assert!(
            forward(&q, &[silent.local_addr().unwrap()], false)
                .await
                .is_none()
        );
    }
}
