//! DNS for the names scenarios: one query to a server (UDP or TCP), and a
//! fake upstream that answers every A question with one address.
//!
//!   conntest dns query SERVER[:PORT] NAME [a|aaaa|ptr] [--tcp]
//!       prints `rcode NoError` (the answer's code), then a line per
//!       record: `A 10.1.0.2`, `AAAA fd00::2`, `PTR web.front.`
//!   conntest dns serve [IP:]PORT ANSWER-IP
//!       answers names under `example.`: A with ANSWER-IP (TTL 0), other
//!       types empty; NXDOMAIN for every other name; until killed

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use hickory_proto::{
    op::{Message, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata},
};

pub fn query(
    server: &str,
    name: &str,
    ty: &str,
    tcp: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let server: SocketAddr = match server.parse::<Ipv4Addr>() {
        Ok(ip) => SocketAddr::new(ip.into(), 53),
        Err(_) => server.parse()?,
    };
    let ty = match ty {
        "a" => RecordType::A,
        "aaaa" => RecordType::AAAA,
        "ptr" => RecordType::PTR,
        t => anyhow::bail!("unknown type {t:?}"),
    };
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name)?, ty));
    let bytes = q.to_vec()?;
    let answer = if tcp {
        let mut s = TcpStream::connect_timeout(&server, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut msg = (bytes.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&bytes);
        s.write_all(&msg)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf)?;
        buf
    } else {
        let s = UdpSocket::bind(if server.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        })?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(&bytes, server)?;
        let mut buf = vec![0u8; 65535];
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        buf
    };
    let m = Message::from_vec(&answer)?;
    anyhow::ensure!(m.metadata.id == q.metadata.id, "an answer to another query");
    println!("rcode {:?}", m.metadata.response_code);
    for r in &m.answers {
        match &r.data {
            RData::A(a) => println!("A {}", a.0),
            RData::AAAA(a) => println!("AAAA {}", a.0),
            RData::PTR(p) => println!("PTR {}", p.0),
            d => println!("{:?}", d.record_type()),
        }
    }
    Ok(())
}

pub fn serve(addr: SocketAddr, ip: Ipv4Addr) -> anyhow::Result<()> {
    let s = UdpSocket::bind(addr)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = s.recv_from(&mut buf)?;
        let Ok(req) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let mut m = Message::response(req.metadata.id, OpCode::Query);
        m.metadata.recursion_desired = req.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.response_code = ResponseCode::NoError;
        for q in &req.queries {
            m.add_query(q.clone());
            if !q
                .name()
                .to_ascii()
                .to_ascii_lowercase()
                .ends_with("example.")
            {
                m.metadata.response_code = ResponseCode::NXDomain;
            } else if q.query_type() == RecordType::A {
                m.add_answer(Record::from_rdata(
                    q.name().clone(),
                    0,
                    RData::A(rdata::A(ip)),
                ));
            }
        }
        let _ = s.send_to(&m.to_vec()?, from);
    }
}
