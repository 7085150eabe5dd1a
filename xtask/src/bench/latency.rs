//! Control-plane latency (issues #9 and #12), dnet alone: one operation at
//! a time, end to end, as a user or a runtime meets it.
//!
//! - `network connect --netns` and `network disconnect`: the `dnet` CLI,
//!   its process start and API round trip included;
//! - CNI ADD and DEL: the `dnet-cni` binary exec'd as libcni execs it (the
//!   `CNI_*` environment, the config on stdin, the result on stdout), from
//!   the bench's own namespace, as a runtime runs plugins in its own.
//!
//! Then, with `--lat-scale N`, N endpoints on one host: N namespaces
//! attached one after another (the mean attach time of the last 100 against
//! the first 100), the daemon's resident memory with them, and its restart
//! with them (SIGTERM, then a new daemon until its API answers, the
//! reconcile of every endpoint included). Meanwhile the first endpoint
//! pings the second (50 a second, from the second attach to after the
//! restart): the echoes lost say whether traffic between endpoints was
//! disturbed by the attaches and the restart.
//!
//! Each sample attaches a fresh namespace. Before each timed operation the
//! daemon has no removal finishing in the background (`pending_removals`
//! of `dnet info`): the figures are each operation's own. Back to back, an
//! operation also waits for the kernel's rtnl lock, which a removal still
//! finishing holds while the kernel deletes the pair.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use dnet_sandbox::Sandbox;
use serde_json::{Value, json};

use super::{results::Goal, sys};

/// One operation's samples, in milliseconds.
pub struct Op {
    pub id: &'static str,
    pub label: &'static str,
    pub ms: Vec<f64>,
    /// Goal for the median, if the issues give one.
    pub goal_ms: Option<f64>,
}

impl Op {
    fn pct(&self, p: f64) -> Option<f64> {
        percentile(&self.ms, p)
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

/// N endpoints on one host.
pub struct Scale {
    pub n: usize,
    /// How many attaches each mean is over.
    pub window: usize,
    pub first_ms: f64,
    pub last_ms: f64,
    /// Medians of the same windows: a few attaches that waited for
    /// something else on the machine move a mean more.
    pub first_median_ms: f64,
    pub last_median_ms: f64,
    /// The daemon's CPU time (user and system, all its threads) per attach
    /// over each window: what the daemon itself does, in userspace and in
    /// its system calls, without what others on the machine do meanwhile.
    pub cpu_ms: Option<(f64, f64)>,
    /// Every attach, in order (for the JSON).
    pub ms: Vec<f64>,
    pub rss_kib: Option<u64>,
    pub restart_ms: f64,
    /// Echo requests the first endpoint sent the second meanwhile, and
    /// those never answered.
    pub pings: Option<(u64, u64)>,
}

/// A ping between two endpoints, bounded (`-w`), that reports when told
/// (SIGINT).
struct Ping(std::process::Child);

impl Ping {
    fn start(netns: &Path, to: &str) -> anyhow::Result<Ping> {
        let c = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["ping", "-q", "-n", "-i", "0.02", "-w", "1800", to])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
        Ok(Ping(c))
    }

    /// (sent, lost), from ping's summary.
    fn stop(mut self) -> Option<(u64, u64)> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let o = std::mem::replace(&mut self.0, Command::new("true").spawn().ok()?)
            .wait_with_output()
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout);
        // "N packets transmitted, M received, ..."
        let line = text.lines().find(|l| l.contains("packets transmitted"))?;
        let num = |i: usize| -> Option<u64> {
            line.split(',')
                .nth(i)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let (sent, got) = (num(0)?, num(1)?);
        Some((sent, sent.saturating_sub(got)))
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Attaches `n` namespaces to a fresh sandbox's daemon one after another,
/// then restarts it.
pub fn scale(n: usize) -> anyhow::Result<Scale> {
    let mut sb = std::panic::catch_unwind(Sandbox::new)
        .map_err(|_| anyhow::anyhow!("the dnet sandbox did not start (see above)"))?;
    let window = (n / 2).clamp(1, 100);
    let pid = daemon_pid(&sb);
    let cpu = || pid.and_then(cpu_ticks);
    // The daemon's CPU ticks at the start and end of each window.
    let mut ticks = [None; 4];
    let mut ms = Vec::with_capacity(n);
    let mut first = None;
    let mut ping = None;
    for i in 0..n {
        if i == 0 {
            ticks[0] = cpu();
        } else if i == n - window {
            ticks[2] = cpu();
        }
        sys::check_stop()?;
        let ns = sb.add_netns(&format!("s{i}"));
        let ns_s = ns.to_str().context("utf-8 path")?.to_owned();
        let name = format!("s{i}");
        let start = Instant::now();
        let o = sb.dnet(&[
            "network", "connect", "bridge", "--netns", &ns_s, "--name", &name,
        ]);
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        if !o.status.success() {
            bail!(
                "attach {i} of {n}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        match i {
            0 => first = Some(ns),
            1 => {
                let to = sb.ip_of("s1");
                ping = Some(Ping::start(first.as_deref().context("first")?, &to)?);
            }
            _ => {}
        }
        if i + 1 == window {
            ticks[1] = cpu();
        }
    }
    ticks[3] = cpu();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median = |v: &[f64]| percentile(v, 50.0).unwrap_or(f64::NAN);
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let per_attach =
        |a: Option<u64>, b: Option<u64>| Some((b? - a?) as f64 * 1e3 / hz / window as f64);
    let cpu_ms = per_attach(ticks[0], ticks[1]).zip(per_attach(ticks[2], ticks[3]));
    let rss_kib = pid.and_then(|p| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    });
    sb.stop_daemon(libc::SIGTERM);
    let start = Instant::now();
    sb.start_daemon();
    let restart_ms = start.elapsed().as_secs_f64() * 1e3;
    // Echoes after the restart too.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let pings = ping.and_then(Ping::stop);
    Ok(Scale {
        n,
        window,
        first_ms: mean(&ms[..window]),
        last_ms: mean(&ms[n - window..]),
        first_median_ms: median(&ms[..window]),
        last_median_ms: median(&ms[n - window..]),
        cpu_ms,
        rss_kib,
        restart_ms,
        ms,
        pings,
    })
}

/// The pid of the sandbox's daemon (`dnet info`).
fn daemon_pid(sb: &Sandbox) -> Option<u64> {
    let o = sb.dnet(&["info", "--format", "json"]);
    serde_json::from_slice::<Value>(&o.stdout)
        .ok()
        .and_then(|i| i["pid"].as_u64())
}

/// A process's CPU time so far, user and system, in clock ticks
/// (`/proc/PID/stat` fields 14 and 15, after the parenthesised name).
fn cpu_ticks(pid: u64) -> Option<u64> {
    stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// [`cpu_ticks`] of a `/proc/PID/stat` line (the name may hold spaces and
/// parentheses: the fields start after the last `)`).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

pub enum Latency {
    Done {
        samples: usize,
        ops: Vec<Op>,
        scale: Option<Result<Scale, String>>,
    },
    /// Why it has no figures.
    Skipped(String),
}

/// Runs `samples` rounds of connect, disconnect, CNI ADD and CNI DEL
/// against a sandboxed daemon (`DNET_BIN`), with the plugin at `cni`.
pub fn bench(cni: &Path, samples: usize) -> anyhow::Result<Latency> {
    if !cni.exists() {
        bail!("{} is not built", cni.display());
    }
    let mut sb = std::panic::catch_unwind(Sandbox::new)
        .map_err(|_| anyhow::anyhow!("the dnet sandbox did not start (see above)"))?;
    let mut ops = [
        ("lat_connect", "`network connect --netns`", Some(10.0)),
        ("lat_disconnect", "`network disconnect`", Some(10.0)),
        ("lat_cni_add", "CNI ADD (`dnet-cni` exec'd)", Some(15.0)),
        ("lat_cni_del", "CNI DEL (`dnet-cni` exec'd)", None),
    ]
    .map(|(id, label, goal_ms)| Op {
        id,
        label,
        ms: Vec::new(),
        goal_ms,
    });
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "dnet-bench",
        "type": "dnet-cni",
        "network": "bridge",
        "socket": sb.socket(),
    })
    .to_string();
    for i in 0..samples {
        sys::check_stop()?;
        let ns = sb.add_netns(&format!("l{i}"));
        let ns_s = ns.to_str().context("utf-8 path")?.to_owned();
        let name = format!("lat{i}");
        let timed = |sb: &Sandbox, args: &[&str]| -> anyhow::Result<f64> {
            sb.settle();
            let start = Instant::now();
            let o = sb.dnet(args);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if !o.status.success() {
                bail!(
                    "dnet {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            Ok(ms)
        };
        ops[0].ms.push(timed(
            &sb,
            &[
                "network", "connect", "bridge", "--netns", &ns_s, "--name", &name,
            ],
        )?);
        ops[1]
            .ms
            .push(timed(&sb, &["network", "disconnect", "bridge", &name])?);
        let id = format!("latcni{i}");
        sb.settle();
        ops[2].ms.push(cni_call(cni, "ADD", &id, &ns, &conf)?);
        sb.settle();
        ops[3].ms.push(cni_call(cni, "DEL", &id, &ns, &conf)?);
    }
    sb.settle();
    drop(sb);
    Ok(Latency::Done {
        samples,
        ops: ops.into(),
        scale: None,
    })
}

/// Execs the plugin once as libcni does; milliseconds from exec to exit.
fn cni_call(cni: &Path, command: &str, id: &str, netns: &Path, conf: &str) -> anyhow::Result<f64> {
    let dir: PathBuf = cni.parent().context("plugin folder")?.to_owned();
    let start = Instant::now();
    let mut child = Command::new(cni)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("exec {}", cni.display()))?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(conf.as_bytes())?;
    let o = child.wait_with_output()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() {
        bail!(
            "dnet-cni {command}: {} {}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(ms)
}

impl Latency {
    /// Issue #9's goals (connect and disconnect medians ≤ 10 ms) and issue
    /// #12's (CNI ADD median ≤ 15 ms, the exec included).
    pub fn goals(&self) -> Vec<Goal> {
        let targets = [
            (
                "lat_connect",
                "`network connect --netns` median ≤ 10 ms",
                10.0,
            ),
            (
                "lat_disconnect",
                "`network disconnect` median ≤ 10 ms",
                10.0,
            ),
            ("lat_cni_add", "CNI ADD median ≤ 15 ms, exec included", 15.0),
        ];
        targets
            .iter()
            .map(|(id, text, goal)| {
                let (figure, why_none) = match self {
                    Latency::Done { ops, .. } => (
                        ops.iter().find(|o| o.id == *id).and_then(|o| o.pct(50.0)),
                        "no figure".to_owned(),
                    ),
                    Latency::Skipped(why) => (None, why.clone()),
                };
                Goal {
                    text: format!("Control plane: {text}"),
                    figure,
                    met: figure.map(|f| f <= *goal),
                    why_none,
                }
            })
            .chain(std::iter::once(self.scale_goal()))
            .collect()
    }

    /// Issue #9: the last 100 attaches within 1.2x of the first 100.
    fn scale_goal(&self) -> Goal {
        let (figure, why_none) = match self {
            Latency::Done {
                scale: Some(Ok(s)), ..
            } => (Some(s.last_ms / s.first_ms), String::new()),
            Latency::Done {
                scale: Some(Err(e)),
                ..
            } => (None, format!("n/a: {e}")),
            Latency::Done { scale: None, .. } => (None, "not run (--lat-scale 0)".into()),
            Latency::Skipped(why) => (None, why.clone()),
        };
        let n = match self {
            Latency::Done {
                scale: Some(Ok(s)), ..
            } => s.n,
            _ => 1000,
        };
        Goal {
            text: format!(
                "Control plane: {n} endpoints on one host (issue #9: 1,000), the last 100 attaches within 1.2x of the first 100"
            ),
            figure,
            met: figure.map(|f| f <= 1.2),
            why_none,
        }
    }

    pub fn markdown(&self, s: &mut String) {
        s.push_str(
            "\nControl-plane latency, dnet alone, one operation at a time (CLI and plugin exec included):\n\n",
        );
        let (samples, ops) = match self {
            Latency::Skipped(why) => {
                s.push_str(&format!("- {why}\n"));
                return;
            }
            Latency::Done { samples, ops, .. } => (samples, ops),
        };
        s.push_str("| operation | p50 (ms) | p99 (ms) | goal (p50) |\n|---|---:|---:|---:|\n");
        let cell = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        for o in ops {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                o.label,
                cell(o.pct(50.0)),
                cell(o.pct(99.0)),
                o.goal_ms.map_or("".to_owned(), |g| format!("≤ {g}"))
            ));
        }
        s.push_str(&format!(
            "\n{samples} samples each, a fresh namespace per sample, no removal under way before each.\n"
        ));
        match self {
            Latency::Done {
                scale: Some(Ok(sc)),
                ..
            } => s.push_str(&format!(
                "\n{} endpoints on one host: mean attach {:.1} ms for the first {w}, {:.1} ms for the last {w} ({:.2}x); medians {:.1} and {:.1} ms ({:.2}x); the daemon's CPU per attach {}; daemon RSS {}; restart with them (SIGTERM, start, reconcile, API up) {:.0} ms; a ping between two of them throughout: {}.\n",
                sc.n,
                sc.first_ms,
                sc.last_ms,
                sc.last_ms / sc.first_ms,
                sc.first_median_ms,
                sc.last_median_ms,
                sc.last_median_ms / sc.first_median_ms,
                sc.cpu_ms.map_or("n/a".to_owned(), |(a, b)| format!(
                    "{a:.2} and {b:.2} ms ({:.2}x)",
                    b / a
                )),
                sc.rss_kib.map_or("n/a".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                sc.restart_ms,
                sc.pings.map_or("n/a".to_owned(), |(sent, lost)| format!("{lost} of {sent} lost")),
                w = sc.window,
            )),
            Latency::Done {
                scale: Some(Err(e)),
                ..
            } => s.push_str(&format!("\nEndpoints on one host: n/a: {e}\n")),
            _ => {}
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Latency::Skipped(why) => json!({"na": why}),
            Latency::Done {
                samples,
                ops,
                scale,
            } => json!({
                "samples": samples,
                "scale": match scale {
                    Some(Ok(s)) => json!({
                        "endpoints": s.n, "window": s.window,
                        "first_mean_ms": s.first_ms, "last_mean_ms": s.last_ms,
                        "ratio": s.last_ms / s.first_ms,
                        "first_median_ms": s.first_median_ms, "last_median_ms": s.last_median_ms,
                        "first_cpu_ms": s.cpu_ms.map(|c| c.0), "last_cpu_ms": s.cpu_ms.map(|c| c.1),
                        "attach_ms": s.ms,
                        "daemon_rss_kib": s.rss_kib, "restart_ms": s.restart_ms,
                        "ping_sent": s.pings.map(|p| p.0), "ping_lost": s.pings.map(|p| p.1),
                    }),
                    Some(Err(e)) => json!({"na": e}),
                    None => Value::Null,
                },
                "ops": ops.iter().map(|o| json!({
                    "id": o.id,
                    "label": o.label,
                    "p50_ms": o.pct(50.0),
                    "p99_ms": o.pct(99.0),
                    "goal_p50_ms": o.goal_ms,
                    "samples_ms": o.ms,
                })).collect::<Vec<_>>(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cpu_ticks, percentile, stat_cpu_ticks};

    #[test]
    fn cpu_ticks_are_utime_and_stime_after_the_name() {
        let line = "4242 (dnet (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 123 45 0 0 20 0 9 0";
        assert_eq!(stat_cpu_ticks(line), Some(168));
        assert_eq!(stat_cpu_ticks("4242 (dnet) S 1"), None);
        assert!(cpu_ticks(std::process::id() as u64).is_some());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
