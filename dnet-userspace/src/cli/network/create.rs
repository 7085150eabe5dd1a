//! `dnet network create`.

use std::process::ExitCode;

use crate::{
    api::{NetworkCreate, NetworkView, client::Client},
    cli::{Format, print_json},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Driver: bridge or macvlan.
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form (default: the next free range, as Docker picks;
    /// macvlan: required, the parent LAN's).
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway (default: the subnet's first address; macvlan: the LAN's
    /// router).
    #[arg(long)]
    gateway: Option<String>,
    /// Range that automatic addresses come from (inside the subnet).
    #[arg(long)]
    ip_range: Option<String>,
    /// No outbound connectivity.
    #[arg(long)]
    internal: bool,
    /// Driver option KEY=VALUE (bridge: mtu, icc; macvlan: parent,
    /// macvlan_mode, host_access, mtu).
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Network name.
    name: String,
}

pub async fn run(args: &Args, client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    let req = NetworkCreate {
        name: args.name.clone(),
        driver: Some(args.driver.clone()),
        subnet: args.subnet.clone(),
        gateway: args.gateway.clone(),
        ip_range: args.ip_range.clone(),
        internal: args.internal,
        options: args.opt.clone(),
    };
    let n: NetworkView = client.post("/v1/networks", &req).await?;
    match format {
        Format::Json => print_json(&n)?,
        Format::Table => println!("{}", n.id),
    }
    Ok(ExitCode::SUCCESS)
}
