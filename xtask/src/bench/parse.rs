//! Parsing what the load tools print: iperf3's JSON, sockperf's summary,
//! connrate's JSON line, `/proc/stat`, and Docker's DNAT rules. Pure logic.

use anyhow::{Context as _, bail};
use serde_json::Value;

/// What one iperf3 TCP run moved, as the receiver saw it.
#[derive(Debug, PartialEq)]
pub struct TcpStream {
    pub bits_per_second: f64,
    pub bytes: f64,
    pub seconds: f64,
}

/// iperf3 `--json`, TCP: the receiver's sum.
pub fn iperf3_tcp(json: &str) -> anyhow::Result<TcpStream> {
    let v: Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let s = &v["end"]["sum_received"];
    let f = |k: &str| {
        s[k].as_f64()
            .with_context(|| format!("iperf3 JSON has no end.sum_received.{k}"))
    };
    Ok(TcpStream {
        bits_per_second: f("bits_per_second")?,
        bytes: f("bytes")?,
        seconds: f("seconds")?,
    })
}

/// iperf3 `--json`, UDP: datagrams delivered per second (sent less lost,
/// as the receiver counted them).
pub fn iperf3_udp_pps(json: &str) -> anyhow::Result<f64> {
    let v: Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    // 3.12 and later put the receiver's view in sum_received; older ones
    // only have sum (which then is the receiver's).
    let s = if v["end"]["sum_received"].is_object() {
        &v["end"]["sum_received"]
    } else {
        &v["end"]["sum"]
    };
    let packets = s["packets"].as_f64().context("iperf3 JSON: no packets")?;
    let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = s["seconds"].as_f64().context("iperf3 JSON: no seconds")?;
    if seconds <= 0.0 {
        bail!("iperf3 ran for no time");
    }
    Ok((packets - lost).max(0.0) / seconds)
}

/// Latency percentiles, in microseconds.
#[derive(Debug, PartialEq)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Removes ANSI colour sequences (sockperf colours some lines).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// sockperf ping-pong's summary: `---> percentile 50.000 =   12.739` (µs).
pub fn sockperf(out: &str) -> anyhow::Result<Latency> {
    let out = strip_ansi(out);
    let pct = |want: &str| -> anyhow::Result<f64> {
        out.lines()
            .find_map(|l| {
                let rest = l.split("---> percentile ").nth(1)?;
                let (p, v) = rest.split_once('=')?;
                (p.trim() == want).then(|| v.trim().parse::<f64>().ok())?
            })
            .with_context(|| format!("sockperf printed no percentile {want}"))
    };
    Ok(Latency {
        p50_us: pct("50.000")?,
        p99_us: pct("99.000")?,
    })
}

/// connrate's one JSON line.
#[derive(Debug, PartialEq)]
pub struct ConnRate {
    pub requests: f64,
    pub errors: f64,
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn connrate(out: &str) -> anyhow::Result<ConnRate> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("connrate printed no JSON")?;
    let v: Value = serde_json::from_str(line).context("connrate JSON")?;
    let f = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("connrate JSON has no {k}"))
    };
    Ok(ConnRate {
        requests: f("requests")?,
        errors: f("errors")?,
        rate: f("rate")?,
        p50_us: f("p50_us")?,
        p99_us: f("p99_us")?,
    })
}

/// What a `dnsperf -v` run says: counts from its summary, the latency of
/// each answer (seconds, from the `> RCODE NAME TYPE LATENCY` lines).
#[derive(Debug, PartialEq)]
pub struct Dnsperf {
    pub sent: u64,
    pub completed: u64,
    /// Answers with NOERROR.
    pub noerror: u64,
    pub run_time_s: f64,
    /// Latencies of the NOERROR answers, in seconds.
    pub latencies_s: Vec<f64>,
}

pub fn dnsperf(out: &str) -> anyhow::Result<Dnsperf> {
    let field = |key: &str| -> anyhow::Result<f64> {
        out.lines()
            .find_map(|l| {
                let rest = l.trim_start().strip_prefix(key)?;
                rest.split_whitespace().next()?.parse::<f64>().ok()
            })
            .with_context(|| format!("dnsperf printed no {key:?}"))
    };
    let mut latencies_s = Vec::new();
    for l in out.lines() {
        let Some(rest) = l.strip_prefix("> NOERROR ") else {
            continue;
        };
        if let Some(t) = rest.split_whitespace().last().and_then(|t| t.parse().ok()) {
            latencies_s.push(t);
        }
    }
    Ok(Dnsperf {
        sent: field("Queries sent:")? as u64,
        completed: field("Queries completed:")? as u64,
        noerror: latencies_s.len() as u64,
        run_time_s: field("Run time (s):")?,
        latencies_s,
    })
}

/// The `p`-th percentile (0 to 100) of `v`, nearest rank; `None` if empty.
pub fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Busy and total jiffies of all CPUs, from `/proc/stat`'s `cpu` line.
/// Busy is everything but idle and iowait (softirq, where packets are
/// forwarded, included).
pub fn proc_stat_busy(stat: &str) -> anyhow::Result<(u64, u64)> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("/proc/stat cpu line")?;
    if v.len() < 4 {
        bail!("/proc/stat cpu line too short");
    }
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user.
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The destination ports of the DNAT rules in `iptables -t nat -S DOCKER`
/// output, in chain order (the first is matched first).
pub fn dnat_ports(iptables_s: &str) -> Vec<u16> {
    iptables_s
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("-j DNAT"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|t| *t == "--dport")?;
            w.next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from iperf3 3.12 on Debian 12.
    const IPERF_TCP: &str = r#"{"start":{},"intervals":[],"end":{"streams":[],
        "sum_sent":{"start":0,"end":2.000131,"seconds":2.000131,"bytes":4260495360,"bits_per_second":17040865263.32525,"retransmits":4142,"sender":true},
        "sum_received":{"start":0,"end":2.000158,"seconds":2.000158,"bytes":4256694272,"bits_per_second":17025432078.86577,"sender":true},
        "cpu_utilization_percent":{"host_total":90.1}}}"#;

    const IPERF_UDP: &str = r#"{"start":{},"end":{"streams":[],
        "sum":{"start":0,"end":2.000158,"seconds":2.000158,"bytes":31477760,"bits_per_second":125903674.6,"jitter_ms":0.0005,"lost_packets":145295,"packets":491840,"lost_percent":29.5,"sender":true},
        "sum_sent":{"start":0,"end":2.000117,"seconds":2.000117,"bytes":31477760,"bits_per_second":125903674.6,"jitter_ms":0,"lost_packets":0,"packets":491840,"lost_percent":0,"sender":true},
        "sum_received":{"start":0,"end":2.000158,"seconds":2.000158,"bytes":22178880,"bits_per_second":88708512.0,"jitter_ms":0.0005,"lost_packets":145295,"packets":491840,"lost_percent":29.5,"sender":false}}}"#;

    #[test]
    fn iperf3_tcp_takes_the_receivers_sum() {
        let t = iperf3_tcp(IPERF_TCP).unwrap();
        assert_eq!(t.bytes, 4256694272.0);
        assert!((t.bits_per_second / 1e9 - 17.025).abs() < 0.001);
        assert!((t.seconds - 2.000158).abs() < 1e-9);
    }

    #[test]
    fn iperf3_udp_counts_delivered_datagrams() {
        let pps = iperf3_udp_pps(IPERF_UDP).unwrap();
        // (491840 - 145295) / 2.000158 s
        assert!((pps - 173_258.8).abs() < 1.0, "{pps}");
        // Older iperf3: only `sum`.
        let old = r#"{"end":{"sum":{"seconds":2.0,"packets":1000,"lost_packets":200}}}"#;
        assert_eq!(iperf3_udp_pps(old).unwrap(), 400.0);
    }

    #[test]
    fn iperf3_errors_are_errors() {
        let e =
            r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert!(
            iperf3_tcp(e)
                .unwrap_err()
                .to_string()
                .contains("Connection refused")
        );
        assert!(iperf3_udp_pps(e).is_err());
        assert!(iperf3_tcp("not json").is_err());
    }

    #[test]
    fn sockperf_percentiles_through_colour_codes() {
        let out = "sockperf: \u{1b}[2;35m== version #3.7-no.git == \u{1b}[0m\n\
            sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; SentMessages=137596; ReceivedMessages=137595\n\
            sockperf: \u{1b}[2;35m====> avg-rtt=13.738 (std-dev=54.761)\u{1b}[0m\n\
            sockperf: ---> <MAX> observation = 4986.106\n\
            sockperf: ---> percentile 99.999 = 4958.285\n\
            sockperf: ---> percentile 99.990 = 3382.621\n\
            sockperf: ---> percentile 99.900 =   41.371\n\
            sockperf: ---> percentile 99.000 =   13.840\n\
            sockperf: ---> percentile 90.000 =   13.299\n\
            sockperf: ---> percentile 75.000 =   12.989\n\
            sockperf: ---> percentile 50.000 =   12.739\n\
            sockperf: ---> percentile 25.000 =   12.438\n\
            sockperf: ---> <MIN> observation =   11.617\n";
        assert_eq!(
            sockperf(out).unwrap(),
            Latency {
                p50_us: 12.739,
                p99_us: 13.840
            }
        );
        assert!(sockperf("sockperf: Test ended\n").is_err());
    }

    #[test]
    fn connrate_line() {
        let out = "{\"requests\":5000,\"errors\":2,\"seconds\":1.000100,\"rate\":4999.500,\"p50_us\":180.0,\"p90_us\":230.0,\"p99_us\":410.0,\"max_us\":2200.0}\n";
        let c = connrate(out).unwrap();
        assert_eq!(c.requests, 5000.0);
        assert_eq!(c.errors, 2.0);
        assert_eq!(c.rate, 4999.5);
        assert_eq!(c.p99_us, 410.0);
        assert!(connrate("connrate: refused\n").is_err());
    }

    #[test]
    fn proc_stat_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 3 7 2 0 0\ncpu0 50 2 25 500 10 1 3 1 0 0\n";
        // total = 100+5+50+1000+20+3+7+2 = 1187; idle+iowait = 1020
        assert_eq!(proc_stat_busy(stat).unwrap(), (167, 1187));
        assert!(proc_stat_busy("intr 1 2 3\n").is_err());
    }

    #[test]
    fn dnat_ports_in_chain_order() {
        // As Docker 20.10 writes them (userland-proxy off), trimmed.
        let s = "-N DOCKER\n\
            -A DOCKER -d 198.18.0.2/32 -p tcp -m tcp --dport 20099 -j DNAT --to-destination 172.17.0.3:20099\n\
            -A DOCKER -d 198.18.0.2/32 -p tcp -m tcp --dport 20098 -j DNAT --to-destination 172.17.0.3:20098\n\
            -A DOCKER -i docker0 -j RETURN\n\
            -A DOCKER -d 198.18.0.2/32 -p tcp -m tcp --dport 20000 -j DNAT --to-destination 172.17.0.3:20000\n";
        assert_eq!(dnat_ports(s), vec![20099, 20098, 20000]);
    }

    // Trimmed from dnsperf 2.10.0 -v on Debian 12 (one lost query).
    const DNSPERF: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -d /tmp/q -l 1 -v -c 1 -q 4
> NOERROR host.example A 0.001112
> NOERROR x.example A 0.000085
> SERVFAIL y.example A 0.000040
> NOERROR host.example A 0.000046
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         5
  Queries completed:    4 (80.00%)
  Queries lost:         1 (20.00%)

  Response codes:       NOERROR 3 (75.00%), SERVFAIL 1 (25.00%)
  Average packet size:  request 28, response 44
  Run time (s):         1.000446
  Queries per second:   3.998216

  Average Latency (s):  0.000066 (min 0.000012, max 0.005259)
";

    #[test]
    fn dnsperf_counts_and_latencies() {
        let d = dnsperf(DNSPERF).unwrap();
        assert_eq!(d.sent, 5);
        assert_eq!(d.completed, 4);
        assert_eq!(d.noerror, 3);
        assert!((d.run_time_s - 1.000446).abs() < 1e-9);
        assert_eq!(d.latencies_s, vec![0.001112, 0.000085, 0.000046]);
        assert!(dnsperf("nothing").is_err());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        assert_eq!(percentile(&mut [7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&mut [], 99.0), None);
    }
}
