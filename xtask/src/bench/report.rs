//! The run's output: a markdown table (stdout and a file), a JSON file with
//! every round's figure, and an SVG chart, all stamped with the date, the
//! kernel and the CPU model.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;
use serde_json::{Value, json};

use super::{
    dockernet::COLUMNS,
    results::{Goal, Group, RATIOS, Results, pp_rps, thousands},
    stats::Summary,
};

/// Where and how the run happened.
pub struct Meta {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub dnet_rev: String,
    pub command: String,
    pub quick: bool,
    pub rounds: usize,
    pub warmup: usize,
    pub secs: f64,
    pub pin: bool,
    pub sides: [String; 3],
    pub labels: [String; 3],
    pub notes: Vec<String>,
    /// The Docker + dnet side.
    pub dd: DockerDnet,
    /// Control-plane latency, dnet alone.
    pub lat: super::latency::Latency,
}

/// The Docker + dnet side's figures: columns 0 (on a dnet network) and 1
/// (on docker0) of its own [`Results`].
pub enum DockerDnet {
    Done {
        r: Results,
        describe: String,
    },
    /// Why it has no figures.
    Skipped(String),
}

impl DockerDnet {
    /// Issue 11's goal: `docker run` to first packet on dnet no slower than
    /// on docker0 (median over the runs).
    pub fn goal(&self) -> Goal {
        let text =
            "Docker + dnet: `docker run` to first packet no slower than on docker0 (ratio ≤ 1)"
                .to_owned();
        let figure = match self {
            DockerDnet::Done { r, .. } => r.ratio("dd_run_p50", 0, 1).map(|s| s.median),
            DockerDnet::Skipped(_) => None,
        };
        let why_none = match self {
            DockerDnet::Skipped(why) => why.clone(),
            DockerDnet::Done { .. } => "no figure".into(),
        };
        Goal {
            text,
            figure,
            met: figure.map(|f| f <= 1.0),
            why_none,
        }
    }

    fn markdown(&self, s: &mut String) {
        s.push_str(
            "\nDocker + dnet: real Docker containers, one dockerd, on a dnet network and on docker0 (and, for `docker run`, on a user-defined network of Docker's bridge driver):\n\n",
        );
        let (r, describe) = match self {
            DockerDnet::Skipped(why) => {
                s.push_str(&format!("- {why}\n"));
                return;
            }
            DockerDnet::Done { r, describe } => (r, describe),
        };
        s.push_str(&format!(
            "| | {} | {} | dnet ÷ docker0 | {} | dnet ÷ user-defined bridge |\n|---|---:|---:|---:|---:|---:|\n",
            COLUMNS[0], COLUMNS[1], COLUMNS[2]
        ));
        let mut group: Option<Group> = None;
        for d in &r.defs {
            if group != Some(d.group) {
                group = Some(d.group);
                s.push_str(&format!("| **{}** | | | | | |\n", d.group.title()));
            }
            let arrow = if d.higher_is_better { "↑" } else { "↓" };
            s.push_str(&format!(
                "| {} ({} {arrow}) | {} | {} | {} | {} | {} |\n",
                d.label,
                d.unit,
                cell(r.summary(&d.id, 0)),
                cell(r.summary(&d.id, 1)),
                ratio_cell(r.ratio(&d.id, 0, 1)),
                cell(r.summary(&d.id, 2)),
                ratio_cell(r.ratio(&d.id, 0, 2))
            ));
        }
        s.push_str(&format!("\n- {describe}\n"));
        for d in &r.defs {
            for (i, col) in COLUMNS.iter().enumerate() {
                for f in r.data[&d.id][i].failures.iter().take(5) {
                    s.push_str(&format!("- failed: {} / {col}: {f}\n", d.id));
                }
            }
        }
    }

    fn json(&self) -> Value {
        match self {
            DockerDnet::Skipped(why) => json!({"na": why}),
            DockerDnet::Done { r, describe } => {
                let metrics: Vec<Value> = r
                    .defs
                    .iter()
                    .map(|d| {
                        let col = |i: usize| {
                            let ser = &r.data[&d.id][i];
                            json!({
                                "label": COLUMNS[i],
                                "rounds": ser.rounds,
                                "summary": summary_json(r.summary(&d.id, i)),
                                "failures": ser.failures,
                            })
                        };
                        json!({
                            "id": d.id,
                            "group": d.group.title(),
                            "label": d.label,
                            "unit": d.unit,
                            "higher_is_better": d.higher_is_better,
                            "dnet": col(0),
                            "docker0": col(1),
                            "ratio": summary_json(r.ratio(&d.id, 0, 1)),
                            "user_bridge": col(2),
                            "ratio_user_bridge": summary_json(r.ratio(&d.id, 0, 2)),
                        })
                    })
                    .collect();
                json!({"describe": describe, "metrics": metrics})
            }
        }
    }
}

/// Three significant digits, thousands separated.
pub fn fmt_value(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        thousands(x)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell(s: Option<Summary>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s.n > 1 => format!("{} ±{:.0}%", fmt_value(s.median), s.spread_pct()),
        Some(s) => fmt_value(s.median),
    }
}

fn ratio_cell(s: Option<Summary>) -> String {
    match s {
        None => "—".into(),
        Some(s) => format!("{:.2}×", s.median),
    }
}

/// The short form of a reason for the table (before the first colon).
fn short(why: &str) -> String {
    why.split(':').next().unwrap_or(why).trim().to_owned()
}

pub fn markdown(meta: &Meta, r: &Results, goals: &[Goal]) -> String {
    let mut s = String::new();
    let kind = if meta.quick { "quick run" } else { "full run" };
    s.push_str(&format!(
        "dnet bench, {} ({kind}): kernel {}, {} ({} CPUs), dnet {}\n\n",
        meta.date, meta.kernel, meta.cpu, meta.cpus, meta.dnet_rev
    ));
    s.push_str(&format!(
        "`{}` — {} interleaved rounds after {} warm-up, {} s per run{}; \
         each cell: median ±half the min–max range; ratios: median of per-round ratios \
         (for µs, s and CPU s/GB lower is better, so a ratio below 1 favours the first side).\n\n",
        meta.command,
        meta.rounds,
        meta.warmup,
        meta.secs,
        if meta.pin {
            ", clients pinned to CPU 0 and servers to CPU 1"
        } else {
            ""
        }
    ));
    // The three sides' table, unless every group of it was skipped.
    let measured = r
        .defs
        .iter()
        .any(|d| r.data[&d.id].iter().any(|s| s.na.is_none()));
    if measured {
        s.push_str(&format!(
            "| | {} | {} | {} | {} | {} | {} |\n|---|---:|---:|---:|---:|---:|---:|\n",
            meta.labels[0], meta.labels[1], meta.labels[2], RATIOS[0].2, RATIOS[1].2, RATIOS[2].2
        ));
    }
    let mut group: Option<Group> = None;
    for d in r.defs.iter().filter(|_| measured) {
        if group != Some(d.group) {
            group = Some(d.group);
            s.push_str(&format!("| **{}** | | | | | | |\n", d.group.title()));
        }
        let arrow = if d.higher_is_better { "↑" } else { "↓" };
        let sides: Vec<String> = (0..3)
            .map(|i| match &r.data[&d.id][i].na {
                Some(why) => short(why),
                None => cell(r.summary(&d.id, i)),
            })
            .collect();
        let ratios: Vec<String> = RATIOS
            .iter()
            .map(|(a, b, _)| ratio_cell(r.ratio(&d.id, *a, *b)))
            .collect();
        s.push_str(&format!(
            "| {} ({} {arrow}) | {} | {} | {} | {} | {} | {} |\n",
            d.label, d.unit, sides[0], sides[1], sides[2], ratios[0], ratios[1], ratios[2]
        ));
    }
    meta.dd.markdown(&mut s);
    meta.lat.markdown(&mut s);
    s.push_str("\nGoals (issues #6, #9, #11 and #12):\n\n");
    for g in goals {
        let verdict = match (g.met, g.figure) {
            (Some(true), Some(f)) => format!("met ({f:.2})"),
            (Some(false), Some(f)) => format!("**not met** ({f:.2})"),
            _ => g.why_none.clone(),
        };
        s.push_str(&format!("- {}: {verdict}\n", g.text));
    }
    s.push_str("\nSides:\n\n");
    for (label, what) in meta.labels.iter().zip(&meta.sides) {
        s.push_str(&format!("- **{label}**: {what}\n"));
    }
    let mut reasons: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for d in &r.defs {
        for i in 0..3 {
            let ser = &r.data[&d.id][i];
            if let Some(why) = &ser.na
                && why.contains(':')
                && !reasons.contains(why)
            {
                reasons.push(why.clone());
            }
            for f in &ser.failures {
                failures.push(format!("{} / {}: {f}", d.id, meta.labels[i]));
            }
        }
    }
    if !meta.notes.is_empty() || !reasons.is_empty() || !failures.is_empty() {
        s.push_str("\nNotes:\n\n");
        for n in meta.notes.iter().chain(&reasons) {
            s.push_str(&format!("- {n}\n"));
        }
        for f in failures.iter().take(20) {
            s.push_str(&format!("- failed round: {f}\n"));
        }
    }
    s
}

fn summary_json(s: Option<Summary>) -> Value {
    s.map_or(Value::Null, |s| json!(s))
}

pub fn json(meta: &Meta, r: &Results, goals: &[Goal]) -> Value {
    let metrics: Vec<Value> = r
        .defs
        .iter()
        .map(|d| {
            let sides: serde_json::Map<String, Value> = (0..3)
                .map(|i| {
                    let ser = &r.data[&d.id][i];
                    (
                        ["dnet", "docker0", "limit"][i].to_owned(),
                        json!({
                            "label": meta.labels[i],
                            "rounds": ser.rounds,
                            "summary": summary_json(r.summary(&d.id, i)),
                            "na": ser.na,
                            "failures": ser.failures,
                        }),
                    )
                })
                .collect();
            let ratios: serde_json::Map<String, Value> = RATIOS
                .iter()
                .map(|(a, b, name)| {
                    let s = &r.data[&d.id];
                    let per_round = super::stats::ratios(&s[*a].rounds, &s[*b].rounds);
                    (
                        (*name).to_owned(),
                        json!({"rounds": per_round, "summary": summary_json(r.ratio(&d.id, *a, *b))}),
                    )
                })
                .collect();
            json!({
                "id": d.id,
                "group": d.group.title(),
                "label": d.label,
                "unit": d.unit,
                "higher_is_better": d.higher_is_better,
                "sides": sides,
                "ratios": ratios,
            })
        })
        .collect();
    json!({
        "date": meta.date,
        "kernel": meta.kernel,
        "cpu": meta.cpu,
        "cpus": meta.cpus,
        "dnet": meta.dnet_rev,
        "command": meta.command,
        "quick": meta.quick,
        "rounds": meta.rounds,
        "warmup_rounds": meta.warmup,
        "seconds_per_run": meta.secs,
        "pinned": meta.pin,
        "sides": {"dnet": meta.sides[0], "docker0": meta.sides[1], "limit": meta.sides[2]},
        "notes": meta.notes,
        "metrics": metrics,
        "docker_dnet": meta.dd.json(),
        "control_plane_latency": meta.lat.json(),
        "goals": goals.iter().map(|g| json!({
            "goal": g.text, "figure": g.figure, "met": g.met,
            "why_none": if g.met.is_none() { Some(&g.why_none) } else { None },
        })).collect::<Vec<_>>(),
    })
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(127, 127, 127);

/// Left: every non-port metric relative to docker0 (higher is better; for
/// latency, time and CPU the inverse ratio). Right: published-port rate
/// against the number of ports published.
pub fn svg(path: &Path, meta: &Meta, r: &Results, ports: &[u32]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("chart: {e}");
    let root = SVGBackend::new(path, (1280, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "dnet bench {} ({}) — kernel {}, {}",
        meta.date,
        if meta.quick { "quick run" } else { "full run" },
        meta.kernel,
        meta.cpu
    );
    let root = root
        .titled(&title, ("sans-serif", 18))
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(760);

    // Left panel: speed-up relative to docker0.
    let bars: Vec<(String, Option<f64>, Option<f64>)> = r
        .defs
        .iter()
        .filter(|d| d.group != Group::Published)
        .filter_map(|d| {
            let up = |a: usize| {
                r.ratio(&d.id, a, 1).map(|s| {
                    if d.higher_is_better {
                        s.median
                    } else if s.median > 0.0 {
                        1.0 / s.median
                    } else {
                        0.0
                    }
                })
            };
            let (dn, li) = (up(0), up(2));
            let tag = match d.group {
                Group::EastWest => "EW",
                Group::NorthSouth => "NS",
                Group::EastWest6 => "EW6",
                Group::NorthSouth6 => "NS6",
                Group::Names => "DNS",
                _ => "CP",
            };
            let label = d
                .label
                .split(':')
                .next()
                .unwrap_or(&d.label)
                .replace('`', "");
            (dn.is_some() || li.is_some()).then(|| (format!("{tag} {label}"), dn, li))
        })
        .collect();
    let n = bars.len().max(1);
    // Ratios multiply: a log axis, bars from docker0's 1× to the figure.
    let all: Vec<f64> = bars
        .iter()
        .flat_map(|(_, a, b)| [*a, *b])
        .flatten()
        .filter(|x| *x > 0.0)
        .collect();
    let xmax = all.iter().copied().fold(2.0f64, f64::max) * 1.3;
    let xmin = all.iter().copied().fold(0.5f64, f64::min) * 0.8;
    let mut chart = ChartBuilder::on(&left)
        .margin(12)
        .caption(
            "relative to docker0 (higher is better; 1× = docker0; log scale)",
            ("sans-serif", 15),
        )
        .x_label_area_size(30)
        .y_label_area_size(300)
        .build_cartesian_2d((xmin..xmax).log_scale(), -0.5f64..(n as f64 - 0.5))
        .map_err(|e| err(&e))?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n + 1)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            // The first metric at the top.
            labels.get(n - 1 - i as usize).cloned().unwrap_or_default()
        })
        .x_desc("× docker0")
        .x_label_formatter(&|x| format!("{}×", fmt_value(*x)))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (_, dn, li)) in bars.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        if let Some(v) = dn {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(1.0, y + 0.02), (*v, y + 0.38)],
                    BLUE.filled(),
                )))
                .map_err(|e| err(&e))?;
        }
        if let Some(v) = li {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(1.0, y - 0.38), (*v, y - 0.02)],
                    GREY.filled(),
                )))
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, -0.5), (1.0, n as f64 - 0.5)],
            RED.stroke_width(2),
        )))
        .map_err(|e| err(&e))?
        .label(meta.labels[1].as_str())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
    chart
        .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
        .map_err(|e| err(&e))?
        .label(meta.labels[0].as_str())
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], BLUE.filled()));
    chart
        .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
        .map_err(|e| err(&e))?
        .label(meta.labels[2].as_str())
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], GREY.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;

    // Right panel: published-port rate.
    let series: Vec<(usize, Vec<(f64, f64)>)> = (0..3)
        .map(|side| {
            let pts = ports
                .iter()
                .filter_map(|&p| Some((p as f64, r.summary(&pp_rps(p), side)?.median)))
                .collect();
            (side, pts)
        })
        .collect();
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.15;
    let xmax = ports.iter().copied().max().unwrap_or(10) as f64 * 2.0;
    let mut chart = ChartBuilder::on(&right)
        .margin(12)
        .caption(
            "published port: requests/s (new connection each)",
            ("sans-serif", 15),
        )
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((0.7f64..xmax).log_scale(), 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("ports published")
        .y_desc("req/s")
        .x_label_formatter(&|x| thousands(*x))
        .y_label_formatter(&|y| thousands(*y))
        .draw()
        .map_err(|e| err(&e))?;
    for (side, pts) in series {
        let color = [BLUE, RED, GREY][side];
        if pts.is_empty() {
            // Say so in the legend rather than leave the side out.
            let why = r
                .data
                .get(&pp_rps(ports[0]))
                .and_then(|s| s[side].na.as_deref())
                .map_or("no figure".to_owned(), |w| {
                    w.split(':').next().unwrap_or(w).to_owned()
                });
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(|e| err(&e))?
                .label(format!("{}: {why}", meta.labels[side]))
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(meta.labels[side].as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present()
        .map_err(|e| err(&e))
        .context("writing the SVG")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::metric_defs;

    fn meta() -> Meta {
        Meta {
            date: "2026-11-28T08:00:00Z".into(),
            kernel: "6.18.44".into(),
            cpu: "AMD EPYC".into(),
            cpus: 2,
            dnet_rev: "abc1234".into(),
            command: "cargo xtask bench --quick".into(),
            quick: true,
            rounds: 2,
            warmup: 0,
            secs: 1.0,
            pin: false,
            sides: ["d".into(), "k".into(), "l".into()],
            labels: ["dnet".into(), "docker0".into(), "limit".into()],
            notes: vec![],
            dd: DockerDnet::Skipped("skipped (--skip dd)".into()),
            lat: crate::bench::latency::Latency::Skipped("skipped (--skip lat)".into()),
        }
    }

    #[test]
    fn values_have_three_significant_digits() {
        assert_eq!(fmt_value(17.025), "17.0");
        assert_eq!(fmt_value(173.26), "173");
        assert_eq!(fmt_value(12345.0), "12,345");
        assert_eq!(fmt_value(0.04321), "0.043");
        assert_eq!(fmt_value(2.5), "2.50");
    }

    #[test]
    fn table_shows_figures_ratios_and_na() {
        let mut r = Results::new(metric_defs(&[1, 100], 20, 100), 2);
        for (i, v) in [(0, 250.0), (1, 200.0), (2, 260.0)] {
            r.record("ew_udp", i, 0, v);
            r.record("ew_udp", i, 1, v * 1.1);
        }
        r.set_na("ns_tcp", 0, "n/a (not built yet): no outbound NAT");
        let g = crate::bench::results::goals(&r, &[1, 100]);
        let md = markdown(&meta(), &r, &g);
        let row = md.lines().find(|l| l.starts_with("| UDP 64-byte")).unwrap();
        assert!(
            row.contains("| 262 ±5% | 210 ±5% | 273 ±5% | 1.25× | 0.96× | 0.77× |"),
            "{row}"
        );
        let ns = md
            .lines()
            .filter(|l| l.starts_with("| TCP throughput"))
            .nth(1)
            .unwrap();
        assert!(ns.contains("| n/a (not built yet) |"), "{ns}");
        assert!(md.contains("- east-west small-packet rate ≥ 1.3× docker0: **not met** (1.25)"));
        assert!(md.contains("- n/a (not built yet): no outbound NAT"));
        assert!(md.contains("| **North-south, container to world through NAT** |"));
    }

    #[test]
    fn json_and_svg_are_written() {
        let mut r = Results::new(metric_defs(&[1, 100], 20, 100), 1);
        r.record("ew_tcp", 0, 0, 20.0);
        r.record("ew_tcp", 1, 0, 10.0);
        r.record("pp1_rps", 1, 0, 9000.0);
        r.record("pp100_rps", 1, 0, 8000.0);
        let g = crate::bench::results::goals(&r, &[1, 100]);
        let j = json(&meta(), &r, &g);
        assert_eq!(j["metrics"][0]["id"], "ew_tcp");
        assert_eq!(
            j["metrics"][0]["ratios"]["dnet ÷ docker0"]["summary"]["median"],
            2.0
        );
        assert_eq!(j["kernel"], "6.18.44");
        let dir = std::env::temp_dir().join(format!("dnb-svg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.svg");
        svg(&p, &meta(), &r, &[1, 100]).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(s.starts_with("<svg") && s.contains("AMD EPYC"));
    }
}
