//! `dnet network ls`.

use std::process::ExitCode;

use crate::{
    api::{NetworkView, client::Client},
    cli::{Format, print_json, short, table::Table},
};

pub async fn run(client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    let ns: Vec<NetworkView> = client.get("/v1/networks").await?;
    if format == Format::Json {
        print_json(&ns)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "NETWORK ID",
        "NAME",
        "DRIVER",
        "SUBNET",
        "GATEWAY",
        "CONTAINERS",
    ]);
    for n in &ns {
        t.row(vec![
            short(&n.id).to_owned(),
            n.name.clone(),
            n.driver.to_string(),
            both(
                n.ipam.map(|i| i.subnet.to_string()),
                n.ipam6.map(|i| i.subnet.to_string()),
            ),
            both(
                n.ipam.map(|i| i.gateway.to_string()),
                n.ipam6.map(|i| i.gateway.to_string()),
            ),
            n.containers.len().to_string(),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

/// The IPv4 and the IPv6 value, as `A,B` when a network has both.
fn both(v4: Option<String>, v6: Option<String>) -> String {
    [v4, v6].into_iter().flatten().collect::<Vec<_>>().join(",")
}
