//! One measurement each: the load tools run inside a namespace, bounded in
//! time (their own duration, and a kill past a margin) and in count.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;

use super::{
    env::{self, CONNRATE_PORT, DnsTarget, IPERF_PORT, SOCKPERF_PORT, Tools},
    parse,
    sys::{self, in_netns},
};

/// What every measurement needs.
pub struct Ctx {
    pub tools: Tools,
    /// Seconds per throughput / latency / connection-rate run.
    pub secs: f64,
    pub pin: bool,
    /// At most this many connections per connection-rate run.
    pub max_conns: u64,
}

impl Ctx {
    fn limit(&self) -> Duration {
        Duration::from_secs_f64(self.secs + 30.0)
    }
    fn secs_arg(&self) -> String {
        format!("{}", self.secs.ceil().max(1.0) as u64)
    }
}

fn read_stat() -> anyhow::Result<(u64, u64)> {
    parse::proc_stat_busy(&std::fs::read_to_string("/proc/stat")?)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// TCP bulk throughput (Gbit/s, receiver side) and the host's CPU seconds
/// per gigabyte moved (all CPUs, from `/proc/stat`, over the run).
pub fn tcp_stream(
    ctx: &Ctx,
    client: &Path,
    server: impl Into<IpAddr>,
) -> anyhow::Result<(f64, f64)> {
    let mut args = vec![
        "-c".to_owned(),
        server.into().to_string(),
        "-p".into(),
        IPERF_PORT.to_string(),
        "-t".into(),
        ctx.secs_arg(),
        "-J".into(),
    ];
    if ctx.secs >= 3.0 {
        // Leave slow start out.
        args.extend(["-O".into(), "1".into()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = read_stat()?;
    let out = sys::run_bounded(
        in_netns(client, env::client_cpu(ctx.pin), "iperf3", &a),
        ctx.limit(),
    )?;
    let after = read_stat()?;
    let t = parse::iperf3_tcp(&String::from_utf8_lossy(&out.stdout))?;
    let busy_s = (after.0 - before.0) as f64 / clk_tck();
    let gb = t.bytes / 1e9;
    let cpu_per_gb = if gb > 0.0 { busy_s / gb } else { f64::NAN };
    Ok((t.bits_per_second / 1e9, cpu_per_gb))
}

/// 64-byte UDP datagrams delivered per second (thousands), iperf3 sending
/// as fast as it can.
pub fn udp_pps(ctx: &Ctx, client: &Path, server: impl Into<IpAddr>) -> anyhow::Result<f64> {
    let (s, p, t) = (
        server.into().to_string(),
        IPERF_PORT.to_string(),
        ctx.secs_arg(),
    );
    let a = [
        "-c", &s, "-p", &p, "-t", &t, "-u", "-l", "64", "-b", "0", "-J",
    ];
    let out = sys::run_bounded(
        in_netns(client, env::client_cpu(ctx.pin), "iperf3", &a),
        ctx.limit(),
    )?;
    Ok(parse::iperf3_udp_pps(&String::from_utf8_lossy(&out.stdout))? / 1e3)
}

/// TCP request/response latency (sockperf ping-pong, 64-byte messages,
/// full round trip), p50 and p99 in microseconds; both ends on the CPUs of
/// `env::rr_cpus`.
pub fn rr_latency(ctx: &Ctx, client: &Path, server: Ipv4Addr) -> anyhow::Result<parse::Latency> {
    let (s, p, t) = (
        server.to_string(),
        SOCKPERF_PORT.to_string(),
        ctx.secs_arg(),
    );
    let a = [
        "pp",
        "--tcp",
        "-i",
        &s,
        "-p",
        &p,
        "-t",
        &t,
        "-m",
        "64",
        "--full-rtt",
    ];
    let out = sys::run_bounded(
        in_netns(client, Some(env::rr_cpus(ctx.pin).0), "sockperf", &a),
        ctx.limit(),
    )?;
    parse::sockperf(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

/// Connections per second (connect, one byte each way, close) with two
/// closed loops, and their latency.
pub fn conn_rate(
    ctx: &Ctx,
    client: &Path,
    ip: impl Into<IpAddr>,
    port: u16,
) -> anyhow::Result<parse::ConnRate> {
    let target = SocketAddr::new(ip.into(), port).to_string();
    let (s, m) = (format!("{}", ctx.secs), ctx.max_conns.to_string());
    let a = [
        "run",
        &target,
        "--seconds",
        &s,
        "--max",
        &m,
        "--workers",
        "2",
        "--timeout",
        "1",
    ];
    let out = sys::run_bounded(
        in_netns(client, env::client_cpu(ctx.pin), ctx.tools.connrate(), &a),
        ctx.limit(),
    )?;
    let c = parse::connrate(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| String::from_utf8_lossy(&out.stderr).trim().to_owned())?;
    anyhow::ensure!(
        c.errors <= c.requests / 100.0,
        "{} of {} connections failed",
        c.errors,
        c.requests + c.errors
    );
    Ok(c)
}

/// The east-west connection-rate server's port.
pub const CPS_PORT: u16 = CONNRATE_PORT;

/// dnsperf's clients (source ports) and queries in flight at most: a
/// saturating load, the same for every side.
pub const DNSPERF_CLIENTS: &str = "4";
pub const DNSPERF_IN_FLIGHT: &str = "32";
/// dnsperf's per-query timeout (seconds); a lost or failed query counts
/// with this latency.
const DNSPERF_TIMEOUT_S: f64 = 2.0;

/// A resolver's rate and tail latency for one name.
pub struct DnsRate {
    /// NOERROR answers per second.
    pub qps: f64,
    /// 99th percentile of the latency of every query sent (µs); a query
    /// lost or answered with an error counts at the timeout.
    pub p99_us: f64,
}

/// `name` (A) asked again and again of `t.server` from `t.client` by
/// dnsperf for `ctx.secs`; the answer is first checked to be `expect`.
pub fn dns_rate(ctx: &Ctx, t: &DnsTarget, name: &str, expect: Ipv4Addr) -> anyhow::Result<DnsRate> {
    let server = t.server.to_string();
    let got = sys::output(&mut in_netns(
        &t.client,
        None,
        ctx.tools.conntest(),
        &["dns", "query", &server, name, "a", "--timeout", "3"],
    ))?;
    anyhow::ensure!(
        got.trim() == format!("rcode NoError\nA {expect}"),
        "{server} answers {name} with {got:?}, not {expect}"
    );
    let file = t.dir.join(format!("dnsperf-{name}.txt"));
    std::fs::write(&file, format!("{name} A\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    let secs = ctx.secs_arg();
    let timeout = DNSPERF_TIMEOUT_S.to_string();
    let out = sys::run_bounded(
        in_netns(
            &t.client,
            env::client_cpu(ctx.pin),
            "dnsperf",
            &[
                "-s",
                &server,
                "-d",
                file.to_str().context("utf-8 path")?,
                "-l",
                &secs,
                "-c",
                DNSPERF_CLIENTS,
                "-q",
                DNSPERF_IN_FLIGHT,
                "-t",
                &timeout,
                "-v",
            ],
        ),
        ctx.limit(),
    )?;
    let d = parse::dnsperf(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("dnsperf: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
    anyhow::ensure!(
        d.noerror > 0 && d.run_time_s > 0.0,
        "no NOERROR answer ({} sent, {} completed)",
        d.sent,
        d.completed
    );
    let failed = d.sent.saturating_sub(d.noerror) as usize;
    let qps = d.noerror as f64 / d.run_time_s;
    let mut lat = d.latencies_s;
    lat.extend(std::iter::repeat_n(DNSPERF_TIMEOUT_S, failed));
    let p99 = parse::percentile(&mut lat, 99.0).context("no latency")?;
    Ok(DnsRate {
        qps,
        p99_us: p99 * 1e6,
    })
}
