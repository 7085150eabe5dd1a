//! Parsing and validation of what users type: names, publish specs, driver
//! options. Pure logic.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "invalid {kind} name {name:?}: use 1 to 64 characters from [a-zA-Z0-9_.-], starting with a letter or digit"
    )]
    Name { kind: &'static str, name: String },
    #[error("invalid publish spec {spec:?}: {why}")]
    Publish { spec: String, why: String },
    #[error("invalid option {0:?}: expected KEY=VALUE")]
    Option(String),
    #[error("--{flag} is given twice for {family} ({a} and {b}): give one per address family")]
    TwicePerFamily {
        flag: &'static str,
        family: &'static str,
        a: String,
        b: String,
    },
}

/// Sorts the values of a flag given once per address family (`--subnet
/// 10.1.0.0/16 --subnet fd00:1::/64`, as Docker takes them) into the IPv4
/// one and the IPv6 one: a value with a `:` is IPv6. The daemon parses
/// and checks each.
pub fn per_family(
    flag: &'static str,
    values: &[String],
) -> Result<(Option<String>, Option<String>), SpecError> {
    let (mut v4, mut v6): (Option<String>, Option<String>) = (None, None);
    for v in values {
        let (slot, family) = if v.contains(':') {
            (&mut v6, "IPv6")
        } else {
            (&mut v4, "IPv4")
        };
        if let Some(a) = slot {
            return Err(SpecError::TwicePerFamily {
                flag,
                family,
                a: a.clone(),
                b: v.clone(),
            });
        }
        *slot = Some(v.clone());
    }
    Ok((v4, v6))
}

/// Checks a network or container name (Docker's rule, bounded length).
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), SpecError> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Name {
            kind,
            name: name.to_owned(),
        })
    }
}

/// `KEY=VALUE`.
pub fn parse_option(s: &str) -> Result<(String, String), SpecError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(SpecError::Option(s.to_owned())),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// One `-p` argument: a run of `count` consecutive host ports mapped to as
/// many consecutive container ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address the ports are published on; `None` is every address of
    /// both families (IPv6 for dual-stack containers only). An address of
    /// one family publishes in that family only; `::` is every IPv6
    /// address.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub count: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// Host ports covered.
    pub fn host_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.host_port..=self.host_port + (self.count - 1)
    }

    /// The two mappings claim a common host port.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        let ips_meet = match (self.host_ip, other.host_ip) {
            (Some(a), Some(b)) => {
                a.is_ipv4() == b.is_ipv4() && (a == b || a.is_unspecified() || b.is_unspecified())
            }
            _ => true,
        };
        let a = self.host_ports();
        let b = other.host_ports();
        self.proto == other.proto && ips_meet && a.start() <= b.end() && b.start() <= a.end()
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = match self.host_ip {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(IpAddr::V4(a)) => a.to_string(),
            None => Ipv4Addr::UNSPECIFIED.to_string(),
        };
        if self.count == 1 {
            write!(
                f,
                "{ip}:{}->{}/{}",
                self.host_port,
                self.container_port,
                self.proto.as_str()
            )
        } else {
            write!(
                f,
                "{ip}:{}-{}->{}-{}/{}",
                self.host_port,
                self.host_port + (self.count - 1),
                self.container_port,
                self.container_port + (self.count - 1),
                self.proto.as_str()
            )
        }
    }
}

impl FromStr for PortMapping {
    type Err = SpecError;

    /// `[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`, each port a number or
    /// a range `A-B`; both ranges must be as long.
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let err = |why: &str| SpecError::Publish {
            spec: spec.to_owned(),
            why: why.to_owned(),
        };
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some((_, other)) => {
                return Err(err(&format!("unknown protocol {other:?} (use tcp or udp)")));
            }
            None => (spec, Proto::Tcp),
        };
        // An IPv6 host address comes in brackets: `[::1]:8080:80`.
        let (ip6, ports) = match ports.strip_prefix('[') {
            Some(rest) => {
                let (ip, rest) = rest
                    .split_once("]:")
                    .ok_or_else(|| err("expected [IPV6]:HOSTPORT:CONTAINERPORT[/PROTO]"))?;
                let ip: std::net::Ipv6Addr = ip
                    .parse()
                    .map_err(|_| err(&format!("{ip:?} is not an IPv6 address")))?;
                (Some(IpAddr::V6(ip)), rest)
            }
            None => (None, ports),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host, container) = match (ip6, parts.as_slice()) {
            (Some(ip), [h, c]) => (Some(ip), *h, *c),
            (None, [h, c]) => (None, *h, *c),
            (None, [ip, h, c]) => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| {
                    err(&format!(
                        "{ip:?} is not an IPv4 address (an IPv6 one goes in brackets)"
                    ))
                })?;
                (Some(IpAddr::V4(ip)), *h, *c)
            }
            _ => return Err(err("expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]")),
        };
        let (hs, he) = parse_port_range(host).map_err(|w| err(&w))?;
        let (cs, ce) = parse_port_range(container).map_err(|w| err(&w))?;
        if he - hs != ce - cs {
            return Err(err("host and container port ranges differ in length"));
        }
        Ok(PortMapping {
            // 0.0.0.0 is every address, as no address (dnet's habit
            // before IPv6); `::` stays: every IPv6 address only.
            host_ip: host_ip.filter(|ip| *ip != IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            host_port: hs,
            container_port: cs,
            count: he - hs + 1,
            proto,
        })
    }
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("range {s:?} runs backwards"));
            }
            Ok((a, b))
        }
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
    }
}

/// A boolean option value as Docker accepts it.
pub fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("option {key}: {value:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web-1", "my_net.2", "A9"] {
            assert_eq!(validate_name("network", ok), Ok(()), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(validate_name("network", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn publish_specs() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                count: 1,
                proto: Proto::Tcp
            }
        );
        let p: PortMapping = "127.0.0.1:53:5353/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(p.proto, Proto::Udp);
        let p: PortMapping = "8000-8010:9000-9010".parse().unwrap();
        assert_eq!((p.host_port, p.container_port, p.count), (8000, 9000, 11));
        assert_eq!(p.to_string(), "0.0.0.0:8000-8010->9000-9010/tcp");
        let p: PortMapping = "0.0.0.0:1:2".parse().unwrap();
        assert_eq!(p.host_ip, None);
        let p: PortMapping = "[::1]:8080:80/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        assert_eq!((p.host_port, p.container_port), (8080, 80));
        assert_eq!(p.to_string(), "[::1]:8080->80/udp");
        let p: PortMapping = "[::]:1:2".parse().unwrap();
        assert_eq!(p.host_ip, Some("::".parse().unwrap()), "every IPv6 address");
    }

    #[test]
    fn bad_publish_specs() {
        for bad in [
            "80",
            "a:80",
            "0:80",
            "65536:80",
            "1:2:3:4",
            "300.1.1.1:80:80",
            "::1:80:80",
            "[::1:80:80",
            "[1.2.3.4]:80:80",
            "[::1]:1:80:80",
            "80:80/sctp",
            "8000-8010:80",
            "8010-8000:8010-8000",
            "",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn clashes() {
        let a: PortMapping = "8000-8010:8000-8010".parse().unwrap();
        let b: PortMapping = "127.0.0.1:8010:80".parse().unwrap();
        let c: PortMapping = "8010:80/udp".parse().unwrap();
        let d: PortMapping = "8011:80".parse().unwrap();
        assert!(a.clashes_with(&b) && b.clashes_with(&a));
        assert!(!a.clashes_with(&c));
        assert!(!a.clashes_with(&d));
        let e: PortMapping = "127.0.0.2:8010:80".parse().unwrap();
        assert!(!b.clashes_with(&e));
        // The families never meet; `::` meets every IPv6 address.
        let f: PortMapping = "[::1]:8010:80".parse().unwrap();
        let g: PortMapping = "[::]:8010:80".parse().unwrap();
        assert!(!b.clashes_with(&f) && a.clashes_with(&f));
        assert!(f.clashes_with(&g) && !g.clashes_with(&b));
    }

    #[test]
    fn flags_per_family() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(per_family("subnet", &v(&[])), Ok((None, None)));
        assert_eq!(
            per_family("subnet", &v(&["fd00:1::/64", "10.1.0.0/16"])),
            Ok((Some("10.1.0.0/16".into()), Some("fd00:1::/64".into())))
        );
        assert_eq!(
            per_family("gateway", &v(&["fd00::1"])),
            Ok((None, Some("fd00::1".into())))
        );
        assert!(matches!(
            per_family("subnet", &v(&["10.1.0.0/16", "10.2.0.0/16"])),
            Err(SpecError::TwicePerFamily { family: "IPv4", .. })
        ));
        assert!(matches!(
            per_family("ip-range", &v(&["fd00::/80", "fd01::/80"])),
            Err(SpecError::TwicePerFamily { family: "IPv6", .. })
        ));
    }

    #[test]
    fn options() {
        assert_eq!(parse_option("mtu=1400"), Ok(("mtu".into(), "1400".into())));
        assert!(parse_option("mtu").is_err());
        assert!(parse_option("=1").is_err());
        assert_eq!(parse_bool("icc", "false"), Ok(false));
        assert!(parse_bool("icc", "maybe").is_err());
    }
}
