//! One query in, one decision out: an answer from the names table, a
//! forward, or nothing at all (a packet with no DNS header to answer). A bad
//! query gets an error answer and never stops the resolver.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, Record, RecordType, rdata},
};
use rand::seq::SliceRandom as _;

use super::names::{Lookup, Names, Reverse};

/// TTL of dnet's own answers: short, as they follow the state at once.
pub const TTL: u32 = 5;
/// The EDNS payload size dnet announces (the DNS flag day's choice).
const EDNS_PAYLOAD: u16 = 1232;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this back.
    Reply(Vec<u8>),
    /// Not a name of dnet's: forward the query as it came.
    Forward,
    /// No answer at all: not a DNS query (shorter than a header, or a response).
    Drop,
}

/// Decides what to do with `query` from source `src`; `udp` limits the
/// answer to the client's UDP payload size (truncated beyond).
pub fn answer(query: &[u8], names: &Names, src: Ipv4Addr, udp: bool) -> Outcome {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        // Too short for a header, or a response (answering one could loop).
        return Outcome::Drop;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return reply(error(id, ResponseCode::FormErr), None),
    };
    let limit = udp.then(|| req.max_payload());
    if req.metadata.message_type != MessageType::Query {
        return Outcome::Drop;
    }
    if req.metadata.op_code != OpCode::Query {
        return reply(error(id, ResponseCode::NotImp), limit);
    }
    let [q] = req.queries.as_slice() else {
        return reply(error(id, ResponseCode::FormErr), limit);
    };
    let Some(client) = names.client(src) else {
        return reply(response(&req, q, ResponseCode::Refused), limit);
    };
    let unknown = || {
        if client.forward {
            Outcome::Forward
        } else {
            // Attached only to internal networks: nothing leaves
            // (Docker's CVE-2024-29018).
            reply(response(&req, q, ResponseCode::NXDomain), limit)
        }
    };
    if q.query_class() != DNSClass::IN {
        return unknown();
    }
    let qname = q.name().to_ascii();
    if q.query_type() == RecordType::PTR
        && let Some(ip) = arpa_v4(&qname)
    {
        return match names.reverse(client, ip) {
            Reverse::Named(n) => {
                let mut m = response(&req, q, ResponseCode::NoError);
                m.metadata.authoritative = true;
                if let Ok(target) = Name::from_ascii(format!("{n}.")) {
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::PTR(rdata::PTR(target)),
                    ));
                }
                reply(m, limit)
            }
            Reverse::Unused => reply(response(&req, q, ResponseCode::NXDomain), limit),
            Reverse::Unknown => unknown(),
        };
    }
    match names.lookup(client, &qname) {
        Lookup::Known(mut addrs) => {
            let mut m = response(&req, q, ResponseCode::NoError);
            m.metadata.authoritative = true;
            addrs.shuffle(&mut rand::rng());
            for ip in addrs {
                let data = match (q.query_type(), ip) {
                    (RecordType::A | RecordType::ANY, std::net::IpAddr::V4(a)) => {
                        RData::A(rdata::A(a))
                    }
                    (RecordType::AAAA | RecordType::ANY, std::net::IpAddr::V6(a)) => {
                        RData::AAAA(rdata::AAAA(a))
                    }
                    _ => continue,
                };
                m.add_answer(Record::from_rdata(q.name().clone(), TTL, data));
            }
            // A known name with no address of the asked type: an empty
            // NOERROR, never forwarded.
            reply(m, limit)
        }
        Lookup::Unknown => unknown(),
    }
}

/// SERVFAIL for `query` (every upstream failed); `None` if it has no header.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let m = match Message::from_vec(query) {
        Ok(req) => match req.queries.as_slice() {
            [q] => response(&req, q, ResponseCode::ServFail),
            _ => error(id, ResponseCode::ServFail),
        },
        Err(_) => error(id, ResponseCode::ServFail),
    };
    m.to_vec().ok()
}

/// The IPv4 address of a `d.c.b.a.in-addr.arpa` name.
fn arpa_v4(name: &str) -> Option<Ipv4Addr> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let rev = name.strip_suffix(".in-addr.arpa")?;
    let mut o = [0u8; 4];
    let mut parts = rev.split('.');
    for b in o.iter_mut().rev() {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(o))
}

fn error(id: u16, code: ResponseCode) -> Message {
    Message::error_msg(id, OpCode::Query, code)
}

/// An answer to `req` with its question and no records yet.
fn response(req: &Message, q: &Query, code: ResponseCode) -> Message {
    let mut m = Message::response(req.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = code;
    m.add_query(q.clone());
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(e);
    }
    m
}

fn reply(m: Message, limit: Option<u16>) -> Outcome {
    let Ok(bytes) = m.to_vec() else {
        return Outcome::Drop;
    };
    match limit {
        Some(l) if bytes.len() > usize::from(l) => match m.truncate().to_vec() {
            Ok(b) => Outcome::Reply(b),
            Err(_) => Outcome::Drop,
        },
        _ => Outcome::Reply(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::names::tests::sample;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn ask(names: &Names, src: &str, q: &[u8], udp: bool) -> Message {
        match answer(q, names, ip(src), udp) {
            Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
            o => panic!("expected a reply, got {o:?}"),
        }
    }

    fn addrs(m: &Message) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_records_for_names_aliases_and_qualified_names() {
        let t = Names::build(&sample(), |_| vec![]);
        for name in ["api.", "API.back.", "svc.", "bbbbbbbbbbbb."] {
            let m = ask(&t, "10.2.0.2", &query(name, RecordType::A), true);
            assert_eq!(m.metadata.id, 4242);
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(m.metadata.authoritative);
            assert!(m.metadata.recursion_desired);
            assert_eq!(m.queries.len(), 1);
            assert!(!addrs(&m).is_empty(), "{name}");
        }
        let m = ask(&t, "10.2.0.2", &query("svc.", RecordType::A), true);
        assert_eq!(addrs(&m), vec![ip("10.2.0.3"), ip("10.2.0.4")]);
    }

    #[test]
    fn known_name_without_that_family_is_an_empty_noerror() {
        let t = Names::build(&sample(), |_| vec![]);
        for ty in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let m = ask(&t, "10.2.0.2", &query("api.", ty), true);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.answers.is_empty());
        }
    }

    #[test]
    fn dual_stack_containers_get_aaaa_records() {
        let mut st = sample();
        let api = st.containers.get_mut("bbbbbbbbbbbbbbbb").unwrap();
        api.endpoints[0].ip6 = Some("fd00:2::3".parse().unwrap());
        let t = Names::build(&st, |_| vec![]);
        let v6 = |m: &Message| -> Vec<std::net::Ipv6Addr> {
            m.answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::AAAA(a) => Some(a.0),
                    _ => None,
                })
                .collect()
        };
        for name in ["api.", "api.back.", "svc."] {
            let m = ask(&t, "10.2.0.2", &query(name, RecordType::AAAA), true);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert_eq!(
                v6(&m),
                vec!["fd00:2::3".parse::<std::net::Ipv6Addr>().unwrap()]
            );
            assert!(addrs(&m).is_empty(), "no A in an AAAA answer");
        }
        let m = ask(&t, "10.2.0.2", &query("api.", RecordType::A), true);
        assert_eq!(addrs(&m), vec![ip("10.2.0.3")]);
        assert!(v6(&m).is_empty(), "no AAAA in an A answer");
        // IPv4-only api2: an empty NOERROR, as before.
        let m = ask(&t, "10.2.0.2", &query("api2.", RecordType::AAAA), true);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn unknown_names_are_forwarded_unless_internal_only() {
        let t = Names::build(&sample(), |_| vec![]);
        let q = query("example.com.", RecordType::A);
        assert_eq!(answer(&q, &t, ip("10.2.0.2"), true), Outcome::Forward);
        // Another network's container is as unknown as example.com.
        let q = query("www.", RecordType::A);
        assert_eq!(answer(&q, &t, ip("10.2.0.3"), true), Outcome::Forward);
        let m = ask(&t, "10.3.0.2", &query("example.com.", RecordType::A), true);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = ask(&t, "10.3.0.2", &query("web.", RecordType::A), true);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn strangers_are_refused() {
        let t = Names::build(&sample(), |_| vec![]);
        for src in ["172.17.0.2", "10.2.0.200", "198.18.0.1"] {
            let m = ask(&t, src, &query("api.", RecordType::A), true);
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{src}");
            assert!(m.answers.is_empty());
        }
    }

    #[test]
    fn ptr_answers_name_dot_network() {
        let t = Names::build(&sample(), |_| vec![]);
        let m = ask(
            &t,
            "10.2.0.2",
            &query("3.0.2.10.in-addr.arpa.", RecordType::PTR),
            true,
        );
        let RData::PTR(p) = &m.answers[0].data else {
            panic!("not a PTR")
        };
        assert_eq!(p.0.to_ascii(), "api.back.");
        let m = ask(
            &t,
            "10.2.0.2",
            &query("99.0.2.10.in-addr.arpa.", RecordType::PTR),
            true,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let q = query("8.8.8.8.in-addr.arpa.", RecordType::PTR);
        assert_eq!(answer(&q, &t, ip("10.2.0.2"), true), Outcome::Forward);
        assert_eq!(arpa_v4("1.2.3.in-addr.arpa."), None);
        assert_eq!(arpa_v4("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
    }

    #[test]
    fn malformed_and_truncated_queries_get_errors_or_nothing() {
        let t = Names::build(&sample(), |_| vec![]);
        // Shorter than a header: nothing to answer.
        assert_eq!(answer(&[1, 2, 3], &t, ip("10.2.0.2"), true), Outcome::Drop);
        // A header that promises a question, and no question: FORMERR.
        let mut q = query("api.", RecordType::A);
        q.truncate(14);
        let m = ask(&t, "10.2.0.2", &q, true);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 4242);
        // Garbage after a valid header.
        let mut q = query("api.", RecordType::A);
        q.truncate(12);
        q.extend_from_slice(&[0xff; 40]);
        let m = ask(&t, "10.2.0.2", &q, true);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Two questions.
        let mut m2 = Message::query();
        m2.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        m2.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        let m = ask(&t, "10.2.0.2", &m2.to_vec().unwrap(), true);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A response is never answered.
        let mut r = query("api.", RecordType::A);
        r[2] |= 0x80;
        assert_eq!(answer(&r, &t, ip("10.2.0.2"), true), Outcome::Drop);
        // Another opcode.
        let mut u = Message::query();
        u.metadata.op_code = OpCode::Update;
        let m = ask(&t, "10.2.0.2", &u.to_vec().unwrap(), true);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        // Every prefix of a good query: never a panic.
        let q = query("api.back.", RecordType::A);
        for n in 0..q.len() {
            let _ = answer(&q[..n], &t, ip("10.2.0.2"), true);
        }
        assert!(servfail(&q).is_some());
        assert!(servfail(&q[..5]).is_none());
    }

    #[test]
    fn big_answers_are_truncated_over_udp_only() {
        let mut s = sample();
        // 60 containers sharing one alias: more than 512 bytes of answers.
        for i in 0..60u8 {
            let id = format!("{i:016x}");
            let c = crate::dns::names::tests::ctr(
                &id,
                &format!("many{i}"),
                &[("nk", &format!("10.2.0.{}", 100 + i), &["crowd"])],
            );
            s.containers.insert(id, c);
        }
        let t = Names::build(&s, |_| vec![]);
        let q = query("crowd.", RecordType::A);
        let m = ask(&t, "10.2.0.2", &q, true);
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = ask(&t, "10.2.0.2", &q, false);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
    }
}
