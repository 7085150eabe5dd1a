//! The figures of a run: per metric and side, one value per round (or why
//! there is none), and what follows from them: summaries, per-round ratios
//! and the goals of issue #6.

use std::collections::BTreeMap;

use super::stats::{Summary, ratios};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    EastWest,
    NorthSouth,
    EastWest6,
    NorthSouth6,
    Published,
    ControlPlane,
    Names,
    Broadcast,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::EastWest => "East-west, container to container",
            Group::NorthSouth => "North-south, container to world through NAT",
            Group::EastWest6 => "East-west over IPv6, dual-stack container to container",
            Group::NorthSouth6 => "North-south over IPv6, container to world through NAT66",
            Group::Published => "Published ports, world to container",
            Group::ControlPlane => "Control plane",
            Group::Names => "Names, a container asking its network's resolver (dnsperf)",
            Group::Broadcast => "Broadcast on one network (dnet only)",
        }
    }
}

#[derive(Clone, Debug)]
pub struct MetricDef {
    pub id: String,
    pub group: Group,
    pub label: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

impl MetricDef {
    pub fn new(
        id: impl Into<String>,
        group: Group,
        label: impl Into<String>,
        unit: &'static str,
        higher: bool,
    ) -> Self {
        MetricDef {
            id: id.into(),
            group,
            label: label.into(),
            unit,
            higher_is_better: higher,
        }
    }
}

/// Every metric of a run, in table order.
pub fn metric_defs(ports: &[u32], endpoints: usize, publish: u32) -> Vec<MetricDef> {
    use Group::*;
    let mut v = vec![
        MetricDef::new("ew_tcp", EastWest, "TCP throughput", "Gbit/s", true),
        MetricDef::new(
            "ew_tcp_cpu",
            EastWest,
            "host CPU per GB moved (TCP)",
            "CPU s/GB",
            false,
        ),
        MetricDef::new(
            "ew_udp",
            EastWest,
            "UDP 64-byte datagrams delivered",
            "kpps",
            true,
        ),
        MetricDef::new(
            "ew_rr_p50",
            EastWest,
            "TCP request/response latency p50",
            "µs",
            false,
        ),
        MetricDef::new(
            "ew_rr_p99",
            EastWest,
            "TCP request/response latency p99",
            "µs",
            false,
        ),
        MetricDef::new(
            "ew_cps",
            EastWest,
            "TCP connections per second",
            "conn/s",
            true,
        ),
        MetricDef::new("ns_tcp", NorthSouth, "TCP throughput", "Gbit/s", true),
        MetricDef::new(
            "ns_tcp_cpu",
            NorthSouth,
            "host CPU per GB moved (TCP)",
            "CPU s/GB",
            false,
        ),
        MetricDef::new(
            "ns_udp",
            NorthSouth,
            "UDP 64-byte datagrams delivered",
            "kpps",
            true,
        ),
        MetricDef::new(
            "ns_cps",
            NorthSouth,
            "TCP connections per second",
            "conn/s",
            true,
        ),
        MetricDef::new("ew6_tcp", EastWest6, "TCP throughput", "Gbit/s", true),
        MetricDef::new(
            "ew6_tcp_cpu",
            EastWest6,
            "host CPU per GB moved (TCP)",
            "CPU s/GB",
            false,
        ),
        MetricDef::new(
            "ew6_udp",
            EastWest6,
            "UDP 64-byte datagrams delivered",
            "kpps",
            true,
        ),
        MetricDef::new(
            "ns6_cps",
            NorthSouth6,
            "TCP connections per second",
            "conn/s",
            true,
        ),
    ];
    for &n in ports {
        let p = if n == 1 { "port" } else { "ports" };
        v.push(MetricDef::new(
            pp_rps(n),
            Published,
            format!("{} {p} published: requests/s", thousands(n as f64)),
            "req/s",
            true,
        ));
        v.push(MetricDef::new(
            pp_p99(n),
            Published,
            format!("{} {p} published: request p99", thousands(n as f64)),
            "µs",
            false,
        ));
    }
    let e = endpoints;
    v.extend([
        MetricDef::new(
            "cp_attach",
            ControlPlane,
            format!("attach {e} endpoints: `dnet run -d` / `docker network connect`"),
            "s",
            false,
        ),
        MetricDef::new(
            "cp_detach",
            ControlPlane,
            format!("detach {e} endpoints: `dnet rm -f` / `docker network disconnect`"),
            "s",
            false,
        ),
        MetricDef::new(
            "cp_connect",
            ControlPlane,
            format!("attach {e} endpoints: `network connect`, both"),
            "s",
            false,
        ),
        MetricDef::new(
            "cp_disconnect",
            ControlPlane,
            format!("detach {e} endpoints: `network disconnect`, both"),
            "s",
            false,
        ),
        MetricDef::new(
            "cp_publish",
            ControlPlane,
            format!(
                "start a container publishing {} ports",
                thousands(publish as f64)
            ),
            "s",
            false,
        ),
        MetricDef::new(
            "cp_unpublish",
            ControlPlane,
            "remove that container".to_owned(),
            "s",
            false,
        ),
        MetricDef::new(
            "dns_name_qps",
            Names,
            "a container's name: queries/s",
            "q/s",
            true,
        ),
        MetricDef::new(
            "dns_name_p99",
            Names,
            "a container's name: query p99",
            "µs",
            false,
        ),
        MetricDef::new(
            "dns_fwd_qps",
            Names,
            "a name forwarded upstream: queries/s",
            "q/s",
            true,
        ),
        MetricDef::new(
            "dns_fwd_p99",
            Names,
            "a name forwarded upstream: query p99",
            "µs",
            false,
        ),
    ]);
    v
}

/// The broadcast figures (after [`metric_defs`]'s): a flood of 64-byte
/// broadcasts from one member of a network of `members`, each copied to
/// the others.
pub fn broadcast_defs(members: usize) -> Vec<MetricDef> {
    let m = members.saturating_sub(1);
    vec![
        MetricDef::new(
            "bc_copy",
            Group::Broadcast,
            format!("broadcast to {m} members: time per copy delivered"),
            "ns",
            false,
        ),
        MetricDef::new(
            "bc_rate",
            Group::Broadcast,
            format!("broadcast to {m} members: copies delivered"),
            "kpps",
            true,
        ),
    ]
}

pub fn pp_rps(n: u32) -> String {
    format!("pp{n}_rps")
}
pub fn pp_p99(n: u32) -> String {
    format!("pp{n}_p99")
}

/// `10,000`
pub fn thousands(x: f64) -> String {
    let s = format!("{}", x.round() as i64);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One side's figures for one metric.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// One slot per measured round.
    pub rounds: Vec<Option<f64>>,
    /// Why this side has no figure at all (not applicable, not built).
    pub na: Option<String>,
    /// Failed rounds, with the error.
    pub failures: Vec<String>,
}

/// All figures: `data[metric id][side]`, sides as dnet, docker0, limit.
pub struct Results {
    pub defs: Vec<MetricDef>,
    pub data: BTreeMap<String, [Series; 3]>,
}

/// One of the sides' ratios, round by round.
pub const RATIOS: [(usize, usize, &str); 3] = [
    (0, 1, "dnet ÷ docker0"),
    (0, 2, "dnet ÷ limit"),
    (1, 2, "docker0 ÷ limit"),
];

impl Results {
    pub fn new(defs: Vec<MetricDef>, rounds: usize) -> Results {
        let data = defs
            .iter()
            .map(|d| {
                let s = Series {
                    rounds: vec![None; rounds],
                    ..Series::default()
                };
                (d.id.clone(), [s.clone(), s.clone(), s])
            })
            .collect();
        Results { defs, data }
    }

    pub fn record(&mut self, id: &str, side: usize, round: usize, v: f64) {
        if let Some(s) = self.data.get_mut(id)
            && round < s[side].rounds.len()
        {
            s[side].rounds[round] = Some(v);
        }
    }

    pub fn set_na(&mut self, id: &str, side: usize, why: &str) {
        if let Some(s) = self.data.get_mut(id) {
            s[side].na = Some(why.to_owned());
        }
    }

    pub fn is_na(&self, id: &str, side: usize) -> bool {
        self.data.get(id).is_some_and(|s| s[side].na.is_some())
    }

    pub fn fail(&mut self, id: &str, side: usize, why: String) {
        if let Some(s) = self.data.get_mut(id) {
            s[side].failures.push(why);
        }
    }

    pub fn summary(&self, id: &str, side: usize) -> Option<Summary> {
        let s = &self.data.get(id)?[side];
        if s.na.is_some() {
            return None;
        }
        Summary::of(&s.rounds)
    }

    /// Median (and spread) of `a ÷ b`, taken round by round.
    pub fn ratio(&self, id: &str, a: usize, b: usize) -> Option<Summary> {
        let s = self.data.get(id)?;
        if s[a].na.is_some() || s[b].na.is_some() {
            return None;
        }
        Summary::of(&ratios(&s[a].rounds, &s[b].rounds))
    }
}

/// One goal of issue #6 and where dnet stands.
pub struct Goal {
    pub text: String,
    pub figure: Option<f64>,
    pub met: Option<bool>,
    pub why_none: String,
}

/// The goals, evaluated on medians of per-round ratios.
pub fn goals(r: &Results, ports: &[u32]) -> Vec<Goal> {
    let ratio_goal = |text: &str, id: &str, b: usize, ok: &dyn Fn(f64) -> bool| {
        let s = r.ratio(id, 0, b);
        Goal {
            text: text.to_owned(),
            figure: s.map(|s| s.median),
            met: s.map(|s| ok(s.median)),
            why_none: r.data[id][0]
                .na
                .clone()
                .or_else(|| r.data[id][b].na.clone())
                .unwrap_or_else(|| "no figure".into()),
        }
    };
    let mut g = vec![
        ratio_goal(
            "east-west small-packet rate ≥ 1.3× docker0",
            "ew_udp",
            1,
            &|x| x >= 1.3,
        ),
        ratio_goal(
            "east-west small-packet rate ≥ 0.9× the direct veth pair",
            "ew_udp",
            2,
            &|x| x >= 0.9,
        ),
        ratio_goal(
            "request/response latency p50 no worse than docker0 (ratio ≤ 1)",
            "ew_rr_p50",
            1,
            &|x| x <= 1.0,
        ),
        ratio_goal(
            "request/response latency p99 no worse than docker0 (ratio ≤ 1)",
            "ew_rr_p99",
            1,
            &|x| x <= 1.0,
        ),
        ratio_goal(
            "connection rate through NAT ≥ 1.3× docker0",
            "ns_cps",
            1,
            &|x| x >= 1.3,
        ),
        ratio_goal(
            "east-west IPv6 small-packet rate ≥ 1.3× docker0",
            "ew6_udp",
            1,
            &|x| x >= 1.3,
        ),
        ratio_goal(
            "east-west IPv6 small-packet rate ≥ 0.9× the direct veth pair",
            "ew6_udp",
            2,
            &|x| x >= 0.9,
        ),
        ratio_goal(
            "connection rate through NAT66 ≥ 1.3× docker0",
            "ns6_cps",
            1,
            &|x| x >= 1.3,
        ),
        ratio_goal(
            "container-name query rate ≥ 2× Docker's embedded resolver",
            "dns_name_qps",
            1,
            &|x| x >= 2.0,
        ),
        ratio_goal(
            "container-name query p99 below Docker's (ratio < 1)",
            "dns_name_p99",
            1,
            &|x| x < 1.0,
        ),
        ratio_goal(
            "forwarded-name query rate ≥ 2× Docker's embedded resolver",
            "dns_fwd_qps",
            1,
            &|x| x >= 2.0,
        ),
        ratio_goal(
            "forwarded-name query p99 below Docker's (ratio < 1)",
            "dns_fwd_p99",
            1,
            &|x| x < 1.0,
        ),
    ];
    // Published-port rate from the fewest to the most ports: dnet's rate
    // relative to the limit's in the same rounds (which cancels the
    // machine's drift between phases), most ports over fewest.
    let text = format!(
        "published-port rate within 10% from {} to {} ports",
        thousands(*ports.first().unwrap_or(&1) as f64),
        thousands(*ports.last().unwrap_or(&1) as f64)
    );
    let norm = |n: u32| r.ratio(&pp_rps(n), 0, 2).map(|s| s.median);
    let worst = ports
        .iter()
        .skip(1)
        .filter_map(|&n| Some(norm(n)? / norm(ports[0])?))
        .max_by(|a, b| (a - 1.0).abs().total_cmp(&(b - 1.0).abs()));
    let first = pp_rps(*ports.first().unwrap_or(&1));
    g.push(Goal {
        text,
        figure: worst,
        met: worst.map(|w| (w - 1.0).abs() <= 0.10),
        why_none: r
            .data
            .get(&first)
            .and_then(|s| s[0].na.clone())
            .unwrap_or_else(|| "no figure".into()),
    });
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1.0), "1");
        assert_eq!(thousands(100.0), "100");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(10000.0), "10,000");
        assert_eq!(thousands(1234567.4), "1,234,567");
    }

    fn results_with(id: &str, dnet: &[f64], docker: &[f64], limit: &[f64]) -> Results {
        let defs = metric_defs(&[1, 10000], 100, 1000);
        let mut r = Results::new(defs, dnet.len());
        for (side, vals) in [dnet, docker, limit].into_iter().enumerate() {
            for (i, v) in vals.iter().enumerate() {
                r.record(id, side, i, *v);
            }
        }
        r
    }

    #[test]
    fn ratios_and_na() {
        let mut r = results_with(
            "ew_udp",
            &[260.0, 250.0, 130.0],
            &[200.0, 180.0, 100.0],
            &[270.0, 270.0, 140.0],
        );
        let x = r.ratio("ew_udp", 0, 1).unwrap();
        assert!((x.median - 1.3).abs() < 1e-9, "{x:?}");
        r.set_na("ew_udp", 0, "n/a (not built yet)");
        assert!(r.ratio("ew_udp", 0, 1).is_none());
        assert!(r.summary("ew_udp", 0).is_none());
        assert!(r.summary("ew_udp", 1).is_some());
    }

    #[test]
    fn goals_follow_the_ratios() {
        let r = results_with(
            "ew_udp",
            &[260.0, 250.0, 130.0],
            &[200.0, 180.0, 100.0],
            &[270.0, 270.0, 140.0],
        );
        let g = goals(&r, &[1, 10000]);
        assert_eq!(g[0].met, Some(true), "1.3x docker0");
        // dnet ÷ limit = 0.963, 0.926, 0.929 -> median 0.929
        assert_eq!(g[1].met, Some(true));
        assert!((g[1].figure.unwrap() - 130.0 / 140.0).abs() < 1e-9);
        // No latency figures at all.
        assert_eq!(g[2].met, None);
    }

    #[test]
    fn published_port_goal_uses_limit_normalised_rates() {
        let defs = metric_defs(&[1, 100, 10000], 100, 1000);
        let mut r = Results::new(defs, 2);
        for round in 0..2 {
            // The machine is 2x slower in the 10,000-port phase, for dnet
            // and the limit alike: dnet itself did not slow down.
            r.record("pp1_rps", 0, round, 9000.0);
            r.record("pp1_rps", 2, round, 10000.0);
            r.record("pp100_rps", 0, round, 8800.0);
            r.record("pp100_rps", 2, round, 10000.0);
            r.record("pp10000_rps", 0, round, 4400.0);
            r.record("pp10000_rps", 2, round, 5000.0);
        }
        let g = goals(&r, &[1, 100, 10000]);
        let last = g.last().unwrap();
        assert_eq!(last.met, Some(true));
        // worst: 100 ports, 0.88 / 0.9
        assert!((last.figure.unwrap() - 0.88 / 0.9).abs() < 1e-9);
        r.set_na("pp1_rps", 0, "n/a (not built yet)");
        let g = goals(&r, &[1, 100, 10000]);
        assert_eq!(g.last().unwrap().met, None);
        assert_eq!(g.last().unwrap().why_none, "n/a (not built yet)");
    }
}
