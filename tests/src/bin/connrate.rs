//! connrate: the benchmark's TCP connection-rate and request tool.
//!
//! One request is one connection: connect, one byte each way, close (the
//! client closes first). That is the load that meets NAT, conntrack and
//! iptables on every request, where a long-lived connection would meet
//! them once.
//!
//!   connrate serve [IP:]PORT
//!       answer every connection with one byte, until killed
//!   connrate run IP:PORT [--seconds S] [--max N] [--workers W] [--timeout S]
//!       W closed loops of requests for S seconds (at most N requests in
//!       all); prints one JSON line: requests, errors, seconds, rate and
//!       latency percentiles in microseconds
//!
//! Every run is bounded in time and in count. It stops early after too many
//! errors in a row (the path is down; no point hammering it).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connrate: {e:#}");
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

fn addr(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse()
        .map_err(|_| anyhow::anyhow!("bad address {s:?} (want IP:PORT)"))
}

fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("serve") => serve(addr(args.get(1).map_or("", String::as_str))?),
        Some("run") => {
            let target = addr(args.get(1).map_or("", String::as_str))?;
            let seconds: f64 = flag(args, "--seconds", 5.0)?;
            let max: u64 = flag(args, "--max", 1_000_000)?;
            let workers: usize = flag(args, "--workers", 2)?;
            let timeout: f64 = flag(args, "--timeout", 1.0)?;
            anyhow::ensure!(
                seconds > 0.0 && seconds <= 600.0,
                "--seconds must be in (0, 600]"
            );
            anyhow::ensure!((1..=64).contains(&workers), "--workers must be 1..=64");
            let r = client(
                target,
                Duration::from_secs_f64(seconds),
                max,
                workers,
                Duration::from_secs_f64(timeout),
            );
            println!("{}", r.to_json());
            anyhow::ensure!(r.requests > 0, "no request succeeded ({} errors)", r.errors);
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: connrate serve [IP:]PORT | run IP:PORT [--seconds S] [--max N] [--workers W]"
        ),
    }
}

fn serve(a: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(a)?;
    // A few acceptors share the listener; each connection is short.
    let mut threads = Vec::new();
    for _ in 0..4 {
        let l = l.try_clone()?;
        threads.push(std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut b = [0u8; 1];
                if matches!(s.read(&mut b), Ok(1)) && s.write_all(&b).is_ok() {
                    // Wait for the client's close, so it holds TIME_WAIT.
                    let _ = s.read(&mut b);
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

struct Report {
    requests: u64,
    errors: u64,
    /// The first error, for a failing run's message: what it was and after
    /// how long.
    first_error: Option<String>,
    seconds: f64,
    /// Sorted latencies of the successful requests, in microseconds.
    lat_us: Vec<u32>,
}

impl Report {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (self.lat_us.len() - 1) as f64).round() as usize;
        self.lat_us[i.min(self.lat_us.len() - 1)] as f64
    }

    fn to_json(&self) -> String {
        format!(
            "{{\"requests\":{},\"errors\":{},\"first_error\":{},\"seconds\":{:.6},\"rate\":{:.3},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1}}}",
            self.requests,
            self.errors,
            // A JSON string (or null), escaped as JSON escapes it.
            serde_json::to_string(&self.first_error).expect("a string serializes"),
            self.seconds,
            if self.seconds > 0.0 {
                self.requests as f64 / self.seconds
            } else {
                0.0
            },
            self.pct(50.0),
            self.pct(90.0),
            self.pct(99.0),
            self.pct(100.0),
        )
    }
}

fn one(target: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&target, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    if s.read(&mut b)? != 1 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn client(
    target: SocketAddr,
    duration: Duration,
    max: u64,
    workers: usize,
    timeout: Duration,
) -> Report {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let issued = Arc::clone(&issued);
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                let mut first_error = None;
                let mut in_a_row = 0u32;
                while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                    let t = Instant::now();
                    match one(target, timeout) {
                        Ok(()) => {
                            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            in_a_row = 0;
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| {
                                format!("{:?} after {:?}: {e}", e.kind(), t.elapsed())
                            });
                            in_a_row += 1;
                            if in_a_row >= 50 {
                                break;
                            }
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    let mut lat_us = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        let (l, e, f) = h.join().expect("worker");
        lat_us.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    let seconds = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    Report {
        requests: lat_us.len() as u64,
        errors,
        first_error,
        seconds,
        lat_us,
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn the_report_is_json_whatever_its_first_error_says() {
        let mut r = Report {
            requests: 2,
            errors: 1,
            first_error: Some("connect: \"refused\"\\ after\t1 ms\u{1}".into()),
            seconds: 1.0,
            lat_us: vec![10, 20],
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("JSON");
        assert_eq!(v["first_error"], "connect: \"refused\"\\ after\t1 ms\u{1}");
        assert_eq!(v["errors"], 1);
        r.first_error = None;
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("JSON");
        assert!(v["first_error"].is_null(), "{v}");
    }
}
