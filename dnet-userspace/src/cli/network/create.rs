//! `dnet network create`.

use std::process::ExitCode;

use crate::{
    api::{NetworkCreate, NetworkView, client::Client},
    cli::{Format, print_json},
    spec,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Driver: bridge or macvlan.
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR form, one per address family (default: the next free
    /// range, as Docker picks; with --ipv6, a /64 of the daemon's ULA /48;
    /// macvlan: required, the parent LAN's).
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway, one per family (default: the subnet's first address;
    /// macvlan: the LAN's router).
    #[arg(long)]
    gateway: Vec<String>,
    /// Range that automatic addresses come from (inside the subnet), one
    /// per family.
    #[arg(long)]
    ip_range: Vec<String>,
    /// Dual-stack: IPv6 as well as IPv4 (bridge).
    #[arg(long)]
    ipv6: bool,
    /// No outbound connectivity.
    #[arg(long)]
    internal: bool,
    /// Driver option KEY=VALUE (bridge: mtu, icc, gateway_mode_ipv6; macvlan: parent,
    /// macvlan_mode, host_access, mtu).
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Network name.
    name: String,
}

pub async fn run(args: &Args, client: &Client, format: Format) -> anyhow::Result<ExitCode> {
    let (subnet, subnet6) = spec::per_family("subnet", &args.subnet)?;
    let (gateway, gateway6) = spec::per_family("gateway", &args.gateway)?;
    let (ip_range, ip_range6) = spec::per_family("ip-range", &args.ip_range)?;
    let req = NetworkCreate {
        name: args.name.clone(),
        driver: Some(args.driver.clone()),
        subnet,
        gateway,
        ip_range,
        internal: args.internal,
        options: args.opt.clone(),
        ipv6: args.ipv6,
        subnet6,
        gateway6,
        ip_range6,
    };
    let n: NetworkView = client.post("/v1/networks", &req).await?;
    match format {
        Format::Json => print_json(&n)?,
        Format::Table => println!("{}", n.id),
    }
    Ok(ExitCode::SUCCESS)
}
