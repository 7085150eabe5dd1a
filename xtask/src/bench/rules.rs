//! Docker's iptables rules, written the way Docker 20.10 writes them with
//! `--userland-proxy=false` (checked against `iptables -S` of a real
//! dockerd on Debian 12). Used two ways:
//!
//! - the docker0 model (when no Docker daemon can run) loads the base
//!   chains and every published port's rules;
//! - with real Docker, ports beyond the measured one are loaded in this
//!   form with one `iptables-restore`, because dockerd adds rules one
//!   `iptables` call at a time and each call rereads the whole table: it
//!   takes minutes for 1,000 ports and would take hours for 10,000.
//!
//! Pure logic: text in `iptables-restore --noflush` format.

use std::net::Ipv4Addr;

/// One published TCP port: `HOSTIP:HOSTPORT -> CONTAINER:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// The rules of one bridge network, as `iptables-restore` lines per table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub nat: Vec<String>,
    pub filter: Vec<String>,
}

impl Rules {
    /// One `iptables-restore --noflush` document.
    pub fn restore_doc(&self) -> String {
        let mut s = String::new();
        for (table, lines) in [("nat", &self.nat), ("filter", &self.filter)] {
            if lines.is_empty() {
                continue;
            }
            s.push_str(&format!("*{table}\n"));
            for l in lines {
                s.push_str(l);
                s.push('\n');
            }
            s.push_str("COMMIT\n");
        }
        s
    }

    pub fn extend(&mut self, other: Rules) {
        self.nat.extend(other.nat);
        self.filter.extend(other.filter);
    }
}

/// The chains and rules dockerd sets up for its default bridge when it
/// starts (`bridge` is `docker0`, `subnet` `172.17.0.0/16`).
pub fn base(bridge: &str, subnet: &str) -> Rules {
    let b = bridge;
    Rules {
        nat: vec![
            ":DOCKER - [0:0]".into(),
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER".into(),
            "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER".into(),
            format!("-A POSTROUTING -o {b} -m addrtype --src-type LOCAL -j MASQUERADE"),
            format!("-A POSTROUTING -s {subnet} ! -o {b} -j MASQUERADE"),
        ],
        filter: vec![
            ":FORWARD DROP [0:0]".into(),
            ":DOCKER - [0:0]".into(),
            ":DOCKER-ISOLATION-STAGE-1 - [0:0]".into(),
            ":DOCKER-ISOLATION-STAGE-2 - [0:0]".into(),
            ":DOCKER-USER - [0:0]".into(),
            "-A FORWARD -j DOCKER-USER".into(),
            "-A FORWARD -j DOCKER-ISOLATION-STAGE-1".into(),
            format!("-A FORWARD -o {b} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            format!("-A FORWARD -o {b} -j DOCKER"),
            format!("-A FORWARD -i {b} ! -o {b} -j ACCEPT"),
            format!("-A FORWARD -i {b} -o {b} -j ACCEPT"),
            format!("-A DOCKER-ISOLATION-STAGE-1 -i {b} ! -o {b} -j DOCKER-ISOLATION-STAGE-2"),
            "-A DOCKER-ISOLATION-STAGE-1 -j RETURN".into(),
            format!("-A DOCKER-ISOLATION-STAGE-2 -o {b} -j DROP"),
            "-A DOCKER-ISOLATION-STAGE-2 -j RETURN".into(),
            "-A DOCKER-USER -j RETURN".into(),
        ],
    }
}

/// The three rules Docker adds per published TCP port (`op` is `-A` to add,
/// `-D` to remove): hairpin MASQUERADE, DNAT, and the filter ACCEPT.
pub fn port(bridge: &str, p: &Published, op: &str) -> Rules {
    let (hip, hport, cip, cport) = (p.host_ip, p.host_port, p.container_ip, p.container_port);
    Rules {
        nat: vec![
            format!(
                "{op} POSTROUTING -s {cip}/32 -d {cip}/32 -p tcp -m tcp --dport {cport} -j MASQUERADE"
            ),
            format!(
                "{op} DOCKER -d {hip}/32 -p tcp -m tcp --dport {hport} -j DNAT --to-destination {cip}:{cport}"
            ),
        ],
        filter: vec![format!(
            "{op} DOCKER -d {cip}/32 ! -i {bridge} -o {bridge} -p tcp -m tcp --dport {cport} -j ACCEPT"
        )],
    }
}

/// Rules for `count` ports published by other containers before the
/// measured one (`first` up, one per port, to addresses from
/// `172.17.200.0` on, which no container holds), in the order Docker would
/// have appended them.
pub fn filler(bridge: &str, host_ip: Ipv4Addr, first: u16, count: u32, op: &str) -> Rules {
    let mut r = Rules::default();
    for i in 0..count {
        let container_ip =
            Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 17, 200, 0)) + i / 250 * 256 + i % 250 + 1);
        let port_no = first + i as u16;
        r.extend(port(
            bridge,
            &Published {
                host_ip,
                host_port: port_no,
                container_ip,
                container_port: port_no,
            },
            op,
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `iptables -S` shows rules without the chain declarations; compare
    /// on the rule lines.
    fn rule_lines(v: &[String]) -> Vec<&str> {
        v.iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("-A "))
            .collect()
    }

    #[test]
    fn base_matches_dockerd() {
        let r = base("docker0", "172.17.0.0/16");
        // `iptables -t nat -S` of dockerd 20.10.24, --userland-proxy=false.
        assert_eq!(
            rule_lines(&r.nat),
            [
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER",
                "-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE",
                "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            ]
        );
        // `iptables -S`, same daemon.
        assert_eq!(
            rule_lines(&r.filter),
            [
                "-A FORWARD -j DOCKER-USER",
                "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
                "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A FORWARD -o docker0 -j DOCKER",
                "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
                "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
                "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
                "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
                "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
                "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
                "-A DOCKER-USER -j RETURN",
            ]
        );
        assert!(r.filter.contains(&":FORWARD DROP [0:0]".to_owned()));
    }

    #[test]
    fn port_rules_match_dockerd() {
        let p = Published {
            host_ip: Ipv4Addr::new(198, 18, 0, 2),
            host_port: 20000,
            container_ip: Ipv4Addr::new(172, 17, 0, 3),
            container_port: 20000,
        };
        let r = port("docker0", &p, "-A");
        assert_eq!(
            r.nat,
            [
                "-A POSTROUTING -s 172.17.0.3/32 -d 172.17.0.3/32 -p tcp -m tcp --dport 20000 -j MASQUERADE",
                "-A DOCKER -d 198.18.0.2/32 -p tcp -m tcp --dport 20000 -j DNAT --to-destination 172.17.0.3:20000",
            ]
        );
        assert_eq!(
            r.filter,
            [
                "-A DOCKER -d 172.17.0.3/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 20000 -j ACCEPT"
            ]
        );
        let d = port("docker0", &p, "-D");
        assert!(d.nat.iter().chain(&d.filter).all(|l| l.starts_with("-D ")));
    }

    #[test]
    fn filler_counts_and_addresses() {
        let r = filler("docker0", Ipv4Addr::new(198, 18, 0, 2), 30000, 600, "-A");
        assert_eq!(r.nat.len(), 1200);
        assert_eq!(r.filter.len(), 600);
        assert!(r.nat[1].contains("--dport 30000 ") && r.nat[1].contains("172.17.200.1:30000"));
        // 250 addresses per /24, never .0 or .255.
        assert!(r.filter[250].contains("-d 172.17.201.1/32"));
        assert!(r.filter[599].contains("-d 172.17.202.100/32"));
        assert!(r.filter[599].contains("--dport 30599 "));
        assert!(
            filler("docker0", Ipv4Addr::new(198, 18, 0, 2), 30000, 0, "-A")
                .restore_doc()
                .is_empty()
        );
    }

    #[test]
    fn restore_doc_has_one_commit_per_table() {
        let d = base("docker0", "172.17.0.0/16").restore_doc();
        assert!(d.starts_with("*nat\n:DOCKER - [0:0]\n"));
        assert_eq!(d.matches("COMMIT\n").count(), 2);
        assert!(d.contains("*filter\n:FORWARD DROP [0:0]\n"));
        assert!(d.ends_with("-A DOCKER-USER -j RETURN\nCOMMIT\n"));
    }
}
