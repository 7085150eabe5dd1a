//! `dnet stats`: per-endpoint counters from the datapath.

use std::process::ExitCode;

use super::{Format, print_json, table::Table};
use crate::api::{StatsView, client::Client};

pub async fn run(client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    let s: StatsView = client.get("/v1/stats").await?;
    if format == Format::Json {
        print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "CONTAINER",
        "NETWORK",
        "IP",
        "RX PKTS",
        "RX BYTES",
        "TX PKTS",
        "TX BYTES",
        "NAT PKTS",
        "DROPS",
    ]);
    for e in &s.endpoints {
        let drops: Vec<String> = e.drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
        t.row(vec![
            e.container.clone(),
            e.network.clone(),
            [e.ip.map(|i| i.to_string()), e.ip6.map(|i| i.to_string())]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(","),
            e.rx_packets.to_string(),
            e.rx_bytes.to_string(),
            e.tx_packets.to_string(),
            e.tx_bytes.to_string(),
            e.translated.to_string(),
            if drops.is_empty() {
                "-".into()
            } else {
                drops.join(",")
            },
        ]);
    }
    t.print();
    if !s.unattributed_drops.is_empty() {
        let drops: Vec<String> = s
            .unattributed_drops
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        println!("\nDrops on no endpoint: {}", drops.join(","));
    }
    Ok(ExitCode::SUCCESS)
}
